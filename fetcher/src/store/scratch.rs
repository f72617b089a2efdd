//! Each process that writes to a cache keeps its temp files in a scratch directory of its
//! own, `.tmp/run-XXXX/`, held by a `flock` on `.tmp/run-XXXX.lock` for as long as the cache
//! is open. A process that dies (SIGKILL, a crash, a stop on a full disk that never unwinds)
//! leaves its directory behind unlocked: the next process to open the cache for writing finds
//! it so and removes it, with whatever half-written files it holds, so their space comes
//! back. Partial downloads are not scratch: they live in `.tmp/partial/` to be resumed (and
//! are cleaned by age, see `net::partial`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::FileLock;
use crate::store::Error;

const RUN_PREFIX: &str = "run-";
/// A lock file not yet held has this name; nothing cleans it up but its age.
const STAGING_PREFIX: &str = "staging-";
const LOCK_SUFFIX: &str = ".lock";
/// Temp files directly in `.tmp` (older srcgrab versions wrote them there) are removed once
/// older than this: no publish takes a day.
const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);

/// This process's scratch directory; removed when dropped.
#[derive(Debug)]
pub(super) struct Scratch {
    dir: PathBuf,
    lock_file: PathBuf,
    _lock: FileLock,
}

impl Scratch {
    /// Removes what dead processes left in `temp` (the cache's `.tmp`), then makes and
    /// holds this process's scratch directory there. The lock file is made under a staging
    /// name the clean-up passes over, locked, and only then linked to its `run-….lock` name;
    /// the directory comes after. So no process cleaning up at the same time ever finds a
    /// run lock unheld, or a directory in use without its lock.
    pub(super) fn open(temp: &Path) -> Result<Scratch, Error> {
        remove_orphans(temp);
        let context = || format!("creating a scratch directory in {}", temp.display());
        let staged = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .suffix(LOCK_SUFFIX)
            .tempfile_in(temp)
            .map_err(Error::io(context()))?;
        let held = staged
            .as_file()
            .try_clone()
            .and_then(FileLock::try_hold)
            .map_err(Error::io(context()))?;
        let staged_name = staged.path().file_name().unwrap_or_default();
        let run_name = staged_name
            .to_string_lossy()
            .replacen(STAGING_PREFIX, RUN_PREFIX, 1);
        let lock_file = temp.join(run_name);
        let lock = held.ok_or_else(|| Error::ScratchTaken(lock_file.clone()))?;
        // A link, not a rename: it fails rather than take over a name that is in use.
        fs::hard_link(staged.path(), &lock_file).map_err(Error::io(context()))?;
        drop(staged);
        let dir = scratch_dir_of(&lock_file).expect("named run-….lock above");
        if let Err(e) = fs::create_dir(&dir) {
            let _ = fs::remove_file(&lock_file);
            return Err(Error::io(context())(e));
        }
        Ok(Scratch {
            dir,
            lock_file,
            _lock: lock,
        })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_file(&self.lock_file);
    }
}

/// `run-XXXX` for `run-XXXX.lock`.
fn scratch_dir_of(lock_file: &Path) -> Option<PathBuf> {
    let name = lock_file.file_name()?.to_str()?;
    let stem = name.strip_suffix(LOCK_SUFFIX)?;
    stem.starts_with(RUN_PREFIX)
        .then(|| lock_file.with_file_name(stem))
}

/// Best effort: what cannot be removed now is tried again next time.
fn remove_orphans(temp: &Path) {
    let Ok(listing) = fs::read_dir(temp) else {
        return;
    };
    let mut locks = Vec::new();
    let mut dirs = Vec::new();
    for item in listing.flatten() {
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        let Ok(meta) = item.metadata() else { continue };
        if meta.is_file() && name.starts_with(RUN_PREFIX) && name.ends_with(LOCK_SUFFIX) {
            locks.push(path);
        } else if meta.is_dir() && name.starts_with(RUN_PREFIX) {
            dirs.push(path);
        } else if meta.is_file() {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > ORPHAN_AGE);
            if old {
                let _ = fs::remove_file(&path);
            }
        }
    }
    for lock_file in locks {
        // Held while removing, so a second process cleaning at once skips it.
        if let Ok(Some(_held)) = FileLock::try_acquire(&lock_file) {
            if let Some(dir) = scratch_dir_of(&lock_file) {
                let _ = fs::remove_dir_all(dir);
            }
            let _ = fs::remove_file(&lock_file);
        }
    }
    // A scratch directory whose lock file is gone belongs to no one: its owner made the
    // lock first and removes it last.
    for dir in dirs {
        let lock_file = dir.with_file_name(format!(
            "{}{LOCK_SUFFIX}",
            dir.file_name().unwrap_or_default().to_string_lossy()
        ));
        if !lock_file.exists() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_scratch_is_removed_and_a_live_one_kept() {
        let temp = tempfile::tempdir().unwrap();
        let live = Scratch::open(temp.path()).unwrap();
        fs::write(live.dir().join("half-written"), b"in use").unwrap();
        let dead = temp.path().join("run-dead");
        fs::create_dir(&dead).unwrap();
        fs::write(temp.path().join("run-dead.lock"), b"").unwrap();
        fs::write(dead.join("left-by-a-kill"), vec![0; 4096]).unwrap();
        let lockless = temp.path().join("run-lockless");
        fs::create_dir(&lockless).unwrap();
        fs::create_dir(temp.path().join("partial")).unwrap();

        let second = Scratch::open(temp.path()).unwrap();
        assert!(!dead.exists(), "the unlocked scratch directory is removed");
        assert!(!temp.path().join("run-dead.lock").exists());
        assert!(!lockless.exists(), "so is one without a lock file");
        assert!(
            live.dir().join("half-written").exists(),
            "a held one is kept"
        );
        assert!(
            temp.path().join("partial").exists(),
            "partials are not scratch"
        );
        assert_ne!(second.dir(), live.dir());
        let second_dir = second.dir().to_path_buf();
        drop(second);
        assert!(
            !second_dir.exists(),
            "a scratch directory goes when its cache closes"
        );
    }

    #[test]
    fn processes_opening_one_cache_at_once_never_remove_each_others_scratch() {
        let temp = tempfile::tempdir().unwrap();
        let openers: Vec<_> = (0..8)
            .map(|_| {
                let temp = temp.path().to_path_buf();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let scratch = Scratch::open(&temp).unwrap();
                        assert!(scratch.dir().is_dir(), "{}", scratch.dir().display());
                    }
                })
            })
            .collect();
        for opener in openers {
            opener.join().unwrap();
        }
    }
}
