//! nixpkgs -> srcgrab manifest.
