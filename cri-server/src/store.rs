//! The metadata store: one redb file under crid's root. redb commits are
//! checksummed and fsync'd before they return, so a crash at any point leaves
//! either the old or the new state, never a torn one.
//!
//! Values are JSON, keyed by object id, one table per kind of object. Opening
//! never wipes anything: an unreadable, foreign or newer file is an error that
//! says what it is and leaves the file as it was.
//!
//! redb reuses the pages of removed records but never gives them back to the
//! file system: after large removals the store is compacted (see
//! [`MetadataStore::compact_if_due`]), so the file shrinks back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bumped whenever the layout of a table or value changes; older files are
/// migrated at open, newer ones refused.
pub const SCHEMA_VERSION: u64 = 1;
pub const FILE_NAME: &str = "metadata.redb";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SCHEMA_VERSION_KEY: &str = "schema_version";
const NAME_RESERVATIONS: TableDefinition<&str, &str> = TableDefinition::new("name_reservations");
/// Bytes of removed records after which the file is compacted: a few large
/// pods' worth, so ordinary churn of small records never pays for it.
pub const COMPACT_AFTER_REMOVED_BYTES: u64 = 8 << 20;

/// The kinds of objects crid keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Pods,
    Containers,
    Images,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Pods, Table::Containers, Table::Images];

    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Pods => TableDefinition::new("pods"),
            Table::Containers => TableDefinition::new("containers"),
            Table::Images => TableDefinition::new("images"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "metadata store {path} cannot be opened: {source}; it was left untouched (move it aside to start with an empty store)"
    )]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("{path} is not a crid metadata store (no schema version); it was left untouched")]
    Foreign { path: PathBuf },
    #[error(
        "metadata store {path} has schema version {found}, newer than this crid understands ({SCHEMA_VERSION}); upgrade crid"
    )]
    Newer { path: PathBuf, found: u64 },
    #[error("metadata store: {0}")]
    Database(#[from] redb::Error),
    #[error("metadata store: cannot encode or decode {what}: {source}")]
    Codec {
        what: String,
        source: serde_json::Error,
    },
    #[error("name {name:?} is reserved by {holder}")]
    NameReserved { name: String, holder: String },
}

fn db_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(error.into())
}

pub struct MetadataStore {
    /// Every transaction holds this shared; compaction needs the database
    /// to itself (`&mut`), so it takes it exclusively.
    db: RwLock<Database>,
    path: PathBuf,
    /// Bytes of the records removed since the last compaction.
    removed_bytes: AtomicU64,
}

/// The file's size before and after a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub before: u64,
    pub after: u64,
}

/// redb's page cache. Every record is read once, at start, into the
/// in-memory stores (crate::records); after that redb is only written,
/// and its default cache (1 GiB) would keep every page a commit touched:
/// about 7 KiB per pod of one container, a quarter of crid's own growth
/// per pod. A commit rewrites a few pages; the ones it must read come from
/// the kernel's page cache. 64 KiB was no slower than 256 KiB
/// (`cri-bench --runs 20`: pod ready 26.3 and 26.6 ms against 27.9 and
/// 28.1) and keeps 0.18 MiB less at 100 pods (heaptrack: 239 -> 58 KiB).
const CACHE_BYTES: usize = 64 << 10;

