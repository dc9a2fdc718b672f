//! `record` exposure: what one session may READ, and for how long.
//!
//! Each session has its own protection domain; its queue pair is the only one in it.
//! A located record is registered in that domain on its own, REMOTE_READ, over exactly
//! the record's bytes `[offset, offset + read size)`: the pages of the volume's `.dat`
//! that hold it are mapped and the registration starts at the record's first byte and
//! ends at its last (the kernel checks every READ against the registration's byte
//! range, not its pages). So a session can READ the records it located and nothing
//! else: not a byte before or after one, not another needle in the same page, and not
//! through another session's queue pair (its rkey belongs to another protection
//! domain). A grant lives `lifetime` after its last Locate (the location says how long),
//! at most `max_grants` per session (least recently located go first), and all go when
//! the session does: deregistered, so any later READ of them fails.
//!
//! Where the kernel refuses to pin file pages, the record is copied into an anonymous
//! buffer of the session's and that is registered instead (staging, same bounds).
//!
//! Server-wide, the grants of all sessions together are bounded in bytes (they pin
//! memory) and in number (each is a mapping of its own, and the kernel caps a process's
//! mappings): a record past either bound is not granted (the client reads it over HTTP),
//! so one client's sessions cannot pin the server's memory away.
//!
//! Why not memory windows: rxe (Linux 6.1) reports type-2 windows and binds them on
//! file-backed mappings, and a window's rkey is refused on another queue pair, but a
//! READ through a window is checked against the range of the region under it, not the
//! window's: in the Soft-RoCE guest a READ one byte past a bound window succeeded. A
//! registration of the record's own bytes is bounded exactly on every device.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::memory::{Backing, map_anonymous, map_file, page_size, round_up};
use super::regions::{ExposeError, RecordSpan, RegisteredMapping, Registrar};
use crate::proto;

/// Settings of `record` exposure.
#[derive(Clone, Debug)]
pub struct GrantConfig {
    /// How long a located record stays readable after its last Locate.
    pub lifetime: Duration,
    /// Most records one session may have registered at once.
    pub max_grants: usize,
    /// Most bytes the grants of all sessions may have registered (pinned) at once.
    pub max_bytes_in_all: u64,
    /// Most grants all sessions may have at once (one mapping each; Linux's default
    /// `vm.max_map_count` is 65530 per process).
    pub max_grants_in_all: u64,
}

impl Default for GrantConfig {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(30),
            max_grants: 1024,
            max_bytes_in_all: 512 << 20,
            max_grants_in_all: 16 << 10,
        }
    }
}

/// Server-wide figures of every session's grants (registered bytes, grants), shared by
/// the sessions' [`RecordGrants`], which reserve in them before registering.
#[derive(Debug, Default)]
pub struct GrantGauges {
    pub bytes: AtomicU64,
    pub grants: AtomicU64,
}

impl GrantGauges {
    /// Takes `len` bytes and one grant, unless that would pass a server-wide bound.
    fn reserve(&self, len: u64, config: &GrantConfig) -> Result<(), ExposeError> {
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > config.max_bytes_in_all {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(ExposeError::OverBudget { len, budget: config.max_bytes_in_all });
        }
        if self.grants.fetch_add(1, Ordering::Relaxed) >= config.max_grants_in_all {
            self.release(len);
            return Err(ExposeError::TooManyGrants(config.max_grants_in_all));
        }
        Ok(())
    }

    /// Gives back what [`GrantGauges::reserve`] took.
    fn release(&self, len: u64) {
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        self.grants.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One located record's registration.
struct Grant {
    mapping: RegisteredMapping,
    addr: u64,
    len: u32,
    expires: Instant,
    last_used: u64,
}

/// The records one session located (see the module docs).
pub struct RecordGrants {
    /// Registers in the session's own protection domain.
    registrar: Arc<dyn Registrar>,
    config: GrantConfig,
    /// By (volume, compaction revision, offset).
    grants: HashMap<(u32, u32, u64), Grant>,
    clock: u64,
    gauges: Arc<GrantGauges>,
}

impl Drop for RecordGrants {
    fn drop(&mut self) {
        for grant in self.grants.values() {
            self.gauges.release(u64::from(grant.len));
        }
    }
}

impl std::fmt::Debug for RecordGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordGrants").field("grants", &self.grants.len()).finish_non_exhaustive()
    }
}

