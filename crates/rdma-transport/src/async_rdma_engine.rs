//! The client engine on async-rdma 0.5.0 (cargo feature `async-rdma`; the crate is GPL-3.0).
//!
//! async-rdma cannot register caller memory, so it serves only as a client: it creates an RC
//! queue pair, hands out its endpoint, connects to the server's endpoint with `ibv_connect`
//! (endpoints travel over the control plane, not through async-rdma's own TCP or agent), and
//! issues one-sided READs into local memory regions it allocates itself. The device, its
//! GID index, MTU and READ limits are found the same way as for the sideway engine.
//!
//! What async-rdma gets wrong by default, and what this engine does about it:
//! - Defaults sized for its own demos (MTU 512, one outstanding READ, 10 send WRs, 16 CQ
//!   entries): the engine sets the port's MTU, `max_rd_atomic`, and queue sizes from the
//!   queue depth.
//! - `read` locks the *whole* local memory region for the operation: the engine keeps one
//!   local region per outstanding READ, and a semaphore that also keeps the send queue
//!   from overflowing (a failed post would leave that region locked for good) and the
//!   server's responder within its READ limit.
//! - Its completion path wakes the waiting task before it drops the region's lock, so on a
//!   multi-thread runtime the next READ into the same region can fail with "... is locked by
//!   other ops". That check runs before anything is posted, so the engine retries it, a
//!   bounded number of times.
//! - Its agent (`set_raw(false)`) exchanges messages over the QP and sleeps 1 s on connect:
//!   the engine runs raw.
//! - Queue-pair attributes are fixed when the queue pair is built, before the server's
//!   endpoint is known. The server's PSN is therefore not applied (harmless: a receive PSN
//!   only checks requests the peer sends, and the server only answers our READs, whose
//!   responses follow our own send PSN); a server whose MTU is smaller than ours is refused
//!   at connect, as the path MTU cannot be lowered any more.

use std::alloc::Layout;
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use async_rdma::{
    AccessFlag, ConnectionType, Gid, LocalMr, LocalMrReadAccess, MTU, MrAccess, MrToken, QueuePairEndpoint,
    QueuePairEndpointBuilder, Rdma, RdmaBuilder, RemoteMr,
};
use tokio::sync::Semaphore;

use crate::endpoint::QpEndpoint;
use crate::engine::{EngineQp, ReadEngine, ReadFuture};
use crate::error::RdmaError;
use crate::verbs::{Device, DeviceChoice, PORT, random_psn};

/// How the async-rdma engine is set up.
#[derive(Clone, Debug)]
pub struct AsyncRdmaConfig {
    /// The device to use.
    pub device: DeviceChoice,
    /// READs kept outstanding per queue pair (and local regions allocated for them).
    pub queue_depth: usize,
    /// Bytes per local region: the largest single READ; larger reads are split.
    pub buffer_size: usize,
    /// A READ not completed within this fails, and the queue pair with it.
    pub read_timeout: Duration,
}

impl AsyncRdmaConfig {
    /// Defaults for `device`: 16 outstanding READs of up to 1 MiB each, 30 s per READ (a
    /// 1 MiB READ takes ~20 ms even under full emulation).
    pub fn new(device: DeviceChoice) -> Self {
        Self { device, queue_depth: 16, buffer_size: 1 << 20, read_timeout: Duration::from_secs(30) }
    }
}

/// What the engine found out about the device when it was opened.
#[derive(Clone, Debug)]
struct DeviceFacts {
    name: String,
    gid_index: u8,
    mtu: u32,
    max_read_atomic: u8,
}

/// The async-rdma engine.
#[derive(Debug)]
pub struct AsyncRdmaEngine {
    device: DeviceFacts,
    config: AsyncRdmaConfig,
}

