//! The record stores: every pod, container and image record in memory,
//! written through to the metadata store.
//!
//! A [`RecordStore`] holds every record of one kind, sorted by id (so an id
//! prefix is a range scan), loaded once at start. Reads (List, Status, id
//! lookups) never touch the disk and decode nothing. Each change is
//! committed to redb first, in one transaction, and only then applied in
//! memory, so memory never shows what a crash would lose. The write methods
//! block (redb commits fsync): callers run them on a blocking thread.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CridError;
use crate::limits::ListBudget;
use crate::rpc::blocking;
use crate::store::{MetadataStore, StoreError, Table};

/// What a store keeps: records of one kind, each under its id in `TABLE`.
pub trait Stored: Serialize + DeserializeOwned + Send + Sync + 'static {
    const TABLE: Table;
    fn id(&self) -> &str;
}

/// A pod's or a container's record: it also reserves a name, and weighs
/// something in the node's List answers.
pub trait Record: Stored + Clone {
    fn reserved_name(&self) -> &str;
    /// What the record weighs in the node's List answers
    /// ([`crate::limits::entry_charge`] of its List entry).
    fn list_charge(&self) -> u64;
}

pub struct RecordStore<T> {
    metadata: Arc<MetadataStore>,
    records: RwLock<BTreeMap<String, Arc<T>>>,
    /// Held from a commit until memory shows it, so two writers of one id
    /// cannot apply in another order than they committed. redb runs one
    /// write transaction at a time anyway, so this costs no parallelism;
    /// readers never take it.
    writer: Mutex<()>,
}

impl<T: Stored> RecordStore<T> {
    /// Reads every readable record of `T::TABLE` (unreadable ones are
    /// skipped and logged by [`MetadataStore::list`]). Blocking; at start.
    pub fn load(metadata: Arc<MetadataStore>) -> Result<RecordStore<T>, StoreError> {
        let records = metadata
            .list::<T>(T::TABLE)?
            .into_iter()
            .map(|(id, record)| (id, Arc::new(record)))
            .collect();
        Ok(RecordStore {
            metadata,
            records: RwLock::new(records),
            writer: Mutex::new(()),
        })
    }

    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        self.read().get(id).cloned()
    }

    /// The record named by a full id or a unique prefix of one (crictl
    /// passes prefixes); `field` names the request field in errors.
    pub fn find(&self, field: &'static str, id: &str) -> Result<Option<Arc<T>>, CridError> {
        if id.is_empty() {
            return Err(CridError::invalid(field, id, "is required"));
        }
        let records = self.read();
        if let Some(record) = records.get(id) {
            return Ok(Some(record.clone()));
        }
        let mut matching = records
            .range::<str, _>((Bound::Included(id), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(id));
        match (matching.next(), matching.next()) {
            (Some(_), Some(_)) => Err(CridError::invalid(
                field,
                id,
                "prefix matches more than one record",
            )),
            (found, _) => Ok(found.map(|(_, record)| record.clone())),
        }
    }

    /// Every record, in id order, as it is now.
    pub fn all(&self) -> Vec<Arc<T>> {
        self.read().values().cloned().collect()
    }

    /// The records `keep` selects, in id order.
    pub fn filtered(&self, keep: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
        self.read()
            .values()
            .filter(|record| keep(record))
            .cloned()
            .collect()
    }

    /// Writes `record` over its previous version (or as a new one).
    pub fn put(&self, record: T) -> Result<Arc<T>, StoreError> {
        let _writing = self.lock_writer();
        self.metadata.put(T::TABLE, record.id(), &record)?;
        Ok(self.apply(record))
    }

    /// Writes every record in one transaction: all of them or none.
    pub fn put_all(&self, records: Vec<T>) -> Result<(), StoreError> {
        let _writing = self.lock_writer();
        self.metadata
            .put_all(T::TABLE, records.iter().map(|r| (r.id(), r)))?;
        let mut memory = self.write();
        for record in records {
            memory.insert(record.id().to_string(), Arc::new(record));
        }
        Ok(())
    }

    /// Removes `id`; the record if it was there.
    pub fn remove(&self, id: &str) -> Result<Option<Arc<T>>, StoreError> {
        let _writing = self.lock_writer();
        self.metadata.remove(T::TABLE, id)?;
        Ok(self.write().remove(id))
    }

    /// Compacts the metadata store once enough was removed, on a blocking
    /// thread of its own: the removal that crossed the threshold answers
    /// without waiting for it, and the async workers never wait at all.
    pub fn compact_if_due(&self) {
        if !self.metadata.compaction_due() {
            return;
        }
        let metadata = self.metadata.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            match metadata.compact_if_due() {
                Ok(Some(sizes)) => tracing::info!(
                    before_bytes = sizes.before,
                    after_bytes = sizes.after,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "metadata store compacted"
                ),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot compact the metadata store"),
            }
        });
    }

    fn apply(&self, record: T) -> Arc<T> {
        let record = Arc::new(record);
        self.write().insert(record.id().to_string(), record.clone());
        record
    }

    // Every change under these locks is one map operation, so a panic
    // cannot leave the map half-changed: a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<T>>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<T>>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Record> RecordStore<T> {
    /// Charges the record to `budget` (ResourceExhausted when the List
    /// answers have no room for it), then reserves its name and writes it
    /// in one transaction; refunds if the write fails.
    pub fn insert_reserving(&self, record: T, budget: &ListBudget) -> Result<Arc<T>, CridError> {
        let charge = record.list_charge();
        budget.charge(T::TABLE, charge)?;
        let _writing = self.lock_writer();
        let written =
            self.metadata
                .insert_reserving(T::TABLE, record.reserved_name(), record.id(), &record);
        match written {
            Ok(()) => Ok(self.apply(record)),
            Err(error) => {
                budget.refund(T::TABLE, charge);
                Err(error.into())
            }
        }
    }

    /// Removes the record and releases its name, in one transaction, and
    /// refunds its charge; the removed record if it was there (only what
    /// was there was charged, so a second removal refunds nothing).
    pub fn remove_releasing(
        &self,
        record: &T,
        budget: &ListBudget,
    ) -> Result<Option<Arc<T>>, StoreError> {
        let _writing = self.lock_writer();
        self.metadata
            .remove_releasing(T::TABLE, record.reserved_name(), record.id())?;
        let removed = self.write().remove(record.id());
        if let Some(removed) = &removed {
            budget.refund(T::TABLE, removed.list_charge());
        }
        Ok(removed)
    }

    /// Charges what the loaded records weigh to `budget` (at start).
    pub fn charge_loaded(&self, budget: &ListBudget) {
        let bytes = self.read().values().map(|r| r.list_charge()).sum();
        budget.load(T::TABLE, bytes);
    }
}

