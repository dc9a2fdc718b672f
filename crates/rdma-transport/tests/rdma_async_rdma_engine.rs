//! The async-rdma engine against a sideway peer, in the Soft-RoCE guest: proves the queue
//! pair attributes (MTU, PSNs, `max_rd_atomic`, GID, queue sizes) agree with a verbs server
//! built the way rdma-transport's server is, before a volume server is involved.
//!
//! The peer is a sideway RC queue pair with a REMOTE_READ region of pseudo-random bytes on
//! the same device; it answers READs in the provider without any call from us.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rdma_transport::async_rdma_engine::{AsyncRdmaConfig, AsyncRdmaEngine};
use rdma_transport::verbs::DeviceChoice;
use rdma_transport::{EngineQp, QpEndpoint, RdmaError, ReadEngine};
use sideway::ibverbs::AccessFlags;
use sideway::ibverbs::address::{AddressHandleAttribute, Gid, GidType};
use sideway::ibverbs::completion::BasicCompletionQueue;
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::{DeviceContext, Mtu};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{BasicQueuePair, QueuePair, QueuePairAttribute, QueuePairState};

const PORT: u8 = 1;
/// READs the peer answers at once (its `max_dest_rd_atomic`); the engine must stay within.
const PEER_MAX_DEST_RD_ATOMIC: u8 = 8;
const REGION: usize = 4 << 20;

/// The sideway side: a region of known bytes and a queue pair that serves READs of it.
struct Peer {
    served: Vec<u8>,
    region: Arc<MemoryRegion>,
    _qp: BasicQueuePair,
    _cq: Arc<BasicCompletionQueue>,
    _pd: Arc<ProtectionDomain>,
    _context: Arc<DeviceContext>,
}

fn device_name() -> String {
    std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".to_owned())
}

/// The RoCE v2 IPv4-mapped GID of port 1, as the engine's device discovery picks it.
fn roce_v2_gid(context: &DeviceContext) -> (Gid, u8) {
    let table = context.query_gid_table().expect("querying the GID table");
    let entry = table
        .iter()
        .find(|e| {
            e.port_num() == u32::from(PORT)
                && e.gid_type() == GidType::RoceV2
                && Ipv6Addr::from(e.gid()).to_ipv4_mapped().is_some()
        })
        .expect("no RoCE v2 IPv4-mapped GID on port 1");
    (entry.gid(), u8::try_from(entry.gid_index()).expect("GID index fits u8"))
}

fn mtu_bytes(mtu: Mtu) -> u32 {
    match mtu {
        Mtu::Mtu256 => 256,
        Mtu::Mtu512 => 512,
        Mtu::Mtu1024 => 1024,
        Mtu::Mtu2048 => 2048,
        Mtu::Mtu4096 => 4096,
    }
}

