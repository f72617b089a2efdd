//! The Nix builder fallback (`--builder nix`): entries srcgrab cannot make itself (hg, svn,
//! vendor hashes, postFetch scripts, or native results that did not verify) are realised from
//! their own .drv by the real Nix, exported into the cache through the same verification as
//! every other item (declared hash, then the store path it implies), and removed from the
//! store again when they were not there before.

use std::path::Path;
use std::process::Command;

use srcgrab_manifest::{DrvPath, Entry};

use crate::store::{Cache, Published};
use crate::Error;
use srcgrab_process as process;

/// What building one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub published: Published,
    /// The derivation that was realised.
    pub drv_path: String,
    /// The output was already in the store before the build (so it was left there).
    pub was_in_store: bool,
    /// The output was deleted from the store again afterwards.
    pub removed_from_store: bool,
}

/// Realises entries with `nix-store`. Blocking; run one per worker thread.
#[derive(Debug, Clone, Default)]
pub struct NixBuilder {
    /// Leave built outputs in the store (`--keep-store-paths`).
    pub keep_store_paths: bool,
}

/// The Nix system of this machine (`x86_64-linux`, `aarch64-darwin`, …): the derivations
/// it can build are those of this system.
pub fn host_system() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

/// The entry's derivation to realise here: this system's when the manifest has one (a
/// fetcher of another system's stdenv cannot run here), else the first recorded.
pub fn host_drv(entry: &Entry) -> Result<&DrvPath, Error> {
    entry
        .drv_path_for(&host_system())
        .ok_or_else(|| Error::NoDerivation(entry.store_path.to_path_string()))
}

impl NixBuilder {
    pub fn new(keep_store_paths: bool) -> NixBuilder {
        NixBuilder { keep_store_paths }
    }

    /// Realises the entry's derivation for this machine, publishes the output into
    /// `cache`, then removes it from the store unless it was there before or the builder
    /// keeps store paths.
    pub fn build(&self, entry: &Entry, cache: &Cache) -> Result<Built, Error> {
        let drv_path = host_drv(entry)?.to_string();
        let drv_path = drv_path.as_str();
        if !is_valid(drv_path)? {
            return Err(Error::MissingDerivation(drv_path.to_string()));
        }
        let was_in_store = is_valid(&entry.store_path.to_path_string())?;
        // A temporary GC root keeps a concurrent `nix-store --gc` off the output until it
        // is exported.
        let roots = tempfile::Builder::new()
            .prefix("builder-")
            .tempdir_in(cache.temp_dir())
            .map_err(Error::io("creating a directory for a GC root"))?;
        let root = roots.path().join("result");
        let mut realise = Command::new("nix-store");
        realise
            .arg("--realise")
            .arg(drv_path)
            .arg("--add-root")
            .arg(&root);
        if cache.options().layout.cache {
            // Inputs that are entries themselves (a vendor FOD's source tarball) come from
            // the cache being filled, so a build needs no network for what was fetched.
            let cache_root = std::path::absolute(cache.root())
                .map_err(Error::io(format!("resolving {}", cache.root().display())))?;
            let cache_url = format!("file://{}", cache_root.display());
            realise
                .args(["--option", "extra-substituters", &cache_url])
                .args(["--option", "narinfo-cache-negative-ttl", "0"]);
        }
        run(&mut realise)?;
        let output = std::fs::read_link(&root)
            .map_err(Error::io(format!("reading GC root {}", root.display())))?;
        if output != Path::new(&entry.store_path.to_path_string()) {
            return Err(Error::BuiltElsewhere {
                drv_path: drv_path.to_string(),
                expected: entry.store_path.to_path_string(),
                got: output.display().to_string(),
            });
        }
        let published = export(entry, cache)?;
        std::fs::remove_file(&root)
            .map_err(Error::io(format!("removing GC root {}", root.display())))?;
        let removed_from_store = !was_in_store && !self.keep_store_paths && {
            run(Command::new("nix-store")
                .arg("--delete")
                .arg(entry.store_path.to_path_string()))?;
            true
        };
        Ok(Built {
            published,
            drv_path: drv_path.to_string(),
            was_in_store,
            removed_from_store,
        })
    }
}

/// `nix-store --dump` of the output, straight into the cache's verifying publisher.
fn export(entry: &Entry, cache: &Cache) -> Result<Published, Error> {
    let mut dump = process::Streaming::start(
        Command::new("nix-store")
            .arg("--dump")
            .arg(entry.store_path.to_path_string()),
    )?;
    let published = cache.publish_nar(entry, dump.stdout());
    dump.finish()?;
    Ok(published?)
}

/// Whether a store path (or .drv) is valid in the local store.
fn is_valid(path: &str) -> Result<bool, Error> {
    Ok(process::succeeds(
        Command::new("nix-store").args(["--check-validity", path]),
    )?)
}

fn run(cmd: &mut Command) -> Result<(), Error> {
    process::run(cmd)?;
    Ok(())
}
