//! HAMi's scenarios for Cambricon only (`hami::cambricon::*`, for every backend of the
//! Cambricon family): none yet; a scenario that only Cambricon's MLUs run goes here.
//!
//! In the scenarios of every vendor (`common`), Cambricon differs: it runs no
//! `time-slicing` (its split count is HAMi's own, 100 per card, not the register's) and no
//! `unhealthy-device` (it has no register annotation to carry the health), and its
//! `lock-contention` and `device-type` are findings (`hami-bug`).

use std::sync::Arc;

use hami_e2e_core::Scenario;

/// The Cambricon-only scenarios of the backend with key `vendor`: none yet.
pub(super) fn scenarios(vendor: &str) -> Vec<Arc<dyn Scenario>> {
    let _ = vendor;
    Vec::new()
}
