//! narinfo (in progress).
