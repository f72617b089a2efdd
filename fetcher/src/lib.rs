//! Manifest -> verified Nix binary cache and hashed mirror.
//!
//! Pure pieces (NAR, narinfo, signing) do no I/O beyond the reader/writer they are handed;
//! the cache writer publishes only verified bytes, atomically (temp file, fsync, rename).

pub mod binaries;
pub mod builder;
pub mod error;
pub mod fetch;
pub mod git;
pub mod net;
pub mod probe;
pub mod report;
pub mod store;

pub use error::Error;
