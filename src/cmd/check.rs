//! `srcgrab check MANIFEST --cache DIR`: per attribute of a manifest made with
//! `enumerate --outputs`, whether an offline machine with only this cache can install it,
//! build it, or neither, and what is missing. Exit 1 when some attribute can be neither.

use crate::cmd::report::{read_manifest, write_stdout};
use crate::Status;
use anyhow::Context as _;
use rayon::prelude::*;
use srcgrab_fetcher::store::binary::NarInfoText;
use srcgrab_fetcher::store::{Cache, CacheOptions, DiskLayout};
use srcgrab_formats::store_path::StorePath;
use srcgrab_manifest::check::{check, AttributeCheck, CacheContents};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A manifest written by `srcgrab enumerate --outputs`.
    manifest: PathBuf,
    /// The cache to check.
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let manifest = read_manifest(&args.manifest)?;
    let contents = cache_contents(&args.cache)?;
    let checks = check(&manifest, &contents)
        .with_context(|| format!("manifest {}", args.manifest.display()))?;
    let neither = checks
        .iter()
        .filter(|c| !c.installable && !c.buildable)
        .count();
    if args.json {
        let mut text = serde_json::to_string_pretty(&checks)?;
        text.push('\n');
        write_stdout(&text)?;
    } else {
        write_stdout(&render(&checks, contents.len()))?;
    }
    Ok(if neither == 0 {
        Status::Ok
    } else {
        Status::SomeFailed
    })
}

/// Every complete store path of the cache (narinfo parses, NAR file there) and its
/// References, read in parallel.
fn cache_contents(dir: &Path) -> anyhow::Result<CacheContents> {
    let cache = Cache::open_read_only(dir, CacheOptions::default());
    let hash_parts: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading cache {}", dir.display()))?
        .filter_map(|f| f.ok()?.file_name().into_string().ok())
        .filter_map(|name| DiskLayout::narinfo_hash_part(&name).map(str::to_string))
        .collect();
    let present: Vec<(StorePath, Vec<StorePath>)> = hash_parts
        .par_iter()
        .map(|hash_part| {
            let Some(NarInfoText { info, .. }) = cache.published_narinfo(hash_part)? else {
                return Ok(None);
            };
            Ok(Some((info.store_path, info.references)))
        })
        .collect::<Result<Vec<_>, srcgrab_fetcher::Error>>()?
        .into_iter()
        .flatten()
        .collect();
    let mut contents = CacheContents::default();
    for (path, references) in present {
        contents.insert(path, references);
    }
    Ok(contents)
}

fn render(checks: &[AttributeCheck], paths_in_cache: usize) -> String {
    let installable = checks.iter().filter(|c| c.installable).count();
    let buildable_only = checks
        .iter()
        .filter(|c| !c.installable && c.buildable)
        .count();
    let neither = checks.len() - installable - buildable_only;
    let mut out = format!(
        "{} attributes against {paths_in_cache} cached store paths: {installable} installable, {buildable_only} buildable offline (not installable), {neither} neither\n",
        checks.len()
    );
    // Each missing source, with the attributes it leaves neither installable nor buildable.
    let mut breaks: BTreeMap<&StorePath, Vec<String>> = BTreeMap::new();
    for c in checks.iter().filter(|c| !c.installable) {
        for source in &c.missing_sources {
            breaks
                .entry(source)
                .or_default()
                .push(format!("{} {}", c.system, c.attr));
        }
    }
    for (source, attrs) in &breaks {
        let _ = writeln!(out, "missing source {source}: breaks {}", attrs.join(", "));
    }
    for c in checks.iter().filter(|c| !c.installable && !c.buildable) {
        let _ = writeln!(
            out,
            "{} {}: neither installable ({} paths missing) nor buildable ({} sources missing)",
            c.system,
            c.attr,
            c.missing_outputs.len(),
            c.missing_sources.len()
        );
    }
    out
}