/// Reserves the record's name and writes it, in one transaction, if the
/// node's List answers have room for it (else ResourceExhausted). Charge,
/// write and refund happen on one blocking thread, so a cancelled RPC
/// cannot leave the budget charged for a record that was not written.
pub async fn insert_reserving<R: Record>(
    store: &Arc<RecordStore<R>>,
    lists: &Arc<ListBudget>,
    record: &R,
) -> Result<Arc<R>, CridError> {
    let (store, lists, record) = (store.clone(), lists.clone(), record.clone());
    blocking(move || store.insert_reserving(record, &lists)).await
}

/// Writes the record over its previous version.
pub async fn save<R: Stored + Clone>(
    store: &Arc<RecordStore<R>>,
    record: &R,
) -> Result<Arc<R>, CridError> {
    let (store, record) = (store.clone(), record.clone());
    blocking(move || Ok(store.put(record)?)).await
}

/// Removes the record, releases its name and refunds its charge, in one
/// transaction.
pub async fn forget<R: Record>(
    store: &Arc<RecordStore<R>>,
    lists: &Arc<ListBudget>,
    record: &R,
) -> Result<(), CridError> {
    let (writer, lists, record) = (store.clone(), lists.clone(), record.clone());
    blocking(move || {
        writer.remove_releasing(&record, &lists)?;
        Ok(())
    })
    .await?;
    store.compact_if_due();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::limits::Usage;

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Thing {
        id: String,
        name: String,
        /// JSON cannot encode a map with non-string keys: a non-empty one
        /// makes the write fail for real, before anything is committed.
        unencodable: BTreeMap<Vec<u8>, u8>,
    }

    impl Stored for Thing {
        const TABLE: Table = Table::Containers;
        fn id(&self) -> &str {
            &self.id
        }
    }

    impl Record for Thing {
        fn reserved_name(&self) -> &str {
            &self.name
        }
        fn list_charge(&self) -> u64 {
            self.name.len() as u64
        }
    }

    fn thing(id: &str, name: &str) -> Thing {
        Thing {
            id: id.into(),
            name: name.into(),
            unencodable: BTreeMap::new(),
        }
    }

    fn unencodable(id: &str) -> Thing {
        Thing {
            unencodable: BTreeMap::from([(vec![1], 1)]),
            ..thing(id, "bad")
        }
    }

    fn open(dir: &std::path::Path) -> (Arc<MetadataStore>, RecordStore<Thing>) {
        let metadata = Arc::new(MetadataStore::open(dir).expect("open"));
        let store = RecordStore::load(metadata.clone()).expect("load");
        (metadata, store)
    }

    fn ids(store: &RecordStore<Thing>) -> Vec<String> {
        store.all().iter().map(|t| t.id.clone()).collect()
    }

    fn status(error: CridError) -> (tonic::Code, String) {
        let status = tonic::Status::from(error);
        (status.code(), status.message().to_string())
    }

    fn charged(budget: &ListBudget) -> u64 {
        budget.usage().containers
    }

    #[test]
    fn what_is_written_is_read_from_memory_and_loaded_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (metadata, store) = open(dir.path());
        let budget = ListBudget::new(1000);
        store
            .insert_reserving(thing("b2", "two"), &budget)
            .expect("insert");
        store
            .insert_reserving(thing("a1", "one"), &budget)
            .expect("insert");
        store.put(thing("c3", "three")).expect("put");
        let renamed = thing("b2", "second");
        store.put(renamed.clone()).expect("overwrite");
        assert_eq!(ids(&store), ["a1", "b2", "c3"], "sorted by id");
        assert_eq!(store.get("b2").as_deref(), Some(&renamed));
        assert_eq!(store.get("d4"), None);
        let t_names = store.filtered(|t| t.name.starts_with('t'));
        assert_eq!(t_names.len(), 1, "{t_names:?}");
        assert_eq!(charged(&budget), 3 + 3, "puts charge nothing");

        // What memory shows is what redb holds: a fresh load sees the same,
        // and charges what the records weigh now.
        drop(store);
        let reloaded = RecordStore::<Thing>::load(metadata).expect("reload");
        assert_eq!(ids(&reloaded), ["a1", "b2", "c3"]);
        assert_eq!(reloaded.get("a1").as_deref(), Some(&thing("a1", "one")));
        assert_eq!(reloaded.get("b2").as_deref(), Some(&renamed));
        let budget = ListBudget::new(1000);
        reloaded.charge_loaded(&budget);
        assert_eq!(
            budget.usage(),
            Usage {
                pods: 0,
                containers: 3 + 6 + 5
            }
        );
    }

    #[test]
    fn ids_are_found_whole_or_by_a_unique_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, store) = open(dir.path());
        let budget = ListBudget::new(1000);
        for (id, name) in [("abc1", "x"), ("abc2", "y"), ("abd", "z"), ("b", "w")] {
            store
                .insert_reserving(thing(id, name), &budget)
                .expect("insert");
        }
        let found = |id: &str| {
            store
                .find("container_id", id)
                .expect(id)
                .map(|t| t.id.clone())
        };
        assert_eq!(found("abc1").as_deref(), Some("abc1"));
        assert_eq!(found("abc2").as_deref(), Some("abc2"));
        assert_eq!(found("abd").as_deref(), Some("abd"));
        assert_eq!(found("b").as_deref(), Some("b"));
        assert_eq!(found("c"), None);
        assert_eq!(found("abc3"), None);
        assert_eq!(found("abd0"), None, "longer than any id");

        for ambiguous in ["abc", "ab", "a"] {
            let (code, message) =
                status(store.find("container_id", ambiguous).expect_err(ambiguous));
            assert_eq!(code, tonic::Code::InvalidArgument);
            assert!(
                message.starts_with("container_id:") && message.contains("more than one"),
                "{message}"
            );
        }
        let (code, message) = status(store.find("container_id", "").expect_err("empty"));
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert!(message.contains("is required"), "{message}");
    }

    #[test]
    fn removal_goes_from_memory_and_redb_releases_the_name_and_refunds_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (metadata, store) = open(dir.path());
        let budget = ListBudget::new(1000);
        let one = thing("a1", "one");
        store
            .insert_reserving(one.clone(), &budget)
            .expect("insert");
        store
            .insert_reserving(thing("b2", "other"), &budget)
            .expect("insert");
        store.put(thing("c3", "plain")).expect("put");
        assert_eq!(charged(&budget), 3 + 5);
        assert_eq!(
            store
                .remove_releasing(&one, &budget)
                .expect("remove")
                .as_deref(),
            Some(&one)
        );
        assert_eq!(charged(&budget), 5);
        assert_eq!(store.remove_releasing(&one, &budget).expect("twice"), None);
        assert_eq!(charged(&budget), 5, "a second removal refunds nothing");
        let removed = store.remove("c3").expect("remove");
        assert_eq!(removed.map(|t| t.id.clone()).as_deref(), Some("c3"));
        assert_eq!(store.remove("c3").expect("twice"), None);
        assert_eq!(ids(&store), ["b2"]);
        // The name is free again.
        store
            .insert_reserving(thing("d4", "one"), &budget)
            .expect("name released");
        drop(store);
        let reloaded = RecordStore::<Thing>::load(metadata).expect("reload");
        assert_eq!(ids(&reloaded), ["b2", "d4"]);
    }

    #[test]
    fn a_failed_write_leaves_memory_and_the_budget_as_they_were() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (metadata, store) = open(dir.path());
        let budget = ListBudget::new(10);
        store
            .insert_reserving(thing("a1", "one"), &budget)
            .expect("insert");

        // Refused by redb's transaction: the name is taken.
        let (code, _) = status(
            store
                .insert_reserving(thing("b2", "one"), &budget)
                .expect_err("name taken"),
        );
        assert_eq!(code, tonic::Code::AlreadyExists);
        assert_eq!(store.get("b2"), None);
        assert_eq!(charged(&budget), 3, "refunded");

        // Refused by the budget: nothing written.
        let (code, _) = status(
            store
                .insert_reserving(thing("b2", "eightchr"), &budget)
                .expect_err("no room"),
        );
        assert_eq!(code, tonic::Code::ResourceExhausted);
        assert_eq!(store.get("b2"), None);
        assert_eq!(charged(&budget), 3);

        // Refused before the commit: the record cannot be encoded.
        let error = store.put(unencodable("a1")).expect_err("cannot encode");
        assert!(matches!(error, StoreError::Codec { .. }), "{error}");
        assert_eq!(store.get("a1").as_deref(), Some(&thing("a1", "one")));
        let (code, _) = status(
            store
                .insert_reserving(unencodable("c3"), &budget)
                .expect_err("cannot encode"),
        );
        assert_eq!(code, tonic::Code::Internal);
        assert_eq!(charged(&budget), 3, "refunded");

        // One bad record in a batch: none of it is written.
        let error = store
            .put_all(vec![thing("c3", "three"), unencodable("d4")])
            .expect_err("batch refused");
        assert!(matches!(error, StoreError::Codec { .. }), "{error}");
        assert_eq!(ids(&store), ["a1"]);
        drop(store);
        let reloaded = RecordStore::<Thing>::load(metadata).expect("reload");
        assert_eq!(ids(&reloaded), ["a1"], "nor in redb");
        assert_eq!(reloaded.get("a1").as_deref(), Some(&thing("a1", "one")));
    }

    #[test]
    fn a_batch_is_written_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (metadata, store) = open(dir.path());
        store.put(thing("a1", "old")).expect("put");
        store
            .put_all(vec![
                thing("a1", "new"),
                thing("b2", "two"),
                thing("c3", "three"),
            ])
            .expect("batch");
        assert_eq!(ids(&store), ["a1", "b2", "c3"]);
        assert_eq!(
            store.get("a1").map(|t| t.name.clone()).as_deref(),
            Some("new")
        );
        store.put_all(Vec::new()).expect("an empty batch");
        drop(store);
        let reloaded = RecordStore::<Thing>::load(metadata).expect("reload");
        assert_eq!(ids(&reloaded), ["a1", "b2", "c3"]);
        assert_eq!(
            reloaded.get("a1").map(|t| t.name.clone()).as_deref(),
            Some("new")
        );
    }
}
