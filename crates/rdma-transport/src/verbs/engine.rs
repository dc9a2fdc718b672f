//! The default client engine, on sideway: one RC queue pair per session, a pool of
//! registered landing buffers (one per outstanding READ), and completions found by
//! polling the completion queue without ever blocking the async runtime:
//!
//! - one waiting READ's future at a time (the one that holds the polling lock) polls
//!   the CQ each time it is polled and, if its completion is not there yet, wakes itself
//!   and yields: a busy poll that goes through the runtime's scheduler, so other tasks
//!   keep running, and a completion is seen as soon as it lands with no thread hand-off
//!   (on the 1-vCPU Soft-RoCE guest a hand-off to a poller thread cost ~40% latency).
//!   The other waiting READs sleep until their completion is delivered; when the
//!   polling one leaves, it wakes them and the first to run takes over. One poller, not one per
//!   READ: many spinning readers took the CPU from the (software) device and halved
//!   throughput;
//! - a background thread polls every millisecond while READs are outstanding, for
//!   READs whose reader went away (a timeout: their landing buffers come back only once
//!   the device is done with them) and to bound any gap in the hand-over.
//!
//! A READ larger than one buffer is split into buffer-sized READs, all outstanding at
//! once (up to the queue depth). A failed completion marks the queue pair broken: the
//! waiting READ and every later one fail with [`RdmaError::Transfer`], and the client
//! opens a new session.

use std::collections::HashMap;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use sideway::ibverbs::AccessFlags;
use sideway::ibverbs::completion::{BasicCompletionQueue, PollCompletionQueueError, WorkCompletionStatus};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendGuard, QueuePair, SetScatterGatherEntry, WorkRequestFlags,
};
use tokio::sync::{Semaphore, oneshot};

use super::{Device, DeviceChoice, random_psn};
use crate::endpoint::QpEndpoint;
use crate::engine::{EngineQp, ReadEngine, ReadFuture};
use crate::error::RdmaError;

/// How the sideway engine is set up.
#[derive(Clone, Debug)]
pub struct SidewayConfig {
    /// The device to use.
    pub device: DeviceChoice,
    /// READs kept outstanding per queue pair (and landing buffers registered for them).
    pub queue_depth: usize,
    /// Bytes per landing buffer: the largest single READ; larger reads are split.
    pub buffer_size: usize,
}

impl SidewayConfig {
    /// Defaults for `device`: 16 outstanding READs of up to 1 MiB each.
    pub fn new(device: DeviceChoice) -> Self {
        Self { device, queue_depth: 16, buffer_size: 1 << 20 }
    }
}

/// The sideway engine: an open device and how its queue pairs are set up.
#[derive(Debug)]
pub struct SidewayEngine {
    device: Arc<Device>,
    config: SidewayConfig,
}

impl SidewayEngine {
    /// Opens the device; [`RdmaError::NoDevice`] when there is none.
    pub fn open(config: SidewayConfig) -> Result<Self, RdmaError> {
        if config.queue_depth == 0 || config.buffer_size == 0 || config.buffer_size > u32::MAX as usize {
            return Err(RdmaError::Protocol("queue depth and buffer size must be positive (< 4 GiB)".into()));
        }
        Ok(Self { device: Device::open(&config.device)?, config })
    }
}

impl ReadEngine for SidewayEngine {
    fn name(&self) -> &'static str {
        "sideway"
    }

    fn create_qp(&self) -> Result<Box<dyn EngineQp>, RdmaError> {
        Ok(Box::new(SidewayQp::new(Arc::clone(&self.device), &self.config)?))
    }
}

/// Landing buffers: one registered allocation cut into `depth` slots. A slot is taken
/// for each posted READ and given back once its completion was consumed (by the reader,
/// or by the poller when the reader gave up), never while the device may write it.
struct Buffers {
    // Field order is drop order: deregister before freeing.
    region: Arc<MemoryRegion>,
    _memory: Box<[u8]>,
    base: *mut u8,
    slot_size: usize,
    free: Mutex<Vec<usize>>,
    /// One permit per free slot.
    permits: Semaphore,
}

// SAFETY: `base` points into `_memory`, which lives as long as `Buffers`; each slot is
// touched by one party at a time (the device while its READ is posted, then the reader).
unsafe impl Send for Buffers {}
// SAFETY: as above; the free list and semaphore are synchronized.
unsafe impl Sync for Buffers {}

