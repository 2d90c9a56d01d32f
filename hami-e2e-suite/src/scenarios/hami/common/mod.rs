//! HAMi's scenarios that every vendor runs, `hami::<vendor>::<behaviour>`, one file per
//! topic: [`allocation`] (what HAMi allocates and refuses on one node), [`faults`],
//! [`webhook`], [`placement`], [`requests`] (what a pod asks) and [`lifecycle`] (pods and
//! HAMi over time). A new scenario for every vendor goes into the file of its topic and
//! into [`scenarios`]; where a vendor cannot run it, [`scenarios`] says so by what the
//! backend declares (its annotation keys and resources) or by its vendor.

use std::sync::Arc;

use hami_e2e_core::Scenario;
use hami_e2e_devices::DeviceBackend;

pub(super) mod allocation;
pub(super) mod faults;
pub(super) mod lifecycle;
pub(super) mod placement;
pub(super) mod requests;
pub(super) mod webhook;

/// The scenarios of every vendor for `backend`, less those its devices cannot run.
pub(super) fn scenarios(backend: &dyn DeviceBackend) -> Vec<Arc<dyn Scenario>> {
    let key = backend.key();
    let v = key.as_str();
    // What the vendor does (its family), apart from which chip it is.
    let family = backend.vendor();
    let mut all: Vec<Arc<dyn Scenario>> = vec![
        Arc::new(allocation::allocation(v)),
        Arc::new(allocation::sharing(v)),
        Arc::new(allocation::ten_in_a_row(v)),
        Arc::new(faults::allocation_failure(v)),
        Arc::new(faults::lock_contention(v)),
        Arc::new(faults::plugin_gone(v)),
    ];
    all.push(Arc::new(webhook::webhook_guards(v)));
    all.push(Arc::new(allocation::release(v)));
    all.push(Arc::new(allocation::too_many_devices(v)));
    all.push(Arc::new(placement::device_choice(v)));
    if backend.annotation_keys().use_type.is_some() {
        all.push(Arc::new(placement::device_type(v)));
    }
    all.push(Arc::new(placement::device_policy(v)));
    all.push(Arc::new(placement::node_policy(v)));
    if family != "cambricon" {
        // Cambricon's split count is HAMi's own (100 per card), not the register's.
        all.push(Arc::new(allocation::time_slicing(v)));
    }
    if family != "ascend" {
        // Ascend takes no core share outside its hami-core mode.
        all.push(Arc::new(allocation::cores(v)));
        all.push(Arc::new(allocation::exclusive(v)));
    }
    all.push(Arc::new(placement::scoring_weights(v)));
    // Health is a field of the register annotation (Cambricon has none).
    if backend.annotation_keys().register.is_some() {
        all.push(Arc::new(faults::unhealthy_device(v)));
    }
    all.push(Arc::new(requests::containers(v)));
    all.push(Arc::new(requests::devices(v)));
    if backend.resource_names().memory_percentage.is_some() {
        all.push(Arc::new(requests::memory_percentage(v)));
    }
    all.push(Arc::new(placement::mutex(v)));
    all.push(Arc::new(lifecycle::job_completes(v)));
    all.push(Arc::new(lifecycle::deployment(v)));
    all.push(Arc::new(lifecycle::metrics(v)));
    if backend.annotation_keys().handshake_answer.is_some() {
        all.push(Arc::new(lifecycle::restart_handshake(v)));
    }
    all
}
