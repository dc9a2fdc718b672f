//! The region cache: what the server exposes to RDMA READs, under a pinned-bytes budget.
//!
//! **Registered-file mode.** A volume's `.dat` is cut into fixed-size extents (a
//! multiple of the page size). An extent is mapped `MAP_SHARED` and registered
//! REMOTE_READ the first time a located record lies in it, and stays registered (pinned)
//! until the least recently used extents are evicted to fit the budget. The mapping is
//! `PROT_READ|PROT_WRITE` because registering a read-only file mapping fails with EFAULT
//! on Linux 6.1 (see SOFT-ROCE-TESTBED.md); nothing is ever written through it. Only the
//! part of an extent that the file holds is registered (pages past EOF cannot be
//! pinned), so the last extent of a growing volume is registered again, longer, when a
//! record lies beyond its registered end.
//!
//! A record that straddles an extent boundary is located as several segments, one per
//! extent, each with its own rkey; the client READs them back to back into one buffer.
//! (Overlapping extents would avoid the second READ but pin every byte twice.)
//!
//! **Staging mode.** When the kernel refuses to register file pages (newer kernels may
//! refuse long-term pins of ordinary file pages), or when forced by configuration,
//! located records are copied into anonymous buffers registered REMOTE_READ, cached per
//! (volume, offset) under the same budget. Records never change in place (an overwrite
//! appends a new record), so a staged copy stays true to the file.
//!
//! **Retirement.** Regions replaced by a longer registration, and the regions of a
//! retired volume (deleted, or compacted: see [`RegionCache::retire`]), stay registered
//! for a grace period so that READs of locations handed out just before can finish;
//! they still count against the budget until they go. Regions evicted for the budget go
//! at once (a READ of an evicted location fails, and the client locates again).
//!
//! One lock guards the cache; registering an extent happens under it.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::memory::{Backing, lock, map_anonymous, map_file, page_size, round_up};
use super::source::DatFile;
use crate::proto;

/// Registers memory for remote READ (REMOTE_READ only). The device implementation is
/// [`crate::verbs::DeviceRegistrar`].
pub trait Registrar: Send + Sync + std::fmt::Debug {
    /// Registers `len` bytes at `ptr`.
    ///
    /// # Safety
    /// The memory must stay mapped until the returned registration is dropped.
    unsafe fn register(&self, ptr: *mut u8, len: usize) -> std::io::Result<Box<dyn Registration>>;
}

/// A registered region; dropping it deregisters.
pub trait Registration: Send + Sync {
    /// The region token remote READs present. Never logged.
    fn rkey(&self) -> u32;
}

/// A mapping and the registration over part of it, owned together: dropping it
/// deregisters first and unmaps after, so the device never holds a registration of
/// pages that are gone. The order is this type's `Drop`, not a field-order convention.
pub(crate) struct RegisteredMapping {
    registration: Option<Box<dyn Registration>>,
    /// Unmapped when dropped, after `Drop::drop` below released the registration.
    _backing: Backing,
    rkey: u32,
}

impl RegisteredMapping {
    /// Registers `len` bytes of `backing` from `start`; a range outside the mapping is
    /// refused.
    pub(crate) fn new(
        registrar: &dyn Registrar,
        backing: Backing,
        start: *mut u8,
        len: usize,
    ) -> Result<Self, ExposeError> {
        let (base, at) = (backing.ptr as usize, start as usize);
        if at < base || at.saturating_add(len) > base + backing.len {
            let outside = std::io::Error::new(std::io::ErrorKind::InvalidInput, "range outside its mapping");
            return Err(ExposeError::Register(outside));
        }
        // SAFETY: `start..start + len` lies in `backing` (checked above), which this value
        // owns and unmaps only after dropping the registration (see `Drop`).
        let registration = unsafe { registrar.register(start, len) }.map_err(ExposeError::Register)?;
        let rkey = registration.rkey();
        Ok(Self { registration: Some(registration), _backing: backing, rkey })
    }

    /// The region token remote READs present. Never logged.
    pub(crate) fn rkey(&self) -> u32 {
        self.rkey
    }
}

