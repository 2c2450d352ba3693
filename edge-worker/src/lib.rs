//! Edge worker (work in progress).
