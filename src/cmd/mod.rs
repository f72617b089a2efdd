//! One module per subcommand: its clap arguments and its `run`.

pub mod diff;
pub mod enumerate;
pub mod fetch;
pub mod report;
pub mod stats;
