//! The one-sided index (`volume` exposure): per volume, a registered header
//! ([`crate::index_layout`]), a registered mirror of the `.idx`, and the `.dat`
//! registered in extents the header names, so that a client can find and READ a needle
//! it never located without the server's CPU.
//!
//! **The mirror, not the file.** The `.idx` grows by 16 or 17 bytes a write, and pages
//! past a file's end cannot be registered, so the file itself would need registering
//! again after every write. The mirror is anonymous memory in chunks that double in
//! size (never moved, registered once each), filled from the `.idx` when the index
//! opens and then by the volume's append observer ([`NeedleSource::open_index`]), under
//! the volume's writer lock, before the write is acknowledged: mirror bytes, then the
//! published length, then the needle's bucket. It costs what the `.idx` costs: 16
//! bytes a needle.
//!
//! **The `.dat` extents** are this index's own registrations (the region cache's can be
//! evicted, and a client that READs through an rkey whose registration is gone breaks its
//! queue pair). They stay until the volume is retired, under their own pinned budget
//! ([`IndexConfig::dat_budget`]; the records of extents past it are located). They
//! are registered by the upkeep task (`Indexes::extend_tails`), after
//! the index opens (the records in extents not yet registered are located meanwhile)
//! and after writes that grow the volume (the tail extent again, longer); the shorter registration
//! lingers a grace period, and clients read the table again at least every half grace
//! period, so no client READs through a registration that is gone.
//!
//! **Retirement** (compaction commit, volume deletion): the generation word gets its
//! retired bit and every bucket is bumped, so every client's next cold read sees the
//! change and opens the index again; mirror and extents linger the grace period. The
//! header itself stays registered for the server's life (one per volume id ever
//! indexed, 73 KiB), so that a client never READs through a header rkey that is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use needle::VolumeId;

use super::memory::{Backing, lock, map_anonymous, map_file, page_size, round_up};
use super::regions::{ExposeError, RegisteredMapping, Registrar, pin_refused};
use super::source::{DatFile, IndexSource, NeedleSource};
use crate::index_layout::{self as layout, Head, RemoteSpan};

/// One-sided index settings.
#[derive(Clone, Debug)]
pub struct IndexConfig {
    /// Offer the index to `volume`-exposure sessions.
    pub enabled: bool,
    /// Most `.dat` bytes registered for indexed volumes, in all.
    pub dat_budget: u64,
    /// Bytes of `.dat` per table entry (a multiple of the page size).
    pub extent_size: u64,
    /// How long replaced and retired registrations stay.
    pub grace: Duration,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self { enabled: true, dat_budget: 1 << 30, extent_size: 16 << 20, grace: Duration::from_secs(5) }
    }
}

/// Why a volume is not indexed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the one-sided index is off on this server")]
    Off,
    #[error("volume {0}: {1}")]
    Source(u32, String),
    #[error("volume {volume}: {needed} more .dat bytes do not fit the index's pinned budget of {budget}")]
    OverBudget { volume: u32, needed: u64, budget: u64 },
    #[error("volume {volume}: {source}")]
    Expose { volume: u32, source: ExposeError },
    #[error("volume {0}: the .idx does not end on an entry")]
    TornIndex(u32),
}

/// Anonymous memory registered for READ, which the server writes and clients READ.
struct SharedMemory {
    mapping: RegisteredMapping,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the pointer is written only through `store_word`/`write_at` (atomic or
// before a Release publication); the mapping it points into is owned by `mapping`.
unsafe impl Send for SharedMemory {}
// SAFETY: as above.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    fn new(registrar: &dyn Registrar, len: usize) -> Result<Self, ExposeError> {
        let len = round_up(len as u64, page_size()) as usize;
        let backing: Backing = map_anonymous(len).map_err(ExposeError::Register)?;
        let ptr = backing.ptr;
        let mapping = RegisteredMapping::new(registrar, backing, ptr, len)?;
        Ok(Self { mapping, ptr, len })
    }

    fn span(&self) -> RemoteSpan {
        RemoteSpan { addr: self.ptr as u64, rkey: self.mapping.rkey(), len: self.len as u32 }
    }

