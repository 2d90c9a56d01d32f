//! What a scenario needs from the system under test, as data, so a run can skip it with a
//! reason instead of failing.
//!
//! The core knows nothing of clusters: [`Capabilities`] is a bag of flags
//! (`real-device`, `hami-webhook`) and named quantities (`nvidia.com/gpu per node`,
//! `kubernetes minor`) that a probe (see [`Runner::probe`](crate::Runner::probe)) fills in
//! once per run. A [`Requirement`] checks them and explains a miss.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// What the system under test offers, probed once per run.
///
/// # Examples
///
/// ```
/// use hami_e2e_core::{Capabilities, Requirement};
///
/// let caps = Capabilities::default().with_quantity("nvidia devices on one node", 1);
/// let need = Requirement::at_least("nvidia devices on one node", 2);
/// assert_eq!(need.check(&caps).unwrap_err(), "needs 2 nvidia devices on one node, has 1");
/// assert!(Requirement::flag("real-device").check(&caps).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// Features present (`real-device`, `hami-scheduler`).
    pub flags: BTreeSet<String>,
    /// Named amounts (`nvidia.com/gpu per node` = 8).
    pub quantities: BTreeMap<String, u64>,
    /// Free-form facts for the run summary (`kubernetes` = `v1.37.2`).
    pub facts: BTreeMap<String, String>,
    /// The devices scenarios' [`Demand`](crate::Demand)s are admitted against (see
    /// [`admission`](crate::admission)).
    pub devices: Vec<crate::admission::PoolDevice>,
    /// Where admission is shared with other machines (a cluster object): the runner reserves
    /// through it instead of this machine's file (see
    /// [`StorePool`](crate::admission::StorePool)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<crate::admission::SharedStore>,
}

impl Capabilities {
    /// Adds a flag.
    #[must_use]
    pub fn with_flag(mut self, flag: impl Into<String>) -> Self {
        self.flags.insert(flag.into());
        self
    }

    /// Sets a quantity.
    #[must_use]
    pub fn with_quantity(mut self, name: impl Into<String>, value: u64) -> Self {
        self.quantities.insert(name.into(), value);
        self
    }

    /// Sets a fact shown in the summary.
    #[must_use]
    pub fn with_fact(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.facts.insert(name.into(), value.into());
        self
    }

    /// Shares admission through `store` (see [`admission`](Self::admission)).
    #[must_use]
    pub fn with_admission(mut self, store: Arc<dyn crate::admission::AdmissionStore>) -> Self {
        self.admission = Some(crate::admission::SharedStore(store));
        self
    }

    /// Adds a device scenarios may be admitted to.
    #[must_use]
    pub fn with_device(mut self, device: crate::admission::PoolDevice) -> Self {
        self.devices.push(device);
        self
    }

    /// A quantity, 0 when unknown.
    pub fn quantity(&self, name: &str) -> u64 {
        self.quantities.get(name).copied().unwrap_or(0)
    }
}

type CheckFn = dyn Fn(&Capabilities) -> Result<(), String> + Send + Sync;

/// One thing a scenario needs. A failed check gives the skip reason.
#[derive(Clone)]
pub enum Requirement {
    /// The flag must be present.
    Flag(String),
    /// The quantity must be at least this much.
    AtLeast(String, u64),
    /// Any check, with a description for listings.
    Custom {
        /// Shown in `--dry-run`.
        description: String,
        /// Returns the skip reason on a miss.
        check: Arc<CheckFn>,
    },
}

impl Requirement {
    /// Needs `flag`.
    pub fn flag(flag: impl Into<String>) -> Self {
        Requirement::Flag(flag.into())
    }

    /// Needs at least `value` of `quantity`.
    pub fn at_least(quantity: impl Into<String>, value: u64) -> Self {
        Requirement::AtLeast(quantity.into(), value)
    }

    /// Needs whatever `check` says; it returns the skip reason on a miss.
    pub fn custom(
        description: impl Into<String>,
        check: impl Fn(&Capabilities) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Requirement::Custom {
            description: description.into(),
            check: Arc::new(check),
        }
    }

    /// `Ok` when `caps` satisfies it, else the reason to skip.
    pub fn check(&self, caps: &Capabilities) -> Result<(), String> {
        match self {
            Requirement::Flag(f) if caps.flags.contains(f) => Ok(()),
            Requirement::Flag(f) => Err(format!("needs {f}")),
            Requirement::AtLeast(q, n) => {
                let has = caps.quantity(q);
                if has >= *n {
                    Ok(())
                } else {
                    Err(format!("needs {n} {q}, has {has}"))
                }
            }
            Requirement::Custom { check, .. } => check(caps),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Flag(flag) => write!(f, "{flag}"),
            Requirement::AtLeast(q, n) => write!(f, "{n} {q}"),
            Requirement::Custom { description, .. } => f.write_str(description),
        }
    }
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Requirement({self})")
    }
}
