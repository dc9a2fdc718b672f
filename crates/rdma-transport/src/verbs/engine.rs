//! The default client engine, on sideway: one RC queue pair per session, a pool of
//! registered landing buffers (one slot per outstanding READ), and completions found by
//! polling the completion queue without ever blocking the async runtime:
//!
//! - a READ's work-request id is its slot's index, and each slot holds its READ's
//!   completion state (an atomic) and its reader's waker: a READ costs no allocation,
//!   channel or map entry beyond its output buffer, and a free slot is one bit of a word;
//! - one waiting reader at a time (the leader) drains the CQ each time it is polled and,
//!   if its completion is not there yet, wakes itself and yields: a busy poll that goes
//!   through the runtime's scheduler, so other tasks keep running, and a completion is
//!   seen as soon as it lands with no thread hand-off (on the 1-vCPU Soft-RoCE guest a
//!   hand-off to a poller thread cost ~40% latency). The other waiting readers sleep
//!   until their completion is delivered; when the leader leaves it wakes them and the
//!   first to run takes over. One poller, not one per READ: spinning readers take the CPU
//!   from a software device;
//! - the READs of a batch (one doorbell) are waited for together, by one future that
//!   leads or sleeps as one reader;
//! - a background thread polls every millisecond while READs are outstanding, for
//!   READs whose reader went away (a timeout: their slots come back only once the device
//!   is done with them) and to bound any gap in the hand-over.
//!
//! A READ larger than one buffer is split into buffer-sized READs, all outstanding at
//! once (up to the queue depth). A failed completion marks the queue pair broken: the
//! waiting READ and every later one fail with [`RdmaError::Transfer`], and the client
//! opens a new session.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use sideway::ibverbs::AccessFlags;
use sideway::ibverbs::completion::{BasicCompletionQueue, PollCompletionQueueError, WorkCompletionStatus};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendGuard, QueuePair, SetScatterGatherEntry, WorkRequestFlags,
};

use super::{Device, DeviceChoice, random_psn};
use crate::endpoint::QpEndpoint;
use crate::engine::{BatchFuture, EngineQp, ReadEngine, ReadFuture, RemoteRead};
use crate::error::RdmaError;

/// The most READs the sideway engine keeps outstanding per queue pair.
pub const MAX_QUEUE_DEPTH: usize = 64;

