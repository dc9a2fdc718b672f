//! The first RDMA test: one-sided RDMA READs between two RC queue pairs on one device,
//! through sideway's basic CQ/QP path. It proves the guest pipeline end to end (a test
//! built on the host, run in the Soft-RoCE guest by `testbeds rdma-tests`) and the verbs
//! facts the transport relies on: caller memory (anonymous, and `MAP_SHARED` files on
//! tmpfs and ext4) registers with REMOTE_READ and reads back byte for byte, at any offset.
//!
//! Like every RDMA test it is `#[ignore]`d with the reason, so on a host without a device
//! `cargo test` lists it as ignored instead of passing it; see the `testbeds` crate docs.

use std::fs::File;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sideway::ibverbs::AccessFlags;
use sideway::ibverbs::address::{AddressHandleAttribute, Gid, GidType};
use sideway::ibverbs::completion::{
    BasicCompletionQueue, PollCompletionQueueError, WorkCompletionOperationType, WorkCompletionStatus,
};
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::DeviceContext;
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendGuard, QueuePair, QueuePairAttribute, QueuePairState, SetScatterGatherEntry,
    WorkRequestFlags,
};

/// Port 1 is the only port rxe has.
const PORT: u8 = 1;
/// A READ of 1 MiB takes ~20 ms in the emulated guest; this (scaled to the guest's
/// speed) bounds a lost completion.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(10);

/// The device (`$SOFTROCE_DEVICE`, else rxe0), a protection domain, and the RoCE v2 GID
/// index of its IPv4 address.
struct Device {
    context: Arc<DeviceContext>,
    pd: Arc<ProtectionDomain>,
    gid: Gid,
    gid_index: u8,
}

fn open_device() -> Device {
    let wanted = std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".to_owned());
    let list = DeviceList::new().expect("listing RDMA devices (is libibverbs installed?)");
    let names: Vec<String> = list.iter().map(|d| d.name()).collect();
    let device = list
        .iter()
        .find(|d| d.name() == wanted)
        .unwrap_or_else(|| panic!("no RDMA device {wanted}; devices present: {names:?}"));
    let context = device.open().expect("opening the device");
    let pd = context.alloc_pd().expect("allocating a protection domain");

    // The RoCE v2 GID built from an IPv4 address (::ffff:a.b.c.d): what rdma_cm would pick.
    let table = context.query_gid_table().expect("querying the GID table");
    let entry = table
        .iter()
        .find(|e| {
            e.port_num() == u32::from(PORT)
                && e.gid_type() == GidType::RoceV2
                && Ipv6Addr::from(e.gid()).to_ipv4_mapped().is_some()
        })
        .expect("no RoCE v2 IPv4-mapped GID on port 1");
    // The guest's init found the same index through sysfs; both views must agree.
    if let Ok(expected) = std::env::var("SOFTROCE_GID_INDEX") {
        assert_eq!(entry.gid_index().to_string(), expected, "verbs and sysfs disagree on the GID index");
    }
    let gid_index = u8::try_from(entry.gid_index()).expect("GID index fits the address vector's u8");
    Device { context, pd, gid: entry.gid(), gid_index }
}

/// Two RC queue pairs on one device, connected to each other: the "client" posts READs that
/// the "server" side answers from its registered memory, as across two hosts.
struct Loopback {
    client_qp: BasicQueuePair,
    client_cq: Arc<BasicCompletionQueue>,
    // The server QP answers READs in the provider without any call from us, but must live.
    _server_qp: BasicQueuePair,
    next_wr_id: u64,
}

impl Loopback {
    fn connect(device: &Device) -> Self {
        // The basic CQ (`build`), not `build_ex`: Debian 12's rxe provider reports phantom
        // completions on extended CQs.
        let new_cq = || device.context.create_cq_builder().setup_cqe(16).build().expect("creating a CQ");
        let (client_cq, server_cq) = (new_cq(), new_cq());
        let new_qp = |cq: &Arc<BasicCompletionQueue>| {
            device
                .pd
                .create_qp_builder()
                .setup_max_send_wr(8)
                .setup_max_recv_wr(1)
                .setup_send_cq(Arc::clone(cq))
                .setup_recv_cq(Arc::clone(cq))
                .build()
                .expect("creating an RC QP")
        };
        let mut client_qp = new_qp(&client_cq);
        let mut server_qp = new_qp(&server_cq);
        let mtu = device.context.query_port(PORT).expect("querying port 1").active_mtu();
        let (client_qpn, server_qpn) = (client_qp.qp_number(), server_qp.qp_number());
        const CLIENT_PSN: u32 = 0x1234;
        const SERVER_PSN: u32 = 0x5678;
        bring_up(&mut server_qp, device, mtu, client_qpn, CLIENT_PSN, SERVER_PSN);
        bring_up(&mut client_qp, device, mtu, server_qpn, SERVER_PSN, CLIENT_PSN);
        Loopback { client_qp, client_cq, _server_qp: server_qp, next_wr_id: 1 }
    }

