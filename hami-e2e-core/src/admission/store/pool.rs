//! [`StorePool`]: a [`DevicePool`] shared through an [`AdmissionStore`]: it reads, drops the
//! holdings of dead holders, places the demands against the rest, and writes, reading again
//! on a conflict.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::backend::AdmissionStore;
use crate::admission::demand::{Demand, PoolDevice, Reservation, Use};
use crate::admission::pool::{DevicePool, next_token};
use crate::error::{Error, Result};
use crate::failure::BoxError;

/// The document: every holding, by `<owner>.<token>`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Document {
    holders: BTreeMap<String, Holding>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Holding {
    owner: String,
    /// Device (`kind/node/id`) and what is taken of it.
    taken: Vec<(String, Use)>,
}

/// How many times a reservation reads again after a conflict before it waits like one that
/// does not fit (the runner asks again soon).
const CONFLICT_ATTEMPTS: u32 = 8;

/// A [`DevicePool`] shared through an [`AdmissionStore`]: the runner uses one when the
/// probe's [`Capabilities::admission`](crate::Capabilities::admission) names a store.
#[derive(Debug, Clone)]
pub struct StorePool {
    store: Arc<dyn AdmissionStore>,
    pool: DevicePool,
}

impl StorePool {
    /// The pool of `devices`, shared through `store`.
    pub fn new(store: Arc<dyn AdmissionStore>, devices: Vec<PoolDevice>) -> Self {
        StorePool {
            store,
            pool: DevicePool::new(devices),
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn AdmissionStore {
        self.store.as_ref()
    }

    /// The devices, without what anyone holds.
    pub fn devices(&self) -> &DevicePool {
        &self.pool
    }

    fn error(&self, message: String, source: Option<BoxError>) -> Error {
        Error::Admission {
            store: self.store.describe(),
            message,
            source,
        }
    }

    /// Reads the document, without the holdings of dead owners (and says whose it dropped).
    async fn read(&self) -> Result<(Document, Option<String>)> {
        self.read_dropping()
            .await
            .map(|(doc, version, _)| (doc, version))
    }

    async fn read_dropping(&self) -> Result<(Document, Option<String>, Vec<String>)> {
        let stored = self
            .store
            .load()
            .await
            .map_err(|e| self.error("cannot read it".into(), Some(e)))?;
        let mut doc: Document = match stored.text.as_deref().map(str::trim) {
            None | Some("") => Document::default(),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| self.error(format!("what it holds does not parse: {e}"), None))?,
        };
        let mut owners: Vec<String> = doc.holders.values().map(|h| h.owner.clone()).collect();
        owners.sort();
        owners.dedup();
        let me = self.store.owner();
        owners.retain(|o| *o != me);
        if !owners.is_empty() {
            let dead =
                self.store.dead_owners(&owners).await.map_err(|e| {
                    self.error("cannot tell which holders are gone".into(), Some(e))
                })?;
            if !dead.is_empty() {
                tracing::info!(store = %self.store.describe(), ?dead, "dropped the devices of holders that are gone");
            }
            doc.holders
                .retain(|_, h| h.owner == me || !dead.contains(&h.owner));
            return Ok((doc, stored.version, dead));
        }
        Ok((doc, stored.version, Vec::new()))
    }

    /// Drops the holdings of holders that are gone from the store now, rather than at the
    /// next reservation: the owners it dropped.
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve).
    pub async fn prune(&self) -> Result<Vec<String>> {
        for attempt in 0..CONFLICT_ATTEMPTS {
            let (doc, version, dead) = self.read_dropping().await?;
            if dead.is_empty() || self.write(&doc, version.as_deref()).await? {
                return Ok(dead);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Ok(Vec::new())
    }

    /// Writes `doc`; `Ok(false)` on a conflict.
    async fn write(&self, doc: &Document, read: Option<&str>) -> Result<bool> {
        let text = if doc.holders.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string_pretty(doc)
                    .map_err(|e| self.error(format!("cannot encode: {e}"), None))?,
            )
        };
        self.store
            .save(text.as_deref(), read)
            .await
            .map_err(|e| self.error("cannot write it".into(), Some(e)))
    }