/// How the sideway engine is set up.
#[derive(Clone, Debug)]
pub struct SidewayConfig {
    /// The device to use.
    pub device: DeviceChoice,
    /// READs kept outstanding per queue pair (and landing buffers registered for them),
    /// 1 to [`MAX_QUEUE_DEPTH`].
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
        if !(1..=MAX_QUEUE_DEPTH).contains(&config.queue_depth)
            || config.buffer_size == 0
            || config.buffer_size > u32::MAX as usize
        {
            return Err(RdmaError::Protocol(format!(
                "queue depth must be 1 to {MAX_QUEUE_DEPTH} and buffer size positive (< 4 GiB)"
            )));
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

/// Where a landing slot is in its round trip. Each transition has one owner: the reader
/// takes a free slot and posts it (FREE -> POSTED), consumes its completion (OK/FAILED ->
/// FREE) or gives up first (POSTED -> ABANDONED); whoever drains the CQ delivers the
/// completion (POSTED -> OK/FAILED) or, for an abandoned READ, frees the slot
/// (ABANDONED -> FREE) once the device is done with it.
mod slot_state {
    pub const FREE: u8 = 0;
    pub const POSTED: u8 = 1;
    pub const OK: u8 = 2;
    pub const FAILED: u8 = 3;
    pub const ABANDONED: u8 = 4;
}
use slot_state::{ABANDONED, FAILED, FREE, OK, POSTED};

/// One landing slot: a READ's completion state and the reader to wake when it lands. A
/// READ's work-request id is its slot's index, so a completion finds its reader without
/// any lookup.
struct Slot {
    state: AtomicU8,
    waker: AtomicWaker,
}

/// Heap memory and its registration for local writes, owned together: dropping it
/// deregisters first and frees after, since the device may write registered memory
/// until it is deregistered. The order is this type's `Drop`, not a field-order
/// convention.
struct RegisteredBuffer {
    region: Option<Arc<MemoryRegion>>,
    /// Freed when dropped, after `Drop::drop` below deregistered it.
    _memory: Box<[u8]>,
    /// The first byte of `_memory`.
    base: *mut u8,
    lkey: u32,
}

impl RegisteredBuffer {
    fn new(device: &Device, len: usize) -> Result<Self, RdmaError> {
        let mut memory = vec![0u8; len].into_boxed_slice();
        let base = memory.as_mut_ptr();
        // SAFETY: `memory` is owned by the returned value, which deregisters before it
        // frees it (see `Drop`); nothing else borrows it.
        let region = unsafe { device.register(base, len, AccessFlags::LocalWrite) }
            .map_err(|e| RdmaError::Transfer(format!("registering landing buffers: {e}")))?;
        let lkey = region.lkey();
        Ok(Self { region: Some(region), _memory: memory, base, lkey })
    }
}

impl Drop for RegisteredBuffer {
    fn drop(&mut self) {
        // Deregistered here; `_memory` is freed after this returns.
        self.region.take();
    }
}

/// Landing buffers: one registered allocation cut into `depth` slots. A slot is taken
/// for each posted READ and given back once its completion was consumed (by the reader,
/// or by the CQ drainer when the reader gave up), never while the device may write it.
struct Buffers {
    memory: RegisteredBuffer,
    slot_size: usize,
    slots: Box<[Slot]>,
    /// Bit i set: slot i is free. One word, so taking and giving back a slot is one
    /// atomic operation on the per-READ path (hence at most [`MAX_QUEUE_DEPTH`] slots).
    free: AtomicU64,
    /// Readers waiting for a free slot (all are woken when one comes back: a woken reader
    /// may have been dropped meanwhile, and waking them all never loses the slot).
    slot_waiters: Mutex<Vec<Waker>>,
    /// How many wakers `slot_waiters` holds, so that giving a slot back when nobody
    /// waits takes no lock.
    slot_waiter_count: AtomicUsize,
}

// SAFETY: `memory.base` points into the allocation `memory` owns, which lives as long
// as `Buffers`; each slot is touched by one party at a time (the device while its READ
// is posted, then the reader).
unsafe impl Send for Buffers {}
// SAFETY: as above; the slot states, free mask and waiter list are synchronized.
unsafe impl Sync for Buffers {}

impl Buffers {
    fn new(device: &Device, depth: usize, slot_size: usize) -> Result<Self, RdmaError> {
        let memory = RegisteredBuffer::new(device, depth * slot_size)?;
        let slots =
            (0..depth).map(|_| Slot { state: AtomicU8::new(FREE), waker: AtomicWaker::new() }).collect();
        Ok(Self {
            memory,
            slot_size,
            slots,
            free: AtomicU64::new(u64::MAX >> (64 - depth)),
            slot_waiters: Mutex::new(Vec::new()),
            slot_waiter_count: AtomicUsize::new(0),
        })
    }

    fn try_take(&self) -> Option<usize> {
        // SeqCst here and in `give_back`: a reader that lists itself as waiting and then
        // finds no free slot is sure the next give-back sees it listed.
        let mut free = self.free.load(Ordering::SeqCst);
        while free != 0 {
            let slot = free.trailing_zeros() as usize;
            match self.free.compare_exchange_weak(
                free,
                free & !(1 << slot),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(slot),
                Err(now) => free = now,
            }
        }
        None
    }

    /// `n` free slots taken at once (a batch never holds some while waiting for the
    /// others, which could leave every reader waiting on every other), or `None`.
    fn try_take_many(&self, n: usize) -> Option<u64> {
        let mut free = self.free.load(Ordering::SeqCst);
        while free.count_ones() as usize >= n {
            let mut taken = 0u64;
            let mut rest = free;
            for _ in 0..n {
                let lowest = rest & rest.wrapping_neg();
                taken |= lowest;
                rest &= !lowest;
            }
            match self.free.compare_exchange_weak(free, rest, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(taken),
                Err(now) => free = now,
            }
        }
        None
    }

    /// `n` free slots (as a bit set), waiting (asynchronously) until there are.
    async fn take_many(&self, n: usize) -> u64 {
        std::future::poll_fn(|cx| self.poll_take(cx, || self.try_take_many(n))).await
    }

    /// A free slot, waiting (asynchronously) for one.
    async fn take(&self) -> usize {
        std::future::poll_fn(|cx| self.poll_take(cx, || self.try_take())).await
    }

    /// `try_take`'s answer, or Pending with the reader listed to be woken by the next
    /// give-back.
    fn poll_take<T>(&self, cx: &mut std::task::Context<'_>, try_take: impl Fn() -> Option<T>) -> Poll<T> {
        if let Some(taken) = try_take() {
            return Poll::Ready(taken);
        }
        {
            let mut waiters = self.slot_waiters.lock().expect("slot waiters lock");
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            self.slot_waiter_count.store(waiters.len(), Ordering::SeqCst);
        }
        // A slot given back before we were listed would wake nobody: look again.
        try_take().map_or(Poll::Pending, Poll::Ready)
    }

    fn give_back(&self, slot: usize) {
        self.slots[slot].state.store(FREE, Ordering::Release);
        self.free.fetch_or(1 << slot, Ordering::SeqCst);
        if self.slot_waiter_count.load(Ordering::SeqCst) > 0 {
            let waiters = {
                let mut waiters = self.slot_waiters.lock().expect("slot waiters lock");
                self.slot_waiter_count.store(0, Ordering::SeqCst);
                std::mem::take(&mut *waiters)
            };
            waiters.into_iter().for_each(Waker::wake);
        }
    }

    fn addr(&self, slot: usize) -> u64 {
        self.memory.base as u64 + (slot * self.slot_size) as u64
    }

    /// # Safety
    /// The slot's READ completed successfully and the slot has not been given back.
    unsafe fn bytes(&self, slot: usize, len: usize) -> &[u8] {
        // SAFETY: in bounds (len <= slot_size); the device no longer writes it (caller).
        unsafe { std::slice::from_raw_parts(self.memory.base.add(slot * self.slot_size), len) }
    }
}

/// No reader leads the polling (see [`Shared::lead`]).
const NO_LEADER: usize = usize::MAX;

/// What the readers and the background thread share.
struct Shared {
    // Field order is drop order: the QP goes before the CQ it uses and the buffers it
    // may write.
    qp: Mutex<BasicQueuePair>,
    cq: Arc<BasicCompletionQueue>,
    buffers: Buffers,
    /// READs posted whose completion has not been drained yet.
    outstanding: AtomicUsize,
    /// Why the queue pair failed, once it has (read by every READ: one atomic load).
    broken: OnceLock<String>,
    /// The slot of the reader that busy-polls the CQ, or [`NO_LEADER`].
    leader: AtomicUsize,
    /// Held while draining the CQ (by the leading reader or the background thread).
    draining: Mutex<()>,
    /// Wakes the background thread on shutdown (it naps between polls otherwise).
    wake: (Mutex<()>, Condvar),
    stop: AtomicBool,
}

impl Shared {
    fn break_with(&self, why: String) {
        let mut first = false;
        let why = self.broken.get_or_init(|| {
            first = true;
            why
        });
        if first {
            tracing::warn!(reason = %why, "RDMA queue pair failed");
        }
    }

    fn transfer_error(&self) -> RdmaError {
        RdmaError::Transfer(self.broken.get().cloned().unwrap_or_else(|| "READ failed".into()))
    }

    /// Delivers the completion of the READ posted as `wr_id` (its slot's index).
    fn complete(&self, wr_id: u64, ok: bool) {
        let Some((index, slot)) =
            usize::try_from(wr_id).ok().and_then(|i| self.buffers.slots.get(i).map(|s| (i, s)))
        else {
            return;
        };
        let done = if ok { OK } else { FAILED };
        match slot.state.compare_exchange(POSTED, done, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
                slot.waker.wake();
            }
            Err(ABANDONED) => {
                // Its reader went away: the device is done with the slot now.
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
                self.buffers.give_back(index);
            }
            // Not posted: already failed by a CQ error (below); nothing waits for it.
            Err(_) => {}
        }
    }

    /// Drains the completion queue, unless someone else is draining it right now.
    fn poll_completions(&self) {
        if let Ok(_draining) = self.draining.try_lock() {
            self.drain_cq();
        }
    }

    /// Delivers what the completion queue holds (the caller holds `draining`).
    fn drain_cq(&self) {
        match self.cq.start_poll() {
            Ok(poller) => {
                for wc in poller {
                    let ok = wc.status() == WorkCompletionStatus::Success as u32;
                    if !ok {
                        self.break_with(format!(
                            "READ completed with {:?} (vendor error {:#x})",
                            WorkCompletionStatus::from(wc.status()),
                            wc.vendor_err()
                        ));
                    }
                    self.complete(wc.wr_id(), ok);
                }
            }
            Err(PollCompletionQueueError::CompletionQueueEmpty) => {}
            Err(e) => {
                self.break_with(format!("polling the completion queue: {e}"));
                for index in 0..self.buffers.slots.len() {
                    self.complete(index as u64, false);
                }
            }
        }
    }

    /// Whether the reader of `slot` leads the polling (taking the lead if nobody has it).
    fn lead(&self, slot: usize) -> bool {
        match self.leader.compare_exchange(NO_LEADER, slot, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => true,
            Err(leader) => leader == slot,
        }
    }

    /// The leading reader leaves: wake the waiting ones, the first to be polled takes
    /// over (they registered their wakers before trying to lead, so none is missed).
    fn step_down(&self, slot: usize) {
        if self.leader.compare_exchange(slot, NO_LEADER, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            && self.outstanding.load(Ordering::SeqCst) > 0
        {
            for other in self.buffers.slots.iter() {
                if other.state.load(Ordering::Acquire) == POSTED {
                    other.waker.wake();
                }
            }
        }
    }

    /// The background thread: polls every millisecond while READs are outstanding (for
    /// READs nobody waits for any more, and to bound any gap between two leading
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

    /// Posts one READ per `(slot, read)` (the slot is its work-request id), chained in
    /// one post: one doorbell however many.
    fn post(&self, reads: &[(usize, RemoteRead)]) -> Result<(), String> {
        let mut qp = self.qp.lock().expect("qp lock");
        let mut guard = qp.start_post_send();
        for &(slot, read) in reads {
            let wr =
                guard.construct_wr(slot as u64, WorkRequestFlags::Signaled).setup_read(read.rkey, read.addr);
            // SAFETY: the slot is registered (lkey), `read.len` <= slot size, and it is ours
            // until the completion is consumed.
            unsafe { wr.setup_sge(self.buffers.memory.lkey, self.buffers.addr(slot), read.len) };
        }
        guard.post().map_err(|e| format!("posting a READ: {e}"))
    }
}

/// A sideway RC queue pair with its background thread.
struct SidewayQp {
    shared: Arc<Shared>,
    device: Arc<Device>,
    endpoint: QpEndpoint,
    reaper: Option<JoinHandle<()>>,
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
            outstanding: AtomicUsize::new(0),
            broken: OnceLock::new(),
            leader: AtomicUsize::new(NO_LEADER),
            draining: Mutex::new(()),
            wake: (Mutex::new(()), Condvar::new()),
            stop: AtomicBool::new(false),
        });
        let reaper = Arc::clone(&shared);
        let reaper = std::thread::Builder::new()
            .name("rdma-cq-reaper".into())
            .spawn(move || reaper.reap_loop())
            .map_err(|e| RdmaError::Transfer(format!("starting the completion poller: {e}")))?;
        Ok(Self { shared, device, endpoint, reaper: Some(reaper) })
    }

    /// One READ of at most one buffer into `out`.
    async fn read_chunk(
        &self,
        remote_addr: u64,
        rkey: u32,
        out: &mut [MaybeUninit<u8>],
    ) -> Result<(), RdmaError> {
        let shared = &*self.shared;
        if shared.broken.get().is_some() {
            return Err(shared.transfer_error());
        }
        let index = shared.buffers.take().await;
        let read = RemoteRead { addr: remote_addr, rkey, len: out.len() as u32 };
        self.post_taken(&[(index, read)])?;
        self.complete(&[(index, read)], |_, bytes| {
            // SAFETY: `out` has room for exactly `bytes.len()` bytes (the READ's length);
            // they do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), bytes.len())
            }
        })
        .await
    }

    /// READs `reads` (each at most one buffer) with one doorbell, into new buffers.
    async fn read_batch_posted(&self, reads: &[RemoteRead]) -> Result<Vec<Vec<u8>>, RdmaError> {
        let shared = &*self.shared;
        if shared.broken.get().is_some() {
            return Err(shared.transfer_error());
        }
        let mut taken = shared.buffers.take_many(reads.len()).await;
        let mut posted = Vec::with_capacity(reads.len());
        for &read in reads {
            let index = taken.trailing_zeros() as usize;
            taken &= taken - 1;
            posted.push((index, read));
        }
        self.post_taken(&posted)?;
        let mut outs = vec![Vec::new(); reads.len()];
        self.complete(&posted, |i, bytes| outs[i] = bytes.to_vec()).await?;
        Ok(outs)
    }

    /// Posts READs into slots taken for them; if the post fails, nothing will complete
    /// them: the slots go back and the queue pair is broken.
    fn post_taken(&self, reads: &[(usize, RemoteRead)]) -> Result<(), RdmaError> {
        let shared = &*self.shared;
        for &(index, _) in reads {
            shared.buffers.slots[index].state.store(POSTED, Ordering::Release);
        }
        shared.outstanding.fetch_add(reads.len(), Ordering::AcqRel);
        if let Err(why) = shared.post(reads) {
            shared.outstanding.fetch_sub(reads.len(), Ordering::AcqRel);
            reads.iter().for_each(|&(index, _)| shared.buffers.give_back(index));
            shared.break_with(why);
            return Err(shared.transfer_error());
        }
        Ok(())
    }

    /// Waits for the READs `posted` together (one batch, in posting order), hands each
    /// one's bytes to `deliver` with its position, and gives their slots back.
    async fn complete(
        &self,
        posted: &[(usize, RemoteRead)],
        mut deliver: impl FnMut(usize, &[u8]),
    ) -> Result<(), RdmaError> {
        let shared = &*self.shared;
        let slots = &shared.buffers.slots;
        // The batch leads (and is woken) as its first slot.
        let lead_as = posted[0].0;
        let mut waiting = Waiting { posted, shared, lead_as, consumed: false };
        // One waiting batch at a time leads: it drains the CQ each time it is polled and,
        // if its completions are not all in yet, asks to be polled again and yields (a
        // busy poll through the scheduler). The others sleep until their completions are
        // delivered or the leader steps down. A batch registers its wakers before trying
        // to lead, so a leader stepping down meanwhile still wakes it.
        let ok = std::future::poll_fn(|cx| {
            let leading = shared.lead(lead_as) || {
                posted.iter().for_each(|&(index, _)| slots[index].waker.register(cx.waker()));
                shared.lead(lead_as)
            };
            if leading {
                shared.poll_completions();
            }
            match batch_outcome(slots, posted) {
                Some(ok) => Poll::Ready(ok),
                None => {
                    if leading {
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending
                }
            }
        })
        .await;
        if !ok {
            // `waiting` gives back the completed slots and abandons the others.
            return Err(shared.transfer_error());
        }
        waiting.consumed = true;
        shared.step_down(lead_as);
        for (i, &(index, read)) in posted.iter().enumerate() {
            // SAFETY: the READ completed successfully and the slot is still ours.
            deliver(i, unsafe { shared.buffers.bytes(index, read.len as usize) });
            shared.buffers.give_back(index);
        }
        Ok(())
    }
}