impl Drop for RegisteredMapping {
    fn drop(&mut self) {
        // Deregistered here; `backing` is dropped (unmapped) after this returns.
        self.registration.take();
    }
}

/// How records are exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Volume files registered in extents.
    RegisteredFile,
    /// Records copied into registered anonymous buffers.
    Staging,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::RegisteredFile => "registered-file",
            Mode::Staging => "staging",
        }
    }

    pub fn to_proto(self) -> proto::RegionMode {
        match self {
            Mode::RegisteredFile => proto::RegionMode::RegisteredFile,
            Mode::Staging => proto::RegionMode::Staging,
        }
    }
}

/// Region cache settings.
#[derive(Clone, Debug)]
pub struct RegionConfig {
    /// Bytes per extent; a multiple of the page size.
    pub extent_size: u64,
    /// Most bytes registered (pinned) at once.
    pub pinned_budget: u64,
    /// Start in staging mode instead of registering files.
    pub force_staging: bool,
    /// How long replaced and retired regions stay registered.
    pub grace: Duration,
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self {
            extent_size: 16 << 20,
            pinned_budget: 512 << 20,
            force_staging: false,
            grace: Duration::from_secs(5),
        }
    }
}

/// A located record, as the cache needs it.
#[derive(Clone)]
pub struct RecordSpan<'a> {
    pub volume: u32,
    /// The volume's open `.dat` the location was taken from.
    pub dat: &'a Arc<dyn DatFile>,
    /// The volume's compaction revision: regions of another revision are retired first.
    pub compaction_revision: u32,
    /// Offset of the record in the `.dat`.
    pub offset: u64,
    /// Bytes to expose (header, body, checksum, timestamp).
    pub len: u64,
}

/// Why a record cannot be exposed.
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    #[error("record of {len} bytes does not fit the pinned budget of {budget} bytes")]
    OverBudget { len: u64, budget: u64 },
    #[error("volume file: {0}")]
    Io(std::io::Error),
    #[error("record at {offset}+{len} lies past the volume's {committed} committed bytes")]
    PastEnd { offset: u64, len: u64, committed: u64 },
    #[error("registering memory: {0}")]
    Register(std::io::Error),
    #[error("the server has its most records ({0}) granted to sessions")]
    TooManyGrants(u64),
}

/// What `expose` made readable.
#[derive(Debug)]
pub struct Exposed {
    pub segments: Vec<proto::Segment>,
    /// Bytes it registered (0 when the regions were there already).
    pub registered: u64,
}

/// Counters of the cache, for metrics and `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub pinned_bytes: u64,
    pub regions: u64,
    pub staging: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Extent { volume: u32, index: u64 },
    Staged { volume: u32, offset: u64 },
}

impl Key {
    fn volume(self) -> u32 {
        match self {
            Key::Extent { volume, .. } | Key::Staged { volume, .. } => volume,
        }
    }
}

/// A registered region.
struct Region {
    mapping: RegisteredMapping,
    /// Address of the region's first byte, as READs name it.
    addr: u64,
    /// Registered bytes.
    len: u64,
}

struct Entry {
    region: Arc<Region>,
    last_used: u64,
}

/// The open `.dat` of a volume, for one compaction revision.
struct VolumeFile {
    dat: Arc<dyn DatFile>,
    revision: u32,
}

struct Inner {
    mode: Mode,
    volumes: HashMap<u32, VolumeFile>,
    entries: HashMap<Key, Entry>,
    /// Replaced or retired regions, with when they may go.
    retiring: Vec<(Instant, Arc<Region>)>,
    pinned: u64,
    clock: u64,
    /// Bytes registered by the `expose` call under way.
    newly_registered: u64,
}

/// Registered regions of volume files (or staged records) under a pinned budget.
pub struct RegionCache {
    registrar: Arc<dyn Registrar>,
    config: RegionConfig,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for RegionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionCache").field("config", &self.config).finish_non_exhaustive()
    }
}

