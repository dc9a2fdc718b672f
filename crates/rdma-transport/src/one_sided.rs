//! The client side of the one-sided index: a replica of each volume's `.idx` built and
//! kept current with READs alone, and the cold read that uses it (the server side and
//! the header's layout: [`crate::server::index`], [`crate::index_layout`]).
//!
//! A cold read of a needle the replica knows is one batch of READs posted together:
//! the needle's bucket version and the record. The record is used only if the bucket
//! is the version the replica was taken at (no write or delete of a needle in that
//! bucket was acknowledged since) and then, as every READ, only after the record
//! verifies. Otherwise the replica is brought up to date (buckets, head, table and the
//! new `.idx` tail: four READs, no server CPU) and the read decides again; what that
//! cannot settle (a needle the index does not know, a record past the registered
//! extents, a volume the server does not index) is left to Locate.
//!
//! Replicas are kept per volume in a least-recently-used set bounded in bytes. A volume
//! whose `.idx` has more entries than the whole budget could hold is refused before its
//! index is READ (the header says how long it is), and read through Locate: memory
//! stays bounded whatever size the header claims.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use needle::{FileId, IdxEntry, OffsetWidth, Version};

use crate::engine::{EngineQp, RemoteRead};
use crate::error::RdmaError;
use crate::index_layout::{self as layout, Head, RemoteSpan};

/// What `OpenIndex` answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenedIndex {
    pub(crate) header: RemoteSpan,
    pub(crate) grace: Duration,
}

/// Where a live needle's record is, by the replica.
#[derive(Clone, Copy, Debug)]
struct Slot {
    offset: u64,
    /// The header's Size; [`needle::idx::TOMBSTONE_SIZE`] for a deleted needle.
    size: u32,
}

/// One volume's replica of its index.
struct Replica {
    opened: OpenedIndex,
    head: Head,
    version: Version,
    width: OffsetWidth,
    chunks: Vec<(u64, u32)>,
    table: Vec<Option<RemoteSpan>>,
    /// Bucket versions as READ before the head and mirror this replica holds.
    buckets: Vec<u64>,
    needles: HashMap<u64, Slot>,
    taken_at: Instant,
    /// Counts refreshes: a reader that planned at one epoch refreshes only if no other
    /// reader did since.
    epoch: u64,
}

/// What a cold read came to.
pub(crate) enum ColdRead {
    /// The record at a location the index vouched for, not yet verified.
    Record { record: Vec<u8>, needle_size: u32, version: Version },
    /// The index says the needle was deleted (checked current in this read).
    Deleted,
    /// Locate instead, for this reason.
    Fallback(&'static str),
    /// A READ failed: the queue pair is unusable.
    Lost(RdmaError),
}

/// Counters of the one-sided path.
#[derive(Default)]
pub(crate) struct OneSidedCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) opens: AtomicU64,
    /// READs posted by the one-sided path (bucket + record batches, refreshes).
    pub(crate) posted: AtomicU64,
}

/// The replicas of the volumes a client reads, least recently used first out.
pub(crate) struct Replicas {
    budget: u64,
    volumes: std::sync::Mutex<HashMap<u32, Arc<VolumeReplica>>>,
    pub(crate) counters: OneSidedCounters,
}

/// One volume's replica behind its own lock (one task takes or refreshes it at a time),
/// with when it was last used and whether the server refused to index the volume.
struct VolumeReplica {
    replica: tokio::sync::Mutex<Option<Replica>>,
    last_used: std::sync::Mutex<Instant>,
    bytes: AtomicU64,
    refused_until: std::sync::Mutex<Option<Instant>>,
}

/// How long a volume the server would not index is left to Locate before asking again.
const REFUSAL_BACKOFF: Duration = Duration::from_secs(10);

/// The most a replica may hold per `.idx` entry, as [`Replica::bytes`] counts: 25 bytes
/// per slot of its hash table, which has up to two slots per needle right after it
/// grew (measured: 46 bytes a needle at 1,000,000 needles, 28 at 100,000).
const REPLICA_BYTES_PER_ENTRY: u64 = 50;

/// What a replica holds besides its needles: the extent table and the bucket versions.
const REPLICA_FIXED_BYTES: u64 =
    (layout::TABLE_CAPACITY * std::mem::size_of::<Option<RemoteSpan>>() + layout::BUCKETS * 8) as u64;

