//! Nix's formats, pure: store paths, hashes and Nix base-32, content addresses, `.drv`
//! (ATerm) files, NAR, narinfo, signatures and the name/version rule.
//!
//! Nothing here touches the filesystem, the network or a clock, and nothing is async, so
//! every parser is tested on bytes alone (golden files made by the real Nix are in
//! `tests/golden/`) and every caller can trust a value once it is built.

#![forbid(unsafe_code)]

pub mod aterm;
pub mod content_address;
pub mod hash;
pub mod name;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
pub mod signature;
pub mod store_path;

pub use content_address::ContentAddress;
pub use hash::{Hash, HashAlgo, HashMode};
pub use store_path::{DrvPath, StorePath, StorePathName};