impl RegionCache {
    /// A cache over `registrar`. The extent size is rounded up to whole pages.
    pub fn new(registrar: Arc<dyn Registrar>, mut config: RegionConfig) -> Self {
        config.extent_size = round_up(config.extent_size.max(1), page_size());
        let mode = if config.force_staging { Mode::Staging } else { Mode::RegisteredFile };
        Self {
            registrar,
            config,
            inner: Mutex::new(Inner {
                mode,
                volumes: HashMap::new(),
                entries: HashMap::new(),
                retiring: Vec::new(),
                pinned: 0,
                clock: 0,
                newly_registered: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    pub fn mode(&self) -> Mode {
        lock(&self.inner).mode
    }

    pub fn stats(&self) -> RegionStats {
        let mut inner = lock(&self.inner);
        prune_retiring(&mut inner, Instant::now());
        RegionStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            pinned_bytes: inner.pinned,
            regions: (inner.entries.len() + inner.retiring.len()) as u64,
            staging: inner.mode == Mode::Staging,
        }
    }

    /// Makes `span` readable and returns its segments. In registered-file mode, a file
    /// registration the kernel refuses (a pin of file pages it will not take, for a
    /// range the file holds) switches the cache to staging for good (logged once);
    /// any other failure fails this record only.
    pub fn expose(&self, span: &RecordSpan<'_>) -> Result<Exposed, ExposeError> {
        if span.len > self.config.pinned_budget {
            return Err(ExposeError::OverBudget { len: span.len, budget: self.config.pinned_budget });
        }
        let mut inner = lock(&self.inner);
        prune_retiring(&mut inner, Instant::now());
        inner.newly_registered = 0;
        let segments = self.expose_locked(&mut inner, span)?;
        Ok(Exposed { segments, registered: inner.newly_registered })
    }

    fn expose_locked(
        &self,
        inner: &mut Inner,
        span: &RecordSpan<'_>,
    ) -> Result<Vec<proto::Segment>, ExposeError> {
        let committed = span.dat.committed_len();
        if span.offset + span.len > committed {
            return Err(ExposeError::PastEnd { offset: span.offset, len: span.len, committed });
        }
        self.open_volume(inner, span);
        if inner.mode == Mode::RegisteredFile {
            match self.expose_extents(inner, span) {
                Err(ExposeError::Register(e)) if pin_refused(&e) => {
                    tracing::warn!(
                        error = %e,
                        "the kernel refused to register volume file pages: RDMA continues in staging mode \
                         (records are copied into registered buffers)"
                    );
                    inner.mode = Mode::Staging;
                }
                other => return other,
            }
        }
        self.expose_staged(inner, span)
    }

    /// Drops every region of `volume` (after the grace period): its file was deleted or
    /// replaced by compaction.
    pub fn retire(&self, volume: u32) {
        let mut inner = lock(&self.inner);
        inner.volumes.remove(&volume);
        let keys: Vec<Key> = inner.entries.keys().filter(|k| k.volume() == volume).copied().collect();
        let until = Instant::now() + self.config.grace;
        for key in keys {
            let entry = inner.entries.remove(&key).expect("listed key");
            inner.retiring.push((until, entry.region));
        }
    }

    /// Takes `span`'s file as the volume's current one (retiring the regions of
    /// another revision's file).
    fn open_volume(&self, inner: &mut Inner, span: &RecordSpan<'_>) {
        let current = inner.volumes.get(&span.volume).map(|v| v.revision);
        if current == Some(span.compaction_revision) {
            return;
        }
        if current.is_some() {
            drop_volume_regions(inner, span.volume, Instant::now() + self.config.grace);
        }
        let dat = Arc::clone(span.dat);
        inner.volumes.insert(span.volume, VolumeFile { dat, revision: span.compaction_revision });
    }

    fn expose_extents(
        &self,
        inner: &mut Inner,
        span: &RecordSpan<'_>,
    ) -> Result<Vec<proto::Segment>, ExposeError> {
        let extent = self.config.extent_size;
        let end = span.offset + span.len;
        let needed: Vec<Key> = (span.offset / extent..=(end - 1) / extent)
            .map(|index| Key::Extent { volume: span.volume, index })
            .collect();
        let mut segments = Vec::with_capacity(needed.len());
        for &key in &needed {
            let Key::Extent { index, .. } = key else { unreachable!("extent keys only") };
            let start = index * extent;
            let (seg_start, seg_end) = (span.offset.max(start), end.min(start + extent));
            let region = self.extent(inner, key, start, seg_end - start, &needed, span)?;
            segments.push(proto::Segment {
                rkey: region.mapping.rkey(),
                addr: region.addr + (seg_start - start),
                len: (seg_end - seg_start) as u32,
            });
        }
        Ok(segments)
    }

    /// The region of extent `key` (starting at file offset `start`), registered at least
    /// `needed_len` bytes long.
    fn extent(
        &self,
        inner: &mut Inner,
        key: Key,
        start: u64,
        needed_len: u64,
        keep: &[Key],
        span: &RecordSpan<'_>,
    ) -> Result<Arc<Region>, ExposeError> {
        inner.clock += 1;
        let clock = inner.clock;
        if let Some(entry) = inner.entries.get_mut(&key)
            && entry.region.len >= needed_len
        {
            entry.last_used = clock;
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::clone(&entry.region));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let dat = Arc::clone(&inner.volumes[&span.volume].dat);
        // Whole pages of committed records, at most one extent: never a page that a
        // failed append's rollback could cut off the file.
        let len = round_up(dat.committed_len().saturating_sub(start), page_size())
            .min(self.config.extent_size)
            .max(needed_len);
        let grace = Instant::now() + self.config.grace;
        if let Some(shorter) = inner.entries.remove(&key) {
            // The volume grew past what was registered: the old region stays for READs
            // already located in it.
            inner.retiring.push((grace, shorter.region));
        }
        let backing =
            map_file(dat.dat(), start, self.config.extent_size as usize).map_err(ExposeError::Io)?;
        self.make_room(inner, len, keep)?;
        let region = self.register(backing, len)?;
        inner.pinned += region.len;
        inner.newly_registered += region.len;
        inner.entries.insert(key, Entry { region: Arc::clone(&region), last_used: clock });
        Ok(region)
    }

    fn expose_staged(
        &self,
        inner: &mut Inner,
        span: &RecordSpan<'_>,
    ) -> Result<Vec<proto::Segment>, ExposeError> {
        let key = Key::Staged { volume: span.volume, offset: span.offset };
        inner.clock += 1;
        let clock = inner.clock;
        let region = match inner.entries.get_mut(&key) {
            Some(entry) if entry.region.len >= span.len => {
                entry.last_used = clock;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Arc::clone(&entry.region)
            }
            _ => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let len = round_up(span.len, page_size());
                if let Some(old) = inner.entries.remove(&key) {
                    inner.pinned -= old.region.len;
                }
                self.make_room(inner, len, &[key])?;
                let backing = map_anonymous(len as usize).map_err(ExposeError::Register)?;
                let ptr = backing.ptr;
                // SAFETY: `len` >= span.len bytes were just mapped at `ptr`, owned by `backing`.
                let copy = unsafe { std::slice::from_raw_parts_mut(ptr, span.len as usize) };
                inner.volumes[&span.volume]
                    .dat
                    .dat()
                    .read_exact_at(copy, span.offset)
                    .map_err(ExposeError::Io)?;
                let region = self.register(backing, len)?;
                inner.pinned += region.len;
                inner.newly_registered += region.len;
                inner.entries.insert(key, Entry { region: Arc::clone(&region), last_used: clock });
                region
            }
        };
        Ok(vec![proto::Segment { rkey: region.mapping.rkey(), addr: region.addr, len: span.len as u32 }])
    }

    fn register(&self, backing: Backing, len: u64) -> Result<Arc<Region>, ExposeError> {
        let ptr = backing.ptr;
        let mapping = RegisteredMapping::new(self.registrar.as_ref(), backing, ptr, len as usize)?;
        Ok(Arc::new(Region { mapping, addr: ptr as u64, len }))
    }

    /// Evicts least recently used regions (not those in `keep`) until `len` more bytes
    /// fit the budget.
    fn make_room(&self, inner: &mut Inner, len: u64, keep: &[Key]) -> Result<(), ExposeError> {
        while inner.pinned + len > self.config.pinned_budget {
            let victim = inner
                .entries
                .iter()
                .filter(|(k, _)| !keep.contains(k))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            match victim {
                Some(key) => {
                    let entry = inner.entries.remove(&key).expect("chosen key");
                    inner.pinned -= entry.region.len;
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None if !inner.retiring.is_empty() => {
                    // Retiring regions go early rather than fail the request.
                    let (_, region) = inner.retiring.remove(0);
                    inner.pinned -= region.len;
                }
                None => return Err(ExposeError::OverBudget { len, budget: self.config.pinned_budget }),
            }
        }
        Ok(())
    }
}

/// Whether a registration failed because the kernel will not pin these pages (as newer
/// kernels do for file pages), rather than for want of memory or a bad range.
pub(crate) fn pin_refused(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EFAULT | libc::EPERM | libc::EACCES | libc::EOPNOTSUPP))
}

fn drop_volume_regions(inner: &mut Inner, volume: u32, until: Instant) {
    let keys: Vec<Key> = inner.entries.keys().filter(|k| k.volume() == volume).copied().collect();
    for key in keys {
        let entry = inner.entries.remove(&key).expect("listed key");
        inner.retiring.push((until, entry.region));
    }
}

fn prune_retiring(inner: &mut Inner, now: Instant) {
    let mut freed = 0;
    inner.retiring.retain(|(until, region)| {
        let keep = *until > now;
        if !keep {
            freed += region.len;
        }
        keep
    });
    inner.pinned -= freed;
}

#[cfg(test)]
mod tests {
    //! The cache's accounting and arithmetic over real files and real mappings; the one
    //! fake is the registrar, which hands out rkeys without a device (the Soft-RoCE tests
    //! in `tests/rdma_*.rs` cover real registration).
    use super::*;
    use crate::server::test_support::{FakeRegistrar, TestDat, open_dat};

