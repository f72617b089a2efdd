//! Per-item locks, so that many processes can share one cache: whoever fetches, mirrors,
//! imports, ingests or repairs an item holds its lock from the presence check to the
//! publish, and everything it keeps between tries (partial downloads) is only touched under
//! that lock.
//!
//! Per item rather than cache-wide: two fetches of different manifests into one cache both
//! make progress, and a second fetch of the same manifest waits only for the entries the
//! first is working on, then finds them present. The lock files are a fixed set (the first
//! two nix32 characters of the store path's hash part, 1024 files), so no lock file is ever
//! deleted (deleting a lock file others wait on would let two holders in) and the cache
//! does not grow one file per entry. Within its file an item locks one byte of its own
//! (an open-file-description record lock at an offset taken from the rest of its hash), so
//! two items sharing a file do not wait for each other, in one process or in two. Such
//! locks, like the `flock(2)` ones the scratch directories use, are released by the kernel
//! when a process dies, so a SIGKILL leaves no stale lock behind.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use srcgrab_formats::store_path::StorePath;

use super::DiskLayout;
use crate::store::Error;

/// An exclusive `flock` on a lock file, released on drop.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits until `path` (created if missing) is locked by no one else, then holds it.
    pub fn acquire(path: &Path) -> Result<FileLock, Error> {
        let context = || format!("locking {}", path.display());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(Error::io(context()))?;
        loop {
            // SAFETY: flock on a file descriptor we own for the lifetime of `file`.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io(context())(err));
            }
        }
    }
}

impl FileLock {
    /// Holds `path` (which must exist) when no one else does; `None` when someone does.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>, Error> {
        let context = || format!("locking {}", path.display());
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(Error::io(context()))?;
        FileLock::try_hold(file).map_err(Error::io(context()))
    }

    /// Holds the already open `file` when no one else does; `None` when someone does. The
    /// lock stays on the file (not its name), so it survives a rename or a link.
    pub fn try_hold(file: File) -> io::Result<Option<FileLock>> {
        // SAFETY: flock on a file descriptor we own for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(FileLock { _file: file }));
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        Err(err)
    }
}

/// The lock stripe of a store path's hash part, relative to the lock directory.
pub(super) fn stripe(hash_part: &str) -> String {
    hash_part.chars().take(2).collect()
}

/// Waits for, then holds, the item lock of `path` in the cache laid out as `disk`.
pub(super) fn lock_item(disk: &DiskLayout, path: &StorePath) -> Result<FileLock, Error> {
    let file = disk.lock_file(path.hash_part());
    let context = || format!("locking {} in {}", path, file.display());
    let opened = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&file)
        .map_err(Error::io(context()))?;
    let range = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: item_offset(path),
        l_len: 1,
        l_pid: 0,
    };
    loop {
        // SAFETY: fcntl on a file descriptor we own, with a record it only reads.
        if unsafe { libc::fcntl(opened.as_raw_fd(), libc::F_OFD_SETLKW, &range) } == 0 {
            return Ok(FileLock { _file: opened });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::io(context())(err));
        }
    }
}

/// The byte an item locks: 62 bits of a hash (FNV-1a) of its hash part, so two items of one
/// lock file wait for each other only by a chance of one in 2^62.
fn item_offset(path: &StorePath) -> libc::off_t {
    let hash = path
        .hash_part()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash >> 2) as libc::off_t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = FileLock::acquire(&path).unwrap();
        let got_it = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (path, got_it) = (path.clone(), got_it.clone());
            std::thread::spawn(move || {
                let _second = FileLock::acquire(&path).unwrap();
                got_it.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!got_it.load(Ordering::SeqCst), "both held the lock");
        drop(first);
        waiter.join().unwrap();
        assert!(got_it.load(Ordering::SeqCst));
    }

    #[test]
    fn items_of_one_lock_file_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskLayout::new(dir.path());
        std::fs::create_dir_all(disk.locks_dir()).unwrap();
        let path = |hash: &str| StorePath::parse(&format!("/nix/store/{hash}-item")).unwrap();
        let (first, neighbour) = (
            path("0c9s3ljvkh8wrq4pfmz5w2wz1a9fk1m0"),
            path("0c000000000000000000000000000000"),
        );
        assert_eq!(
            disk.lock_file(first.hash_part()),
            disk.lock_file(neighbour.hash_part())
        );
        let held = lock_item(&disk, &first).unwrap();
        // A neighbour in the same file is not held up, from another thread or this one.
        let _neighbour = lock_item(&disk, &neighbour).unwrap();
        let got_it = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (disk, first, got_it) =
                (DiskLayout::new(dir.path()), first.clone(), got_it.clone());
            std::thread::spawn(move || {
                let _second = lock_item(&disk, &first).unwrap();
                got_it.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !got_it.load(Ordering::SeqCst),
            "the same item was held twice"
        );
        drop(held);
        waiter.join().unwrap();
        assert!(got_it.load(Ordering::SeqCst));
    }

    #[test]
    fn stripes_are_the_first_two_characters() {
        assert_eq!(stripe("0c9s3ljvkh8wrq4pfmz5w2wz1a9fk1m0"), "0c");
    }
}
