//! HAMi's scenarios for Hygon only (`hami::hygon::*`, for every backend of the Hygon
//! family): none yet; a scenario that only Hygon's DCUs run goes here.
//!
//! In the scenarios of every vendor (`common`), Hygon's `containers` is a finding
//! (`hami-bug`), as NVIDIA's, and its device plugin answers HAMi's handshake, so it runs
//! `restart-handshake`.

use std::sync::Arc;

use hami_e2e_core::Scenario;

/// The Hygon-only scenarios of the backend with key `vendor`: none yet.
pub(super) fn scenarios(vendor: &str) -> Vec<Arc<dyn Scenario>> {
    let _ = vendor;
    Vec::new()
}