    fn word(&self, word: usize) -> &AtomicU64 {
        assert!((word + 1) * 8 <= self.len, "word {word} outside the buffer");
        // SAFETY: in bounds (checked), 8-aligned (the mapping is page-aligned), and the
        // memory lives as long as `self`; every server access to it is atomic.
        unsafe { AtomicU64::from_ptr(self.ptr.add(word * 8).cast()) }
    }

    fn store_word(&self, word: usize, value: u64) {
        self.word(word).store(value, Ordering::Release);
    }

    fn load_word(&self, word: usize) -> u64 {
        self.word(word).load(Ordering::Acquire)
    }

    /// Copies `bytes` at `at`: clients read them only after a later Release store
    /// (the published length) says they are there.
    fn write_at(&self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= self.len, "write outside the buffer");
        // SAFETY: in bounds (checked); no Rust reference to this memory exists, and the
        // only other reader is the device, which is told the bytes are complete by the
        // published length stored after them.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(at), bytes.len()) };
    }
}

/// A registered extent of the `.dat`.
struct Extent {
    mapping: RegisteredMapping,
    addr: u64,
    /// `.dat` bytes of the extent a READ may reach (complete records).
    covered: u64,
    /// Bytes registered (whole pages), counted against the budget.
    registered: u64,
}

struct Mirror {
    chunks: Vec<SharedMemory>,
    /// Bytes of `.idx` written into the mirror, contiguous from 0.
    written: u64,
}

/// One volume's index.
pub(crate) struct VolumeIndex {
    volume: u32,
    header: Arc<SharedMemory>,
    dat: Arc<dyn DatFile>,
    collection: String,
    entry_size: usize,
    mirror: Mutex<Mirror>,
    extents: Mutex<Vec<Extent>>,
    /// Where the table's registered `.dat` ends (complete records up to there).
    registered_end: AtomicU64,
    /// Set by the append observer when the `.dat` grew past `registered_end`.
    tail_stale: AtomicBool,
    /// Wakes the upkeep task (see [`Indexes::upkeep_signal`]).
    wake: Arc<tokio::sync::Notify>,
    retired: AtomicBool,
    updates: Arc<AtomicU64>,
}

impl VolumeIndex {
    /// The append observer's work: the entry into the mirror, the published length,
    /// then the bucket (see [`crate::index_layout`] for why in this order).
    fn on_append(&self, registrar: &dyn Registrar, position: u64, entry: &[u8]) {
        if self.retired.load(Ordering::Acquire) {
            return;
        }
        let mut mirror = lock(&self.mirror);
        if let Err(e) = write_mirror(registrar, &self.header, &mut mirror, self.entry_size, position, entry) {
            // No room for the mirror: the index cannot stay true, so it says it is
            // retired and clients go back to Locate.
            tracing::error!(volume = self.volume, error = %e, "one-sided index: mirror full; retiring it");
            drop(mirror);
            self.mark_retired();
            return;
        }
        mirror.written = mirror.written.max(position + entry.len() as u64);
        self.header.store_word(layout::W_IDX_LEN, mirror.written);
        drop(mirror);
        let needle = u64::from_be_bytes(entry[..8].try_into().expect("an entry starts with its key"));
        self.header.word(layout::W_BUCKETS + layout::bucket_of(needle)).fetch_add(1, Ordering::AcqRel);
        self.updates.fetch_add(1, Ordering::Relaxed);
        if self.dat.committed_len() > self.registered_end.load(Ordering::Acquire)
            && !self.tail_stale.swap(true, Ordering::AcqRel)
        {
            self.wake.notify_one();
        }
    }

