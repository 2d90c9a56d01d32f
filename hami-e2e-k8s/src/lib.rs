//! The Kubernetes layer of hami-e2e: cluster access, isolated namespaces, cleanup,
//! watch-driven waits, diagnostics on failure, and the local control plane.
//!
//! Being written: see the local-cluster and k8s-fixtures issues.