/// A granted record: its one segment, and until when it is readable.
#[derive(Debug)]
pub struct Granted {
    pub segment: proto::Segment,
    pub expires: Instant,
    /// Bytes newly registered for it (0 when an earlier grant was renewed).
    pub registered: u64,
}

impl RecordGrants {
    pub fn new(registrar: Arc<dyn Registrar>, config: GrantConfig, gauges: Arc<GrantGauges>) -> Self {
        Self { registrar, config, grants: HashMap::new(), clock: 0, gauges }
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Makes `span` readable by this session until `now + lifetime` (never past
    /// `not_after`). `stage` copies the record instead of registering the file's pages;
    /// when registering them fails because the kernel refuses the pin, the error says so
    /// ([`ExposeError::Register`]) and the caller retries with `stage`.
    pub fn grant(
        &mut self,
        span: &RecordSpan<'_>,
        now: Instant,
        not_after: Option<Instant>,
        stage: bool,
    ) -> Result<Granted, ExposeError> {
        let len = u32::try_from(span.len)
            .map_err(|_| ExposeError::OverBudget { len: span.len, budget: u64::from(u32::MAX) })?;
        let committed = span.dat.committed_len();
        if span.offset + span.len > committed {
            return Err(ExposeError::PastEnd { offset: span.offset, len: span.len, committed });
        }
        let expires = not_after.map_or(now + self.config.lifetime, |t| t.min(now + self.config.lifetime));
        self.clock += 1;
        let key = (span.volume, span.compaction_revision, span.offset);
        if let Some(grant) = self.grants.get_mut(&key)
            && grant.len == len
        {
            grant.expires = expires;
            grant.last_used = self.clock;
            return Ok(Granted { segment: segment(grant), expires, registered: 0 });
        }
        self.revoke(key);
        while self.grants.len() >= self.config.max_grants.max(1) {
            let oldest = self.grants.iter().min_by_key(|(_, g)| g.last_used).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.revoke(oldest);
            }
        }
        if self.gauges.reserve(u64::from(len), &self.config).is_err() {
            // This session's grants whose time ran out (the reaper drops them within a
            // second) may be what stands in the way.
            self.prune(now);
            self.gauges.reserve(u64::from(len), &self.config)?;
        }
        let made = if stage { self.staged(span, len) } else { self.in_place(span, len) };
        let grant = match made {
            Ok(grant) => Grant { expires, last_used: self.clock, ..grant },
            Err(e) => {
                self.gauges.release(u64::from(len));
                return Err(e);
            }
        };
        let granted = Granted { segment: segment(&grant), expires, registered: u64::from(len) };
        self.grants.insert(key, grant);
        Ok(granted)
    }

    /// Drops the grants whose time ran out (their READs fail from now on).
    pub fn prune(&mut self, now: Instant) {
        let over: Vec<_> = self.grants.iter().filter(|(_, g)| g.expires <= now).map(|(k, _)| *k).collect();
        for key in over {
            self.revoke(key);
        }
    }

    /// Deregisters one grant.
    fn revoke(&mut self, key: (u32, u32, u64)) {
        if let Some(grant) = self.grants.remove(&key) {
            self.gauges.release(u64::from(grant.len));
        }
    }

    /// The record's own bytes in the volume's `.dat`, registered where they are.
    fn in_place(&self, span: &RecordSpan<'_>, len: u32) -> Result<Grant, ExposeError> {
        let page = page_size();
        let first_page = span.offset / page * page;
        let mapped = round_up(span.offset + span.len, page) - first_page;
        let backing = map_file(span.dat.dat(), first_page, mapped as usize).map_err(ExposeError::Io)?;
        // SAFETY: `span.offset - first_page < mapped`: the record's first byte lies in
        // the mapping just made.
        let start = unsafe { backing.ptr.add((span.offset - first_page) as usize) };
        self.register(backing, start, len)
    }

    /// A copy of the record in a buffer of its own, registered.
    fn staged(&self, span: &RecordSpan<'_>, len: u32) -> Result<Grant, ExposeError> {
        let backing = map_anonymous(round_up(u64::from(len).max(1), page_size()) as usize)
            .map_err(ExposeError::Register)?;
        // SAFETY: the buffer was just mapped with room for `len` bytes and is ours alone.
        let copy = unsafe { std::slice::from_raw_parts_mut(backing.ptr, len as usize) };
        span.dat.dat().read_exact_at(copy, span.offset).map_err(ExposeError::Io)?;
        let start = backing.ptr;
        self.register(backing, start, len)
    }

    fn register(&self, backing: Backing, start: *mut u8, len: u32) -> Result<Grant, ExposeError> {
        let mapping = RegisteredMapping::new(self.registrar.as_ref(), backing, start, len as usize)?;
        Ok(Grant { mapping, addr: start as u64, len, expires: Instant::now(), last_used: 0 })
    }
}

fn segment(grant: &Grant) -> proto::Segment {
    proto::Segment { rkey: grant.mapping.rkey(), addr: grant.addr, len: grant.len }
}

#[cfg(test)]
mod tests {
    //! Grants over a real file and real mappings; the registrar is the FAKE of
    //! `test_support` (the Soft-RoCE tests check that READs outside a grant fail).
    use super::*;
    use crate::server::source::DatFile;
    use crate::server::test_support::{FakeRegistrar, open_dat};

