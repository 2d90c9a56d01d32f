//! The Kubernetes toolkit: how a cluster is reached ([`access`]), creating objects
//! ([`apply`], [`builders`]), watch-driven waits ([`wait`]), exec and logs ([`exec`]),
//! what a failed scenario's namespace looked like ([`diagnostics`]), what a cluster offers
//! ([`discovery`]), and retries of transient API errors ([`retry`]). Nothing here knows of
//! runs or scenarios.
//!
//! A new wait condition goes in [`wait`].

pub mod access;
pub mod apply;
pub mod builders;
pub mod diagnostics;
pub mod discovery;
pub mod exec;
pub(crate) mod host;
pub mod retry;
pub mod wait;
