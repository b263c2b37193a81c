//! Any rclone remote as an offsite target, through one long-lived `rclone
//! rcd` per target (`rcd.rs`). rclone copies each file
//! (`operations/copyfile`) and compares a checksum both ends support;
//! keepsake then checks the size the remote holds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::rcd::{self, RcError, Rcd};
use super::store::{Backend, RCLONE_BEGUN, Remote, StoreError, Write, blake3_of};
use crate::effects::fsops;

pub struct Rclone {
    name: String,
    rcd: Arc<Rcd>,
    remote: String,
}

impl Rclone {
    /// Start (or reuse) the target's `rclone rcd`.
    pub async fn open(
        name: String,
        remote: &str,
        program: &Path,
        config: Option<&Path>,
        bwlimit: Option<u64>,
    ) -> Result<Rclone, StoreError> {
        let rcd = rcd::daemon(&name, program, config, bwlimit).await?;
        Ok(Rclone {
            name,
            rcd,
            remote: remote.to_string(),
        })
    }

    fn error(&self, what: &str, error: RcError) -> StoreError {
        rc_error(&self.name, what, error)
    }
}

#[async_trait::async_trait]
impl Backend for Rclone {
    fn name(&self) -> &str {
        &self.name
    }

    /// `--bwlimit`, smoother than keepsake could.
    fn paces_itself(&self) -> bool {
        true
    }

    async fn check(&self, _pushed_before: bool) -> Result<(), StoreError> {
        self.rcd
            .call(
                "operations/fsinfo",
                json!({ "fs": self.remote }),
                Some(Duration::from_secs(60)),
            )
            .await
            .map(drop)
            .map_err(|e| self.error("checking the remote", e))
    }

    async fn head(&self, key: &str) -> Result<Option<Remote>, StoreError> {
        let found = self
            .rcd
            .call(
                "operations/stat",
                json!({ "fs": self.remote, "remote": key, "opt": { "noModTime": true, "noMimeType": true } }),
                Some(Duration::from_secs(120)),
            )
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(found
            .get("item")
            .filter(|item| !item.is_null())
            .map(|item| Remote {
                size: item.get("Size").and_then(|s| s.as_u64()).unwrap_or(0),
                etag: None,
            }))
    }

    /// The remote's own hash: its SHA-256, else its SHA-1, else its MD5;
    /// `None` for a remote that keeps none of the three.
    async fn digest(&self, key: &str) -> Result<Option<(&'static str, String)>, StoreError> {
        let found = self
            .rcd
            .call(
                "operations/stat",
                json!({ "fs": self.remote, "remote": key, "opt": {
                    "noModTime": true, "noMimeType": true,
                    "showHash": true, "hashTypes": ["sha256", "sha1", "md5"],
                } }),
                Some(Duration::from_secs(600)),
            )
            .await
            .map_err(|e| self.error(key, e))?;
        // The strongest the remote keeps; a hex digest of its length.
        Ok([("sha256", 64), ("sha1", 40), ("md5", 32)]
            .into_iter()
            .find_map(|(kind, len)| {
                found
                    .pointer(&format!("/item/Hashes/{kind}"))
                    .and_then(|h| h.as_str())
                    .filter(|h| h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(|h| (kind, h.to_ascii_lowercase()))
            }))
    }

    async fn hash(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.rcd
            .hash(&self.remote, key)
            .await
            .map_err(|e| self.error(key, e))
    }

    async fn write(&self, write: &Write<'_>) -> Result<Option<String>, StoreError> {
        let (key, local, size) = (write.key, write.local, write.size);
        (write.attempt.note)(Some(RCLONE_BEGUN)).map_err(StoreError::Local)?;
        let (src_fs, src_remote) = rcd::local_source(local);
        self.rcd
            .call(
                "operations/copyfile",
                json!({
                    "srcFs": src_fs,
                    "srcRemote": src_remote,
                    "dstFs": self.remote,
                    "dstRemote": key,
                }),
                None,
            )
            .await
            .map_err(|e| self.error(key, e))?;
        // rclone compares a checksum both ends support after the copy;
        // keepsake checks the size it now holds, and the library file is
        // unchanged (rclone read it as it is now).
        let held = self.head(key).await?;
        if held.as_ref().map(|r| r.size) != Some(size)
            || blake3_of(local).await?.as_str() != write.blake3
        {
            return Err(StoreError::Unavailable(format!(
                "offsite target {}: {key} does not hold {size} bytes after the copy, or {} changed; tried again later",
                self.name,
                local.display()
            )));
        }
        Ok(None)
    }

    /// A copy rclone began and never finished: keepsake's own partial
    /// object, removed so the push can write the key.
    async fn remove_partial(&self, key: &str) -> Result<(), StoreError> {
        tracing::warn!(
            "offsite target {}: removing the partial copy of {key} an interrupted push left",
            self.name
        );
        self.rcd
            .call(
                "operations/deletefile",
                json!({ "fs": self.remote, "remote": key }),
                Some(Duration::from_secs(120)),
            )
            .await
            .map(drop)
            .map_err(|e| self.error(key, e))
    }

    async fn list(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let listed = self
            .rcd
            .call(
                "operations/list",
                json!({ "fs": self.remote, "remote": "", "opt": { "recurse": true, "filesOnly": true, "noModTime": true, "noMimeType": true } }),
                None,
            )
            .await
            .map_err(|e| self.error("listing", e))?;
        Ok(listed
            .get("list")
            .and_then(|l| l.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| {
                        Some((
                            item.get("Path")?.as_str()?.to_string(),
                            item.get("Size")?.as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn download(&self, key: &str, dest: &Path) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let name = &self.name;
        let local = |e: std::io::Error| StoreError::Local(format!("{}: {e}", dest.display()));
        let mut out = tokio::fs::File::from_std(fsops::create_staging(dest).map_err(local)?);
        let Some(mut stream) = self
            .rcd
            .get(&self.remote, key)
            .await
            .map_err(|e| self.error(key, e))?
        else {
            return Err(StoreError::Unavailable(format!(
                "offsite target {name}: {key} is gone"
            )));
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                StoreError::Unavailable(format!("offsite target {name}: {key}: {e}"))
            })?;
            out.write_all(&chunk).await.map_err(local)?;
        }
        out.flush().await.map_err(local)
    }
}

fn rc_error(target: &str, what: &str, error: RcError) -> StoreError {
    match error {
        RcError::Down(m) => StoreError::Unavailable(format!("offsite target {target}: {m}")),
        RcError::Failed(m) => {
            let message = format!("offsite target {target}: {what}: {m}");
            let lower = m.to_lowercase();
            if lower.contains("didn't find section in config")
                || lower.contains("config file")
                || lower.contains("permission denied")
                || lower.contains("accessdenied")
                || lower.contains("unauthorized")
            {
                StoreError::Refused(format!(
                    "{message} (check `remote` and the rclone config of [offsite.{target}])"
                ))
            } else {
                StoreError::Unavailable(message)
            }
        }
    }
}
