//! The client engine on async-rdma 0.5.0 (cargo feature `async-rdma`; the crate is GPL-3.0).
//!
//! async-rdma cannot register caller memory, so it serves only as a client: it creates an RC
//! queue pair, hands out its endpoint, connects to the server's endpoint with `ibv_connect`
//! (endpoints travel over the control plane, not through async-rdma's own TCP or agent), and
//! issues one-sided READs into local memory regions it allocates itself.
//!
//! What async-rdma gets wrong by default, and what this engine does about it:
//! - Defaults sized for its own demos (MTU 512, one outstanding READ, 10 send WRs, 16 CQ
//!   entries): the engine sets the port's MTU, `max_rd_atomic`, and queue sizes from the
//!   configured depth.
//! - `read` locks the *whole* local memory region for the operation: the engine keeps one
//!   local region per outstanding READ, and a semaphore of `depth` permits, which also keeps
//!   the send queue from overflowing (a failed post would leave that region locked forever).
//! - Its completion path wakes the waiting task before it drops the region's lock, so on a
//!   multi-thread runtime the next READ into the same region can fail with "... is locked by
//!   other ops". That check runs before anything is posted, so the engine retries it, a
//!   bounded number of times.
//! - Its agent (`set_raw(false)`) exchanges messages over the QP and sleeps 1 s on connect:
//!   the engine runs raw.

use std::alloc::Layout;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_rdma::{
    AccessFlag, ConnectionType, Gid, LocalMr, LocalMrReadAccess, MTU, MrAccess, MrToken, QueuePairEndpoint,
    QueuePairEndpointBuilder, Rdma, RdmaBuilder, RemoteMr,
};
use tokio::sync::Semaphore;

/// Where a queue pair can be reached: what each side tells the other before connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpEndpoint {
    /// The queue pair number (24 bits).
    pub qp_num: u32,
    /// The port's LID (0 on RoCE, where the GID addresses the port).
    pub lid: u16,
    /// The GID the queue pair sends from (RoCE v2: an IPv4-mapped or IPv6 address).
    pub gid: [u8; 16],
    /// The first packet sequence number this side sends with (24 bits): the peer's
    /// receive PSN.
    pub psn: u32,
}

/// How the engine opens the device and sizes its queue pair.
#[derive(Debug, Clone)]
pub struct AsyncRdmaConfig {
    /// The RDMA device, e.g. `rxe0`.
    pub device: String,
    /// The device port (rxe has only port 1).
    pub port: u8,
    /// The local GID index (RoCE v2, matching the address the server is reached at).
    pub gid_index: u8,
    /// Path MTU in bytes (256, 512, 1024, 2048 or 4096): the port's active MTU, or the
    /// smaller of the two sides' when they differ.
    pub path_mtu: u32,
    /// READs in flight at once on the connection.
    pub depth: usize,
    /// RDMA READs this side may have outstanding at the responder (`max_rd_atomic`); the
    /// server's `max_dest_rd_atomic` should be at least this. 1..=`depth` makes sense.
    pub max_rd_atomic: u8,
    /// Size of each pooled local buffer; larger READs get a buffer of their own.
    pub buffer_bytes: usize,
    /// A READ not completed within this is reported as a broken connection.
    pub read_timeout: Duration,
}