    fn mark_retired(&self) {
        if self.retired.swap(true, Ordering::AcqRel) {
            return;
        }
        let generation = self.header.load_word(layout::W_GENERATION);
        self.header.store_word(layout::W_GENERATION, generation | layout::RETIRED);
        for bucket in 0..layout::BUCKETS {
            self.header.word(layout::W_BUCKETS + bucket).fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Writes table entry `index` (sequence odd while it is written, see
    /// [`crate::index_layout`]).
    fn write_table_entry(&self, index: usize, span: RemoteSpan) {
        let base = layout::W_TABLE + index * layout::TABLE_ENTRY_WORDS;
        let seq = self.header.load_word(base);
        let next = (seq | 1) + 1;
        self.header.store_word(base, seq | 1);
        let words = layout::table_entry_words(next, span);
        self.header.store_word(base + 1, words[1]);
        self.header.store_word(base + 2, words[2]);
        self.header.store_word(base + 3, next);
        self.header.store_word(base, next);
    }
}

/// Copies `entry` into the mirror at `position`, adding the chunk it falls in (and
/// naming it in `header`, before the caller publishes a length that reaches into it).
fn write_mirror(
    registrar: &dyn Registrar,
    header: &SharedMemory,
    mirror: &mut Mirror,
    entry_size: usize,
    position: u64,
    entry: &[u8],
) -> Result<(), ExposeError> {
    let (chunk, in_chunk) = layout::chunk_of(position / entry_size as u64);
    if chunk >= layout::MAX_CHUNKS {
        let e = std::io::Error::other("the .idx is past the mirror's largest size");
        return Err(ExposeError::Register(e));
    }
    while mirror.chunks.len() <= chunk {
        let n = mirror.chunks.len();
        let added = SharedMemory::new(registrar, layout::chunk_entries(n) as usize * entry_size)?;
        let span = added.span();
        header.store_word(layout::W_CHUNKS + 2 * n, span.addr);
        header.store_word(layout::W_CHUNKS + 2 * n + 1, u64::from(span.rkey));
        mirror.chunks.push(added);
    }
    mirror.chunks[chunk].write_at(in_chunk as usize * entry_size, entry);
    Ok(())
}

/// An entry appended before its index existed: (position, bytes).
type PendingEntry = (u64, Vec<u8>);

/// What a client needs to READ an index.
#[derive(Clone, Copy, Debug)]
pub struct OpenedIndex {
    pub header: RemoteSpan,
    pub generation: u16,
}

/// Counters of the indexes, for `/status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct IndexStats {
    pub volumes: u64,
    pub dat_pinned_bytes: u64,
    pub mirror_bytes: u64,
    pub header_updates: u64,
    pub tail_registrations: u64,
    /// Indexed volumes whose `.dat` is not registered up to its committed end yet.
    pub pending_volumes: u64,
}

struct Inner {
    /// Per volume id, its header: kept for the server's life (see the module docs).
    headers: HashMap<u32, Arc<SharedMemory>>,
    live: HashMap<u32, Arc<VolumeIndex>>,
    /// Retired or replaced registrations, with when they may go.
    retiring: Vec<(Instant, Retiring)>,
    dat_pinned: u64,
    /// Per volume id, how many times it was retired: an index built across a
    /// retirement observed the old files and is thrown away.
    retirements: HashMap<u32, u64>,
}

/// Registrations let go after the grace period: dropping them deregisters.
struct Retiring {
    extents: Vec<Extent>,
    _mirror: Option<Mirror>,
}

/// Every volume's index.
pub(crate) struct Indexes {
    registrar: Arc<dyn Registrar>,
    config: IndexConfig,
    inner: Mutex<Inner>,
    /// Serializes opening indexes (reading a `.idx`, registering a `.dat`).
    opening: Mutex<()>,
    updates: Arc<AtomicU64>,
    tail_registrations: AtomicU64,
    wake: Arc<tokio::sync::Notify>,
}

impl Indexes {
    pub(crate) fn new(registrar: Arc<dyn Registrar>, mut config: IndexConfig) -> Self {
        config.extent_size = round_up(config.extent_size.max(1), page_size());
        Self {
            registrar,
            config,
            inner: Mutex::new(Inner {
                headers: HashMap::new(),
                live: HashMap::new(),
                retiring: Vec::new(),
                dat_pinned: 0,
                retirements: HashMap::new(),
            }),
            opening: Mutex::new(()),
            updates: Arc::default(),
            tail_registrations: AtomicU64::new(0),
            wake: Arc::default(),
        }
    }

    /// Notified when an indexed volume's `.dat` grew past its registered tail: the
    /// upkeep task waits on it (an idle server does no index work at all).
    pub(crate) fn upkeep_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.wake)
    }

