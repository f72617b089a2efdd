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
use crate::store::{Cache, FileLock, Published};
use crate::Error;
use srcgrab_process as process;

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
        cache.publish_tree(entry, &out)
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

    fn mirror_dir(&self, url: &str) -> PathBuf {
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
    fn lock_mirror(&self, url: &str) -> Result<(PathBuf, FileLock), Error> {
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
    fn fetch_into_mirror(&self, mirror: &Path, url: &str, rev: &str) -> Result<String, Error> {
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
    fn checkout_from_mirror(
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
    fn init_remote(
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
    fn commit_of(&self, dir: &Path, object: &str) -> Result<String, Error> {
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
    fn checkout_submodules(&self, dir: &Path, source: &GitSource) -> Result<(), Error> {
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

    /// nix-prefetch-git's `clone` for a leaveDotGit entry, against the remote itself.
    fn clone_like_nixpkgs(&self, source: &GitSource, dir: &Path) -> Result<(), Error> {
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
    fn ls_remote(&self, dir: &Path) -> Result<Vec<(String, String)>, Error> {
        let listing = process::run(self.git(dir).args(["ls-remote", "origin"]))?;
        Ok(listing
            .lines()
            .filter_map(|line| line.rsplit_once('\t'))
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect())
    }

    /// Fetches a branch or tag alone (shallow) and checks it out; `Ok(false)` when there is
    /// none to fetch (a deep clone, or a commit no ref points at).
    fn checkout_ref(
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
    fn checkout_hash(
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
    fn make_deterministic_repo(&self, repo: &Path) -> Result<(), Error> {
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

/// The git source behind a forge archive URL (what fetchFromGitHub, fetchFromGitLab and
/// fetchFromGitea download), for an archive that cannot be downloaded. Only the tree is
/// comparable: an archive leaves out `export-ignore` files, so the hash check decides.
pub fn forge_git_source(archive_url: &str) -> Option<GitSource> {
    let (scheme, rest) = archive_url.split_once("://")?;
    let (host, path) = rest.split_once('/')?;
    let strip_archive_ext = |name: &str| {
        [".tar.gz", ".zip", ".tar.bz2", ".tar"]
            .iter()
            .find_map(|ext| name.strip_suffix(ext))
            .map(str::to_string)
    };
    let (project, rev) = if let Some((project, archive)) = path.split_once("/-/archive/") {
        // GitLab: <project>/-/archive/<rev>/<repo>-<rev>.tar.gz
        let (rev, _file) = archive.rsplit_once('/')?;
        (project.to_string(), rev.to_string())
    } else {
        // GitHub, Gitea, Codeberg: <owner>/<repo>/archive/<rev>.tar.gz
        let (project, file) = path.split_once("/archive/")?;
        if project.split('/').count() != 2 {
            return None;
        }
        (project.to_string(), strip_archive_ext(file)?)
    };
    if rev.is_empty() || project.is_empty() {
        return None;
    }
    Some(GitSource {
        url: format!("{scheme}://{host}/{project}.git"),
        rev,
        branch_name: None,
        fetch_submodules: false,
        leave_dot_git: false,
        deep_clone: false,
        sparse_checkout: Vec::new(),
        non_cone_mode: false,
        fetch_lfs: false,
    })
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
    fn forge_archives_name_their_git_source() {
        let source = |url: &str| forge_git_source(url).map(|s| (s.url, s.rev));
        let pair = |url: &str, rev: &str| Some((url.to_string(), rev.to_string()));
        assert_eq!(
            source("https://github.com/NixOS/nix/archive/0123abcd.tar.gz"),
            pair("https://github.com/NixOS/nix.git", "0123abcd")
        );
        assert_eq!(
            source("https://github.com/o/r/archive/refs/tags/v1.2.tar.gz"),
            pair("https://github.com/o/r.git", "refs/tags/v1.2")
        );
        assert_eq!(
            source("https://codeberg.org/o/r/archive/v2.zip"),
            pair("https://codeberg.org/o/r.git", "v2")
        );
        assert_eq!(
            source("https://gitlab.com/group/sub/proj/-/archive/v3/proj-v3.tar.gz"),
            pair("https://gitlab.com/group/sub/proj.git", "v3")
        );
        assert_eq!(source("https://example.org/pub/hello-2.12.tar.gz"), None);
        assert_eq!(source("https://example.org/a/b/c/archive/x.tar.gz"), None);
    }

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