    /// One signaled RDMA READ of `len` bytes at `remote_addr` (in `remote`) into the start of
    /// `local`, waited for with busy polling.
    fn read(&mut self, remote: &MemoryRegion, remote_addr: u64, local: &MemoryRegion, len: u32) {
        let wr_id = self.next_wr_id;
        self.next_wr_id += 1;
        let mut guard = self.client_qp.start_post_send();
        let wr = guard.construct_wr(wr_id, WorkRequestFlags::Signaled).setup_read(remote.rkey(), remote_addr);
        // SAFETY: `local` is registered, at least `len` bytes long, and outlives the wait below.
        unsafe { wr.setup_sge(local.lkey(), local.get_ptr() as u64, len) };
        guard.post().expect("posting the RDMA READ");

        let started = Instant::now();
        let limit = testbeds::softroce::slowness::scaled(COMPLETION_TIMEOUT);
        loop {
            match self.client_cq.start_poll() {
                Ok(poller) => {
                    let completions: Vec<(u64, u32, u32, u32)> =
                        poller.map(|wc| (wc.wr_id(), wc.status(), wc.opcode(), wc.vendor_err())).collect();
                    assert_eq!(completions.len(), 1, "one READ posted, completions: {completions:?}");
                    let (id, status, opcode, vendor_err) = completions[0];
                    assert_eq!(id, wr_id, "completion for another work request");
                    assert_eq!(
                        status,
                        WorkCompletionStatus::Success as u32,
                        "READ failed: status {:?}, vendor error {vendor_err:#x}",
                        WorkCompletionStatus::from(status)
                    );
                    assert_eq!(opcode, WorkCompletionOperationType::Read as u32);
                    return;
                }
                Err(PollCompletionQueueError::CompletionQueueEmpty) => {
                    assert!(started.elapsed() < limit, "no completion within {limit:?}");
                    std::hint::spin_loop();
                }
                Err(e) => panic!("polling the CQ: {e}"),
            }
        }
    }
}

/// RESET → INIT → RTR → RTS towards `remote_qpn` on the same device (so the destination
/// GID is our own).
fn bring_up(
    qp: &mut BasicQueuePair,
    device: &Device,
    mtu: sideway::ibverbs::device_context::Mtu,
    remote_qpn: u32,
    remote_psn: u32,
    local_psn: u32,
) {
    let mut init = QueuePairAttribute::new();
    init.setup_state(QueuePairState::Init)
        .setup_pkey_index(0)
        .setup_port(PORT)
        .setup_access_flags(AccessFlags::LocalWrite | AccessFlags::RemoteRead);
    qp.modify(&init).expect("QP to INIT");

    let mut path = AddressHandleAttribute::new();
    path.setup_port(PORT).setup_grh(&device.gid, 0, device.gid_index, 1, 0);
    let mut rtr = QueuePairAttribute::new();
    rtr.setup_state(QueuePairState::ReadyToReceive)
        .setup_path_mtu(mtu)
        .setup_dest_qp_num(remote_qpn)
        .setup_rq_psn(remote_psn)
        // Outstanding READs this QP answers: 0 would make every READ fail.
        .setup_max_dest_read_atomic(4)
        .setup_min_rnr_timer(12)
        .setup_address_vector(&path);
    qp.modify(&rtr).expect("QP to RTR");

    let mut rts = QueuePairAttribute::new();
    rts.setup_state(QueuePairState::ReadyToSend)
        .setup_sq_psn(local_psn)
        .setup_timeout(14)
        .setup_retry_cnt(7)
        .setup_rnr_retry(7)
        // Outstanding READs this QP may issue.
        .setup_max_read_atomic(4);
    qp.modify(&rts).expect("QP to RTS");
}

