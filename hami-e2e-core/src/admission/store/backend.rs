//! What a store backend implements ([`AdmissionStore`]): one document and its version,
//! written only over the version read, and which holders are dead.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::failure::BoxError;

/// What an [`AdmissionStore`] holds: the document's text (`None`: there is none) and the
/// version read with it (`None`: none, so a write creates it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The document, as [`StorePool`](super::StorePool) wrote it.
    pub text: Option<String>,
    /// Its version, handed back to [`AdmissionStore::save`].
    pub version: Option<String>,
}

/// Where holders on several machines keep what they hold: one document and its version.
/// `hami-e2e-k8s` has one over a ConfigMap, whose holders are runs with renewed leases.
pub trait AdmissionStore: Send + Sync + fmt::Debug {
    /// The store, for messages (`ConfigMap default/hami-e2e-admission`).
    fn describe(&self) -> String;

    /// Who this holder is (a run id): its entries carry it, and other holders ask
    /// [`dead_owners`](Self::dead_owners) about it.
    fn owner(&self) -> String;

    /// Reads the document and its version.
    fn load(&self) -> BoxFuture<'_, Result<Stored, BoxError>>;

    /// Writes `text` (`None`: removes the document) if the document is still at version
    /// `read` (`None`: if there is none). `Ok(false)`: another holder wrote meanwhile.
    fn save<'a>(
        &'a self,
        text: Option<&'a str>,
        read: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, BoxError>>;

    /// Which of `owners` are gone (their run ended or its lease expired): their holdings
    /// no longer count. Never this holder's own [`owner`](Self::owner).
    fn dead_owners<'a>(
        &'a self,
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, BoxError>>;
}

/// An [`AdmissionStore`] as the probe hands it to the runner
/// ([`Capabilities::admission`](crate::Capabilities::admission)): equal to itself only,
/// shown and serialised as its [`describe`](AdmissionStore::describe).
#[derive(Clone)]
pub struct SharedStore(pub Arc<dyn AdmissionStore>);

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.describe())
    }
}

impl PartialEq for SharedStore {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedStore {}

impl serde::Serialize for SharedStore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.describe())
    }
}
