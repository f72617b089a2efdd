//! One module per subcommand: its clap arguments and its `run`.

pub mod bundle;
pub mod diff;
pub mod enumerate;
pub mod fetch;
pub mod fetch_paths;
pub mod ingest;
pub mod report;
pub mod stats;
pub mod verify;