    pub(crate) fn grace(&self) -> Duration {
        self.config.grace
    }

    /// The index of `volume`, opened from `source` if it is not open.
    pub(crate) fn open(
        self: &Arc<Self>,
        volume: u32,
        source: &dyn NeedleSource,
    ) -> Result<(OpenedIndex, String), IndexError> {
        if !self.config.enabled {
            return Err(IndexError::Off);
        }
        let _opening = lock(&self.opening);
        self.prune(Instant::now());
        if let Some(index) = lock(&self.inner).live.get(&volume)
            && !index.retired.load(Ordering::Acquire)
        {
            return Ok((opened(index), index.collection.clone()));
        }
        let retirements = lock(&self.inner).retirements.get(&volume).copied();
        let index = self.build(volume, source)?;
        let answer = (opened(&index), index.collection.clone());
        let mut inner = lock(&self.inner);
        if inner.retirements.get(&volume).copied() != retirements {
            drop(inner);
            self.discard(index);
            return Err(IndexError::Source(volume, "retired while its index was opened".into()));
        }
        let replaced = inner.live.insert(volume, index);
        drop(inner);
        if let Some(replaced) = replaced {
            // A retired index (its mirror ran out): its registrations get the grace
            // period too, for clients that READ through them just before.
            self.discard(replaced);
        }
        Ok(answer)
    }

    fn build(
        self: &Arc<Self>,
        volume: u32,
        source: &dyn NeedleSource,
    ) -> Result<Arc<VolumeIndex>, IndexError> {
        let header = self.header(volume)?;
        // The observer finds its index through this cell: it is installed (and may
        // run) before the index exists.
        let cell: Arc<std::sync::OnceLock<Weak<VolumeIndex>>> = Arc::default();
        let pending: Arc<Mutex<Vec<PendingEntry>>> = Arc::default();
        let observer = {
            let (cell, pending, registrar) =
                (Arc::clone(&cell), Arc::clone(&pending), Arc::clone(&self.registrar));
            // The pending list's lock is taken before the cell is looked at: the build
            // drains the list and sets the cell under that lock, so no entry lands in
            // the list after the drain.
            Arc::new(move |position: u64, entry: &[u8]| {
                let mut pending = lock(&pending);
                match cell.get() {
                    Some(index) => {
                        drop(pending);
                        // Gone: its volume was retired; nothing reads this entry.
                        if let Some(index) = index.upgrade() {
                            index.on_append(registrar.as_ref(), position, entry);
                        }
                    }
                    None => pending.push((position, entry.to_vec())),
                }
            })
        };
        let source_index =
            source.open_index(VolumeId(volume), observer).map_err(|e| IndexError::Source(volume, e))?;
        let result = self.fill(volume, header, source_index);
        let index = match result {
            Ok(index) => Arc::new(index),
            Err(e) => {
                source.close_index(VolumeId(volume));
                return Err(e);
            }
        };
        // Entries appended while the snapshot was copied, then every later one directly.
        let mut pending = lock(&pending);
        for (position, entry) in pending.drain(..) {
            index.on_append(self.registrar.as_ref(), position, &entry);
        }
        cell.set(Arc::downgrade(&index)).expect("set once");
        drop(pending);
        Ok(index)
    }