/// Opens the engine and a sideway peer on the same device, registers the served region,
/// and connects an engine queue pair and the peer's to each other, as a session would.
async fn connect(seed: u64, tune: impl FnOnce(&mut AsyncRdmaConfig)) -> (Peer, Box<dyn EngineQp>) {
    let mut config = AsyncRdmaConfig::new(DeviceChoice::Name(device_name()));
    tune(&mut config);
    let engine = AsyncRdmaEngine::open(config).expect("opening the async-rdma engine");
    assert_eq!(engine.name(), "async-rdma");
    let mut client = engine.create_qp().expect("creating an async-rdma queue pair");
    let ours = client.endpoint();

    let list = DeviceList::new().expect("listing RDMA devices");
    let context = list
        .iter()
        .find(|d| d.name() == device_name())
        .expect("the RDMA device")
        .open()
        .expect("opening the device");
    let pd = context.alloc_pd().expect("allocating a protection domain");
    let (gid, gid_index) = roce_v2_gid(&context);
    let mtu = context.query_port(PORT).expect("querying port 1").active_mtu();
    assert_eq!(ours.gid, gid.raw, "the engine's GID is not the RoCE v2 IPv4-mapped one");
    assert_eq!(ours.mtu, mtu_bytes(mtu), "the engine does not use the port's active MTU");
    assert!(ours.psn <= 0x00ff_ffff && ours.max_read_atomic >= 1, "{ours:?}");

    let mut served = testbeds::pseudo_random(REGION, seed);
    // SAFETY: `served` lives in `Peer` beside the region and is never moved or resized.
    let region = unsafe { pd.reg_mr(served.as_mut_ptr() as usize, served.len(), AccessFlags::RemoteRead) }
        .expect("registering the served region");
    let cq = context.create_cq_builder().setup_cqe(16).build().expect("creating the peer's CQ");
    let mut qp = pd
        .create_qp_builder()
        .setup_max_send_wr(1)
        .setup_max_recv_wr(1)
        .setup_send_cq(Arc::clone(&cq))
        .setup_recv_cq(Arc::clone(&cq))
        .build()
        .expect("creating the peer's QP");

    const PEER_PSN: u32 = 0x00ab_cdef;
    let mut init = QueuePairAttribute::new();
    init.setup_state(QueuePairState::Init)
        .setup_pkey_index(0)
        .setup_port(PORT)
        .setup_access_flags(AccessFlags::RemoteRead);
    qp.modify(&init).expect("peer QP to INIT");
    let mut path = AddressHandleAttribute::new();
    path.setup_port(PORT).setup_grh(&Gid { raw: ours.gid }, 0, gid_index, 64, 0);
    let mut rtr = QueuePairAttribute::new();
    rtr.setup_state(QueuePairState::ReadyToReceive)
        .setup_path_mtu(mtu)
        .setup_dest_qp_num(ours.qp_num)
        // The engine's first READ carries its send PSN.
        .setup_rq_psn(ours.psn)
        .setup_max_dest_read_atomic(PEER_MAX_DEST_RD_ATOMIC)
        .setup_min_rnr_timer(12)
        .setup_address_vector(&path);
    qp.modify(&rtr).expect("peer QP to RTR");
    let mut rts = QueuePairAttribute::new();
    rts.setup_state(QueuePairState::ReadyToSend)
        .setup_sq_psn(PEER_PSN)
        .setup_timeout(14)
        .setup_retry_cnt(7)
        .setup_rnr_retry(7)
        .setup_max_read_atomic(1);
    qp.modify(&rts).expect("peer QP to RTS");

    let peer_endpoint = QpEndpoint {
        qp_num: qp.qp_number(),
        psn: PEER_PSN,
        gid: gid.raw,
        lid: 0,
        mtu: mtu_bytes(mtu),
        max_read_atomic: PEER_MAX_DEST_RD_ATOMIC,
    };
    client.connect(&peer_endpoint).expect("connecting the async-rdma queue pair");
    let peer = Peer { served, region, _qp: qp, _cq: cq, _pd: pd, _context: context };
    (peer, client)
}

impl Peer {
    fn addr(&self, offset: usize) -> u64 {
        self.region.get_ptr() as u64 + offset as u64
    }

