//! nixpkgs -> srcgrab manifest.

pub mod aterm;