/// Why a volume is left to Locate when its index is too long for the budget.
const OVER_BUDGET: &str = "index larger than the client's index memory";

/// What bringing a replica up to date found.
enum Refreshed {
    Current,
    /// Retired, of another generation, or not a header this client understands.
    Retired,
    /// More `.idx` entries than the budget could hold: nothing of the tail was READ.
    OverBudget,
}

impl Replicas {
    pub(crate) fn new(budget: u64) -> Self {
        Self { budget, volumes: Default::default(), counters: OneSidedCounters::default() }
    }

    /// Bytes the replicas hold (their needle maps, by capacity).
    pub(crate) fn bytes(&self) -> u64 {
        let volumes = self.volumes.lock().expect("replica set lock");
        volumes.values().map(|v| v.bytes.load(Ordering::Relaxed)).sum()
    }

    /// Whether reads of `volume` go through the index: not while the server refused to
    /// index it (for [`REFUSAL_BACKOFF`] after it said so).
    pub(crate) fn may_serve(&self, volume: u32) -> bool {
        let volumes = self.volumes.lock().expect("replica set lock");
        let refused = volumes.get(&volume).and_then(|v| *v.refused_until.lock().expect("replica lock"));
        refused.is_none_or(|until| Instant::now() >= until)
    }

    /// The most `.idx` entries a replica may be taken of: what the whole budget holds,
    /// so that a replica taken is never over the budget alone.
    fn max_entries(&self) -> u64 {
        self.budget.saturating_sub(REPLICA_FIXED_BYTES) / REPLICA_BYTES_PER_ENTRY
    }

    /// Drops every replica (the session was lost: the server may have restarted, and
    /// its registrations with it).
    pub(crate) fn clear(&self) {
        self.volumes.lock().expect("replica set lock").clear();
    }

    fn volume(&self, volume: u32) -> Arc<VolumeReplica> {
        let mut volumes = self.volumes.lock().expect("replica set lock");
        let entry = volumes.entry(volume).or_insert_with(|| {
            Arc::new(VolumeReplica {
                replica: tokio::sync::Mutex::new(None),
                last_used: std::sync::Mutex::new(Instant::now()),
                bytes: AtomicU64::new(0),
                refused_until: std::sync::Mutex::new(None),
            })
        });
        *entry.last_used.lock().expect("replica lock") = Instant::now();
        Arc::clone(entry)
    }

    /// Drops least recently used replicas (not `keep`) until the set fits its budget.
    fn enforce_budget(&self, keep: u32) {
        let mut volumes = self.volumes.lock().expect("replica set lock");
        loop {
            let total: u64 = volumes.values().map(|v| v.bytes.load(Ordering::Relaxed)).sum();
            if total <= self.budget {
                return;
            }
            let victim = volumes
                .iter()
                .filter(|(id, _)| **id != keep)
                .min_by_key(|(_, v)| *v.last_used.lock().expect("replica lock"))
                .map(|(id, _)| *id);
            match victim {
                Some(id) => drop(volumes.remove(&id)),
                // The one replica is over the budget alone: not kept.
                None => {
                    volumes.remove(&keep);
                    return;
                }
            }
        }
    }

