//! One module per subcommand: its clap arguments and its `run`.

pub mod bump_cost;
pub mod bundle;
pub mod check;
pub mod diff;
pub mod enumerate;
pub mod fetch;
pub mod fetch_display;
pub mod fetch_paths;
pub mod ingest;
pub mod merge;
pub mod report;
pub mod shared_args;
pub mod stats;
pub mod stats_kit;
pub mod verify;
