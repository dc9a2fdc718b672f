//! Test doubles shared by the server's unit tests: a FAKE registrar (no device; the
//! Soft-RoCE tests in `tests/rdma_*.rs` cover real registration) and a volume's `.dat`
//! over a real file with a committed length the test sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use super::regions::{Registrar, Registration};
use super::source::DatFile;

/// FAKE registrar: counts registrations, hands out increasing rkeys, and refuses
/// the next `refuse` registrations (as a kernel that will not pin file pages would).
#[derive(Debug, Default)]
pub(crate) struct FakeRegistrar {
    pub(crate) next_rkey: AtomicU32,
    pub(crate) live: Arc<AtomicU64>,
    pub(crate) refuse: AtomicU32,
    /// The errno of a refusal (EFAULT, as a kernel refusing to pin file pages, when 0).
    pub(crate) refuse_errno: AtomicI32,
}

struct FakeRegistration {
    rkey: u32,
    live: Arc<AtomicU64>,
}

impl Registration for FakeRegistration {
    fn rkey(&self) -> u32 {
        self.rkey
    }
}

impl Drop for FakeRegistration {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Registrar for FakeRegistrar {
    unsafe fn register(&self, _ptr: *mut u8, _len: usize) -> std::io::Result<Box<dyn Registration>> {
        if self.refuse.load(Ordering::SeqCst) > 0 {
            self.refuse.fetch_sub(1, Ordering::SeqCst);
            let errno = self.refuse_errno.load(Ordering::SeqCst);
            return Err(std::io::Error::from_raw_os_error(if errno == 0 { libc::EFAULT } else { errno }));
        }
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeRegistration {
            rkey: self.next_rkey.fetch_add(1, Ordering::SeqCst) + 1,
            live: Arc::clone(&self.live),
        }))
    }
}

/// A volume's open `.dat` for the cache: a real file, with the committed length
/// the test says (a volume's is what its writer acknowledged).
pub(crate) struct TestDat {
    pub(crate) file: std::fs::File,
    pub(crate) committed: AtomicU64,
}

impl DatFile for TestDat {
    fn dat(&self) -> &std::fs::File {
        &self.file
    }
    fn committed_len(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }
}

pub(crate) fn open_dat(path: &std::path::Path) -> Arc<TestDat> {
    let file = std::fs::File::options().read(true).write(true).open(path).unwrap();
    let committed = AtomicU64::new(file.metadata().unwrap().len());
    Arc::new(TestDat { file, committed })
}