impl AsyncRdmaEngine {
    /// Finds the device; [`RdmaError::NoDevice`] when there is none.
    pub fn open(config: AsyncRdmaConfig) -> Result<Self, RdmaError> {
        if config.queue_depth == 0
            || config.queue_depth > u32::MAX as usize / 2
            || config.buffer_size == 0
            || config.buffer_size > u32::MAX as usize
        {
            return Err(RdmaError::Protocol("queue depth and buffer size must be positive (< 4 GiB)".into()));
        }
        // Device discovery is shared with the sideway engine (GID by address, RoCE v2
        // preferred); async-rdma then opens the device again by name.
        let device = Device::open(&config.device)?;
        let device = DeviceFacts {
            name: device.name().to_owned(),
            gid_index: device.gid_index(),
            mtu: device.mtu_bytes(),
            max_read_atomic: device.max_read_atomic(),
        };
        Ok(Self { device, config })
    }
}

impl ReadEngine for AsyncRdmaEngine {
    fn name(&self) -> &'static str {
        "async-rdma"
    }

    /// Must be called inside a tokio runtime with IO enabled: async-rdma spawns its
    /// completion poller there (waiting on the completion channel through the runtime's
    /// reactor), so the queue pair's READs complete only while that runtime runs.
    fn create_qp(&self) -> Result<Box<dyn EngineQp>, RdmaError> {
        // async-rdma would panic outside a runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RdmaError::Protocol("the async-rdma engine needs a tokio runtime".into()));
        }
        Ok(Box::new(AsyncRdmaQp::new(&self.device, &self.config)?))
    }
}

/// How often a READ is retried when async-rdma reports its local region as still locked by
/// the previous operation (see the module docs); the lock is released right after.
const LOCKED_RETRIES: u32 = 1000;

/// An async-rdma RC queue pair with its local regions.
struct AsyncRdmaQp {
    rdma: Rdma,
    endpoint: QpEndpoint,
    /// One permit per READ that may be outstanding; sized at connect, when the server's
    /// READ limit is known.
    permits: Semaphore,
    /// Idle local regions of `buffer_size` bytes, created on demand: one per outstanding
    /// READ, as a READ locks its whole region.
    buffers: Mutex<Vec<LocalMr>>,
    /// Set once a READ failed: an RC queue pair in the error state flushes everything after.
    broken: AtomicBool,
    connected: bool,
    config: AsyncRdmaConfig,
}

impl AsyncRdmaQp {
    fn new(device: &DeviceFacts, config: &AsyncRdmaConfig) -> Result<Self, RdmaError> {
        let depth = u32::try_from(config.queue_depth).expect("checked at open");
        let max_read_atomic = device.max_read_atomic.min(u8::try_from(depth).unwrap_or(u8::MAX));
        let psn = random_psn();
        let rdma = RdmaBuilder::default()
            .set_dev(&device.name)
            .set_port_num(PORT)
            .set_gid_index(usize::from(device.gid_index))
            .set_conn_type(ConnectionType::RCIBV)
            .set_raw(true)
            .set_mtu(mtu_of(device.mtu)?)
            // Queues sized for `depth` READs in flight, twice over: a READ whose caller gave
            // up releases its permit before its work request completes. No receive is
            // ever posted.
            .set_qp_max_send_wr(depth.saturating_mul(2))
            .set_qp_max_recv_wr(1)
            .set_qp_max_send_sge(1)
            .set_qp_max_recv_sge(1)
            .set_cq_size(depth.saturating_mul(4).max(16))
            .set_max_cqe(i32::try_from(depth).unwrap_or(i32::MAX))
            .set_max_rd_atomic(max_read_atomic)
            // The server never reads or writes our memory: no remote access to the QP or
            // to the local regions.
            .set_qp_access(AccessFlag::LocalWrite.into())
            .set_mr_access(AccessFlag::LocalWrite.into())
            .set_max_dest_rd_atomic(0)
            .set_sq_psn(psn)
            // ~67 ms per try, 7 tries, as the sideway side does.
            .set_timeout(14)
            .set_retry_cnt(7)
            .set_rnr_retry(7)
            .build()
            .map_err(|e| RdmaError::NoDevice(format!("async-rdma on {}: {e}", device.name)))?;
        let ours = rdma.get_qp_endpoint();
        let endpoint = QpEndpoint {
            qp_num: *ours.qp_num(),
            psn,
            gid: *ours.gid().as_raw(),
            lid: *ours.lid(),
            mtu: device.mtu,
            max_read_atomic,
        };
        Ok(Self {
            rdma,
            endpoint,
            permits: Semaphore::new(0),
            buffers: Mutex::new(Vec::with_capacity(config.queue_depth)),
            broken: AtomicBool::new(false),
            connected: false,
            config: config.clone(),
        })
    }