fn open_database(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl MetadataStore {
    /// Opens (or creates) the store in `root`.
    pub fn open(root: &Path) -> Result<MetadataStore, StoreError> {
        let path = root.join(FILE_NAME);
        let db = open_database(&path)?;
        let store = MetadataStore {
            db: RwLock::new(db),
            path,
            removed_bytes: AtomicU64::new(0),
        };
        // No tables at all: a new file, or one whose first commit a crash
        // interrupted. Anything else must carry our schema version.
        let has_tables = store
            .db()
            .begin_read()
            .map_err(db_error)?
            .list_tables()
            .map_err(db_error)?
            .next()
            .is_some();
        if !has_tables {
            store.initialise()?;
        }
        store.check_schema()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database, shared. A panic while it was held leaves it as
    /// consistent as a crash would (every change is a transaction), so a
    /// poisoned lock is used all the same.
    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether enough was removed since the last compaction for
    /// [`MetadataStore::compact_if_due`] to compact.
    pub fn compaction_due(&self) -> bool {
        self.removed_bytes.load(Ordering::Relaxed) >= COMPACT_AFTER_REMOVED_BYTES
    }

    /// Compacts the file if [`COMPACT_AFTER_REMOVED_BYTES`] were removed
    /// since the last time. Blocking, for as long as redb takes (it copies
    /// the live pages down and truncates the file); every other store call
    /// waits meanwhile, so callers run it on a blocking thread of its own.
    /// Two concurrent calls compact once.
    pub fn compact_if_due(&self) -> Result<Option<Compacted>, StoreError> {
        if !self.compaction_due() {
            return Ok(None);
        }
        let mut db = self
            .db
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Re-read under the lock: another call may have compacted already.
        let removed = self.removed_bytes.swap(0, Ordering::Relaxed);
        if removed < COMPACT_AFTER_REMOVED_BYTES {
            self.removed_bytes.fetch_add(removed, Ordering::Relaxed);
            return Ok(None);
        }
        let before = self.file_size();
        if let Err(error) = db.compact() {
            // Counted again, so a later removal retries.
            self.removed_bytes.fetch_add(removed, Ordering::Relaxed);
            return Err(db_error(error));
        }
        Ok(Some(Compacted {
            before,
            after: self.file_size(),
        }))
    }

    fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |meta| meta.len())
    }

    fn count_removed(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.removed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn initialise(&self) -> Result<(), StoreError> {
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let version = encode("schema version", &SCHEMA_VERSION)?;
            meta.insert(SCHEMA_VERSION_KEY, version.as_slice())
                .map_err(db_error)?;
            txn.open_table(NAME_RESERVATIONS).map_err(db_error)?;
            for table in Table::ALL {
                txn.open_table(table.definition()).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let foreign = || StoreError::Foreign {
            path: self.path.clone(),
        };
        let db = self.db();
        let txn = db.begin_read().map_err(db_error)?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Err(foreign()),
            Err(error) => return Err(db_error(error)),
        };
        let found: u64 = match meta.get(SCHEMA_VERSION_KEY).map_err(db_error)? {
            Some(value) => decode("schema version", value.value())?,
            None => return Err(foreign()),
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                found,
            });
        }
        // Version 1 is the first layout: there is nothing older to migrate.
        Ok(())
    }

    pub fn put<T: Serialize>(&self, table: Table, id: &str, value: &T) -> Result<(), StoreError> {
        let bytes = encode(id, value)?;
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(table.definition())
            .map_err(db_error)?
            .insert(id, bytes.as_slice())
            .map_err(db_error)?;
        txn.commit().map_err(db_error)
    }

    /// Writes every `(id, value)` into `table` in one transaction: all of
    /// them or none.
    pub fn put_all<'a, T: Serialize + 'a>(
        &self,
        table: Table,
        entries: impl IntoIterator<Item = (&'a str, &'a T)>,
    ) -> Result<(), StoreError> {
        // Encoded before the transaction, so a value that cannot be written
        // costs no commit.
        let encoded = entries
            .into_iter()
            .map(|(id, value)| Ok((id, encode(id, value)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        {
            let mut opened = txn.open_table(table.definition()).map_err(db_error)?;
            for (id, bytes) in &encoded {
                opened.insert(*id, bytes.as_slice()).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let db = self.db();
        let txn = db.begin_read().map_err(db_error)?;
        let opened = txn.open_table(table.definition()).map_err(db_error)?;
        let value = opened.get(id).map_err(db_error)?;
        value.map(|bytes| decode(id, bytes.value())).transpose()
    }

    /// Removes `id`; true if it was there (removing twice is not an error).
    pub fn remove(&self, table: Table, id: &str) -> Result<bool, StoreError> {
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        let removed = remove_in(&txn, table, id)?;
        txn.commit().map_err(db_error)?;
        self.count_removed(removed.unwrap_or(0));
        Ok(removed.is_some())
    }

    /// Every object of `table` that can be read. One that cannot (written by
    /// a different crid, damaged) is skipped with an error logged, never
    /// allowed to hide the others or to stop crid from starting.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        let db = self.db();
        let txn = db.begin_read().map_err(db_error)?;
        let opened = txn.open_table(table.definition()).map_err(db_error)?;
        let mut entries = Vec::new();
        for entry in opened.iter().map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            match decode(key.value(), value.value()) {
                Ok(object) => entries.push((key.value().to_string(), object)),
                Err(error) => {
                    tracing::error!(table = ?table, id = key.value(), %error, "skipping unreadable record")
                }
            }
        }
        Ok(entries)
    }

    /// Reserves `name` for `id` atomically, so two concurrent creates of the
    /// same pod/container name cannot both win. Reserving again for the same
    /// id succeeds.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        reserve_in(&txn, name, id)?;
        txn.commit().map_err(db_error)
    }

    /// Releases `name` if `id` holds it; releasing what is not held is a no-op.
    pub fn release_name(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        release_in(&txn, name, id)?;
        txn.commit().map_err(db_error)
    }

    /// Reserves `name` for `id` and stores `value` under `id`, in one
    /// transaction: both happen or neither does.
    pub fn insert_reserving<T: Serialize>(
        &self,
        table: Table,
        name: &str,
        id: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(id, value)?;
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        reserve_in(&txn, name, id)?;
        txn.open_table(table.definition())
            .map_err(db_error)?
            .insert(id, bytes.as_slice())
            .map_err(db_error)?;
        txn.commit().map_err(db_error)
    }

    /// Removes `id` and releases the `name` it holds, in one transaction;
    /// true if the record was there.
    pub fn remove_releasing(&self, table: Table, name: &str, id: &str) -> Result<bool, StoreError> {
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        let removed = remove_in(&txn, table, id)?;
        release_in(&txn, name, id)?;
        txn.commit().map_err(db_error)?;
        self.count_removed(removed.unwrap_or(0));
        Ok(removed.is_some())
    }

    /// Node-level settings that must survive a restart (e.g. the pod CIDR
    /// kubelet sent, which it does not resend when crid restarts).
    pub fn put_setting<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = encode(key, value)?;
        let db = self.db();
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(META)
            .map_err(db_error)?
            .insert(key, bytes.as_slice())
            .map_err(db_error)?;
        txn.commit().map_err(db_error)
    }

    pub fn get_setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let db = self.db();
        let txn = db.begin_read().map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        let value = meta.get(key).map_err(db_error)?;
        value.map(|bytes| decode(key, bytes.value())).transpose()
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Codec {
        what: what.to_string(),
        source,
    })
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Codec {
        what: what.to_string(),
        source,
    })
}