impl AsyncRdmaConfig {
    /// Defaults for `device`: port 1, depth 16, 1 MiB buffers, 30 s READ timeout (a 1 MiB
    /// READ takes ~20 ms even under full emulation).
    pub fn new(device: impl Into<String>, gid_index: u8, path_mtu: u32) -> Self {
        AsyncRdmaConfig {
            device: device.into(),
            port: 1,
            gid_index,
            path_mtu,
            depth: 16,
            max_rd_atomic: 16,
            buffer_bytes: 1 << 20,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// What went wrong, in the terms a caller decides on.
#[derive(Debug, thiserror::Error)]
pub enum AsyncRdmaError {
    /// No usable device, or verbs resources could not be created: RDMA is unavailable here
    /// (fall back to another transport).
    #[error("RDMA unavailable: {0}")]
    Unavailable(String),
    /// The connection failed or went into the error state (a lost peer, a timeout, a flushed
    /// work request): reconnect or fall back.
    #[error("RDMA connection broken: {0}")]
    Broken(String),
    /// The server refused the READ's region token or range (a region retired since it was
    /// located, or a range outside it). The queue pair is in the error state afterwards.
    #[error("RDMA READ refused by the server (region token or range no longer valid): {0}")]
    RemoteAccess(String),
    /// The request itself is unusable (zero length, a length over the device's limit, a
    /// malformed endpoint); nothing was sent.
    #[error("invalid RDMA request: {0}")]
    Invalid(String),
}

/// How often a READ is retried when async-rdma reports its local region as still locked by
/// the previous operation (see the module docs); the lock is released microseconds later.
const LOCKED_RETRIES: u32 = 1000;

/// A queue pair created on the device and not yet connected: its endpoint goes to the
/// server, the server's comes back to [`PendingQp::connect`].
pub struct PendingQp {
    rdma: Rdma,
    local: QpEndpoint,
    config: AsyncRdmaConfig,
}

impl std::fmt::Debug for PendingQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingQp").field("local", &self.local).finish_non_exhaustive()
    }
}

impl PendingQp {
    /// Opens the device and creates the queue pair. Must run inside a tokio runtime
    /// (async-rdma spawns its completion poller there); the connection's READs must run
    /// on the same runtime.
    pub fn create(config: &AsyncRdmaConfig) -> Result<Self, AsyncRdmaError> {
        let mtu = mtu_of(config.path_mtu)?;
        if config.depth == 0 || config.max_rd_atomic == 0 || config.buffer_bytes == 0 {
            return Err(AsyncRdmaError::Invalid("depth, max_rd_atomic and buffer_bytes must be > 0".into()));
        }
        let depth = u32::try_from(config.depth)
            .map_err(|_| AsyncRdmaError::Invalid(format!("depth {} too large", config.depth)))?;
        // Our first send PSN: random, so a stale packet of an earlier connection between the
        // same QP numbers is not taken for a new one. 24 bits.
        let psn = rand_psn();
        let rdma = RdmaBuilder::default()
            .set_dev(&config.device)
            .set_port_num(config.port)
            .set_gid_index(usize::from(config.gid_index))
            .set_conn_type(ConnectionType::RCIBV)
            .set_raw(true)
            .set_mtu(mtu)
            // Queues sized for `depth` READs in flight; no receives are ever posted.
            .set_qp_max_send_wr(depth)
            .set_qp_max_recv_wr(1)
            .set_qp_max_send_sge(1)
            .set_qp_max_recv_sge(1)
            .set_cq_size(depth.saturating_mul(2).max(16))
            .set_max_cqe(i32::try_from(depth).unwrap_or(i32::MAX))
            .set_max_rd_atomic(config.max_rd_atomic)
            // The server never READs from us: peers get no access to our memory or QP.
            .set_qp_access(AccessFlag::LocalWrite.into())
            .set_mr_access(AccessFlag::LocalWrite.into())
            .set_max_dest_rd_atomic(0)
            .set_sq_psn(psn)
            // RC defaults of the verbs examples: ~67 ms ACK timeout, 7 retries.
            .set_timeout(14)
            .set_retry_cnt(7)
            .set_rnr_retry(7)
            .build()
            .map_err(|e| AsyncRdmaError::Unavailable(format!("opening {}: {e}", config.device)))?;
        let ep = rdma.get_qp_endpoint();
        let local = QpEndpoint { qp_num: *ep.qp_num(), lid: *ep.lid(), gid: *ep.gid().as_raw(), psn };
        Ok(PendingQp { rdma, local, config: config.clone() })
    }

    /// The endpoint to send to the server.
    pub fn endpoint(&self) -> QpEndpoint {
        self.local
    }

