//! `srcgrab merge SHARD...`: join the manifests of `enumerate --shard K/N` runs into the
//! manifest one whole run writes.

use crate::cmd::enumerate::write_manifest;
use crate::cmd::report::read_manifest;
use crate::Status;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The manifests of all N shards of one run, in any order.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Where to write the manifest; `-` or nothing: stdout. Written atomically.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let shards = args
        .shards
        .iter()
        .map(|path| read_manifest(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let manifest = srcgrab_manifest::shard::merge(shards)?;
    write_manifest(&manifest, args.output.as_deref())?;
    // Like enumerate: the failed attributes of the run make it exit 1.
    Ok(if manifest.failures.is_empty() {
        Status::Ok
    } else {
        Status::SomeFailed
    })
}