/// The reservation half of [`MetadataStore::reserve_name`], inside `txn`.
fn reserve_in(txn: &redb::WriteTransaction, name: &str, id: &str) -> Result<(), StoreError> {
    let mut names = txn.open_table(NAME_RESERVATIONS).map_err(db_error)?;
    let holder = names
        .get(name)
        .map_err(db_error)?
        .map(|held| held.value().to_string());
    match holder {
        Some(holder) if holder != id => Err(StoreError::NameReserved {
            name: name.into(),
            holder,
        }),
        Some(_) => Ok(()),
        None => {
            names.insert(name, id).map_err(db_error)?;
            Ok(())
        }
    }
}

/// Removes `id` from `table` inside `txn`; the size of its value if it was
/// there.
fn remove_in(
    txn: &redb::WriteTransaction,
    table: Table,
    id: &str,
) -> Result<Option<usize>, StoreError> {
    let mut opened = txn.open_table(table.definition()).map_err(db_error)?;
    let removed = opened.remove(id).map_err(db_error)?;
    Ok(removed.map(|value| value.value().len()))
}

/// Releases `name` inside `txn` if `id` holds it.
fn release_in(txn: &redb::WriteTransaction, name: &str, id: &str) -> Result<(), StoreError> {
    let mut names = txn.open_table(NAME_RESERVATIONS).map_err(db_error)?;
    let held_by_id = names
        .get(name)
        .map_err(db_error)?
        .is_some_and(|held| held.value() == id);
    if held_by_id {
        names.remove(name).map_err(db_error)?;
    }
    Ok(())
}

/// The pod CIDR kubelet last gave (UpdateRuntimeConfig), kept in the
/// store's settings so it survives a restart.
pub struct PodCidr {
    store: Arc<MetadataStore>,
    cidr: RwLock<String>,
}

impl PodCidr {
    const SETTING: &str = "pod_cidr";

    pub fn load(store: Arc<MetadataStore>) -> Result<PodCidr, StoreError> {
        let cidr = store
            .get_setting::<String>(Self::SETTING)?
            .unwrap_or_default();
        Ok(PodCidr {
            store,
            cidr: RwLock::new(cidr),
        })
    }

