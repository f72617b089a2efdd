//! Git sources made natively with the real `git` CLI, exactly as nixpkgs' fetchgit
//! (`nix-prefetch-git --builder`) leaves them in `$out`.
//!
//! Trees without `.git` (the common case) come from one bare mirror per repository URL, shared
//! by every entry and every run: a missing revision is fetched into the mirror shallowly and by
//! commit (so pinning many revisions of one repository downloads each changed object once), then
//! checked out by the real `git checkout` in a throwaway repository that borrows the mirror's
//! objects (alternates). `.gitattributes`, symlinks, executable bits, gitlinks and sparse
//! patterns therefore behave as in nixpkgs. Submodules come from their own mirrors, recursively.
//!
//! With `leaveDotGit`, `.git` is part of the output and depends on what the remote advertises
//! (which ref a commit is fetched through, which tags follow), so those entries run
//! nix-prefetch-git's steps against the remote itself and normalise `.git` the way it does.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use srcgrab_manifest::{Entry, GitSource};

use crate::net::Rewrite;
use crate::store::{Cache, Published};
use crate::Error;
use srcgrab_process as process;

mod dot_git;
mod forge;
mod mirror;

pub use forge::forge_git_source;

/// The branch nix-prefetch-git checks out when the package names none.
const DEFAULT_BRANCH: &str = "fetchgit";

/// Makes git entries; one per run, shared by all workers (it is `Sync`).
pub struct GitFetcher {
    mirror_root: PathBuf,
    /// `--rewrite` rules, handed to git as `url.<to>.insteadOf=<from>` so they also reach
    /// submodule URLs and every other URL git derives. (Where rules overlap, git takes the
    /// longest matching prefix rather than the first rule.)
    rewrites: Vec<Rewrite>,
    /// An empty HOME: no user configuration, hooks or credentials leak into a fetch.
    home: tempfile::TempDir,
    /// A HOME where `git lfs install` put the LFS filters, for fetchLFS sources only (as
    /// nix-prefetch-git, which installs them only then); `None` without git-lfs.
    lfs_home: Option<tempfile::TempDir>,
}

/// What nix-prefetch-git makes of a `rev`: a hexadecimal string is an object id, `HEAD` and
/// `refs/...` are refs, anything else is taken as a tag name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    Object(String),
    Ref(String),
}

impl Wanted {
    fn of(rev: &str) -> Wanted {
        let rev = if rev.is_empty() { "HEAD" } else { rev };
        if rev == "HEAD" || rev.starts_with("refs/") {
            Wanted::Ref(rev.to_string())
        } else if rev
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Wanted::Object(rev.to_string())
        } else {
            Wanted::Ref(format!("refs/tags/{rev}"))
        }
    }
}

impl GitFetcher {
    /// `mirror_root` holds the bare mirrors (created if missing).
    pub fn new(mirror_root: &Path, rewrites: Vec<Rewrite>) -> Result<GitFetcher, Error> {
        fs::create_dir_all(mirror_root)
            .map_err(Error::io(format!("creating {}", mirror_root.display())))?;
        let new_home = || {
            tempfile::Builder::new()
                .prefix("srcgrab-git-home-")
                .tempdir()
                .map_err(Error::io("creating an empty HOME for git"))
        };
        let mut fetcher = GitFetcher {
            mirror_root: mirror_root.to_path_buf(),
            rewrites,
            home: new_home()?,
            lfs_home: None,
        };
        process::run(fetcher.git(mirror_root).arg("--version"))?;
        let lfs_home = new_home()?;
        let lfs_installed =
            process::run(fetcher.git(mirror_root).env("HOME", lfs_home.path()).args([
                "lfs",
                "install",
                "--skip-repo",
            ]))
            .is_ok();
        fetcher.lfs_home = lfs_installed.then_some(lfs_home);
        Ok(fetcher)
    }

    /// Fetches `source` (the entry's own git source, or the one behind a `url-unpack` archive),
    /// and publishes the tree if its NAR hash is the entry's.
    pub fn fetch(
        &self,
        entry: &Entry,
        source: &GitSource,
        cache: &Cache,
    ) -> Result<Published, Error> {
        let work = tempfile::Builder::new()
            .prefix("git-")
            .tempdir_in(cache.temp_dir())
            .map_err(Error::io("creating a git work directory"))?;
        let out = work.path().join("out");
        self.checkout(source, &out)?;
        Ok(cache.publish_tree(entry, &out)?)
    }