    /// One READ of at most one buffer.
    async fn read_chunk(&self, remote_addr: u64, rkey: u32, len: usize) -> Result<Vec<u8>, RdmaError> {
        let remote_start = usize::try_from(remote_addr)
            .map_err(|_| RdmaError::Protocol(format!("remote address {remote_addr:#x}")))?;
        let _permit =
            self.permits.acquire().await.map_err(|_| RdmaError::Transfer("queue pair closed".into()))?;
        if self.broken.load(Ordering::Acquire) {
            return Err(RdmaError::Transfer("an earlier READ failed on this queue pair".into()));
        }
        let mut buffer = self.take_buffer()?;
        let remote = RemoteMr::new(MrToken {
            addr: remote_start,
            len,
            rkey,
            // async-rdma only consults the deadline for regions its agent leased.
            ddl: SystemTime::now() + self.config.read_timeout,
            access: 0,
        });
        match tokio::time::timeout(self.config.read_timeout, self.read_into(&mut buffer, &remote, len)).await
        {
            Ok(Ok(())) => {
                let data = buffer.as_slice()[..len].to_vec();
                self.buffers.lock().expect("buffer pool lock").push(buffer);
                Ok(data)
            }
            // The buffer is dropped, not pooled: a work request that was posted and never
            // completed still holds it (async-rdma keeps it alive until then).
            Ok(Err(error)) => {
                self.broken.store(true, Ordering::Release);
                Err(error)
            }
            Err(_elapsed) => {
                self.broken.store(true, Ordering::Release);
                Err(RdmaError::Transfer(format!(
                    "READ of {len} bytes not completed within {:?}",
                    self.config.read_timeout
                )))
            }
        }
    }

    async fn read_into(&self, buffer: &mut LocalMr, remote: &RemoteMr, len: usize) -> Result<(), RdmaError> {
        let mut locked = 0;
        loop {
            let mut target = buffer.get_mut(0..len).expect("len <= buffer_size: reads are split");
            match self.rdma.read(&mut target, remote).await {
                Ok(()) => return Ok(()),
                Err(e) if is_locked_by_other_ops(&e) && locked < LOCKED_RETRIES => {
                    locked += 1;
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(RdmaError::Transfer(format!("async-rdma READ of {len} bytes: {e}"))),
            }
        }
    }

    /// An idle local region, or a new one (at most one per permit is ever in use).
    fn take_buffer(&self) -> Result<LocalMr, RdmaError> {
        if let Some(buffer) = self.buffers.lock().expect("buffer pool lock").pop() {
            return Ok(buffer);
        }
        let size = self.config.buffer_size;
        let layout = Layout::from_size_align(size, 4096).expect("checked at open");
        let buffer = self
            .rdma
            .alloc_local_mr_with_access(layout, AccessFlag::LocalWrite.into())
            .map_err(|e| RdmaError::Transfer(format!("registering a {size}-byte local region: {e}")))?;
        debug_assert_eq!(buffer.length(), size);
        Ok(buffer)
    }
}

impl EngineQp for AsyncRdmaQp {
    fn endpoint(&self) -> QpEndpoint {
        self.endpoint
    }

    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), RdmaError> {
        if self.connected {
            return Err(RdmaError::Protocol("the queue pair is connected already".into()));
        }
        if remote.mtu < self.endpoint.mtu {
            return Err(RdmaError::Transfer(format!(
                "the server's path MTU {} is below ours ({}), which async-rdma fixed when the queue pair was built",
                remote.mtu, self.endpoint.mtu
            )));
        }
        let server: QueuePairEndpoint = QueuePairEndpointBuilder::default()
            .qp_num(remote.qp_num)
            .lid(remote.lid)
            .gid(Gid::from_raw(remote.gid))
            .build()
            .map_err(|e| RdmaError::Protocol(format!("server endpoint: {e}")))?;
        // In raw mode `ibv_connect` only modifies the queue pair (RTR, RTS): its future is
        // ready on the first poll, so the trait's synchronous connect can drive it.
        let connecting = pin!(self.rdma.ibv_connect(server));
        match connecting.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => {
                return Err(RdmaError::Transfer(format!("connecting to QP {:#x}: {e}", remote.qp_num)));
            }
            Poll::Pending => return Err(RdmaError::Transfer("async-rdma's connect did not complete".into())),
        }
        // READs in flight: our queue depth, within what the server's responder accepts.
        let in_flight = self.config.queue_depth.min(usize::from(remote.max_read_atomic.max(1)));
        self.permits.add_permits(in_flight);
        self.connected = true;
        Ok(())
    }

    fn read(&self, remote_addr: u64, rkey: u32, len: u32) -> ReadFuture<'_> {
        Box::pin(async move {
            if !self.connected {
                return Err(RdmaError::Protocol("READ on a queue pair that is not connected".into()));
            }
            let len = len as usize;
            if remote_addr.checked_add(len as u64).is_none() {
                return Err(RdmaError::Protocol(format!("READ of {len} bytes at {remote_addr:#x} wraps")));
            }
            let chunk = self.config.buffer_size;
            let reads = (0..len).step_by(chunk).map(|start| {
                let part = chunk.min(len - start);
                self.read_chunk(remote_addr + start as u64, rkey, part)
            });
            let parts = futures_util::future::try_join_all(reads).await?;
            if parts.len() == 1 {
                return Ok(parts.into_iter().next().expect("one part"));
            }
            Ok(parts.concat())
        })
    }
}