    /// Reads `fid` through the index of its volume, opening it with `open_index` when
    /// this client has no replica yet. The replica's lock is held to plan a read and to
    /// refresh, never across the read's own READs: readers of one volume run at once.
    pub(crate) async fn read(
        &self,
        qp: &dyn EngineQp,
        fid: &FileId,
        timeout: Duration,
        open_index: impl AsyncFnOnce(u32) -> Result<Option<OpenedIndex>, RdmaError>,
    ) -> ColdRead {
        // (The caller asked `may_serve` first: a volume the server refused is not here.)
        let volume = fid.volume.0;
        let entry = self.volume(volume);
        let needle = fid.needle_id().0;
        let bucket = layout::bucket_of(needle);
        let mut open_index = Some(open_index);
        // Set once this read brought the replica up to date (or found it refreshed by
        // another reader since it planned): the read then decides on what it has.
        let mut fresh = false;
        loop {
            let mut guard = entry.replica.lock().await;
            if guard.is_none() {
                // Opened at most once per read: a replica retired again falls back.
                let Some(open) = open_index.take() else { return self.fallback("index retired") };
                match self.take_replica(qp, &entry, timeout, open(volume).await).await {
                    Ok(replica) => *guard = Some(replica),
                    Err(outcome) => return outcome,
                }
                fresh = true;
            }
            if guard.as_ref().is_some_and(Replica::too_old) {
                if let Err(outcome) = self.refreshed(qp, timeout, &entry, &mut guard).await {
                    return outcome;
                }
                fresh = true;
            }
            let replica = guard.as_mut().expect("a replica");
            let planned_at = replica.epoch;
            let version_then = replica.buckets[bucket];
            let bucket_span = replica.bucket_span(bucket);
            let (spans, needle_size, version) = match replica.plan(needle) {
                Plan::Absent | Plan::Deleted | Plan::Unregistered if !fresh => {
                    // Not known, deleted, or past the registered extents as of the
                    // replica: a later write may be in the tail, a later registration in
                    // the table; READ them before deciding.
                    if let Err(outcome) = self.refreshed(qp, timeout, &entry, &mut guard).await {
                        return outcome;
                    }
                    fresh = true;
                    continue;
                }
                Plan::Absent => return self.fallback("needle not in the index"),
                Plan::Deleted => return ColdRead::Deleted,
                Plan::Unregistered => return self.fallback("record past the registered extents"),
                Plan::Record { spans, size } => (spans, size, replica.version),
            };
            entry.bytes.store(replica.bytes(), Ordering::Relaxed);
            drop(guard);
            self.enforce_budget(volume);

            let (version_now, record) = match self.read_batch(qp, timeout, bucket_span, &spans).await {
                Ok(read) => read,
                Err(e) => return ColdRead::Lost(e),
            };
            if version_now == version_then {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return ColdRead::Record { record, needle_size, version };
            }
            if fresh {
                return self.fallback("bucket changed under the read");
            }
            // The bucket moved since the replica: bring it up to date, unless another
            // reader did since this one planned, and decide again.
            let mut guard = entry.replica.lock().await;
            if guard.as_ref().is_some_and(|r| r.epoch == planned_at)
                && let Err(outcome) = self.refreshed(qp, timeout, &entry, &mut guard).await
            {
                return outcome;
            }
            fresh = true;
        }
    }

    /// A replica of the index `OpenIndex` answered with, or what the read comes to.
    async fn take_replica(
        &self,
        qp: &dyn EngineQp,
        entry: &VolumeReplica,
        timeout: Duration,
        opened: Result<Option<OpenedIndex>, RdmaError>,
    ) -> Result<Replica, ColdRead> {
        let opened = match opened {
            Ok(Some(opened)) => opened,
            Ok(None) => return Err(self.refuse(entry, "volume not indexed")),
            Err(e) => return Err(ColdRead::Lost(e)),
        };
        self.counters.opens.fetch_add(1, Ordering::Relaxed);
        let max_entries = self.max_entries();
        match bounded(timeout, Replica::take(qp, opened, max_entries, &self.counters.posted)).await {
            Ok((replica, Refreshed::Current)) => Ok(replica),
            Ok((_, Refreshed::OverBudget)) => Err(self.refuse(entry, OVER_BUDGET)),
            Ok((_, Refreshed::Retired)) | Err(RdmaError::Protocol(_)) => {
                Err(self.refuse(entry, "index header not understood"))
            }
            Err(e) => Err(ColdRead::Lost(e)),
        }
    }

    /// READs the needle's bucket version and its record in one batch (one doorbell with
    /// the sideway engine).
    async fn read_batch(
        &self,
        qp: &dyn EngineQp,
        timeout: Duration,
        bucket: RemoteSpan,
        record: &[RemoteSpan],
    ) -> Result<(u64, Vec<u8>), RdmaError> {
        let reads: Vec<RemoteRead> = std::iter::once(bucket)
            .chain(record.iter().copied())
            .map(|s| RemoteRead { addr: s.addr, rkey: s.rkey, len: s.len })
            .collect();
        self.counters.posted.fetch_add(reads.len() as u64, Ordering::Relaxed);
        let mut parts = bounded(timeout, qp.read_batch(&reads)).await?;
        let version = layout::word(&parts[0], 0);
        // A record within one extent (most are) is its one part, moved, not copied.
        let record = if parts.len() == 2 { parts.pop().expect("two parts") } else { parts[1..].concat() };
        Ok((version, record))
    }

