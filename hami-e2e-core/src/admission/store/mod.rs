//! Admission shared through a store that several machines reach (a Kubernetes object, in
//! `hami-e2e-k8s`): shards of one CI run on different machines, each with its own
//! admission state, never hand out the same device twice.
//!
//! The store keeps one document, what every live holder holds, and a version of it; a
//! write names the version it read and fails when another holder wrote meanwhile
//! (optimistic concurrency, as Kubernetes' `resourceVersion`). [`StorePool`] reads, drops
//! the holdings of holders the store says are dead (a run whose lease expired), places
//! the demands against the rest, and writes, reading again on a conflict.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use futures::future::BoxFuture;
//! use hami_e2e_core::admission::{AdmissionStore, Stored, StorePool};
//! use hami_e2e_core::{BoxError, Demand, PoolDevice};
//!
//! /// A store in memory, shared by two "machines" of the example.
//! #[derive(Debug, Default)]
//! struct Memory(Mutex<(Option<String>, u64)>);
//!
//! #[derive(Debug)]
//! struct Holder(Arc<Memory>, &'static str);
//!
//! impl AdmissionStore for Holder {
//!     fn describe(&self) -> String { "memory".into() }
//!     fn owner(&self) -> String { self.1.into() }
//!     fn load(&self) -> BoxFuture<'_, Result<Stored, BoxError>> {
//!         let (text, version) = self.0.0.lock().unwrap().clone();
//!         Box::pin(async move { Ok(Stored { text, version: Some(version.to_string()) }) })
//!     }
//!     fn save<'a>(&'a self, text: Option<&'a str>, read: Option<&'a str>) -> BoxFuture<'a, Result<bool, BoxError>> {
//!         let mut m = self.0.0.lock().unwrap();
//!         let fresh = read == Some(m.1.to_string().as_str());
//!         if fresh { *m = (text.map(str::to_string), m.1 + 1); }
//!         Box::pin(async move { Ok(fresh) })
//!     }
//!     fn dead_owners<'a>(&'a self, _: &'a [String]) -> BoxFuture<'a, Result<Vec<String>, BoxError>> {
//!         Box::pin(async { Ok(Vec::new()) })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let memory = Arc::new(Memory::default());
//! let devices = vec![PoolDevice::new("nvidia", "node-a", "GPU-0", 16384)];
//! let a = StorePool::new(Arc::new(Holder(memory.clone(), "shard-1")), devices.clone());
//! let b = StorePool::new(Arc::new(Holder(memory.clone(), "shard-2")), devices);
//! let whole = [Demand::devices("nvidia", 1).exclusive()];
//! let held = a.try_reserve(&whole).await?.expect("free");
//! assert!(b.try_reserve(&whole).await?.is_none(), "held by the other shard");
//! a.release(&held).await?;
//! assert!(b.try_reserve(&whole).await?.is_some());
//! # Ok::<(), hami_e2e_core::Error>(()) })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod pool;

pub use backend::{AdmissionStore, SharedStore, Stored};
pub use pool::StorePool;
