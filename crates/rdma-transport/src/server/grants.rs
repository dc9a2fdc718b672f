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
use super::regions::{ExposeError, RecordSpan, Registrar, Registration};
use crate::proto;

/// Settings of `record` exposure.
#[derive(Clone, Debug)]
pub struct GrantConfig {
    /// How long a located record stays readable after its last Locate.
    pub lifetime: Duration,
    /// Most records one session may have registered at once.
    pub max_grants: usize,
}

impl Default for GrantConfig {
    fn default() -> Self {
        Self { lifetime: Duration::from_secs(30), max_grants: 1024 }
    }
}

/// Server-wide figures of every session's grants (registered bytes, grants).
#[derive(Debug, Default)]
pub struct GrantGauges {
    pub bytes: AtomicU64,
    pub grants: AtomicU64,
}

/// One located record's registration. Field order is drop order: the registration
/// goes before the memory under it.
struct Grant {
    registration: Box<dyn Registration>,
    _backing: Backing,
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
            self.gauges.bytes.fetch_sub(u64::from(grant.len), Ordering::Relaxed);
        }
        self.gauges.grants.fetch_sub(self.grants.len() as u64, Ordering::Relaxed);
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
        let grant = if stage { self.staged(span, len)? } else { self.in_place(span, len)? };
        let grant = Grant { expires, last_used: self.clock, ..grant };
        let granted = Granted { segment: segment(&grant), expires, registered: u64::from(len) };
        self.gauges.bytes.fetch_add(u64::from(len), Ordering::Relaxed);
        self.gauges.grants.fetch_add(1, Ordering::Relaxed);
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
            self.gauges.bytes.fetch_sub(u64::from(grant.len), Ordering::Relaxed);
            self.gauges.grants.fetch_sub(1, Ordering::Relaxed);
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
        // SAFETY: `start..start + len` lies in `backing`, which the Grant owns and drops
        // after the registration.
        let registration =
            unsafe { self.registrar.register(start, len as usize) }.map_err(ExposeError::Register)?;
        Ok(Grant {
            registration,
            _backing: backing,
            addr: start as u64,
            len,
            expires: Instant::now(),
            last_used: 0,
        })
    }
}

fn segment(grant: &Grant) -> proto::Segment {
    proto::Segment { rkey: grant.registration.rkey(), addr: grant.addr, len: grant.len }
}
