//! `leaveDotGit` entries: their `.git` depends on what the remote advertises, so they run
//! nix-prefetch-git's own steps against the remote and normalise `.git` as it does.

use std::fs;
use std::path::Path;

use srcgrab_manifest::GitSource;

use super::{check_url, remove_path, GitFetcher, Wanted, DEFAULT_BRANCH};
use crate::Error;
use srcgrab_process as process;

impl GitFetcher {
    /// nix-prefetch-git's `clone` for a leaveDotGit entry, against the remote itself.
    pub(super) fn clone_like_nixpkgs(&self, source: &GitSource, dir: &Path) -> Result<(), Error> {
        check_url(&source.url)?;
        let branch = source.branch_name.as_deref().unwrap_or(DEFAULT_BRANCH);
        self.init_remote(dir, &source.url, source, true)?;
        let (hash, reference) = match Wanted::of(&source.rev) {
            Wanted::Object(id) => (Some(id), None),
            Wanted::Ref(name) => (None, Some(name)),
        };
        let done = self.checkout_ref(dir, source, branch, hash.as_deref(), reference.as_deref())?
            || self.checkout_hash(dir, source, branch, hash.as_deref(), reference.as_deref())?;
        if !done {
            return Err(Error::Command {
                command: format!("git fetch {}", source.url),
                stderr: format!("unable to checkout {}", source.rev),
            });
        }
        if source.fetch_submodules {
            // Shallow submodules would change the kept .git, so they are full (as nixpkgs).
            process::run(self.git_for(dir, source.fetch_lfs).args([
                "submodule",
                "update",
                "--init",
                "--recursive",
                "-j",
                "1",
            ]))?;
        }
        Ok(())
    }

    /// The remote's refs as `(object id, ref name)`, in `git ls-remote` order.
    pub(super) fn ls_remote(&self, dir: &Path) -> Result<Vec<(String, String)>, Error> {
        let listing = process::run(self.git(dir).args(["ls-remote", "origin"]))?;
        Ok(listing
            .lines()
            .filter_map(|line| line.rsplit_once('\t'))
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect())
    }

    /// Fetches a branch or tag alone (shallow) and checks it out; `Ok(false)` when there is
    /// none to fetch (a deep clone, or a commit no ref points at).
    pub(super) fn checkout_ref(
        &self,
        dir: &Path,
        source: &GitSource,
        branch: &str,
        hash: Option<&str>,
        reference: Option<&str>,
    ) -> Result<bool, Error> {
        if source.deep_clone {
            return Ok(false);
        }
        let reference = match (reference, hash) {
            (Some(name), _) => Some(name.to_string()),
            // nix-prefetch-git matches `<hash>\t` anywhere in the line, peeled tags included.
            (None, Some(id)) => self
                .ls_remote(dir)?
                .into_iter()
                .find(|(object, _)| object.ends_with(id))
                .map(|(_, name)| name),
            (None, None) => None,
        };
        let Some(reference) = reference else {
            return Ok(false);
        };
        let fetched = process::run(self.git(dir).args([
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "origin",
            &format!("+{reference}"),
        ]));
        if fetched.is_err() {
            return Ok(false);
        }
        Ok(process::run(self.git_for(dir, source.fetch_lfs).args([
            "checkout",
            "--quiet",
            "-b",
            branch,
            "FETCH_HEAD",
        ]))
        .is_ok())
    }

    /// Fetches by object id (shallow unless a deep clone; all branches and tags when the
    /// server refuses) and checks it out.
    pub(super) fn checkout_hash(
        &self,
        dir: &Path,
        source: &GitSource,
        branch: &str,
        hash: Option<&str>,
        reference: Option<&str>,
    ) -> Result<bool, Error> {
        let hash = match (hash, reference) {
            (Some(id), _) => id.to_string(),
            (None, Some(name)) => self
                .ls_remote(dir)?
                .into_iter()
                .find(|(_, refname)| refname.starts_with(name))
                .map(|(id, _)| id)
                .unwrap_or_default(),
            (None, None) => String::new(),
        };
        let shallow_ok = !source.deep_clone
            && process::run(
                self.git(dir)
                    .args(["fetch", "--quiet", "--depth=1", "origin", &hash]),
            )
            .is_ok();
        if !shallow_ok
            && process::run(self.git(dir).args(["fetch", "--quiet", "-t", "origin"])).is_err()
        {
            return Ok(false);
        }
        let Ok(commit) = self.commit_of(dir, &hash) else {
            return Ok(false);
        };
        Ok(process::run(
            self.git_for(dir, source.fetch_lfs)
                .args(["checkout", "--quiet", "-b", branch])
                .arg(&commit),
        )
        .is_ok())
    }

    /// nix-prefetch-git's `make_deterministic_repo`: drop what holds timestamps or the remote,
    /// remote branches and tags at or after HEAD (but the one on HEAD), then one full
    /// single-threaded repack and a pruning gc.
    pub(super) fn make_deterministic_repo(&self, repo: &Path) -> Result<(), Error> {
        let dot_git = repo.join(".git");
        let git_dir = if dot_git.is_file() {
            let text = fs::read_to_string(&dot_git)
                .map_err(Error::io(format!("reading {}", dot_git.display())))?;
            repo.join(text.trim_end().trim_start_matches("gitdir: "))
        } else {
            dot_git
        };
        for name in [
            "logs",
            "hooks",
            "index",
            "FETCH_HEAD",
            "ORIG_HEAD",
            "refs/remotes/origin/HEAD",
            "config",
        ] {
            remove_path(&git_dir.join(name))?;
        }
        let lines = |args: &[&str]| -> Result<Vec<String>, Error> {
            Ok(process::run(self.git(repo).args(args))?
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect())
        };
        for remote_branch in lines(&["branch", "-r"])? {
            process::run(self.git(repo).args(["branch", "-rD", &remote_branch]))?;
        }
        // Several tags on HEAD make this a multi-line string that no single tag equals.
        let tag_on_head = lines(&["tag", "--points-at", "HEAD"])?.join("\n");
        for tag in lines(&["tag", "--contains", "HEAD"])? {
            if tag != tag_on_head {
                process::run(self.git(repo).args(["tag", "-d", &tag]))?;
            }
        }
        process::run(self.git(repo).args(["config", "pack.threads", "1"]))?;
        process::run(self.git(repo).args(["repack", "-A", "-d", "-f", "--quiet"]))?;
        remove_path(&git_dir.join("config"))?;
        process::run(
            self.git(repo)
                .args(["gc", "--quiet", "--prune=all", "--keep-largest-pack"]),
        )?;
        Ok(())
    }
}