/// `Some(true)` once every READ of a batch completed well, `Some(false)` once one failed
/// (those after it on the queue pair fail too; they may still be in flight), `None`
/// while any is outstanding.
fn batch_outcome(slots: &[Slot], posted: &[(usize, RemoteRead)]) -> Option<bool> {
    let mut all_ok = true;
    for &(index, _) in posted {
        match slots[index].state.load(Ordering::Acquire) {
            FAILED => return Some(false),
            OK => {}
            _ => all_ok = false,
        }
    }
    all_ok.then_some(true)
}

/// A batch waiting for its completions. If its reader is dropped first (a timeout) or
/// one READ failed, a slot must not be reused until the device is done with it: marking
/// it abandoned makes the CQ drainer give it back when the completion arrives, unless it
/// already arrived.
struct Waiting<'a> {
    posted: &'a [(usize, RemoteRead)],
    shared: &'a Shared,
    lead_as: usize,
    consumed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.consumed {
            return;
        }
        self.shared.step_down(self.lead_as);
        for &(index, _) in self.posted {
            let state = &self.shared.buffers.slots[index].state;
            if state.compare_exchange(POSTED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_err() {
                // Completed already: nobody else will give the slot back.
                self.shared.buffers.give_back(index);
            }
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
            if remote_addr.checked_add(u64::from(len)).is_none() {
                return Err(RdmaError::Protocol(format!("READ of {len} bytes at {remote_addr:#x} wraps")));
            }
            // Not zeroed first: every byte is written by one chunk's copy (a large zeroed
            // buffer costs a pass over memory the CPU-bound software device needs).
            let mut out = Vec::with_capacity(len as usize);
            let chunk = self.shared.buffers.slot_size;
            let spare = &mut out.spare_capacity_mut()[..len as usize];
            if (1..=chunk).contains(&spare.len()) {
                self.read_chunk(remote_addr, rkey, spare).await?;
            } else {
                let reads = spare
                    .chunks_mut(chunk)
                    .enumerate()
                    .map(|(i, part)| self.read_chunk(remote_addr + (i * chunk) as u64, rkey, part));
                futures_util::future::try_join_all(reads).await?;
            }
            // SAFETY: every chunk completed and copied its bytes: all `len` are initialized.
            unsafe { out.set_len(len as usize) };
            Ok(out)
        })
    }

    fn read_batch<'a>(&'a self, reads: &'a [RemoteRead]) -> BatchFuture<'a> {
        let buffers = &self.shared.buffers;
        let fits =
            reads.len() <= buffers.slots.len() && reads.iter().all(|r| r.len as usize <= buffers.slot_size);
        if !fits {
            // More than the slots, or a READ split in pieces: one at a time, outstanding
            // together.
            return Box::pin(futures_util::future::try_join_all(
                reads.iter().map(|r| self.read(r.addr, r.rkey, r.len)),
            ));
        }
        Box::pin(self.read_batch_posted(reads))
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
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
    }
}