    /// The index over a fresh header state: mirror of `entries`, `.dat` extents up to
    /// its committed length, then the head words.
    fn fill(
        &self,
        volume: u32,
        header: Arc<SharedMemory>,
        source: IndexSource,
    ) -> Result<VolumeIndex, IndexError> {
        let IndexSource { dat, collection, version, entry_size, compaction_revision: revision, entries } =
            source;
        if entries.len() % entry_size != 0 {
            return Err(IndexError::TornIndex(volume));
        }
        // The header is retired while it is filled again: no client uses what it names.
        // A previous generation's chunks are forgotten first.
        for word in layout::W_CHUNKS..layout::W_TABLE {
            header.store_word(word, 0);
        }
        let mut mirror = Mirror { chunks: Vec::new(), written: 0 };
        for (n, entry) in entries.chunks(entry_size).enumerate() {
            write_mirror(
                self.registrar.as_ref(),
                &header,
                &mut mirror,
                entry_size,
                (n * entry_size) as u64,
                entry,
            )
            .map_err(|source| IndexError::Expose { volume, source })?;
        }
        mirror.written = entries.len() as u64;
        // A new generation starts from a clean table; the buckets only ever grow (a
        // client's snapshot of an older generation must never match again).
        header.store_word(layout::W_MAGIC, layout::MAGIC);
        header.store_word(layout::W_FORMAT, Head::format_word(entry_size, version as u8));
        header.store_word(layout::W_TABLE_LEN, 0);
        header.store_word(layout::W_EXTENT_SIZE, self.config.extent_size);
        header.store_word(layout::W_IDX_LEN, mirror.written);
        let index = VolumeIndex {
            volume,
            header,
            dat,
            collection,
            entry_size,
            mirror: Mutex::new(mirror),
            extents: Mutex::new(Vec::new()),
            registered_end: AtomicU64::new(0),
            tail_stale: AtomicBool::new(false),
            wake: Arc::clone(&self.wake),
            retired: AtomicBool::new(false),
            updates: Arc::clone(&self.updates),
        };
        // The `.dat` is registered by the upkeep task, not here: pinning a large volume
        // takes long (seconds per GiB in an emulated guest), and records in extents not
        // yet in the table are read through Locate meanwhile.
        index.tail_stale.store(true, Ordering::Release);
        self.wake.notify_one();
        // Last: the next generation, without the retired bit, makes the header valid.
        let previous = index.header.load_word(layout::W_GENERATION);
        index.header.store_word(layout::W_GENERATION, layout::next_generation(previous, revision));
        Ok(index)
    }

    /// Volume `volume`'s header, registered on first use and kept.
    fn header(&self, volume: u32) -> Result<Arc<SharedMemory>, IndexError> {
        let mut inner = lock(&self.inner);
        if let Some(header) = inner.headers.get(&volume) {
            return Ok(Arc::clone(header));
        }
        let header = SharedMemory::new(self.registrar.as_ref(), layout::WORDS * 8)
            .map_err(|source| IndexError::Expose { volume, source })?;
        header.store_word(layout::W_GENERATION, layout::RETIRED);
        let header = Arc::new(header);
        inner.headers.insert(volume, Arc::clone(&header));
        Ok(header)
    }