    struct Fixture {
        _dir: tempfile::TempDir,
        dat: Arc<dyn DatFile>,
        content: Vec<u8>,
        registrar: Arc<FakeRegistrar>,
        gauges: Arc<GrantGauges>,
        grants: RecordGrants,
    }

    fn fixture(max_grants: usize) -> Fixture {
        fixture_with(GrantConfig { lifetime: Duration::from_secs(10), max_grants, ..GrantConfig::default() })
    }

    fn fixture_with(config: GrantConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("3.dat");
        let content = testbeds::pseudo_random(5 * 4096, 3);
        std::fs::write(&path, &content).unwrap();
        let registrar = Arc::new(FakeRegistrar::default());
        let gauges = Arc::new(GrantGauges::default());
        let grants = RecordGrants::new(registrar.clone(), config, Arc::clone(&gauges));
        Fixture { _dir: dir, dat: open_dat(&path), content, registrar, gauges, grants }
    }

    impl Fixture {
        /// Grants `offset..offset+len` and checks the registration starts at the record's
        /// first byte and is exactly as long.
        fn grant(&mut self, offset: u64, len: u64, now: Instant, stage: bool) -> Granted {
            let span = RecordSpan { volume: 3, dat: &self.dat, compaction_revision: 0, offset, len };
            let granted = self.grants.grant(&span, now, None, stage).unwrap();
            assert_eq!(u64::from(granted.segment.len), len);
            // SAFETY: the grant's memory is mapped while the grant lives (nothing revoked it).
            let bytes =
                unsafe { std::slice::from_raw_parts(granted.segment.addr as *const u8, len as usize) };
            assert!(bytes == &self.content[offset as usize..(offset + len) as usize], "{offset}+{len}");
            granted
        }
    }