    pub fn get(&self) -> String {
        self.cidr
            .read()
            .map(|cidr| cidr.clone())
            .unwrap_or_default()
    }

    /// Persists first, so what kubelet was told is kept survives a restart.
    pub fn set(&self, cidr: String) -> Result<(), StoreError> {
        self.store.put_setting(Self::SETTING, &cidr)?;
        if let Ok(mut current) = self.cidr.write() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            *current = cidr;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Pod {
        name: String,
    }

    #[test]
    fn objects_persist_across_reopen() {
        let root = tempfile::tempdir().expect("tempdir");
        {
            let store = MetadataStore::open(root.path()).expect("create");
            store
                .put(Table::Pods, "p1", &Pod { name: "a".into() })
                .expect("put");
            store
                .put(Table::Pods, "p2", &Pod { name: "b".into() })
                .expect("put");
            store
                .put_setting("pod_cidr", &"10.0.0.0/24")
                .expect("setting");
            assert!(store.remove(Table::Pods, "p2").expect("remove"));
            assert!(!store.remove(Table::Pods, "p2").expect("remove twice"));
        }
        let store = MetadataStore::open(root.path()).expect("reopen");
        let pods: Vec<(String, Pod)> = store.list(Table::Pods).expect("list");
        assert_eq!(pods, [("p1".to_string(), Pod { name: "a".into() })]);
        assert_eq!(
            store.get::<Pod>(Table::Containers, "p1").expect("get"),
            None
        );
        assert_eq!(
            store
                .get_setting::<String>("pod_cidr")
                .expect("setting")
                .as_deref(),
            Some("10.0.0.0/24")
        );
    }

    #[test]
    fn an_unreadable_record_is_skipped_not_fatal() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = MetadataStore::open(root.path()).expect("create");
        store
            .put(Table::Pods, "good", &Pod { name: "a".into() })
            .expect("put");
        store.put(Table::Pods, "bad", &"not a pod").expect("put");
        let pods: Vec<(String, Pod)> = store.list(Table::Pods).expect("list");
        assert_eq!(pods, [("good".to_string(), Pod { name: "a".into() })]);
        assert!(
            store.get::<Pod>(Table::Pods, "bad").is_err(),
            "a direct read still says what is wrong"
        );
    }