/// async-rdma's message when a local region is still held by the previous operation.
fn is_locked_by_other_ops(error: &std::io::Error) -> bool {
    error.to_string().ends_with("is locked by other ops")
}

fn mtu_of(bytes: u32) -> Result<MTU, RdmaError> {
    Ok(match bytes {
        256 => MTU::MTU256,
        512 => MTU::MTU512,
        1024 => MTU::MTU1024,
        2048 => MTU::MTU2048,
        4096 => MTU::MTU4096,
        other => return Err(RdmaError::NoDevice(format!("port MTU {other} is not an InfiniBand MTU"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_ib_mtu_and_refuses_others() {
        for (bytes, expected) in [(256, 1), (512, 2), (1024, 3), (2048, 4), (4096, 5)] {
            assert_eq!(u32::from(mtu_of(bytes).unwrap()), expected, "{bytes}");
        }
        for bytes in [0, 1000, 1500, 9000] {
            assert!(mtu_of(bytes).is_err(), "{bytes}");
        }
    }

    #[test]
    fn recognises_the_local_region_lock_race() {
        let io = |m: &str| std::io::Error::other(m.to_owned());
        assert!(is_locked_by_other_ops(&io("RwLocalMrInner { addr: 1 } is locked by other ops")));
        assert!(!is_locked_by_other_ops(&io("agent is dropped")));
        assert!(!is_locked_by_other_ops(&io("Remote Access Error: ...")));
    }

    #[test]
    fn refuses_unusable_sizes() {
        let device = DeviceChoice::Name("rxe0".into());
        for (depth, buffer) in [(0, 4096), (16, 0), (16, 1 << 33)] {
            let config = AsyncRdmaConfig {
                queue_depth: depth,
                buffer_size: buffer,
                ..AsyncRdmaConfig::new(device.clone())
            };
            assert!(matches!(AsyncRdmaEngine::open(config), Err(RdmaError::Protocol(_))), "{depth} {buffer}");
        }
    }

    /// The host has no RDMA device: opening the engine says so, without panicking.
    #[test]
    fn no_device_is_no_device() {
        let config = AsyncRdmaConfig::new(DeviceChoice::Name("no-such-rdma-device".into()));
        assert!(matches!(AsyncRdmaEngine::open(config), Err(RdmaError::NoDevice(_))));
    }
}