    /// Makes in `out` (which must not exist yet) what fetchgit would leave in `$out`.
    pub fn checkout(&self, source: &GitSource, out: &Path) -> Result<(), Error> {
        if source.fetch_lfs && self.lfs_home.is_none() {
            return Err(Error::NeedsBuilder(format!(
                "{} uses fetchLFS and git-lfs is not installed",
                source.url
            )));
        }
        fs::create_dir(out).map_err(Error::io(format!("creating {}", out.display())))?;
        if source.leave_dot_git {
            self.clone_like_nixpkgs(source, out)?;
            for repo in find_dot_git(out)? {
                self.make_deterministic_repo(&repo)?;
            }
        } else {
            let branch = source.branch_name.as_deref().unwrap_or(DEFAULT_BRANCH);
            self.checkout_from_mirror(&source.url, &source.rev, source, branch, out)?;
            for repo in find_dot_git(out)? {
                remove_path(&repo.join(".git"))?;
            }
        }
        Ok(())
    }

    /// A git command with a clean, deterministic environment, run in `dir`.
    fn git(&self, dir: &Path) -> Command {
        self.git_for(dir, false)
    }

    /// A git command that checks files out: with the LFS filters when `lfs` (and git-lfs).
    fn git_for(&self, dir: &Path, lfs: bool) -> Command {
        let home = match &self.lfs_home {
            Some(lfs_home) if lfs => lfs_home.path(),
            _ => self.home.path(),
        };
        let mut cmd = Command::new("git");
        cmd.current_dir(dir)
            .env_clear()
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        // What fetchgit lets through from the caller (impureEnvVars) plus the command path.
        for var in [
            "PATH",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "GIT_SSL_CAINFO",
            "SSL_CERT_FILE",
            "GIT_PROXY_COMMAND",
        ] {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        let mut config: Vec<(String, String)> = [
            ("protocol.file.allow", "always"),
            // A server that stalls fails the fetch instead of hanging the run.
            ("http.lowSpeedLimit", "1"),
            ("http.lowSpeedTime", "120"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        for rule in &self.rewrites {
            config.push((format!("url.{}.insteadOf", rule.to), rule.from.clone()));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.into_iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key);
            cmd.env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        cmd
    }
}

/// Refuses a URL git would take for an option (as git itself does for submodule URLs).
fn check_url(url: &str) -> Result<(), Error> {
    if url.starts_with('-') || url.is_empty() {
        return Err(Error::Command {
            command: "git fetch".into(),
            stderr: format!("refusing the repository URL '{url}'"),
        });
    }
    Ok(())
}

/// Every directory under `root` (itself included) that holds an entry named `.git`, parents
/// before children, without following symlinks.
fn find_dot_git(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).map_err(Error::io(format!("listing {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(Error::io(format!("listing {}", dir.display())))?;
            let kind = entry
                .file_type()
                .map_err(Error::io(format!("inspecting {}", entry.path().display())))?;
            if entry.file_name() == ".git" {
                found.push(dir.clone());
            } else if kind.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Removes a file, symlink or directory tree; a missing path is fine.
fn remove_path(path: &Path) -> Result<(), Error> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => Err(err),
    };
    result.map_err(Error::io(format!("removing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_look_like_options_are_refused() {
        assert!(check_url("--upload-pack=touch /tmp/pwned").is_err());
        assert!(check_url("").is_err());
        assert!(check_url("https://example.org/repo.git").is_ok());
    }

    #[test]
    fn revs_are_classified_as_nix_prefetch_git_does() {
        let object = |s: &str| Wanted::Object(s.into());
        let reference = |s: &str| Wanted::Ref(s.into());
        assert_eq!(Wanted::of("0123abcdef"), object("0123abcdef"));
        assert_eq!(Wanted::of(""), reference("HEAD"));
        assert_eq!(Wanted::of("HEAD"), reference("HEAD"));
        assert_eq!(Wanted::of("refs/heads/main"), reference("refs/heads/main"));
        assert_eq!(Wanted::of("v1.2"), reference("refs/tags/v1.2"));
        // Upper-case hex is not hex to `tr -d 0123456789abcdef`.
        assert_eq!(Wanted::of("ABCDEF"), reference("refs/tags/ABCDEF"));
        // A tag that looks like hex is taken as an object id, as upstream does.
        assert_eq!(Wanted::of("deadbeef"), object("deadbeef"));
    }
}