impl Buffers {
    fn new(device: &Device, depth: usize, slot_size: usize) -> Result<Self, RdmaError> {
        let mut memory = vec![0u8; depth * slot_size].into_boxed_slice();
        let base = memory.as_mut_ptr();
        // SAFETY: `memory` is owned by the returned value and outlives `region` (drop order).
        let region = unsafe { device.register(base, memory.len(), AccessFlags::LocalWrite) }
            .map_err(|e| RdmaError::Transfer(format!("registering landing buffers: {e}")))?;
        Ok(Self {
            region,
            _memory: memory,
            base,
            slot_size,
            free: Mutex::new((0..depth).collect()),
            permits: Semaphore::new(depth),
        })
    }

    /// A free slot, waiting (asynchronously) for one.
    async fn take(&self) -> Result<usize, RdmaError> {
        let permit = self.permits.acquire().await.map_err(|_| RdmaError::Transfer("engine closed".into()))?;
        permit.forget();
        Ok(self.free.lock().expect("buffer list lock").pop().expect("a permit means a free slot"))
    }

    fn give_back(&self, slot: usize) {
        self.free.lock().expect("buffer list lock").push(slot);
        self.permits.add_permits(1);
    }

    fn addr(&self, slot: usize) -> u64 {
        self.base as u64 + (slot * self.slot_size) as u64
    }

    /// # Safety
    /// The slot's READ completed successfully and the slot has not been given back.
    unsafe fn bytes(&self, slot: usize, len: usize) -> &[u8] {
        // SAFETY: in bounds (len <= slot_size); the device no longer writes it (caller).
        unsafe { std::slice::from_raw_parts(self.base.add(slot * self.slot_size), len) }
    }
}

/// A posted READ waiting for its completion.
struct Pending {
    slot: usize,
    done: oneshot::Sender<Result<(), String>>,
}

/// What the readers and the poller thread share.
struct Shared {
    // Field order is drop order: the QP goes before the CQ it uses and the buffers it
    // may write.
    qp: Mutex<BasicQueuePair>,
    cq: Arc<BasicCompletionQueue>,
    buffers: Buffers,
    pending: Mutex<HashMap<u64, Pending>>,
    outstanding: AtomicUsize,
    next_wr_id: AtomicU64,
    broken: Mutex<Option<String>>,
    /// Held by whoever polls the CQ.
    polling: Mutex<()>,
    /// Waiting readers to wake when the polling one leaves.
    standby: Mutex<Vec<Waker>>,
    /// Wakes the background thread when a READ is posted (or on shutdown).
    wake: (Mutex<()>, Condvar),
    stop: AtomicBool,
}

impl Shared {
    fn broken(&self) -> Option<String> {
        self.broken.lock().expect("broken lock").clone()
    }

    fn break_with(&self, why: String) {
        let mut broken = self.broken.lock().expect("broken lock");
        if broken.is_none() {
            tracing::warn!(reason = %why, "RDMA queue pair failed");
            *broken = Some(why);
        }
    }

    /// Delivers one completion; the slot goes back here if its reader is gone.
    fn complete(&self, wr_id: u64, result: Result<(), String>) {
        let Some(pending) = self.pending.lock().expect("pending lock").remove(&wr_id) else { return };
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        if let Err(why) = &result {
            self.break_with(why.clone());
        }
        if pending.done.send(result).is_err() {
            self.buffers.give_back(pending.slot);
        }
    }

    /// Drains the completion queue and delivers what it holds, unless someone else is
    /// polling right now (who then delivers for everyone). Returns whether it polled.
    fn poll_completions(&self) -> bool {
        let Ok(_polling) = self.polling.try_lock() else { return false };
        self.drain_cq();
        true
    }

    /// Delivers what the completion queue holds (the caller holds `polling`).
    fn drain_cq(&self) {
        match self.cq.start_poll() {
            Ok(poller) => {
                let done: Vec<(u64, u32, u32)> =
                    poller.map(|wc| (wc.wr_id(), wc.status(), wc.vendor_err())).collect();
                for (wr_id, status, vendor_err) in done {
                    let result = if status == WorkCompletionStatus::Success as u32 {
                        Ok(())
                    } else {
                        Err(format!(
                            "READ completed with {:?} (vendor error {vendor_err:#x})",
                            WorkCompletionStatus::from(status)
                        ))
                    };
                    self.complete(wr_id, result);
                }
            }
            Err(PollCompletionQueueError::CompletionQueueEmpty) => {}
            Err(e) => {
                let why = format!("polling the completion queue: {e}");
                self.break_with(why.clone());
                let ids: Vec<u64> = self.pending.lock().expect("pending lock").keys().copied().collect();
                for id in ids {
                    self.complete(id, Err(why.clone()));
                }
            }
        }
    }

