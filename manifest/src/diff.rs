//! Differences between two manifests (see `srcgrab diff`).