    #[test]
    fn a_grant_is_the_record_exactly_renewed_bounded_and_dropped() {
        let mut f = fixture(2);
        let t0 = Instant::now();
        // Unaligned, across a page boundary.
        let a = f.grant(4096 - 100, 300, t0, false);
        assert_eq!((a.registered, a.expires), (300, t0 + Duration::from_secs(10)));
        // Located again later: the same registration, for longer.
        let again = f.grant(4096 - 100, 300, t0 + Duration::from_secs(5), false);
        assert_eq!((again.segment.rkey, again.registered), (a.segment.rkey, 0));
        assert_eq!(again.expires, t0 + Duration::from_secs(15));
        let b = f.grant(9000, 50, t0 + Duration::from_secs(6), true);
        assert_eq!(f.gauges.bytes.load(Ordering::SeqCst), 350);
        // A third record: the least recently located one goes.
        f.grant(16_000, 10, t0 + Duration::from_secs(7), false);
        assert_eq!(f.grants.len(), 2);
        assert_eq!(f.registrar.live.load(Ordering::SeqCst), 2, "the oldest was deregistered");
        // Time runs out for b (+16 s) but not for the newest (+17 s).
        f.grants.prune(t0 + Duration::from_secs(16) + Duration::from_millis(1));
        assert_eq!(f.grants.len(), 1);
        assert_ne!(b.segment.rkey, a.segment.rkey);
        // A grant never outlives the token.
        let span = RecordSpan { volume: 3, dat: &f.dat, compaction_revision: 0, offset: 0, len: 10 };
        let capped = f.grants.grant(&span, t0, Some(t0 + Duration::from_secs(1)), false).unwrap();
        assert_eq!(capped.expires, t0 + Duration::from_secs(1));
        drop(f.grants);
        assert_eq!((f.gauges.bytes.load(Ordering::SeqCst), f.gauges.grants.load(Ordering::SeqCst)), (0, 0));
        assert_eq!(f.registrar.live.load(Ordering::SeqCst), 0, "all go with the session");
    }

    #[test]
    fn past_the_committed_end_or_a_refused_pin_is_an_error() {
        let f = fixture(8);
        let mut grants = f.grants;
        let past =
            RecordSpan { volume: 3, dat: &f.dat, compaction_revision: 0, offset: 5 * 4096 - 10, len: 11 };
        assert!(matches!(grants.grant(&past, Instant::now(), None, false), Err(ExposeError::PastEnd { .. })));
        f.registrar.refuse.store(1, Ordering::SeqCst);
        let span = RecordSpan { volume: 3, dat: &f.dat, compaction_revision: 0, offset: 0, len: 10 };
        match grants.grant(&span, Instant::now(), None, false) {
            Err(ExposeError::Register(e)) => assert!(crate::server::regions::pin_refused(&e)),
            other => panic!("{other:?}"),
        }
        assert!(grants.is_empty());
    }

    #[test]
    fn the_grants_of_all_sessions_stay_under_the_server_wide_bounds() {
        let config = GrantConfig {
            lifetime: Duration::from_secs(10),
            max_grants: 8,
            max_bytes_in_all: 1000,
            max_grants_in_all: 3,
        };
        let mut f = fixture_with(config.clone());
        // A second session of the same server: its own domain, the same gauges.
        let mut other = RecordGrants::new(f.registrar.clone(), config, Arc::clone(&f.gauges));
        let t0 = Instant::now();
        f.grant(0, 600, t0, false);
        let span = |offset, len| RecordSpan { volume: 3, dat: &f.dat, compaction_revision: 0, offset, len };
        let over = other.grant(&span(4096, 500), t0, None, false);
        assert!(matches!(over, Err(ExposeError::OverBudget { len: 500, budget: 1000 })), "{over:?}");
        other.grant(&span(4096, 400), t0, None, false).unwrap();
        assert_eq!(f.gauges.bytes.load(Ordering::SeqCst), 1000);
        // Room in bytes, but the third grant is the last one the server gives.
        f.grants.revoke((3, 0, 0));
        other.grant(&span(8192, 10), t0, None, false).unwrap();
        other.grant(&span(8300, 10), t0, None, false).unwrap();
        let many = other.grant(&span(9000, 10), t0, None, false);
        assert!(matches!(many, Err(ExposeError::TooManyGrants(3))), "{many:?}");
        assert_eq!(f.registrar.live.load(Ordering::SeqCst), 3, "nothing registered for a refusal");
        // A session's own expired grants make room for its next one.
        other.grant(&span(9000, 10), t0 + Duration::from_secs(11), None, false).unwrap();
        assert_eq!((other.len(), f.gauges.grants.load(Ordering::SeqCst)), (1, 1));
        drop(other);
        assert_eq!((f.gauges.bytes.load(Ordering::SeqCst), f.gauges.grants.load(Ordering::SeqCst)), (0, 0));
    }
}