    #[test]
    fn a_name_is_reserved_for_one_id_at_a_time() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = MetadataStore::open(root.path()).expect("create");
        store
            .reserve_name("pod_a_ns_uid_0", "id1")
            .expect("reserve");
        store
            .reserve_name("pod_a_ns_uid_0", "id1")
            .expect("same id again");
        let error = store
            .reserve_name("pod_a_ns_uid_0", "id2")
            .expect_err("taken");
        assert!(
            matches!(&error, StoreError::NameReserved { holder, .. } if holder == "id1"),
            "{error}"
        );
        store
            .release_name("pod_a_ns_uid_0", "id2")
            .expect("release by non-holder is a no-op");
        assert!(store.reserve_name("pod_a_ns_uid_0", "id2").is_err());
        store
            .release_name("pod_a_ns_uid_0", "id1")
            .expect("release");
        store
            .reserve_name("pod_a_ns_uid_0", "id2")
            .expect("free again");
    }

    #[test]
    fn a_record_and_its_name_are_written_and_removed_together() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = MetadataStore::open(root.path()).expect("create");
        store
            .insert_reserving(Table::Containers, "c_pod_ns_uid_0", "id1", &"one")
            .expect("insert");
        let error = store
            .insert_reserving(Table::Containers, "c_pod_ns_uid_0", "id2", &"two")
            .expect_err("name taken");
        assert!(matches!(error, StoreError::NameReserved { .. }), "{error}");
        // The refused insert wrote nothing.
        assert_eq!(
            store.get::<String>(Table::Containers, "id2").expect("get"),
            None
        );
        store
            .remove_releasing(Table::Containers, "c_pod_ns_uid_0", "id1")
            .expect("remove");
        assert_eq!(
            store.get::<String>(Table::Containers, "id1").expect("get"),
            None
        );
        store
            .insert_reserving(Table::Containers, "c_pod_ns_uid_0", "id2", &"two")
            .expect("the name is free again");
    }

    #[test]
    fn the_file_shrinks_back_after_large_removals() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = MetadataStore::open(root.path()).expect("create");
        let size = || std::fs::metadata(store.path()).expect("stat").len();
        let empty = size();
        store
            .put(Table::Pods, "keep", &Pod { name: "k".into() })
            .expect("put");
        // 24 records of 1 MiB each, written twice (as a pod's record is).
        let big = Pod {
            name: "a".repeat(1 << 20),
        };
        for round in 0..2 {
            for i in 0..24 {
                let id = format!("big{i}");
                if round == 0 {
                    store
                        .insert_reserving(Table::Pods, &format!("name{i}"), &id, &big)
                        .expect("insert");
                } else {
                    store.put(Table::Pods, &id, &big).expect("put");
                }
            }
        }
        let full = size();
        assert!(full > 24 << 20, "{full} bytes for 24 MiB of records");

        // Removing a little is not worth a compaction.
        assert!(store.remove(Table::Pods, "big0").expect("remove"));
        assert!(!store.compaction_due());
        assert_eq!(store.compact_if_due().expect("not due"), None);

        for i in 1..24 {
            let removed = store
                .remove_releasing(Table::Pods, &format!("name{i}"), &format!("big{i}"))
                .expect("remove");
            assert!(removed);
        }
        assert!(
            !store
                .remove_releasing(Table::Pods, "name1", "big1")
                .expect("twice"),
            "removing twice says it was gone"
        );
        assert!(size() > 8 << 20, "redb alone keeps most of the file");
        assert!(store.compaction_due());
        let compacted = store
            .compact_if_due()
            .expect("compact")
            .expect("due after 24 MiB removed");
        assert!(!store.compaction_due(), "the count starts again");
        assert_eq!(compacted.after, size());
        assert!(
            compacted.after < compacted.before / 4 && compacted.after < empty + (4 << 20),
            "{compacted:?}, empty store {empty} bytes"
        );
        // A second call has nothing to do.
        assert_eq!(store.compact_if_due().expect("again"), None);

        // What was kept is there, also after a reopen, and writes go on.
        drop(store);
        let store = MetadataStore::open(root.path()).expect("reopen");
        let pods: Vec<(String, Pod)> = store.list(Table::Pods).expect("list");
        assert_eq!(pods, [("keep".to_string(), Pod { name: "k".into() })]);
        store
            .insert_reserving(Table::Pods, "name1", "new", &Pod { name: "n".into() })
            .expect("the released name is free");
    }

    #[test]
    fn a_newer_schema_is_refused_and_its_data_kept() {
        let root = tempfile::tempdir().expect("tempdir");
        {
            let store = MetadataStore::open(root.path()).expect("create");
            store
                .put(
                    Table::Pods,
                    "canary",
                    &Pod {
                        name: "keep".into(),
                    },
                )
                .expect("put");
        }
        let path = root.path().join(FILE_NAME);
        let set_version = |version: &[u8]| {
            let db = Database::create(&path).expect("raw open");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert(SCHEMA_VERSION_KEY, version)
                .expect("insert");
            txn.commit().expect("commit");
        };
        set_version(b"99");
        let error = MetadataStore::open(root.path())
            .err()
            .expect("newer refused");
        assert!(
            matches!(error, StoreError::Newer { found: 99, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("99"));

        // Nothing was wiped: with the version put back, the data is all there.
        set_version(b"1");
        let store = MetadataStore::open(root.path()).expect("reopen");
        assert_eq!(
            store.get::<Pod>(Table::Pods, "canary").expect("get"),
            Some(Pod {
                name: "keep".into()
            })
        );
    }

    #[test]
    fn a_corrupt_file_is_refused_and_left_untouched() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join(FILE_NAME);
        let garbage = b"this is not a redb database, but it is somebody's data".repeat(100);
        std::fs::write(&path, &garbage).expect("write");
        let error = MetadataStore::open(root.path())
            .err()
            .expect("corrupt refused");
        assert!(matches!(error, StoreError::Open { .. }), "{error}");
        assert!(error.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read(&path).expect("read"), garbage, "file changed");
    }

    #[test]
    fn a_redb_file_of_someone_else_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join(FILE_NAME);
        {
            let db = Database::create(&path).expect("raw create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(TableDefinition::<&str, &str>::new("other"))
                .expect("table");
            txn.commit().expect("commit");
        }
        let error = MetadataStore::open(root.path())
            .err()
            .expect("foreign refused");
        assert!(matches!(error, StoreError::Foreign { .. }), "{error}");
    }
}