    /// Registers the `.dat` of `index` up to its committed length: the extents it lacks
    /// and a longer tail extent (the shorter one lingers the grace period). Each table
    /// entry is written after its registration, and the table's length after the entry.
    fn register_dat(&self, index: &VolumeIndex) -> Result<(), IndexError> {
        let volume = index.volume;
        let size = self.config.extent_size;
        let committed = index.dat.committed_len();
        let expose = |source| IndexError::Expose { volume, source };
        let mut extents = lock(&index.extents);
        loop {
            let slot = match extents.last() {
                Some(last) if last.covered < size => extents.len() - 1,
                _ => extents.len(),
            };
            let start = slot as u64 * size;
            if start >= committed || slot >= layout::TABLE_CAPACITY {
                return Ok(());
            }
            let covered = (committed - start).min(size);
            if extents.get(slot).is_some_and(|e| e.covered >= covered) {
                return Ok(());
            }
            // Whole pages of complete records: never a page a failed append's rollback
            // could cut off the file.
            let len = round_up(covered, page_size()).min(size);
            {
                let mut inner = lock(&self.inner);
                if inner.dat_pinned + len > self.config.dat_budget {
                    return Err(IndexError::OverBudget {
                        volume,
                        needed: len,
                        budget: self.config.dat_budget,
                    });
                }
                inner.dat_pinned += len;
            }
            let registered = map_file(index.dat.dat(), start, size as usize)
                .map_err(ExposeError::Io)
                .and_then(|backing| {
                    let addr = backing.ptr;
                    RegisteredMapping::new(self.registrar.as_ref(), backing, addr, len as usize)
                        .map(|mapping| Extent { mapping, addr: addr as u64, covered, registered: len })
                });
            let extent = match registered {
                Ok(extent) => extent,
                Err(e) => {
                    lock(&self.inner).dat_pinned -= len;
                    if let ExposeError::Register(io) = &e
                        && pin_refused(io)
                    {
                        tracing::warn!(volume, error = %io, "one-sided index: the kernel refused to pin .dat pages");
                    }
                    return Err(expose(e));
                }
            };
            let span = RemoteSpan { addr: extent.addr, rkey: extent.mapping.rkey(), len: covered as u32 };
            index.write_table_entry(slot, span);
            if slot < extents.len() {
                let shorter = std::mem::replace(&mut extents[slot], extent);
                let until = Instant::now() + self.config.grace;
                let retiring = Retiring { extents: vec![shorter], _mirror: None };
                lock(&self.inner).retiring.push((until, retiring));
            } else {
                extents.push(extent);
                index.header.store_word(layout::W_TABLE_LEN, extents.len() as u64);
            }
            index.registered_end.store(start + covered, Ordering::Release);
            self.tail_registrations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets `volume`'s index: its files were retired.
    pub(crate) fn retire(&self, volume: u32) {
        let index = {
            let mut inner = lock(&self.inner);
            *inner.retirements.entry(volume).or_default() += 1;
            inner.live.remove(&volume)
        };
        if let Some(index) = index {
            self.discard(index);
        }
    }

    /// Marks `index` retired and lets its registrations go after the grace period.
    fn discard(&self, index: Arc<VolumeIndex>) {
        index.mark_retired();
        let until = Instant::now() + self.config.grace;
        let extents = std::mem::take(&mut *lock(&index.extents));
        let mirror = std::mem::replace(&mut *lock(&index.mirror), Mirror { chunks: Vec::new(), written: 0 });
        lock(&self.inner).retiring.push((until, Retiring { extents, _mirror: Some(mirror) }));
    }

    /// Registers the tails of indexed volumes that grew (called by the upkeep task).
    pub(crate) fn extend_tails(&self) {
        let stale: Vec<Arc<VolumeIndex>> = lock(&self.inner)
            .live
            .values()
            .filter(|i| i.tail_stale.swap(false, Ordering::AcqRel))
            .cloned()
            .collect();
        for index in stale {
            if let Err(e) = self.register_dat(&index) {
                tracing::debug!(volume = index.volume, error = %e, "one-sided index: tail not registered");
            }
        }
        self.prune(Instant::now());
    }

    /// Lets go of registrations past their grace period.
    pub(crate) fn prune(&self, now: Instant) {
        let mut inner = lock(&self.inner);
        let mut freed = 0;
        inner.retiring.retain(|(until, what)| {
            let keep = *until > now;
            if !keep {
                freed += what.extents.iter().map(|e| e.registered).sum::<u64>();
            }
            keep
        });
        inner.dat_pinned -= freed.min(inner.dat_pinned);
    }

    pub(crate) fn stats(&self) -> IndexStats {
        let inner = lock(&self.inner);
        let mirror_bytes = inner
            .live
            .values()
            .map(|i| lock(&i.mirror).chunks.iter().map(|c| c.len as u64).sum::<u64>())
            .sum();
        let pending_volumes = inner
            .live
            .values()
            .filter(|i| i.registered_end.load(Ordering::Acquire) < i.dat.committed_len())
            .count() as u64;
        IndexStats {
            pending_volumes,
            volumes: inner.live.len() as u64,
            dat_pinned_bytes: inner.dat_pinned,
            mirror_bytes,
            header_updates: self.updates.load(Ordering::Relaxed),
            tail_registrations: self.tail_registrations.load(Ordering::Relaxed),
        }
    }
}

fn opened(index: &VolumeIndex) -> OpenedIndex {
    // The compaction revision (what Locate reports too).
    let generation = index.header.load_word(layout::W_GENERATION) as u16;
    OpenedIndex { header: index.header.span(), generation }
}
