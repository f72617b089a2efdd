//! Each process that writes to a cache keeps its temp files in a scratch directory of its
//! own, `.tmp/run-XXXX/`, held by a `flock` on the `.lock` file inside it for as long as the
//! cache is open. A process that dies (SIGKILL, a crash, a stop on a full disk that never
//! unwinds) leaves its directory behind unlocked: the next process to open the cache for
//! writing finds it so and removes it, with whatever half-written files it holds, so their
//! space comes back. Partial downloads are not scratch: they live in `.tmp/partial/` to be
//! resumed (and are cleaned by age, see `net::partial`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::FileLock;
use crate::Error;

const RUN_PREFIX: &str = "run-";
/// A scratch directory being set up: made under this name, locked, then renamed to
/// `run-…`, so no one ever sees an unlocked `run-` directory that is still in use.
const NEW_PREFIX: &str = "new-";
const LOCK_FILE: &str = ".lock";
/// Temp files directly in `.tmp` (older srcgrab versions wrote them there) and unrenamed
/// `new-` directories are removed once older than this: no publish takes a day.
const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);

/// This process's scratch directory; removed when dropped.
#[derive(Debug)]
pub(super) struct Scratch {
    dir: PathBuf,
    _lock: FileLock,
}

impl Scratch {
    /// Removes what dead processes left in `temp` (the cache's `.tmp`), then makes and
    /// holds this process's scratch directory there.
    pub(super) fn open(temp: &Path) -> Result<Scratch, Error> {
        remove_orphans(temp);
        let context = || format!("creating a scratch directory in {}", temp.display());
        let new = tempfile::Builder::new()
            .prefix(NEW_PREFIX)
            .tempdir_in(temp)
            .map_err(Error::io(context()))?
            .keep();
        let lock_file = new.join(LOCK_FILE);
        fs::File::create(&lock_file).map_err(Error::io(context()))?;
        let lock = FileLock::try_acquire(&lock_file)?.ok_or_else(|| Error::Corrupt {
            what: lock_file.display().to_string(),
            reason: "locked by another process as soon as it was made".into(),
        })?;
        let name = new
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(NEW_PREFIX))
            .unwrap_or("x")
            .to_string();
        let dir = temp.join(format!("{RUN_PREFIX}{name}"));
        fs::rename(&new, &dir).map_err(Error::io(context()))?;
        Ok(Scratch { dir, _lock: lock })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Best effort: a scratch directory that cannot be removed now is tried again next time.
fn remove_orphans(temp: &Path) {
    let Ok(listing) = fs::read_dir(temp) else {
        return;
    };
    for item in listing.flatten() {
        let path = item.path();
        let name = item.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = item.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > ORPHAN_AGE);
        if meta.is_dir() && name.starts_with(RUN_PREFIX) {
            // Held while removing, so a second process cleaning at once skips it.
            if let Ok(Some(_held)) = FileLock::try_acquire(&path.join(LOCK_FILE)) {
                let _ = fs::remove_dir_all(&path);
            }
        } else if meta.is_dir() && name.starts_with(NEW_PREFIX) && old {
            let _ = fs::remove_dir_all(&path);
        } else if meta.is_file() && old {
            let _ = fs::remove_file(&path);
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
        fs::write(dead.join(LOCK_FILE), b"").unwrap();
        fs::write(dead.join("left-by-a-kill"), vec![0; 4096]).unwrap();
        fs::create_dir(temp.path().join("partial")).unwrap();

        let second = Scratch::open(temp.path()).unwrap();
        assert!(!dead.exists(), "the unlocked scratch directory is removed");
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
}