/// Registers `bytes` (which must outlive the region).
fn register(pd: &Arc<ProtectionDomain>, bytes: &mut [u8], access: AccessFlags) -> Arc<MemoryRegion> {
    // SAFETY: the callers keep `bytes` alive and in place for as long as the region exists.
    unsafe { pd.reg_mr(bytes.as_mut_ptr() as usize, bytes.len(), access) }.expect("registering memory")
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn rdma_read_returns_the_registered_bytes() {
    let device = open_device();
    let mut link = Loopback::connect(&device);

    const REGION: usize = 1 << 20;
    let mut served = testbeds::pseudo_random(REGION, 1);
    let remote = register(&device.pd, &mut served, AccessFlags::RemoteRead);
    let mut landing = vec![0u8; REGION];
    let local = register(&device.pd, &mut landing, AccessFlags::LocalWrite);

    // Whole pages, the whole region, and an odd length at an odd offset (a needle inside a
    // volume is rarely aligned).
    for (offset, len) in [(0usize, 4096usize), (0, REGION), (12_345, 54_321), (REGION - 1, 1)] {
        // SAFETY: no READ is in flight between posts; `landing` is only written by the device
        // while `read` waits.
        unsafe { std::ptr::write_bytes(local.get_ptr() as *mut u8, 0, REGION) };
        link.read(&remote, remote.get_ptr() as u64 + offset as u64, &local, len as u32);
        // SAFETY: the READ completed, so the device no longer writes the landing buffer.
        let got = unsafe { std::slice::from_raw_parts(local.get_ptr() as *const u8, len) };
        assert!(got == &served[offset..offset + len], "READ of {len} bytes at offset {offset} differs");
    }
}

/// A file mapped `MAP_SHARED`, as the volume server will map `.dat` files.
struct SharedMapping {
    ptr: *mut u8,
    len: usize,
}

impl SharedMapping {
    fn of(file: &File, len: usize) -> Self {
        // PROT_WRITE as well as PROT_READ: on Debian 12's 6.1 kernel, registering a PROT_READ
        // mapping fails with EFAULT (the reference facts), even for REMOTE_READ only.
        // SAFETY: a fresh mapping of a file we own, unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        SharedMapping { ptr: ptr.cast(), len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes and lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `of` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Writes a patterned file in `dir`, maps it shared, registers the mapping REMOTE_READ and
/// READs it back in chunks.
fn read_back_file(dir: &Path, seed: u64) {
    const LEN: usize = 4 << 20;
    const CHUNK: usize = 1 << 20;
    let path = dir.join(format!("rdma_verbs_smoke-{}-{seed}.dat", std::process::id()));
    let content = testbeds::pseudo_random(LEN, seed);
    std::fs::write(&path, &content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let file = File::options().read(true).write(true).open(&path).expect("opening the volume file");

    let device = open_device();
    let mut link = Loopback::connect(&device);
    let mut mapping = SharedMapping::of(&file, LEN);
    let remote = register(&device.pd, mapping.bytes(), AccessFlags::RemoteRead);
    let mut landing = vec![0u8; CHUNK];
    let local = register(&device.pd, &mut landing, AccessFlags::LocalWrite);
    for offset in (0..LEN).step_by(CHUNK) {
        link.read(&remote, remote.get_ptr() as u64 + offset as u64, &local, CHUNK as u32);
        // SAFETY: the READ completed; the device no longer writes the landing buffer.
        let got = unsafe { std::slice::from_raw_parts(local.get_ptr() as *const u8, CHUNK) };
        assert!(got == &content[offset..offset + CHUNK], "{}: chunk at {offset} differs", path.display());
    }
    drop(remote);
    drop(mapping);
    std::fs::remove_file(&path).expect("removing the volume file");
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn rdma_read_of_a_shared_file_mapping_on_tmpfs() {
    read_back_file(Path::new("/dev/shm"), 2);
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn rdma_read_of_a_shared_file_mapping_on_ext4() {
    let dir = std::env::var("SOFTROCE_SCRATCH")
        .expect("SOFTROCE_SCRATCH (a directory on ext4) is set by `testbeds rdma-tests`; set it to run this");
    // Make sure the file really lands on ext4, not on whatever the variable points at.
    let path = std::ffi::CString::new(dir.as_bytes()).expect("a path without NUL");
    // SAFETY: statfs is plain old data, for which all zero bytes are a valid value.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` a valid struct statfs to write into.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    assert_eq!(rc, 0, "statfs {dir}");
    const EXT4_SUPER_MAGIC: libc::c_long = 0xEF53;
    assert_eq!(stat.f_type, EXT4_SUPER_MAGIC, "{dir} is not on ext4");
    read_back_file(Path::new(&dir), 3);
}