    /// A reader leaving while READs are outstanding wakes the waiting ones; the first
    /// to poll takes over the polling (see [`SidewayQp::read_chunk`]).
    fn hand_over(&self) {
        if self.outstanding.load(Ordering::Acquire) > 0 {
            let waiting = std::mem::take(&mut *self.standby.lock().expect("standby lock"));
            waiting.into_iter().for_each(Waker::wake);
        }
    }

    /// Registers a waiting (not polling) reader for [`Shared::hand_over`].
    fn stand_by(&self, waker: &Waker) {
        let mut standby = self.standby.lock().expect("standby lock");
        if !standby.iter().any(|w| w.will_wake(waker)) {
            standby.push(waker.clone());
        }
    }

    /// The background thread: polls every millisecond while READs are outstanding (for
    /// READs nobody waits for any more, and to bound any gap between two polling
    /// readers), every 10 ms otherwise.
    fn reap_loop(&self) {
        while !self.stop.load(Ordering::Acquire) {
            let (lock, condvar) = &self.wake;
            let guard = lock.lock().expect("wake lock");
            let idle = self.outstanding.load(Ordering::Acquire) == 0;
            let nap = if idle { Duration::from_millis(10) } else { Duration::from_millis(1) };
            if !self.stop.load(Ordering::Acquire) {
                let _ = condvar.wait_timeout(guard, nap);
            }
            if self.outstanding.load(Ordering::Acquire) > 0 {
                self.poll_completions();
            }
        }
    }

    /// Posts one READ of `len` bytes into `slot`.
    fn post(&self, wr_id: u64, slot: usize, remote_addr: u64, rkey: u32, len: u32) -> Result<(), String> {
        let mut qp = self.qp.lock().expect("qp lock");
        let mut guard = qp.start_post_send();
        let wr = guard.construct_wr(wr_id, WorkRequestFlags::Signaled).setup_read(rkey, remote_addr);
        // SAFETY: the slot is registered (lkey), `len` <= slot size, and it is ours until
        // the completion is consumed.
        unsafe { wr.setup_sge(self.buffers.region.lkey(), self.buffers.addr(slot), len) };
        guard.post().map_err(|e| format!("posting a READ: {e}"))
    }
}

/// A sideway RC queue pair with its poller thread.
struct SidewayQp {
    shared: Arc<Shared>,
    device: Arc<Device>,
    endpoint: QpEndpoint,
    poller: Option<JoinHandle<()>>,
}

impl SidewayQp {
    fn new(device: Arc<Device>, config: &SidewayConfig) -> Result<Self, RdmaError> {
        let depth = config.queue_depth;
        let cq = device.new_cq(u32::try_from(depth * 2).unwrap_or(u32::MAX))?;
        let qp = device.new_qp(&cq, u32::try_from(depth).unwrap_or(u32::MAX))?;
        let max_read_atomic = device.max_read_atomic().min(u8::try_from(depth).unwrap_or(u8::MAX));
        let endpoint = device.endpoint(&qp, random_psn(), max_read_atomic);
        let shared = Arc::new(Shared {
            qp: Mutex::new(qp),
            cq,
            buffers: Buffers::new(&device, depth, config.buffer_size)?,
            pending: Mutex::new(HashMap::new()),
            outstanding: AtomicUsize::new(0),
            next_wr_id: AtomicU64::new(1),
            broken: Mutex::new(None),
            polling: Mutex::new(()),
            standby: Mutex::new(Vec::new()),
            wake: (Mutex::new(()), Condvar::new()),
            stop: AtomicBool::new(false),
        });
        let reaper = Arc::clone(&shared);
        let poller = std::thread::Builder::new()
            .name("rdma-cq-reaper".into())
            .spawn(move || reaper.reap_loop())
            .map_err(|e| RdmaError::Transfer(format!("starting the completion poller: {e}")))?;
        Ok(Self { shared, device, endpoint, poller: Some(poller) })
    }

