//! nar (in progress).
