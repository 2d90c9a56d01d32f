//! The Kubernetes layer of hami-e2e: cluster access, isolated namespaces, cleanup,
//! watch-driven waits, diagnostics on failure, and the local control plane.
//!
//! Written so far: [`bincache`], which builds the local control plane's binaries
//! (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, KWOK) from the Go modules
//! pinned in the repository's `go/` folder into a cache outside the repository, and this
//! crate's [`Error`]. The local cluster itself, namespaces, waits and diagnostics follow
//! (see the local-cluster and k8s-fixtures issues).
//!
//! ```no_run
//! # async fn f() -> hami_e2e_k8s::Result<()> {
//! use hami_e2e_k8s::bincache::{BinaryCache, KubernetesRelease};
//!
//! let cache = BinaryCache::default(); // ~/.cache/hami-e2e, or HAMI_E2E_CACHE_DIR
//! let release = KubernetesRelease::from_env()?; // HAMI_E2E_K8S_VERSION, default the newest
//! let bins = cache.kubernetes(&release).await?; // builds once, with a progress line
//! println!("kube-apiserver at {}", bins.apiserver.display());
//! # Ok(()) }
//! ```

pub mod bincache;
mod error;
mod kubeconfig;
pub mod local;

pub use error::{Error, Result, is_transient_kube, register_transient_errors};
pub use kubeconfig::client_from_kubeconfig;