    /// Moves the queue pair to RTR and RTS towards `remote`.
    ///
    /// async-rdma fixes the receive PSN when the queue pair is built, before the server's
    /// endpoint is known, so `remote.psn` is not applied: harmless, because the receive PSN
    /// only checks requests the peer *sends* us, and the server only answers our READs,
    /// whose responses follow our own send PSN.
    pub async fn connect(mut self, remote: QpEndpoint) -> Result<AsyncRdmaConnection, AsyncRdmaError> {
        let endpoint: QueuePairEndpoint = QueuePairEndpointBuilder::default()
            .qp_num(remote.qp_num)
            .lid(remote.lid)
            .gid(Gid::from_raw(remote.gid))
            .build()
            .map_err(|e| AsyncRdmaError::Invalid(format!("server endpoint: {e}")))?;
        self.rdma
            .ibv_connect(endpoint)
            .await
            .map_err(|e| AsyncRdmaError::Broken(format!("connecting to QP {:#x}: {e}", remote.qp_num)))?;
        Ok(AsyncRdmaConnection {
            rdma: self.rdma,
            permits: Semaphore::new(self.config.depth),
            buffers: Mutex::new(Vec::with_capacity(self.config.depth)),
            broken: AtomicBool::new(false),
            config: self.config,
        })
    }
}

/// A connected queue pair issuing one-sided READs, up to `depth` at once.
pub struct AsyncRdmaConnection {
    rdma: Rdma,
    permits: Semaphore,
    /// Idle pooled local regions (`buffer_bytes` each); created on demand, at most `depth`.
    buffers: Mutex<Vec<LocalMr>>,
    /// Set once a READ failed: an RC queue pair in the error state flushes everything after.
    broken: AtomicBool,
    config: AsyncRdmaConfig,
}

impl std::fmt::Debug for AsyncRdmaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRdmaConnection")
            .field("depth", &self.config.depth)
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AsyncRdmaConnection {
    /// READs `len` bytes at `remote_addr` of the server's region `rkey`.
    pub async fn read(&self, remote_addr: u64, rkey: u32, len: usize) -> Result<Vec<u8>, AsyncRdmaError> {
        if len == 0 || u32::try_from(len).is_err() {
            return Err(AsyncRdmaError::Invalid(format!("READ length {len} (1 byte to 4 GiB - 1)")));
        }
        let remote_start = usize::try_from(remote_addr)
            .map_err(|_| AsyncRdmaError::Invalid(format!("remote address {remote_addr:#x}")))?;
        if self.is_broken() {
            return Err(AsyncRdmaError::Broken("an earlier READ failed on this connection".into()));
        }
        let _permit =
            self.permits.acquire().await.map_err(|_| AsyncRdmaError::Broken("connection closed".into()))?;
        let mut buffer = self.take_buffer(len)?;
        let remote = RemoteMr::new(MrToken {
            addr: remote_start,
            len,
            rkey,
            // async-rdma only consults the deadline for regions its agent leased.
            ddl: SystemTime::now() + self.config.read_timeout,
            access: 0,
        });
        let outcome =
            tokio::time::timeout(self.config.read_timeout, self.read_into(&mut buffer, &remote, len)).await;
        match outcome {
            Ok(Ok(())) => {
                let data = buffer.as_slice()[..len].to_vec();
                self.return_buffer(buffer);
                Ok(data)
            }
            Ok(Err(error)) => {
                // The buffer may still be registered for a work request that never posted or
                // never completed; dropping it leaves async-rdma's own reference in charge.
                if matches!(error, AsyncRdmaError::Broken(_) | AsyncRdmaError::RemoteAccess(_)) {
                    self.broken.store(true, Ordering::Relaxed);
                }
                Err(error)
            }
            Err(_elapsed) => {
                self.broken.store(true, Ordering::Relaxed);
                Err(AsyncRdmaError::Broken(format!(
                    "READ of {len} bytes not completed within {:?}",
                    self.config.read_timeout
                )))
            }
        }
    }

    /// True once a READ failed or timed out: every later READ would fail too.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    async fn read_into(
        &self,
        buffer: &mut LocalMr,
        remote: &RemoteMr,
        len: usize,
    ) -> Result<(), AsyncRdmaError> {
        let mut locked = 0;
        loop {
            let mut target = buffer
                .get_mut(0..len)
                .ok_or_else(|| AsyncRdmaError::Invalid(format!("{len} bytes exceed the local buffer")))?;
            match self.rdma.read(&mut target, remote).await {
                Ok(()) => return Ok(()),
                Err(e) if is_locked_by_other_ops(&e) && locked < LOCKED_RETRIES => {
                    locked += 1;
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(classify(&e)),
            }
        }
    }

    /// A pooled buffer when `len` fits one, else a region of its own for this READ.
    fn take_buffer(&self, len: usize) -> Result<LocalMr, AsyncRdmaError> {
        if len <= self.config.buffer_bytes
            && let Some(buffer) = self.buffers.lock().unwrap_or_else(|p| p.into_inner()).pop()
        {
            return Ok(buffer);
        }
        let size = len.max(self.config.buffer_bytes);
        let layout = Layout::from_size_align(size, 4096)
            .map_err(|e| AsyncRdmaError::Invalid(format!("buffer of {size} bytes: {e}")))?;
        self.rdma
            .alloc_local_mr_with_access(layout, AccessFlag::LocalWrite.into())
            .map_err(|e| AsyncRdmaError::Unavailable(format!("registering a {size}-byte local buffer: {e}")))
    }

    fn return_buffer(&self, buffer: LocalMr) {
        if buffer.length() == self.config.buffer_bytes {
            let mut pool = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < self.config.depth {
                pool.push(buffer);
            }
        }
    }
}

/// async-rdma's message when a local region is still held by the previous operation.
fn is_locked_by_other_ops(error: &std::io::Error) -> bool {
    error.to_string().ends_with("is locked by other ops")
}

/// Sorts a failed READ by its work-completion status (async-rdma reports it only as text).
fn classify(error: &std::io::Error) -> AsyncRdmaError {
    let message = error.to_string();
    if message.starts_with("Remote Access Error") || message.starts_with("Remote Invalid Request Error") {
        AsyncRdmaError::RemoteAccess(message)
    } else {
        AsyncRdmaError::Broken(message)
    }
}

fn mtu_of(bytes: u32) -> Result<MTU, AsyncRdmaError> {
    Ok(match bytes {
        256 => MTU::MTU256,
        512 => MTU::MTU512,
        1024 => MTU::MTU1024,
        2048 => MTU::MTU2048,
        4096 => MTU::MTU4096,
        other => {
            return Err(AsyncRdmaError::Invalid(format!("path MTU {other} (256, 512, 1024, 2048 or 4096)")));
        }
    })
}

/// A random 24-bit PSN (the standard library's hasher seeds itself from the OS).
fn rand_psn() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::process::id()) & 0x00ff_ffff) as u32
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
            assert!(matches!(mtu_of(bytes), Err(AsyncRdmaError::Invalid(_))), "{bytes}");
        }
    }

    #[test]
    fn sorts_async_rdma_failures() {
        let io = |m: &str| std::io::Error::other(m.to_owned());
        assert!(is_locked_by_other_ops(&io("RwLocalMrInner { .. } is locked by other ops")));
        assert!(!is_locked_by_other_ops(&io("agent is dropped")));
        assert!(matches!(
            classify(&io("Remote Access Error: the rkey ...")),
            AsyncRdmaError::RemoteAccess(_)
        ));
        assert!(matches!(classify(&io("Work Request Flushed Error: ...")), AsyncRdmaError::Broken(_)));
        assert!(matches!(classify(&io("Transport Retry Counter Exceeded: ...")), AsyncRdmaError::Broken(_)));
    }

    #[test]
    fn psns_fit_24_bits() {
        assert!(rand_psn() <= 0x00ff_ffff);
    }

    /// The host has no RDMA device: creating a queue pair must say "unavailable", not panic.
    #[tokio::test]
    async fn no_device_is_unavailable() {
        let config = AsyncRdmaConfig::new("no-such-rdma-device", 1, 1024);
        match PendingQp::create(&config) {
            Err(AsyncRdmaError::Unavailable(message)) => assert!(message.contains("no-such-rdma-device")),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