    /// Brings the replica in `slot` up to date. A retired one is dropped (the next read
    /// opens the index again) and the read falls back; after a failed READ (the queue
    /// pair is unusable) it goes with the session.
    async fn refreshed(
        &self,
        qp: &dyn EngineQp,
        timeout: Duration,
        entry: &VolumeReplica,
        slot: &mut Option<Replica>,
    ) -> Result<(), ColdRead> {
        let Some(replica) = slot.as_mut() else { return Err(self.fallback("index retired")) };
        match self.refresh(qp, timeout, replica).await {
            Ok(Refreshed::Current) => Ok(()),
            Ok(Refreshed::Retired) => {
                *slot = None;
                Err(self.fallback("index retired"))
            }
            Ok(Refreshed::OverBudget) => {
                *slot = None;
                entry.bytes.store(0, Ordering::Relaxed);
                Err(self.refuse(entry, OVER_BUDGET))
            }
            // A header that does not add up: this replica goes, the session stays.
            Err(RdmaError::Protocol(why)) => {
                tracing::warn!(%why, "one-sided index: dropping a replica");
                *slot = None;
                Err(self.fallback("index unreadable"))
            }
            Err(e) => {
                *slot = None;
                Err(ColdRead::Lost(e))
            }
        }
    }

    /// Leaves `entry`'s volume to Locate for [`REFUSAL_BACKOFF`].
    fn refuse(&self, entry: &VolumeReplica, why: &'static str) -> ColdRead {
        *entry.refused_until.lock().expect("replica lock") = Some(Instant::now() + REFUSAL_BACKOFF);
        self.fallback(why)
    }

    fn fallback(&self, why: &'static str) -> ColdRead {
        self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        ColdRead::Fallback(why)
    }

    /// Brings `replica` up to date (the caller drops a retired one, and the next read
    /// opens the index again, or one over the budget).
    async fn refresh(
        &self,
        qp: &dyn EngineQp,
        timeout: Duration,
        replica: &mut Replica,
    ) -> Result<Refreshed, RdmaError> {
        self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        bounded(timeout, replica.refresh(qp, self.max_entries(), &self.counters.posted)).await
    }
}

/// What the replica says about a needle.
enum Plan {
    Record {
        spans: Vec<RemoteSpan>,
        size: u32,
    },
    Deleted,
    Absent,
    /// Known, but its record lies past what the table registers.
    Unregistered,
}

impl Replica {
    /// Takes a replica of the index at `opened`: buckets, then head, table and the
    /// whole mirror; usable only if that found it [`Refreshed::Current`].
    async fn take(
        qp: &dyn EngineQp,
        opened: OpenedIndex,
        max_entries: u64,
        posted: &AtomicU64,
    ) -> Result<(Self, Refreshed), RdmaError> {
        let mut replica = Self {
            opened,
            head: Head {
                entry_size: 0,
                version: 0,
                generation: 0,
                retired: true,
                idx_len: 0,
                table_len: 0,
                extent_size: 0,
            },
            version: Version::V3,
            width: OffsetWidth::Four,
            chunks: Vec::new(),
            table: Vec::new(),
            buckets: Vec::new(),
            needles: HashMap::new(),
            taken_at: Instant::now(),
            epoch: 0,
        };
        let refreshed = replica.refresh(qp, max_entries, posted).await?;
        Ok((replica, refreshed))
    }

    /// Past half the grace period since the table was READ: a registration it names
    /// may have been replaced and be about to go.
    fn too_old(&self) -> bool {
        self.taken_at.elapsed() >= self.opened.grace / 2
    }

    /// The needle bucket's version word. (Remote addresses are added with wrapping
    /// arithmetic here and below: they are the server's word, and a wrong one must fail
    /// its READ at the server's device, not panic here.)
    fn bucket_span(&self, bucket: usize) -> RemoteSpan {
        let h = self.opened.header;
        let addr = h.addr.wrapping_add(layout::byte_of(layout::W_BUCKETS + bucket));
        RemoteSpan { addr, rkey: h.rkey, len: 8 }
    }

