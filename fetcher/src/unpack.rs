//! unpack (in progress).
