//! Memory the server exposes: mappings of volume files and anonymous staging buffers
//! (owned, unmapped on drop), page arithmetic, and the one way the server takes its
//! locks (a panic elsewhere never turns every later call into a panic).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking over a lock poisoned by a panicking holder: every structure
/// the server locks stays consistent between statements (counters and maps), so the
/// server keeps serving (`/status`, `/metrics` and Locate included) after one panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

pub(crate) fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// `len` bytes mapped at `ptr` (a file range, or an anonymous staging buffer),
/// unmapped when dropped.
pub(crate) struct Backing {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: the pointer is only used to compute addresses, to read the mapping through
// registrations, and to unmap on drop; nothing mutates through a shared Backing.
unsafe impl Send for Backing {}
// SAFETY: as above.
unsafe impl Sync for Backing {}

impl Drop for Backing {
    fn drop(&mut self) {
        let Backing { ptr, len } = *self;
        // SAFETY: unmapping what `map_file`/`map_anonymous` mapped; a registration over
        // it lives in a `RegisteredMapping` with this Backing, which drops the
        // registration first.
        unsafe { libc::munmap(ptr.cast(), len) };
    }
}

/// Maps `len` bytes of `file` from `offset` (page-aligned), shared and writable:
/// registering a file mapping needs PROT_WRITE on Linux 6.1 (a read-only one fails
/// with EFAULT); nothing ever writes through it.
pub(crate) fn map_file(file: &File, offset: u64, len: usize) -> std::io::Result<Backing> {
    // SAFETY: a fresh mapping of an open file, unmapped by `Backing::drop`.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Backing { ptr: ptr.cast(), len })
}

/// A fresh private anonymous mapping of `len` bytes, for a staged copy.
pub(crate) fn map_anonymous(len: usize) -> std::io::Result<Backing> {
    // SAFETY: a fresh anonymous mapping, unmapped by `Backing::drop`.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Backing { ptr: ptr.cast(), len })
}