    fn header_span(&self, word: usize, len: usize) -> RemoteSpan {
        let h = self.opened.header;
        RemoteSpan { addr: h.addr.wrapping_add(layout::byte_of(word)), rkey: h.rkey, len: len as u32 }
    }

    /// READs buckets, then head and chunks, then (if the `.idx` has at most
    /// `max_entries`) table and the mirror's new tail.
    async fn refresh(
        &mut self,
        qp: &dyn EngineQp,
        max_entries: u64,
        posted: &AtomicU64,
    ) -> Result<Refreshed, RdmaError> {
        let started = Instant::now();
        let buckets_span = self.header_span(layout::W_BUCKETS, layout::BUCKETS * 8);
        let buckets = qp.read(buckets_span.addr, buckets_span.rkey, buckets_span.len).await?;
        let head_span = self.header_span(0, layout::HEAD_AND_CHUNKS_BYTES);
        let head_and_chunks = qp.read(head_span.addr, head_span.rkey, head_span.len).await?;
        posted.fetch_add(2, Ordering::Relaxed);
        let Some(head) = Head::parse(&head_and_chunks) else { return Ok(Refreshed::Retired) };
        let first = self.head.entry_size == 0;
        if head.retired || (!first && head.generation != self.head.generation) {
            return Ok(Refreshed::Retired);
        }
        let (Ok(version), Some(width)) = (
            Version::from_byte(head.version),
            OffsetWidth::from_bytes_offset(head.entry_size.saturating_sub(12) as u32),
        ) else {
            return Ok(Refreshed::Retired);
        };
        let from = if first { 0 } else { self.head.idx_len };
        if head.idx_len < from || head.idx_len % head.entry_size as u64 != 0 {
            return Ok(Refreshed::Retired);
        }
        if head.idx_len / head.entry_size as u64 > max_entries {
            return Ok(Refreshed::OverBudget);
        }
        let table_span = self.header_span(layout::W_TABLE, head.table_len * layout::TABLE_ENTRY_WORDS * 8);
        let chunks: Vec<(u64, u32)> =
            (0..layout::MAX_CHUNKS).map_while(|c| layout::chunk(&head_and_chunks, c)).collect();
        let mut reads = Vec::new();
        if head.table_len > 0 {
            reads.push(qp.read(table_span.addr, table_span.rkey, table_span.len));
        }
        let tail = mirror_spans(&chunks, head.entry_size, from, head.idx_len)?;
        reads.extend(tail.iter().map(|s| qp.read(s.addr, s.rkey, s.len)));
        posted.fetch_add(reads.len() as u64, Ordering::Relaxed);
        let mut parts = futures_util::future::try_join_all(reads).await?.into_iter();
        if head.table_len > 0 {
            let table = parts.next().expect("the table READ");
            self.table = table.chunks(layout::TABLE_ENTRY_WORDS * 8).map(layout::parse_table_entry).collect();
        } else {
            self.table.clear();
        }
        for bytes in parts {
            for entry in bytes.chunks(head.entry_size) {
                let Ok(entry) = IdxEntry::parse(entry, width) else { return Ok(Refreshed::Retired) };
                self.apply(&entry);
            }
        }
        self.buckets = buckets.chunks(8).map(|w| layout::word(w, 0)).collect();
        self.head = head;
        self.version = version;
        self.width = width;
        self.chunks = chunks;
        self.taken_at = started;
        self.epoch += 1;
        Ok(Refreshed::Current)
    }

    fn apply(&mut self, entry: &IdxEntry) {
        if entry.is_deletion() {
            self.needles.insert(entry.key.0, Slot { offset: 0, size: needle::idx::TOMBSTONE_SIZE });
        } else {
            self.needles.insert(entry.key.0, Slot { offset: entry.byte_offset(), size: entry.size });
        }
    }