    /// One READ of at most one buffer into `out`.
    async fn read_chunk(
        &self,
        remote_addr: u64,
        rkey: u32,
        out: &mut [MaybeUninit<u8>],
    ) -> Result<(), RdmaError> {
        if let Some(why) = self.shared.broken() {
            return Err(RdmaError::Transfer(why));
        }
        let slot = self.shared.buffers.take().await?;
        let wr_id = self.shared.next_wr_id.fetch_add(1, Ordering::Relaxed);
        let (done, waiting) = oneshot::channel();
        self.shared.pending.lock().expect("pending lock").insert(wr_id, Pending { slot, done });
        self.shared.outstanding.fetch_add(1, Ordering::AcqRel);
        let len = out.len() as u32;
        if let Err(why) = self.shared.post(wr_id, slot, remote_addr, rkey, len) {
            // Not posted: nothing will complete it.
            if self.shared.pending.lock().expect("pending lock").remove(&wr_id).is_some() {
                self.shared.outstanding.fetch_sub(1, Ordering::AcqRel);
                self.shared.buffers.give_back(slot);
            }
            self.shared.break_with(why.clone());
            return Err(RdmaError::Transfer(why));
        }
        let mut waiting = Waiting { receiver: waiting, slot, shared: &self.shared, consumed: false };
        // One waiting reader at a time polls the CQ, busy but through the scheduler: if
        // its completion is not in yet it asks to be polled again and yields. The others
        // wait to be woken by their completion's delivery, or by the polling reader when
        // it leaves, so that one of them takes over (see the module docs).
        let result = std::future::poll_fn(|cx| {
            let leading = self.shared.poll_completions();
            match Pin::new(&mut waiting.receiver).poll(cx) {
                Poll::Ready(result) => {
                    self.shared.hand_over();
                    Poll::Ready(result.map_err(|_| ()))
                }
                Poll::Pending if leading => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => {
                    self.shared.stand_by(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await;
        waiting.consumed = true;
        let outcome = match result {
            Ok(Ok(())) => {
                // SAFETY: the READ completed successfully and the slot is still ours.
                let bytes = unsafe { self.shared.buffers.bytes(slot, out.len()) };
                // SAFETY: `out` has room for exactly `bytes.len()` bytes; they do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), bytes.len())
                };
                Ok(())
            }
            Ok(Err(why)) => Err(RdmaError::Transfer(why)),
            Err(()) => Err(RdmaError::Transfer("the completion poller stopped".into())),
        };
        self.shared.buffers.give_back(slot);
        outcome
    }
}

/// A reader waiting for its completion. If the reader is dropped first (a timeout), the
/// slot must not be reused until the device is done with it: closing the channel makes
/// the poller give it back when the completion arrives, unless it already arrived.
struct Waiting<'a> {
    receiver: oneshot::Receiver<Result<(), String>>,
    slot: usize,
    shared: &'a Shared,
    consumed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.consumed {
            return;
        }
        self.receiver.close();
        if self.receiver.try_recv().is_ok() {
            self.shared.buffers.give_back(self.slot);
        }
    }
}

impl EngineQp for SidewayQp {
    fn endpoint(&self) -> QpEndpoint {
        self.endpoint
    }

    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), RdmaError> {
        let mut qp = self.shared.qp.lock().expect("qp lock");
        self.device.connect(&mut qp, &self.endpoint, remote, AccessFlags::none())
    }

    fn read(&self, remote_addr: u64, rkey: u32, len: u32) -> ReadFuture<'_> {
        Box::pin(async move {
            // Not zeroed first: every byte is written by one chunk's copy (a large zeroed
            // buffer costs a pass over memory the CPU-bound software device needs).
            let mut out = Vec::with_capacity(len as usize);
            let chunk = self.shared.buffers.slot_size;
            let reads = out.spare_capacity_mut()[..len as usize]
                .chunks_mut(chunk)
                .enumerate()
                .map(|(i, part)| self.read_chunk(remote_addr + (i * chunk) as u64, rkey, part));
            futures_util::future::try_join_all(reads).await?;
            // SAFETY: every chunk completed and copied its bytes: all `len` are initialized.
            unsafe { out.set_len(len as usize) };
            Ok(out)
        })
    }
}

impl Drop for SidewayQp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let (lock, condvar) = &self.shared.wake;
            let _guard = lock.lock().expect("wake lock");
            condvar.notify_one();
        }
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}
