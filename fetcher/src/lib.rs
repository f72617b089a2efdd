//! Manifest -> verified Nix binary cache and hashed mirror.
//!
//! Pure pieces (NAR, narinfo, signing) do no I/O beyond the reader/writer they are handed;
//! the cache writer publishes only verified bytes, atomically (temp file, fsync, rename).

pub mod cache;
pub mod error;
pub mod nar;
pub mod narinfo;
pub mod sign;
pub mod unpack;

pub use error::Error;