    fn plan(&self, needle: u64) -> Plan {
        let Some(slot) = self.needles.get(&needle) else { return Plan::Absent };
        if slot.size == needle::idx::TOMBSTONE_SIZE {
            return Plan::Deleted;
        }
        let len = self.version.unpadded_record_size(slot.size) as u64;
        let size = self.head.extent_size.max(1);
        let (start, end) = (slot.offset, slot.offset + len);
        let mut spans = Vec::new();
        let mut at = start;
        while at < end {
            let index = (at / size) as usize;
            let extent_start = index as u64 * size;
            let Some(Some(extent)) = self.table.get(index) else { return Plan::Unregistered };
            let part_end = end.min(extent_start + size);
            if part_end > extent_start + u64::from(extent.len) {
                return Plan::Unregistered;
            }
            spans.push(RemoteSpan {
                addr: extent.addr.wrapping_add(at - extent_start),
                rkey: extent.rkey,
                len: (part_end - at) as u32,
            });
            at = part_end;
        }
        Plan::Record { spans, size: slot.size }
    }

    /// Bytes this replica holds: its needle map by capacity (key, slot and a control
    /// byte per bucket), the table and buckets.
    fn bytes(&self) -> u64 {
        let map = self.needles.capacity() * (8 + std::mem::size_of::<Slot>() + 1);
        (map + self.table.capacity() * std::mem::size_of::<Option<RemoteSpan>>()
            + self.buckets.capacity() * 8) as u64
    }
}

/// The READs covering mirror bytes `from..to`, chunk by chunk.
fn mirror_spans(
    chunks: &[(u64, u32)],
    entry_size: usize,
    from: u64,
    to: u64,
) -> Result<Vec<RemoteSpan>, RdmaError> {
    let mut spans = Vec::new();
    let mut entry = from / entry_size as u64;
    let last = to / entry_size as u64;
    while entry < last {
        let (chunk, in_chunk) = layout::chunk_of(entry);
        let &(addr, rkey) = chunks
            .get(chunk)
            .ok_or_else(|| RdmaError::Protocol(format!("index mirror chunk {chunk} not in the header")))?;
        let count = (layout::chunk_entries(chunk) - in_chunk).min(last - entry);
        let len = u32::try_from(count * entry_size as u64)
            .map_err(|_| RdmaError::Protocol("index mirror chunk over 4 GiB".into()))?;
        spans.push(RemoteSpan { addr: addr.wrapping_add(in_chunk * entry_size as u64), rkey, len });
        entry += count;
    }
    Ok(spans)
}

/// `work` (READs), failed as a lost transfer if it does not complete within `timeout`.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, RdmaError>>,
) -> Result<T, RdmaError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| RdmaError::Transfer(format!("no completion within {timeout:?}")))?
}

#[cfg(test)]
mod tests {
    //! The replica protocol against the server's index on the host: the registrar is
    //! FAKE (no device; registrations are this process's memory) and so is the engine
    //! (a READ copies this process's memory at the address). The guest scenarios
    //! (`tests/common/one_sided.rs`) run the same path over real verbs.
    use std::sync::Mutex;

    use needle::{Cookie, NeedleId, VolumeId};

    use super::*;
    use crate::endpoint::QpEndpoint;
    use crate::engine::ReadFuture;
    use crate::server::index::{IndexConfig, Indexes};
    use crate::server::source::{IndexAppendFn, IndexSource, Lookup, NeedleSource};
    use crate::server::test_support::{FakeRegistrar, open_dat};

    /// FAKE engine: a READ copies `len` bytes of this process's memory at `addr`.
    struct LocalQp;

