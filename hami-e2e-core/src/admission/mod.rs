//! Device-aware admission: scenarios declare the devices they hold while they run
//! ([`Demand`]), the probe describes the devices the system under test has
//! ([`Capabilities::devices`](crate::Capabilities::devices)), and the runner starts a
//! scenario only when the devices not held by running scenarios can hold its demand too.
//! A scenario whose demand the devices could not hold even with nothing else running is
//! skipped with the reason (a failure under `--require`).
//!
//! Admission hands the scenario a [`Reservation`]: the devices, and so the nodes, it may
//! use ([`Context::devices`](crate::Context::devices)). Scenarios pin their pods to the
//! reserved node; a scenario that tests where a scheduler puts pods asks for
//! [`Demand::all`] devices of a vendor instead, so nothing else uses them meanwhile.
//!
//! The model is HAMi's: a device is shared by up to `shares` containers, whose memory and
//! cores add up; an [`exclusive`](Demand::exclusive) demand takes the whole device. It is
//! the model of Kubernetes' extended resources too when every device has one share (a
//! count per node).
//!
//! [`DevicePool`] is the bookkeeping, usable on its own:
//!
//! ```
//! use hami_e2e_core::{Demand, DevicePool, PoolDevice};
//!
//! let mut pool = DevicePool::new(vec![
//!     PoolDevice::new("nvidia", "node-a", "GPU-0", 16384),
//!     PoolDevice::new("nvidia", "node-a", "GPU-1", 16384),
//! ]);
//! let two = [Demand::devices("nvidia", 2).exclusive()];
//! let first = pool.try_reserve(&two).expect("both devices are free");
//! assert_eq!(first.node("nvidia"), Some("node-a"));
//! assert!(pool.try_reserve(&two).is_none(), "held by the first scenario");
//! pool.release(&first);
//! assert!(pool.try_reserve(&two).is_some());
//!
//! let three = [Demand::devices("nvidia", 3)];
//! assert_eq!(
//!     pool.can_ever_hold(&three).unwrap_err(),
//!     "needs 3 nvidia devices on one node; the cluster has 2 nvidia devices, at most 2 on one node"
//! );
//! ```

mod demand;
mod file;
mod pool;
pub mod store;

pub use demand::{Demand, GrantedDevice, PoolDevice, Reservation};
pub use file::{SharedPool, process_start_time};
pub use pool::DevicePool;
pub use store::{AdmissionStore, SharedStore, StorePool, Stored};
