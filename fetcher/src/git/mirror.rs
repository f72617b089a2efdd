//! The bare mirror per repository URL that every entry and run shares: revisions fetched
//! into it shallowly and by commit, checked out through alternates, submodules recursively.

use std::fs;
use std::path::{Path, PathBuf};

use srcgrab_manifest::GitSource;

use super::{check_url, GitFetcher, Wanted, DEFAULT_BRANCH};
use crate::store::FileLock;
use crate::Error;
use srcgrab_process as process;

impl GitFetcher {
    pub(super) fn mirror_dir(&self, url: &str) -> PathBuf {
        let key = blake3::hash(url.as_bytes()).to_hex();
        let base: String = url
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("")
            .trim_end_matches(".git")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .take(40)
            .collect();
        self.mirror_root
            .join(format!("{}-{}.git", &key.as_str()[..20], base))
    }

    /// Locks the mirror of `url`, creating it on first use.
    pub(super) fn lock_mirror(&self, url: &str) -> Result<(PathBuf, FileLock), Error> {
        let dir = self.mirror_dir(url);
        let lock = FileLock::acquire(&dir.with_extension("lock"))?;
        if !dir.exists() {
            let fresh = dir.with_extension(format!("new-{}", std::process::id()));
            let _ = fs::remove_dir_all(&fresh);
            process::run(
                self.git(&self.mirror_root)
                    .args(["init", "--bare", "--quiet"])
                    .arg(&fresh),
            )?;
            for (key, value) in [
                ("remote.origin.url", url),
                // Readers borrow the objects while another worker fetches: nothing may
                // repack or prune behind their back.
                ("gc.auto", "0"),
                ("maintenance.auto", "false"),
                ("fetch.writeCommitGraph", "false"),
            ] {
                process::run(self.git(&fresh).args(["config", key, value]))?;
            }
            fs::rename(&fresh, &dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        Ok((dir, lock))
    }

    /// The full object id `rev` names, fetched into the mirror when it is not there yet. Refs
    /// are always asked of the remote, since they move.
    pub(super) fn fetch_into_mirror(
        &self,
        mirror: &Path,
        url: &str,
        rev: &str,
    ) -> Result<String, Error> {
        let resolve = |name: &str| {
            process::run(
                self.git(mirror)
                    .args(["rev-parse", "--verify", "--quiet"])
                    .arg(format!("{name}^{{object}}")),
            )
            .ok()
            .map(|id| id.trim().to_string())
        };
        match Wanted::of(rev) {
            Wanted::Object(id) => {
                if let Some(full) = resolve(&id) {
                    return Ok(full);
                }
                let shallow = id.len() == 40
                    && process::run(self.git(mirror).args([
                        "fetch",
                        "--quiet",
                        "--no-tags",
                        "--depth=1",
                        "origin",
                        &format!("+{id}:refs/srcgrab/{id}"),
                    ]))
                    .is_ok();
                if !shallow {
                    // As nix-prefetch-git: a server that refuses a bare commit still serves
                    // its branches and tags, with all history.
                    let mut fetch = self.git(mirror);
                    fetch.args(["fetch", "--quiet", "--tags"]);
                    if mirror.join("shallow").exists() {
                        fetch.arg("--unshallow");
                    }
                    fetch.args(["origin", "+refs/heads/*:refs/heads/*"]);
                    process::run(&mut fetch)?;
                }
                resolve(&id).ok_or_else(|| Error::Command {
                    command: format!("git fetch {url}"),
                    stderr: format!("revision {id} not found"),
                })
            }
            Wanted::Ref(name) => {
                let local = format!("refs/srcgrab/{name}");
                let refspec = format!("+{name}:{local}");
                let fetch = |depth: &[&str]| {
                    process::run(
                        self.git(mirror)
                            .args(["fetch", "--quiet", "--no-tags"])
                            .args(depth)
                            .args(["origin", &refspec]),
                    )
                };
                // Dumb HTTP servers cannot make shallow packs.
                fetch(&["--depth=1"]).or_else(|_| fetch(&[]))?;
                resolve(&local).ok_or_else(|| Error::Command {
                    command: format!("git fetch {url} {name}"),
                    stderr: "the fetched ref did not resolve".into(),
                })
            }
        }
    }

    /// Checks `rev` of `url` out into the existing empty directory `dir` through the mirror,
    /// then its submodules when asked.
    pub(super) fn checkout_from_mirror(
        &self,
        url: &str,
        rev: &str,
        source: &GitSource,
        branch: &str,
        dir: &Path,
    ) -> Result<(), Error> {
        check_url(url)?;
        let (mirror, lock) = self.lock_mirror(url)?;
        let object = self.fetch_into_mirror(&mirror, url, rev)?;
        drop(lock);

        // No templates (sample hooks, description): this .git is thrown away.
        self.init_remote(dir, url, source, false)?;
        let alternates = dir.join(".git/objects/info/alternates");
        fs::write(
            &alternates,
            format!("{}\n", mirror.join("objects").display()),
        )
        .map_err(Error::io(format!("writing {}", alternates.display())))?;
        let commit = self.commit_of(dir, &object)?;
        process::run(
            self.git_for(dir, source.fetch_lfs)
                .args(["checkout", "--quiet", "-b", branch])
                .arg(&commit),
        )?;
        if source.fetch_submodules {
            self.checkout_submodules(dir, source)?;
        }
        Ok(())
    }

    /// `git init` + `origin` + sparse patterns, as nix-prefetch-git's `init_remote`; with
    /// git's templates when the `.git` is kept.
    pub(super) fn init_remote(
        &self,
        dir: &Path,
        url: &str,
        source: &GitSource,
        templates: bool,
    ) -> Result<(), Error> {
        let mut init = self.git(dir);
        init.args(["init", "--quiet", "--initial-branch=master"]);
        if !templates {
            init.arg("--template=");
        }
        process::run(&mut init)?;
        let sparse = &source.sparse_checkout;
        process::run(self.git(dir).args(["remote", "add", "origin", url]))?;
        if !sparse.is_empty() {
            process::run(self.git(dir).args([
                "config",
                "remote.origin.partialclonefilter",
                "blob:none",
            ]))?;
            let mut set = self.git(dir);
            set.args(["sparse-checkout", "set", "--stdin"]);
            if source.non_cone_mode {
                set.arg("--no-cone");
            }
            process::run_with_input(
                &mut set,
                Some(format!("{}\n", sparse.join("\n")).as_bytes()),
            )?;
        }
        Ok(())
    }

    /// A commit to check out for `object`: itself, or for a bare tree a commit made of it, as
    /// nix-prefetch-git does.
    pub(super) fn commit_of(&self, dir: &Path, object: &str) -> Result<String, Error> {
        let kind = process::run(self.git(dir).args(["cat-file", "-t", object]))?;
        match kind.trim() {
            "commit" | "tag" => Ok(object.to_string()),
            "tree" => {
                let commit = process::run(
                    self.git(dir)
                        .args(["commit-tree", object, "-m"])
                        .arg(format!("Commit created from tree hash {object}"))
                        .env("GIT_AUTHOR_NAME", "nix-prefetch-git")
                        .env("GIT_AUTHOR_EMAIL", "nix-prefetch-git@localhost")
                        .env("GIT_COMMITTER_NAME", "nix-prefetch-git")
                        .env("GIT_COMMITTER_EMAIL", "nix-prefetch-git@localhost"),
                )?;
                Ok(commit.trim().to_string())
            }
            other => Err(Error::Command {
                command: format!("git cat-file -t {object}"),
                stderr: format!("unrecognized git object type: {other}"),
            }),
        }
    }

    /// `git submodule update --init --recursive`, through mirrors: every gitlink of the
    /// checkout whose submodule is not `update = none`, at its recorded commit.
    pub(super) fn checkout_submodules(&self, dir: &Path, source: &GitSource) -> Result<(), Error> {
        if !dir.join(".gitmodules").exists() {
            return Ok(());
        }
        // Copies URLs (relative ones resolved against origin) and update modes into config.
        process::run(self.git(dir).args(["submodule", "--quiet", "init"]))?;
        let paths = process::run(self.git(dir).args([
            "config",
            "--file",
            ".gitmodules",
            "--null",
            "--get-regexp",
            r"^submodule\..*\.path$",
        ]))?;
        let names: Vec<(String, String)> = paths
            .split('\0')
            .filter_map(|item| item.split_once('\n'))
            .filter_map(|(key, path)| {
                let name = key.strip_prefix("submodule.")?.strip_suffix(".path")?;
                Some((path.to_string(), name.to_string()))
            })
            .collect();
        let index = process::run(self.git(dir).args(["ls-files", "--stage", "-z"]))?;
        for line in index.split('\0') {
            let Some((meta, path)) = line.split_once('\t') else {
                continue;
            };
            let mut fields = meta.split(' ');
            let (Some("160000"), Some(commit)) = (fields.next(), fields.next()) else {
                continue;
            };
            let target = dir.join(path);
            if !target.is_dir() {
                continue; // outside the sparse checkout
            }
            let config = |key: &str| {
                process::run(self.git(dir).args(["config", key]))
                    .ok()
                    .map(|v| v.trim().to_string())
            };
            let name = names
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, n)| n.as_str())
                .ok_or_else(|| Error::Command {
                    command: "git submodule update --init".into(),
                    stderr: format!("no submodule mapping found in .gitmodules for path '{path}'"),
                })?;
            if config(&format!("submodule.{name}.update")).as_deref() == Some("none") {
                continue;
            }
            let url = config(&format!("submodule.{name}.url")).ok_or_else(|| Error::Command {
                command: "git submodule update --init".into(),
                stderr: format!("no url found for submodule path '{path}'"),
            })?;
            let nested = GitSource {
                url: url.clone(),
                rev: commit.to_string(),
                sparse_checkout: Vec::new(),
                non_cone_mode: false,
                ..source.clone()
            };
            self.checkout_from_mirror(&url, commit, &nested, DEFAULT_BRANCH, &target)?;
        }
        Ok(())
    }
}
