//! `srcgrab`: fetch every source a nixpkgs needs, ahead of time, for offline Nix.
//!
//! Exit codes (as ripgrep): 0 all went well, 1 finished but some items failed, 2 fatal.

#[macro_use]
mod one_line;
mod cli_values;
mod cmd;
mod progress;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "srcgrab", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a package set and write the manifest of every fixed-output derivation it needs.
    Enumerate(cmd::enumerate::Args),
    /// Join the manifests of `enumerate --shard K/N` runs into the manifest of the whole run.
    Merge(cmd::merge::Args),
    /// Download every manifest entry, verify it, and write a binary cache and hashed mirror.
    Fetch(cmd::fetch::Args),
    /// Show what changed between two manifests.
    Diff(cmd::diff::Args),
    /// Count a manifest's entries and bytes by kind and system, and its largest entries.
    Stats(cmd::stats::Args),
    /// Re-check every narinfo, NAR and mirror file of a cache; report corrupt, missing and unreferenced items.
    Verify(cmd::verify::Args),
    /// Add files brought on a disk to the cache when their hash is a manifest entry's.
    Ingest(cmd::ingest::Args),
    /// Write a bundle of the cache items a manifest has and an older one lacks.
    Export(cmd::bundle::ExportArgs),
    /// Per attribute of a manifest made with `enumerate --outputs`: can a cache install it,
    /// build it offline, or neither, and what is missing.
    Check(cmd::check::Args),
    /// Verify and add the items of a bundle (directory, .tar, or - for stdin) to a cache.
    Import(cmd::bundle::ImportArgs),
}

/// How a command that did not fail fatally ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything asked for was done.
    Ok,
    /// The command finished, but some items failed (exit 1).
    SomeFailed,
}

/// As many open files as the system lets this process have: a run holds one per item in
/// flight (its lock, up to 1024 paths of a closure at once) besides its connections and
/// partial files, more than the common soft limit of 1024. Without more, it runs with what
/// it has, as before.
fn raise_open_file_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

fn main() -> ExitCode {
    raise_open_file_limit();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Enumerate(args) => cmd::enumerate::run(args),
        Command::Merge(args) => cmd::merge::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Diff(args) => cmd::diff::run(args),
        Command::Stats(args) => cmd::stats::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Ingest(args) => cmd::ingest::run(args),
        Command::Export(args) => cmd::bundle::run_export(args),
        Command::Import(args) => cmd::bundle::run_import(args),
        Command::Check(args) => cmd::check::run(args),
    };
    match result {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::SomeFailed) => ExitCode::from(1),
        Err(err) => {
            tell!("srcgrab: {err:#}");
            ExitCode::from(2)
        }
    }
}
