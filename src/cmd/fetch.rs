//! `srcgrab fetch`.

use crate::Status;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<Status> {
    anyhow::bail!("fetch is not implemented yet")
}
