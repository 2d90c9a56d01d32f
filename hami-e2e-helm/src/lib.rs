//! Deploys HAMi for hami-e2e: with Helm on any cluster, and as host processes (the real
//! HAMi scheduler and webhook) over fake devices on the local cluster.
//!
//! Not written yet: this crate is a placeholder in the workspace layout; the helm and
//! GPU-less HAMi issues fill it.
