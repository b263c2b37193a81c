//! What stages see of the ledger during an ingest, including what is decided
//! but not yet committed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::host::{AssetRef, KvQuota, Services};
use crate::ledger::{self, Ledger};

/// The stage-facing view of the ledger during an ingest: assets already in
/// the library, and those decided but not yet committed (by hash and by
/// name), so two files in flight never both take the same bytes or name.
pub(super) struct IngestServices {
    pub(super) ledger: Arc<Ledger>,
    /// Bytes decided but not committed: the job placing them, and where.
    pub(super) reserved: Mutex<HashMap<String, (u64, String)>>,
    pub(super) reserved_paths: Mutex<HashSet<PathBuf>>,
    /// Live Photo stills decided in this ingest.
    pub(super) stills: super::live::SharedStills,
    pub(super) kv_meter: KvMeter,
    /// kei's albums and favourites of the files it downloaded, by path.
    pub(super) kei: Arc<crate::kei::KeiFiles>,
}

/// What each stage keeps in its key-value store, counted once from the
/// ledger and then kept up to date, so a quota check costs no scan.
#[derive(Default)]
pub(crate) struct KvMeter {
    usage: Mutex<HashMap<String, (u64, u64)>>,
}

impl KvMeter {
    /// Account for `stage` setting `key` to `value_len` bytes (replacing a
    /// pair of `old` bytes, if any), or say why the quota refuses it.
    pub(crate) fn admit(
        &self,
        ledger: &Ledger,
        stage: &str,
        key: &str,
        old: Option<u64>,
        value_len: usize,
        quota: KvQuota,
    ) -> Result<(), String> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let (keys, bytes) = match usage.get(stage) {
            Some(counted) => *counted,
            None => ledger
                .read(|c| ledger::kv_usage(c, stage))
                .map_err(|e| format!("cannot read its key-value store: {e}"))?,
        };
        // An empty value clears the key: it frees what the pair took.
        let (new_key, new_size) = match value_len {
            0 => (0, 0),
            n => (1, (key.len() + n) as u64),
        };
        let keys = (keys + new_key).saturating_sub(u64::from(old.is_some()));
        let bytes = (bytes + new_size).saturating_sub(old.unwrap_or(0));
        if value_len > 0 {
            quota.check(keys, bytes)?;
        }
        usage.insert(stage.to_string(), (keys, bytes));
        Ok(())
    }
}

impl IngestServices {
    /// The job placing these bytes that is still in flight, if any.
    pub(super) fn in_flight(&self, blake3: &str) -> Option<u64> {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(blake3)
            .map(|(job, _)| *job)
    }

    /// Forget reservations of applied jobs: the ledger and disk answer now.
    pub(super) fn release(&self, written: &[(u64, Vec<PathBuf>)]) {
        let ids: HashSet<u64> = written.iter().map(|(id, _)| *id).collect();
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (job, _)| !ids.contains(job));
        let mut paths = self
            .reserved_paths
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (_, dests) in written {
            for dest in dests {
                paths.remove(dest);
            }
        }
    }

    pub(super) fn reserve(&self, blake3: &str, job_id: u64, path: &str) -> Option<u64> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        match reserved.get(blake3) {
            Some(&(other, _)) if other != job_id => Some(other),
            _ => {
                reserved.insert(blake3.to_string(), (job_id, path.to_string()));
                None
            }
        }
    }
}

impl Services for IngestServices {
    fn planned_path(&self, blake3: &str) -> Option<String> {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(blake3)
            .map(|(_, path)| path.clone())
    }

    fn find_by_hash(&self, blake3: &str) -> Option<AssetRef> {
        if let Some(&(job_id, _)) = self
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(blake3)
        {
            return Some(AssetRef {
                job_id,
                library_path: None,
            });
        }
        self.ledger
            .read(|conn| ledger::asset_by_hash(conn, blake3))
            .ok()
            .flatten()
            .map(|asset| AssetRef {
                job_id: asset.job_id,
                library_path: Some(asset.library_path),
            })
    }

    fn kv_get(&self, stage: &str, key: &str) -> Option<Vec<u8>> {
        self.ledger
            .read(|conn| ledger::kv_get(conn, stage, key))
            .ok()
            .flatten()
    }

    fn kv_set(&self, stage: &str, key: &str, value: &[u8], quota: KvQuota) -> Result<(), String> {
        let old = self
            .ledger
            .read(|c| ledger::kv_size(c, stage, key))
            .map_err(|e| format!("cannot read its key-value store: {e}"))?;
        self.kv_meter
            .admit(&self.ledger, stage, key, old, value.len(), quota)?;
        if let Err(e) = self
            .ledger
            .write(|tx| ledger::kv_set(tx, stage, key, value))
        {
            tracing::warn!(stage, "cannot store a key-value pair: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_counts_what_a_stage_keeps_and_not_what_it_cleared() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        let meter = KvMeter::default();
        let quota = KvQuota {
            max_keys: 2,
            max_bytes: 1 << 20,
        };
        let set = |key: &str, len: usize| {
            let old = ledger.read(|c| ledger::kv_size(c, "s", key)).unwrap();
            meter.admit(&ledger, "s", key, old, len, quota)?;
            ledger
                .write(|tx| ledger::kv_set(tx, "s", key, &vec![1; len]))
                .unwrap();
            Ok::<(), String>(())
        };
        set("a", 10).unwrap();
        set("b", 10).unwrap();
        assert!(set("c", 10).is_err(), "a third key is past the quota");
        set("a", 20).unwrap(); // replacing a key adds none
        set("a", 0).unwrap(); // cleared: it no longer counts
        set("c", 10).unwrap();
        assert!(set("d", 2 << 20).is_err(), "past the bytes too");
        // A fresh meter counts the same from the ledger.
        let fresh = KvMeter::default();
        assert!(fresh.admit(&ledger, "s", "e", None, 1, quota).is_err());
        assert!(fresh.admit(&ledger, "s", "a", None, 0, quota).is_ok());
    }
}