    impl EngineQp for LocalQp {
        fn endpoint(&self) -> QpEndpoint {
            unreachable!("never connected")
        }
        fn connect(&mut self, _: &QpEndpoint) -> Result<(), RdmaError> {
            unreachable!("never connected")
        }
        fn read(&self, addr: u64, _rkey: u32, len: u32) -> ReadFuture<'_> {
            // SAFETY: the addresses are those of registrations the test's index holds
            // (header, mirror, .dat extents), alive for the whole test.
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }.to_vec();
            Box::pin(async move { Ok(bytes) })
        }
    }

    /// A volume in a temporary file: `.dat` records and `.idx` entries appended by the
    /// test, which calls the index's observer as a volume does.
    struct Volume {
        path: std::path::PathBuf,
        dat: Vec<u8>,
        idx: Vec<u8>,
        observer: Mutex<Option<IndexAppendFn>>,
        /// The `.dat` the index registers, committed up to `dat` before the observer
        /// is told (as a volume stores its size first).
        file: Option<Arc<crate::server::test_support::TestDat>>,
    }

    impl Volume {
        fn write(&mut self, id: u64, data: &[u8]) {
            let offset = self.dat.len() as u64;
            let needle = needle::Needle::new(NeedleId(id), Cookie(9), data);
            needle.encode_into(Version::V3, &mut self.dat).unwrap();
            let size = needle.body_size(Version::V3).unwrap();
            self.append(IdxEntry::new(NeedleId(id), offset, size).unwrap());
        }

        fn delete(&mut self, id: u64) {
            self.append(IdxEntry::new(NeedleId(id), 8, needle::idx::TOMBSTONE_SIZE).unwrap());
        }

        fn append(&mut self, entry: IdxEntry) {
            std::fs::write(&self.path, &self.dat).unwrap();
            if let Some(file) = &self.file {
                file.committed.store(self.dat.len() as u64, Ordering::SeqCst);
            }
            let position = self.idx.len() as u64;
            entry.encode_into(OffsetWidth::Five, &mut self.idx).unwrap();
            if let Some(observer) = self.observer.lock().unwrap().as_ref() {
                observer(position, &self.idx[position as usize..]);
            }
        }
    }

    struct Source(Mutex<Volume>, Arc<crate::server::test_support::TestDat>);

    impl NeedleSource for Source {
        fn locate(&self, _: VolumeId, _: NeedleId, _: Cookie) -> Lookup {
            Lookup::NotFound
        }
        fn open_index(&self, _: VolumeId, on_append: IndexAppendFn) -> Result<IndexSource, String> {
            let volume = self.0.lock().unwrap();
            *volume.observer.lock().unwrap() = Some(on_append);
            Ok(IndexSource {
                dat: self.1.clone(),
                collection: String::new(),
                version: Version::V3,
                entry_size: 17,
                compaction_revision: 0,
                entries: volume.idx.clone(),
            })
        }
        fn close_index(&self, _: VolumeId) {}
    }

    fn fid(id: u64) -> FileId {
        FileId::new(VolumeId(1), NeedleId(id), Cookie(9))
    }

    async fn read(replicas: &Replicas, indexes: &Arc<Indexes>, source: &Source, id: u64) -> ColdRead {
        let open = async |volume: u32| {
            let (opened, _) = indexes.open(volume, source).unwrap();
            Ok(Some(OpenedIndex { header: opened.header, grace: Duration::from_secs(60) }))
        };
        replicas.read(&LocalQp, &fid(id), Duration::from_secs(5), open).await
    }

    fn data_of(outcome: ColdRead) -> Option<Vec<u8>> {
        match outcome {
            ColdRead::Record { record, needle_size, version } => {
                let (needle, _) = crate::verify::verify_record(&fid(0), needle_size, version, &record)
                    .or_else(|_| needle::Needle::parse(&record, version).map(|n| (n, 0)))
                    .unwrap();
                Some(needle.data.to_vec())
            }
            ColdRead::Deleted => None,
            ColdRead::Fallback(why) => panic!("fell back: {why}"),
            ColdRead::Lost(e) => panic!("lost: {e}"),
        }
    }

    /// Volume 1 in `dir` with needles 1 ("one") and 2 ("two"), its index open and its
    /// `.dat` registered.
    fn indexed_volume(dir: &std::path::Path) -> (Source, Arc<Indexes>) {
        let path = dir.join("1.dat");
        let mut volume = Volume {
            path: path.clone(),
            dat: vec![0; 8],
            idx: Vec::new(),
            observer: Mutex::new(None),
            file: None,
        };
        volume.write(1, b"one");
        volume.write(2, b"two");
        std::fs::write(&path, &volume.dat).unwrap();
        let dat = open_dat(&path);
        volume.file = Some(Arc::clone(&dat));
        let source = Source(Mutex::new(volume), Arc::clone(&dat));
        let registrar = Arc::new(FakeRegistrar::default());
        let indexes =
            Arc::new(Indexes::new(registrar, IndexConfig { extent_size: 4096, ..IndexConfig::default() }));
        // Opening registers no .dat: the upkeep task does (called here by hand).
        indexes.open(1, &source).unwrap();
        indexes.extend_tails();
        (source, indexes)
    }

    #[tokio::test]
    async fn a_replica_follows_writes_overwrites_and_deletes_and_a_retire() {
        let dir = tempfile::tempdir().unwrap();
        let (source, indexes) = indexed_volume(dir.path());
        let replicas = Replicas::new(1 << 20);

        assert_eq!(data_of(read(&replicas, &indexes, &source, 1).await).as_deref(), Some(&b"one"[..]));
        assert_eq!(replicas.counters.opens.load(Ordering::Relaxed), 1);

        // An overwrite and a new needle, appended after the replica was taken: the
        // bucket changed, so the read refreshes and gets the new bytes.
        {
            let mut volume = source.0.lock().unwrap();
            volume.write(1, b"one, again");
            volume.write(3, b"three");
        }
        indexes.extend_tails();
        assert_eq!(data_of(read(&replicas, &indexes, &source, 1).await).as_deref(), Some(&b"one, again"[..]));
        assert_eq!(data_of(read(&replicas, &indexes, &source, 3).await).as_deref(), Some(&b"three"[..]));
        source.0.lock().unwrap().delete(2);
        assert!(data_of(read(&replicas, &indexes, &source, 2).await).is_none(), "deleted");

        // Past the mirror's first chunk (4096 entries) by appends: the new chunk is named
        // in the header before the length reaches into it.
        {
            let mut volume = source.0.lock().unwrap();
            for id in 10..5000 {
                volume.write(id, &id.to_le_bytes());
            }
        }
        indexes.extend_tails();
        let last = data_of(read(&replicas, &indexes, &source, 4999).await);
        assert_eq!(last.as_deref(), Some(&4999u64.to_le_bytes()[..]));

        // A retire (vacuum, deletion): the replica is of a retired generation.
        indexes.retire(1);
        let outcome = read(&replicas, &indexes, &source, 3).await;
        assert!(matches!(outcome, ColdRead::Fallback("index retired")));
        indexes.open(1, &source).unwrap();
        indexes.extend_tails();
        assert_eq!(data_of(read(&replicas, &indexes, &source, 3).await).as_deref(), Some(&b"three"[..]));
        assert_eq!(replicas.counters.opens.load(Ordering::Relaxed), 2, "opened again");
        assert!(replicas.counters.refreshes.load(Ordering::Relaxed) >= 2);
    }

    #[tokio::test]
    async fn an_index_longer_than_the_budget_is_not_read_and_its_volume_is_left_to_locate() {
        let dir = tempfile::tempdir().unwrap();
        let (source, indexes) = indexed_volume(dir.path());
        // Room for the 2 entries there are and 8 more.
        let replicas = Replicas::new(REPLICA_FIXED_BYTES + 10 * REPLICA_BYTES_PER_ENTRY);
        assert_eq!(data_of(read(&replicas, &indexes, &source, 1).await).as_deref(), Some(&b"one"[..]));
        assert!(replicas.bytes() > 0 && replicas.may_serve(1));

        // The volume grows past what the budget holds: the refresh stops at the header
        // (the bucket versions and the head: 2 READs), the replica goes, and the
        // volume is left to Locate for a while.
        {
            let mut volume = source.0.lock().unwrap();
            for id in 10..30 {
                volume.write(id, &id.to_le_bytes());
            }
        }
        indexes.extend_tails();
        let posted = replicas.counters.posted.load(Ordering::Relaxed);
        let outcome = read(&replicas, &indexes, &source, 29).await;
        assert!(matches!(outcome, ColdRead::Fallback(OVER_BUDGET)));
        assert_eq!(replicas.counters.posted.load(Ordering::Relaxed) - posted, 2);
        assert_eq!(replicas.bytes(), 0);
        assert!(!replicas.may_serve(1));

        // A client with no room for any entry READs no index at all.
        let none = Replicas::new(REPLICA_FIXED_BYTES);
        assert!(matches!(read(&none, &indexes, &source, 1).await, ColdRead::Fallback(OVER_BUDGET)));
        assert_eq!(none.counters.posted.load(Ordering::Relaxed), 2);
        assert_eq!(none.bytes(), 0);
        assert!(!none.may_serve(1));
    }
}