    fn rkey(&self) -> u32 {
        self.region.rkey()
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
async fn rdma_async_rdma_reads_are_byte_exact() {
    let (peer, qp) = connect(11, |c| c.buffer_size = 1 << 20).await;
    // One byte, a page, a needle at an odd offset, exactly one buffer, and more than one
    // buffer (split into buffer-sized READs) ending at the region's last byte.
    for (offset, len) in [
        (0, 1),
        (0, 4096),
        (12_345, 54_321),
        (1 << 20, 1 << 20),
        (REGION - 3 * (1 << 20) - 7, (3 << 20) + 7),
        (REGION - 1, 1),
    ] {
        let got = qp.read(peer.addr(offset), peer.rkey(), len as u32).await.expect("READ");
        assert_eq!(got.len(), len);
        assert!(got == peer.served[offset..offset + len], "READ of {len} bytes at {offset} differs");
    }
    // The same local regions again and again: the previous READ's lock must not leak.
    for round in 0..50 {
        let offset = round * 4099;
        let got = qp.read(peer.addr(offset), peer.rkey(), 4096).await.expect("repeated READ");
        assert!(got == peer.served[offset..offset + 4096], "round {round} differs");
    }
    assert!(qp.read(peer.addr(0), peer.rkey(), 0).await.expect("an empty READ").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
async fn rdma_async_rdma_concurrent_reads_on_a_multi_thread_runtime() {
    // More readers than READs in flight (depth 4), 64 KiB regions so longer reads are split:
    // regions are reused right after their completion, where async-rdma's lock race shows.
    let (peer, qp) = connect(12, |c| {
        c.queue_depth = 4;
        c.buffer_size = 64 << 10;
    })
    .await;
    let peer = Arc::new(peer);
    let qp: Arc<dyn EngineQp> = Arc::from(qp);
    let mut readers = Vec::new();
    for reader in 0..12usize {
        let (peer, qp) = (Arc::clone(&peer), Arc::clone(&qp));
        readers.push(tokio::spawn(async move {
            for i in 0..20usize {
                let len = 1 + (reader * 7919 + i * 104_729) % (200 << 10);
                let offset = (reader * 1_000_003 + i * 65_537) % (REGION - len);
                let got = qp.read(peer.addr(offset), peer.rkey(), len as u32).await.expect("concurrent READ");
                assert!(got == peer.served[offset..offset + len], "reader {reader} READ {i} differs");
            }
        }));
    }
    for reader in readers {
        tokio::time::timeout(testbeds::softroce::slowness::scaled(Duration::from_secs(60)), reader)
            .await
            .expect("readers finish")
            .expect("a reader panicked");
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
async fn rdma_async_rdma_refused_read_breaks_the_queue_pair() {
    let (peer, qp) = connect(13, |_| {}).await;
    // Past the end of the region: the peer's device refuses it, the RC queue pair goes to
    // the error state, and every later READ fails as well.
    match qp.read(peer.addr(REGION - 10), peer.rkey(), 20).await {
        Err(RdmaError::Transfer(message)) => assert!(message.contains("Remote"), "{message}"),
        other => panic!("a READ past the region's end gave {other:?}"),
    }
    assert!(matches!(qp.read(peer.addr(0), peer.rkey(), 8).await, Err(RdmaError::Transfer(_))));
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
async fn rdma_async_rdma_refuses_a_server_with_a_smaller_mtu() {
    let engine = AsyncRdmaEngine::open(AsyncRdmaConfig::new(DeviceChoice::Name(device_name()))).unwrap();
    let mut qp = engine.create_qp().unwrap();
    let ours = qp.endpoint();
    if ours.mtu == 256 {
        return; // nothing smaller exists
    }
    let server = QpEndpoint { mtu: ours.mtu / 2, max_read_atomic: 4, ..ours };
    match qp.connect(&server) {
        Err(RdmaError::Transfer(message)) => assert!(message.contains("MTU"), "{message}"),
        other => panic!("connecting to a smaller MTU gave {other:?}"),
    }
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn rdma_async_rdma_outside_a_runtime_is_an_error_not_a_panic() {
    let engine = AsyncRdmaEngine::open(AsyncRdmaConfig::new(DeviceChoice::Name(device_name()))).unwrap();
    assert!(matches!(engine.create_qp(), Err(RdmaError::Protocol(_))));
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
async fn rdma_async_rdma_abandoned_reads_leave_the_queue_pair_usable() {
    let (peer, qp) = connect(14, |c| c.queue_depth = 4).await;
    for round in 0..20usize {
        // Posted (polled once), then dropped before its completion, as when a caller times
        // out: its permit comes back at once while its work request is still in the send
        // queue and its local region still locked, and later READs must go on regardless.
        let mut abandoned = qp.read(peer.addr(0), peer.rkey(), 1 << 20);
        let first = std::future::poll_fn(|cx| Poll::Ready(abandoned.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "round {round}: a 1 MiB READ completed within its first poll");
        drop(abandoned);
        let offset = 4096 + round * 12_289;
        let got = qp.read(peer.addr(offset), peer.rkey(), 8192).await.expect("a READ after an abandoned one");
        assert!(got == peer.served[offset..offset + 8192], "round {round} differs");
    }
}
