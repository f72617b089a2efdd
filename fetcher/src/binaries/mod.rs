//! Binaries: store paths and their References closure mirrored from upstream binary caches
//! (`srcgrab fetch --store-paths`), kept signed as upstream signed them.

pub mod closure;
pub mod path_list;
pub mod sizes;

pub use closure::{mirror_closure, ClosureOptions, ClosureReport, PathOutcome, PathReport};
pub use path_list::read_path_list;
