//! Deploys HAMi for hami-e2e: with Helm on any cluster, and as host processes (the real
//! HAMi scheduler and webhook) over fake devices on the local cluster.

mod error;

pub use error::{Error, Result};