    /// As [`DevicePool::try_reserve`], against what every live holder of the store holds.
    /// `Ok(None)` also when other holders kept writing meanwhile: ask again later.
    ///
    /// # Errors
    ///
    /// [`Error::Admission`]: the store failed, or its document does not parse.
    pub async fn try_reserve(&self, demands: &[Demand]) -> Result<Option<Reservation>> {
        for attempt in 0..CONFLICT_ATTEMPTS {
            let (mut doc, version) = self.read().await?;
            let held = doc.holders.values().flat_map(|h| h.taken.iter());
            let Some((mut r, taken)) = self.pool.reserve_over(held, demands) else {
                return Ok(None);
            };
            if taken.is_empty() {
                return Ok(Some(r));
            }
            r.token = next_token();
            let owner = self.store.owner();
            doc.holders
                .insert(format!("{owner}.{}", r.token), Holding { owner, taken });
            if self.write(&doc, version.as_deref()).await? {
                return Ok(Some(r));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Ok(None)
    }

    /// Gives back what `reservation` (of this holder) held.
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve), and when other holders kept writing for every
    /// attempt (the holding then ends with this holder's run).
    pub async fn release(&self, reservation: &Reservation) -> Result<()> {
        if reservation.taken.is_empty() {
            return Ok(());
        }
        let key = format!("{}.{}", self.store.owner(), reservation.token);
        for attempt in 0..CONFLICT_ATTEMPTS * 4 {
            let (mut doc, version) = self.read().await?;
            if doc.holders.remove(&key).is_none() {
                return Ok(());
            }
            if self.write(&doc, version.as_deref()).await? {
                return Ok(());
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(self.error(
            format!("gave up releasing `{key}`: other holders wrote at every attempt"),
            None,
        ))
    }
}

/// 10 ms, 20 ms, ... up to 320 ms, with the process id spreading holders apart.
fn backoff(attempt: u32) -> Duration {
    let base = 10u64 << attempt.min(5);
    Duration::from_millis(base + u64::from(std::process::id() % 7) * 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::store::backend::Stored;
    use futures::future::BoxFuture;
    use std::sync::Mutex;

    /// An in-memory store; `conflicts` makes that many writes fail as if another holder
    /// wrote first.
    #[derive(Debug, Default)]
    struct Memory {
        doc: Mutex<(Option<String>, u64)>,
        conflicts: Mutex<u32>,
        dead: Mutex<Vec<String>>,
        saves: Mutex<u32>,
    }

    #[derive(Debug)]
    struct Holder(Arc<Memory>, String);

    impl AdmissionStore for Holder {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn owner(&self) -> String {
            self.1.clone()
        }
        fn load(&self) -> BoxFuture<'_, Result<Stored, BoxError>> {
            let (text, v) = self.0.doc.lock().unwrap().clone();
            Box::pin(async move {
                Ok(Stored {
                    text,
                    version: Some(v.to_string()),
                })
            })
        }
        fn save<'a>(
            &'a self,
            text: Option<&'a str>,
            read: Option<&'a str>,
        ) -> BoxFuture<'a, Result<bool, BoxError>> {
            *self.0.saves.lock().unwrap() += 1;
            let mut conflicts = self.0.conflicts.lock().unwrap();
            let mut doc = self.0.doc.lock().unwrap();
            let ok = if *conflicts > 0 {
                *conflicts -= 1;
                doc.1 += 1; // someone else wrote
                false
            } else if read == Some(doc.1.to_string().as_str()) {
                *doc = (text.map(str::to_string), doc.1 + 1);
                true
            } else {
                false
            };
            Box::pin(async move { Ok(ok) })
        }
        fn dead_owners<'a>(
            &'a self,
            owners: &'a [String],
        ) -> BoxFuture<'a, Result<Vec<String>, BoxError>> {
            let dead = self.0.dead.lock().unwrap();
            let gone = owners
                .iter()
                .filter(|o| dead.contains(o))
                .cloned()
                .collect();
            Box::pin(async move { Ok(gone) })
        }
    }

    fn pools(memory: &Arc<Memory>) -> (StorePool, StorePool) {
        let devices: Vec<PoolDevice> = (0..2)
            .map(|i| PoolDevice::new("nvidia", "node-a", format!("GPU-{i}"), 1000).shares(4))
            .collect();
        (
            StorePool::new(
                Arc::new(Holder(memory.clone(), "run-a".into())),
                devices.clone(),
            ),
            StorePool::new(Arc::new(Holder(memory.clone(), "run-b".into())), devices),
        )
    }

    #[tokio::test]
    async fn holders_with_separate_state_share_the_devices_through_the_store() {
        let memory = Arc::new(Memory::default());
        let (a, b) = pools(&memory);
        let one = [Demand::devices("nvidia", 1).exclusive()];
        let first = a.try_reserve(&one).await.unwrap().expect("free");
        let second = b.try_reserve(&one).await.unwrap().expect("one left");
        assert_ne!(first.all_devices().next(), second.all_devices().next());
        assert!(a.try_reserve(&one).await.unwrap().is_none(), "both held");
        // Shares add up across holders too: 2 of 4 shares each.
        b.release(&second).await.unwrap();
        let half = [Demand::devices("nvidia", 1).memory_mib(500)];
        assert!(a.try_reserve(&half).await.unwrap().is_some());
        assert!(b.try_reserve(&half).await.unwrap().is_some());
        assert!(
            b.try_reserve(&half).await.unwrap().is_none(),
            "1000 MiB taken"
        );
        a.release(&first).await.unwrap();
        let text = memory.doc.lock().unwrap().0.clone().unwrap();
        assert!(
            text.contains("\"owner\": \"run-a\"") && text.contains("nvidia/node-a/GPU-1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_last_release_removes_the_document() {
        let memory = Arc::new(Memory::default());
        let (a, _) = pools(&memory);
        let r = a
            .try_reserve(&[Demand::devices("nvidia", 2)])
            .await
            .unwrap()
            .unwrap();
        assert!(memory.doc.lock().unwrap().0.is_some());
        a.release(&r).await.unwrap();
        assert_eq!(memory.doc.lock().unwrap().0, None);
        a.release(&r).await.unwrap(); // twice: nothing to do
    }

    #[tokio::test]
    async fn a_conflict_reads_again_and_a_stream_of_them_waits() {
        let memory = Arc::new(Memory::default());
        let (a, _) = pools(&memory);
        *memory.conflicts.lock().unwrap() = 2;
        let one = [Demand::devices("nvidia", 1)];
        assert!(
            a.try_reserve(&one).await.unwrap().is_some(),
            "third write lands"
        );
        assert_eq!(*memory.saves.lock().unwrap(), 3);
        *memory.conflicts.lock().unwrap() = CONFLICT_ATTEMPTS;
        assert!(a.try_reserve(&one).await.unwrap().is_none(), "waits");
    }

    #[tokio::test]
    async fn the_holdings_of_dead_owners_no_longer_count() {
        let memory = Arc::new(Memory::default());
        let (a, b) = pools(&memory);
        let all = [Demand::all("nvidia")];
        a.try_reserve(&all).await.unwrap().expect("free");
        assert!(b.try_reserve(&all).await.unwrap().is_none());
        memory.dead.lock().unwrap().push("run-a".into());
        let pruner = StorePool::new(Arc::new(Holder(memory.clone(), String::new())), Vec::new());
        assert_eq!(pruner.prune().await.unwrap(), ["run-a"]);
        assert_eq!(
            memory.doc.lock().unwrap().0,
            None,
            "nobody else held anything"
        );
        a.try_reserve(&all)
            .await
            .unwrap()
            .expect("run-a again: it is this holder");
        let r = b.try_reserve(&all).await.unwrap().expect("run-a is gone");
        let text = memory.doc.lock().unwrap().0.clone().unwrap();
        assert!(!text.contains("run-a"), "dropped on write: {text}");
        b.release(&r).await.unwrap();
    }

    #[tokio::test]
    async fn a_document_that_does_not_parse_names_the_store() {
        let memory = Arc::new(Memory::default());
        memory.doc.lock().unwrap().0 = Some("{not json".into());
        let (a, _) = pools(&memory);
        let e = a
            .try_reserve(&[Demand::devices("nvidia", 1)])
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("admission through memory failed: what it holds does not parse"),
            "{e}"
        );
    }
}