    const PAGE: u64 = 4096;

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        dat: Arc<dyn DatFile>,
        test_dat: Arc<TestDat>,
        content: Vec<u8>,
        registrar: Arc<FakeRegistrar>,
        cache: RegionCache,
    }

    fn fixture(file_len: usize, extent: u64, budget: u64, force_staging: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("7.dat");
        let content = testbeds::pseudo_random(file_len, 7);
        std::fs::write(&path, &content).unwrap();
        let registrar = Arc::new(FakeRegistrar::default());
        let config = RegionConfig {
            extent_size: extent,
            pinned_budget: budget,
            force_staging,
            grace: Duration::from_secs(3600),
        };
        let cache = RegionCache::new(Arc::clone(&registrar) as Arc<dyn Registrar>, config);
        let test_dat = open_dat(&path);
        let dat: Arc<dyn DatFile> = test_dat.clone();
        Fixture { _dir: dir, path, dat, test_dat, content, registrar, cache }
    }

    impl Fixture {
        fn span(&self, offset: u64, len: u64) -> RecordSpan<'_> {
            RecordSpan { volume: 7, dat: &self.dat, compaction_revision: 0, offset, len }
        }

        /// Exposes `offset..offset+len` and checks the segments cover exactly those file
        /// bytes (read through the mapped addresses the segments name).
        fn expose_and_check(&self, offset: u64, len: u64) -> Vec<proto::Segment> {
            let segments = self.cache.expose(&self.span(offset, len)).unwrap().segments;
            let mut got = Vec::new();
            for s in &segments {
                // SAFETY: the segment lies in a live mapping of the file held by the cache
                // (nothing is evicted between expose and here).
                got.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(s.addr as *const u8, s.len as usize)
                });
            }
            assert!(got == self.content[offset as usize..(offset + len) as usize], "bytes at {offset}+{len}");
            segments
        }
    }

    #[test]
    fn records_inside_one_extent_and_straddling_two_or_three() {
        let f = fixture(10 * PAGE as usize, 2 * PAGE, 1 << 30, false);
        assert_eq!(f.expose_and_check(100, 300).len(), 1);
        // Straddles the boundary at 2 pages: two segments, each from its own extent.
        let two = f.expose_and_check(2 * PAGE - 10, 30);
        assert_eq!(two.len(), 2);
        assert_eq!((two[0].len, two[1].len), (10, 20));
        assert_ne!(two[0].rkey, two[1].rkey);
        // Ends exactly at a boundary: one segment.
        assert_eq!(f.expose_and_check(PAGE, PAGE).len(), 1);
        // Spans a whole extent and then some: three segments.
        assert_eq!(f.expose_and_check(PAGE, 4 * PAGE + 1).len(), 3);
        let stats = f.cache.stats();
        assert_eq!(stats.pinned_bytes, 3 * 2 * PAGE, "extents 0, 1 and 2, each registered once");
        assert_eq!((stats.misses, stats.regions), (3, 3));
        assert!(stats.hits >= 3);
        assert!(!stats.staging);
    }

    #[test]
    fn lru_eviction_keeps_the_pinned_bytes_under_the_budget() {
        let f = fixture(16 * PAGE as usize, PAGE, 3 * PAGE, false);
        for page in 0..3 {
            f.expose_and_check(page * PAGE, 10);
        }
        f.expose_and_check(0, 10); // extent 0 is now the most recently used
        f.expose_and_check(3 * PAGE, 10); // evicts extent 1, the least recently used
        let stats = f.cache.stats();
        assert_eq!((stats.evictions, stats.pinned_bytes, stats.regions), (1, 3 * PAGE, 3));
        assert_eq!(f.registrar.live.load(Ordering::SeqCst), 3, "the evicted region was deregistered");
        let misses = stats.misses;
        f.expose_and_check(0, 10);
        assert_eq!(f.cache.stats().misses, misses, "extent 0 survived");
        f.expose_and_check(PAGE, 10);
        assert_eq!(f.cache.stats().misses, misses + 1, "extent 1 was evicted");

        // A record straddling two extents never evicts its own first extent.
        f.expose_and_check(5 * PAGE - 1, 2);
        assert!(f.cache.stats().pinned_bytes <= 3 * PAGE);
        // Larger than the whole budget: refused, nothing registered for it.
        assert!(matches!(f.cache.expose(&f.span(0, 4 * PAGE)), Err(ExposeError::OverBudget { .. })));
    }

    #[test]
    fn a_growing_file_gets_its_last_extent_registered_again_longer() {
        let mut f = fixture(PAGE as usize + 100, 4 * PAGE, 1 << 30, false);
        f.expose_and_check(PAGE, 100);
        assert_eq!(f.cache.stats().pinned_bytes, 2 * PAGE, "only the pages the file has");

        let more = testbeds::pseudo_random(2 * PAGE as usize, 8);
        let mut file = std::fs::OpenOptions::new().append(true).open(&f.path).unwrap();
        std::io::Write::write_all(&mut file, &more).unwrap();
        f.content.extend_from_slice(&more);
        f.test_dat.committed.store(f.content.len() as u64, Ordering::SeqCst);
        f.expose_and_check(2 * PAGE + 50, 200);
        let stats = f.cache.stats();
        assert_eq!(stats.misses, 2);
        // The shorter region lingers for the grace period (still pinned), next to the new one.
        assert_eq!((stats.regions, stats.pinned_bytes), (2, 2 * PAGE + 4 * PAGE));
        f.expose_and_check(0, 100);
        assert_eq!(f.cache.stats().misses, 2, "the new region covers the start too");
    }

    #[test]
    fn a_refused_file_registration_switches_to_staging() {
        let f = fixture(8 * PAGE as usize, 2 * PAGE, 1 << 30, false);
        f.registrar.refuse.store(1, Ordering::SeqCst);
        let segments = f.expose_and_check(2 * PAGE - 10, 30);
        assert_eq!(segments.len(), 1, "a staged record is one segment even across extents");
        assert_eq!(f.cache.mode(), Mode::Staging);
        assert!(f.cache.stats().staging);
        assert_eq!(f.cache.stats().pinned_bytes, PAGE, "one page-rounded staging buffer");
        f.expose_and_check(2 * PAGE - 10, 30);
        assert_eq!(f.cache.stats().hits, 1, "the staged copy is reused");
    }

    #[test]
    fn forced_staging_evicts_and_retire_drops_a_volume() {
        let f = fixture(8 * PAGE as usize, 2 * PAGE, 2 * PAGE, true);
        assert_eq!(f.cache.mode(), Mode::Staging);
        f.expose_and_check(0, 5000); // two pages
        f.expose_and_check(3 * PAGE, 10); // one more page: evicts the first
        let stats = f.cache.stats();
        assert_eq!((stats.evictions, stats.pinned_bytes), (1, PAGE));

        f.cache.retire(7);
        assert_eq!(f.cache.stats().regions, 1, "retired regions linger for the grace period");
        // Room is made from retiring regions before a request is refused.
        f.expose_and_check(0, 2 * PAGE);
        assert_eq!(f.cache.stats().pinned_bytes, 2 * PAGE);
    }

    #[test]
    fn a_new_compaction_revision_retires_the_old_regions() {
        let f = fixture(4 * PAGE as usize, PAGE, 1 << 30, false);
        f.expose_and_check(0, 10);
        let newer = RecordSpan { compaction_revision: 1, ..f.span(0, 10) };
        f.cache.expose(&newer).unwrap();
        let stats = f.cache.stats();
        assert_eq!(stats.misses, 2, "registered again for the new revision");
        assert_eq!(stats.regions, 2, "the old one lingers until its grace period ends");
    }

    #[test]
    fn a_location_maps_into_the_file_it_was_taken_from_after_a_vacuum_replaced_it() {
        // A Locate that took its location from the old `.dat` and reaches the cache only
        // after a vacuum commit renamed the new file over the name: its offsets are
        // the old layout's, so it must map the old file (the volume's open one), never
        // what the path names now.
        let f = fixture(4 * PAGE as usize, 2 * PAGE, 1 << 30, false);
        let compacted = testbeds::pseudo_random(PAGE as usize, 99);
        let new_path = f.path.with_extension("cpd");
        std::fs::write(&new_path, &compacted).unwrap();
        std::fs::rename(&new_path, &f.path).unwrap();
        f.expose_and_check(3 * PAGE + 5, 200);
        assert_eq!(f.cache.mode(), Mode::RegisteredFile);
    }

    #[test]
    fn only_a_refused_pin_switches_to_staging() {
        let f = fixture(4 * PAGE as usize, 2 * PAGE, 1 << 30, false);
        // A record past what the volume acknowledged: refused, nothing registered.
        f.test_dat.committed.store(PAGE, Ordering::SeqCst);
        assert!(matches!(f.cache.expose(&f.span(PAGE, 10)), Err(ExposeError::PastEnd { .. })));
        f.test_dat.committed.store(4 * PAGE, Ordering::SeqCst);
        // Out of locked memory (RLIMIT_MEMLOCK): this record fails, the mode stays.
        f.registrar.refuse_errno.store(libc::ENOMEM, Ordering::SeqCst);
        f.registrar.refuse.store(1, Ordering::SeqCst);
        assert!(matches!(f.cache.expose(&f.span(0, 10)), Err(ExposeError::Register(_))));
        assert_eq!(f.cache.mode(), Mode::RegisteredFile);
        f.expose_and_check(0, 10);
        assert!(!f.cache.stats().staging);
    }

    #[test]
    fn registrations_stop_at_the_page_of_the_committed_end() {
        // Bytes past the committed end are an append in flight, which a failed write
        // truncates away: a page wholly past the end is never registered, so a rollback
        // never cuts a pinned page off the file.
        let f = fixture(6 * PAGE as usize, 8 * PAGE, 1 << 30, false);
        f.test_dat.committed.store(PAGE + 100, Ordering::SeqCst);
        f.expose_and_check(0, 100);
        assert_eq!(f.cache.stats().pinned_bytes, 2 * PAGE);
    }
}
