//! The kinds of offsite target: a folder (a mounted NAS share, a USB disk),
//! any S3-compatible server (through `object_store`, which does the SigV4
//! signing and retries), any rclone remote (through `rclone rcd`), and a
//! manifest (a `--files-from` list for restic). None ever deletes or
//! overwrites an object: a key that exists is compared, never replaced.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use serde_json::json;

use super::pace::Pace;
use super::rclone::{self, RcError, Rcd};
use crate::config::{OffsiteTarget, TargetKind};
use crate::effects::fsops;
use crate::hashing::blake3_file;

/// In a folder target, written at its first push.
const MARKER: &str = ".keepsake-target";

/// Files at least this large go up in parts (constant memory).
const MULTIPART_FROM: u64 = 16 << 20;
const PART_SIZE: usize = 8 << 20;
const MAX_PARTS: u64 = 10_000;
/// Parts in flight per upload: with four uploads at once, memory stays near
/// 100 MiB whatever the file sizes.
const PARTS_IN_FLIGHT: usize = 2;

/// Why a push (or a check) did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The target cannot be reached or answered with a server error: try
    /// again later.
    Unavailable(String),
    /// The target refused (credentials, a missing bucket, permissions):
    /// retried later too, since fixing the config is the usual cure, but
    /// reported loudly.
    Refused(String),
    /// The key holds other bytes.
    Conflict(String),
    /// The library file could not be read.
    Local(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(m)
            | StoreError::Refused(m)
            | StoreError::Conflict(m)
            | StoreError::Local(m) => f.write_str(m),
        }
    }
}

/// What a target holds under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub size: u64,
    pub etag: Option<String>,
}

/// One target, ready to take files.
pub struct Store {
    name: String,
    backend: Backend,
    pace: Option<Pace>,
}

enum Backend {
    Dir {
        root: PathBuf,
    },
    S3 {
        s3: AmazonS3,
        prefix: String,
    },
    Rclone {
        rcd: Arc<Rcd>,
        remote: String,
    },
    Manifest {
        path: PathBuf,
        /// The lines it holds.
        listed: Mutex<Option<HashSet<String>>>,
    },
}

/// What a push knows beyond the file: a multipart upload (or an rclone
/// copy) an earlier try began, and how to note the one this try begins.
pub struct Attempt<'a> {
    pub begun: Option<String>,
    pub note: &'a (dyn Fn(Option<&str>) -> Result<(), String> + Sync),
}

/// Marks a push that began an rclone copy: a partial object at its key is
/// keepsake's own and may be replaced.
const RCLONE_BEGUN: &str = "rclone";

impl Store {
    /// Connect to a target (no request yet for S3: the first one tells;
    /// rclone targets start their `rclone rcd`).
    pub async fn open(target: &OffsiteTarget) -> Result<Store, StoreError> {
        let name = target.name.clone();
        let backend = match &target.kind {
            TargetKind::Dir { path } => Backend::Dir { root: path.clone() },
            TargetKind::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                path_style,
                credentials,
            } => {
                let (access, secret) = credentials
                    .read()
                    .map_err(|e| StoreError::Refused(format!("offsite target {name}: {e}")))?;
                let mut builder = AmazonS3Builder::new()
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(600))
                            .with_allow_http(true),
                    )
                    .with_region(region)
                    .with_bucket_name(bucket)
                    .with_access_key_id(access)
                    .with_secret_access_key(secret)
                    .with_virtual_hosted_style_request(!path_style)
                    .with_checksum_algorithm(Checksum::SHA256)
                    // A dead server must not stall the queue for minutes:
                    // keepsake defers and retries on its own schedule.
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(20),
                        backoff: Default::default(),
                    });
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                let s3 = builder
                    .build()
                    .map_err(|e| StoreError::Refused(format!("offsite target {name}: {e}")))?;
                Backend::S3 {
                    s3,
                    prefix: prefix.trim_end_matches('/').to_string(),
                }
            }
            TargetKind::Rclone {
                remote,
                program,
                config,
            } => Backend::Rclone {
                rcd: rclone::daemon(&name, program, config.as_deref(), target.bwlimit).await?,
                remote: remote.clone(),
            },
            TargetKind::Manifest { path } => Backend::Manifest {
                path: path.clone(),
                listed: Mutex::new(None),
            },
        };
        // rclone paces itself (`--bwlimit`), smoother than keepsake could.
        let pace = match backend {
            Backend::Rclone { .. } | Backend::Manifest { .. } => None,
            _ => target.bwlimit.map(Pace::new),
        };
        Ok(Store {
            name,
            backend,
            pace,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A folder target: its copies are rehashed without a download.
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Dir { .. })
    }

    /// The key under which the target knows a library file: a manifest
    /// lists absolute paths.
    pub fn key_for(&self, key: &str, local: &Path) -> String {
        match self.backend {
            Backend::Manifest { .. } => local.to_string_lossy().into_owned(),
            _ => key.to_string(),
        }
    }

    /// Check that the target is there and usable (the folder exists, the
    /// bucket answers with these credentials, the rclone remote is known).
    /// A folder target carries a marker file from its first push on: a disk
    /// that is not mounted leaves an empty mount point, which must not be
    /// filled instead.
    pub async fn check(&self, pushed_before: bool) -> Result<(), StoreError> {
        let name = &self.name;
        match &self.backend {
            Backend::Dir { root } => {
                let marker = root.join(MARKER);
                if marker.is_file() {
                    sweep_push_temps(name, root);
                    return Ok(());
                }
                if !root.is_dir() {
                    return Err(StoreError::Unavailable(format!(
                        "offsite target {name}: folder {} is missing (not mounted?)",
                        root.display()
                    )));
                }
                if pushed_before {
                    return Err(StoreError::Unavailable(format!(
                        "offsite target {name}: {} has no {MARKER} although keepsake pushed there before: is the disk mounted?",
                        root.display()
                    )));
                }
                let written = fsops::write_temp(&marker, b"keepsake offsite target\n")
                    .and_then(|_| fsops::sync_files(&[marker.as_path(), root.as_path()]));
                written.map_err(|e| {
                    StoreError::Unavailable(format!(
                        "offsite target {name}: cannot write {}: {e}",
                        marker.display()
                    ))
                })
            }
            Backend::S3 { s3, prefix } => s3
                .list_with_delimiter(Some(&Self::object(prefix, "keepsake-check")?))
                .await
                .map(drop)
                .map_err(|e| classify(name, "checking the bucket", e)),
            Backend::Rclone { rcd, remote } => rcd
                .call(
                    "operations/fsinfo",
                    json!({ "fs": remote }),
                    Some(Duration::from_secs(60)),
                )
                .await
                .map(drop)
                .map_err(|e| rc_error(name, "checking the remote", e)),
            Backend::Manifest { path, listed } => {
                let path = path.clone();
                let lines = tokio::task::spawn_blocking(move || read_manifest(&path))
                    .await
                    .map_err(|e| StoreError::Local(e.to_string()))?
                    .map_err(|e| StoreError::Unavailable(format!("offsite target {name}: {e}")))?;
                *lock(listed) = Some(lines);
                Ok(())
            }
        }
    }

    /// The object for a key, byte for byte (`ObjectPath::from` would
    /// percent-encode `[`, `#`, `%` and friends, which are common in names).
    fn object(prefix: &str, key: &str) -> Result<ObjectPath, StoreError> {
        let raw = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}/{key}")
        };
        ObjectPath::parse(&raw)
            .map_err(|e| StoreError::Conflict(format!("{raw:?} cannot be an object key: {e}")))
    }

    /// What the target holds under `key`, if anything.
    pub async fn head(&self, key: &str) -> Result<Option<Remote>, StoreError> {
        let name = &self.name;
        match &self.backend {
            Backend::Dir { root } => {
                let path = root.join(key);
                match tokio::fs::symlink_metadata(&path).await {
                    Ok(meta) => Ok(Some(Remote {
                        size: meta.len(),
                        etag: None,
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if root.is_dir() {
                            Ok(None)
                        } else {
                            Err(StoreError::Unavailable(format!(
                                "offsite target {name}: folder {} is missing (not mounted?)",
                                root.display()
                            )))
                        }
                    }
                    Err(e) => Err(StoreError::Unavailable(format!(
                        "offsite target {name}: {}: {e}",
                        path.display()
                    ))),
                }
            }
            Backend::S3 { s3, prefix } => match s3.head(&Self::object(prefix, key)?).await {
                Ok(meta) => Ok(Some(Remote {
                    size: meta.size,
                    etag: meta.e_tag,
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(classify(name, key, e)),
            },
            Backend::Rclone { rcd, remote } => {
                let found = rcd
                    .call(
                        "operations/stat",
                        json!({ "fs": remote, "remote": key, "opt": { "noModTime": true, "noMimeType": true } }),
                        Some(Duration::from_secs(120)),
                    )
                    .await
                    .map_err(|e| rc_error(name, key, e))?;
                Ok(found
                    .get("item")
                    .filter(|item| !item.is_null())
                    .map(|item| Remote {
                        size: item.get("Size").and_then(|s| s.as_u64()).unwrap_or(0),
                        etag: None,
                    }))
            }
            Backend::Manifest { listed, .. } => {
                if !lock(listed).as_ref().is_some_and(|l| l.contains(key)) {
                    return Ok(None);
                }
                match tokio::fs::metadata(key).await {
                    Ok(meta) => Ok(Some(Remote {
                        size: meta.len(),
                        etag: None,
                    })),
                    Err(_) => Ok(Some(Remote {
                        size: 0,
                        etag: None,
                    })),
                }
            }
        }
    }

    /// A digest the target gives for `key` without a download, as (kind,
    /// lowercase hex), kind being `sha256`, `sha1` or `md5`: the SHA-256 an
    /// S3 server stored when it checked the upload (a HEAD in checksum
    /// mode), or an rclone remote's own hash (its SHA-256, else its SHA-1,
    /// else its MD5). `None` where the target has none for it (a multipart
    /// object on a server that keeps no checksum for those, a remote that
    /// keeps none of the three).
    pub async fn digest(&self, key: &str) -> Result<Option<(&'static str, String)>, StoreError> {
        let name = &self.name;
        match &self.backend {
            Backend::S3 { s3, prefix } => {
                use object_store::signer::{SignedUrlOptions, Signer};
                let options = SignedUrlOptions::new().with_signed_header(
                    http::HeaderName::from_static("x-amz-checksum-mode"),
                    http::HeaderValue::from_static("ENABLED"),
                );
                let url = s3
                    .signed_url_opts(
                        http::Method::HEAD,
                        &Self::object(prefix, key)?,
                        Duration::from_secs(300),
                        &options,
                    )
                    .await
                    .map_err(|e| classify(name, key, e))?;
                let response = reqwest::Client::new()
                    .head(url)
                    .header("x-amz-checksum-mode", "ENABLED")
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .map_err(|e| {
                        StoreError::Unavailable(format!("offsite target {name}: {key}: {e}"))
                    })?;
                if !response.status().is_success() {
                    return Err(StoreError::Unavailable(format!(
                        "offsite target {name}: {key}: HEAD answered {}",
                        response.status()
                    )));
                }
                // A composite checksum of parts ("…-N") is no digest of the file.
                let stored = response
                    .headers()
                    .get("x-amz-checksum-sha256")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.contains('-'))
                    .and_then(|v| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(v).ok()
                    })
                    .filter(|digest| digest.len() == 32)
                    .map(|digest| ("sha256", crate::hashing::hex(&digest)));
                Ok(stored)
            }
            Backend::Rclone { rcd, remote } => {
                let found = rcd
                    .call(
                        "operations/stat",
                        json!({ "fs": remote, "remote": key, "opt": {
                            "noModTime": true, "noMimeType": true,
                            "showHash": true, "hashTypes": ["sha256", "sha1", "md5"],
                        } }),
                        Some(Duration::from_secs(600)),
                    )
                    .await
                    .map_err(|e| rc_error(name, key, e))?;
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
            Backend::Dir { .. } | Backend::Manifest { .. } => Ok(None),
        }
    }

    /// BLAKE3 of what the target holds under `key` (downloads it).
    pub async fn hash(&self, key: &str) -> Result<Option<String>, StoreError> {
        let name = &self.name;
        match &self.backend {
            Backend::Dir { root } => hash_file(name, root.join(key)).await,
            Backend::Manifest { listed, .. } => {
                if !lock(listed).as_ref().is_some_and(|l| l.contains(key)) {
                    return Ok(None);
                }
                hash_file(name, PathBuf::from(key)).await
            }
            Backend::S3 { s3, prefix } => {
                let got = match s3.get(&Self::object(prefix, key)?).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(classify(name, key, e)),
                };
                let mut hasher = blake3::Hasher::new();
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| classify(name, key, e))?;
                    hasher.update(&chunk);
                }
                Ok(Some(hasher.finalize().to_hex().to_string()))
            }
            Backend::Rclone { rcd, remote } => rcd
                .hash(remote, key)
                .await
                .map_err(|e| rc_error(name, key, e)),
        }
    }

    /// Copy the file `local` (BLAKE3 `blake3`, `size` bytes) to `key`. A key
    /// that already holds the same bytes is done (a push a crash interrupted
    /// after the upload); other bytes are a conflict.
    pub async fn put(
        &self,
        local: &Path,
        key: &str,
        blake3: &str,
        size: u64,
        attempt: &Attempt<'_>,
    ) -> Result<Option<String>, StoreError> {
        let name = &self.name;
        // An rclone marker stays until the push is recorded done: the
        // partial object it vouches for may still be there.
        if let Some(begun) = attempt.begun.as_deref().filter(|b| *b != RCLONE_BEGUN) {
            self.abort(key, begun).await?;
            (attempt.note)(None).map_err(StoreError::Local)?;
        }
        if let Some(remote) = self.head(key).await? {
            let ours = attempt.begun.as_deref() == Some(RCLONE_BEGUN);
            match self.compare_existing(key, blake3, size, remote).await {
                // A copy rclone began and never finished (a local or SFTP
                // remote writes in place): keepsake's own, replaced below.
                Err(StoreError::Conflict(_)) if ours => self.remove_partial(key).await?,
                other => return other,
            }
        }
        match &self.backend {
            Backend::Dir { root } => {
                let dest = root.join(key);
                let (local, blake3) = (local.to_path_buf(), blake3.to_string());
                let name = name.clone();
                let root = root.clone();
                let pace = self.pace.clone();
                tokio::task::spawn_blocking(move || {
                    put_dir(&name, &root, &local, &dest, &blake3, pace.as_ref())
                })
                .await
                .map_err(|e| StoreError::Local(e.to_string()))?
            }
            Backend::S3 { s3, prefix } => {
                let object = Self::object(prefix, key)?;
                let result = if size < MULTIPART_FROM {
                    let bytes = tokio::fs::read(local).await.map_err(|e| {
                        StoreError::Local(format!("cannot read {}: {e}", local.display()))
                    })?;
                    if blake3::hash(&bytes).to_hex().as_str() != blake3 {
                        return Err(changed(local));
                    }
                    if let Some(pace) = &self.pace {
                        pace.take(bytes.len() as u64).await;
                    }
                    let options = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    s3.put_opts(&object, PutPayload::from(bytes), options)
                        .await
                        .map(|r| r.e_tag)
                } else {
                    self.put_multipart(s3, &object, local, blake3, attempt)
                        .await?
                };
                match result {
                    Ok(etag) => Ok(etag),
                    // Someone else wrote the key between our look and the
                    // write: compare, never replace.
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => {
                        match self.head(key).await? {
                            Some(remote) => self.compare_existing(key, blake3, size, remote).await,
                            None => Err(StoreError::Unavailable(format!(
                                "offsite target {name}: {key} changed while it was written"
                            ))),
                        }
                    }
                    Err(e) => Err(classify(name, key, e)),
                }
            }
            Backend::Rclone { rcd, remote } => {
                (attempt.note)(Some(RCLONE_BEGUN)).map_err(StoreError::Local)?;
                let (src_fs, src_remote) = rclone::local_source(local);
                rcd.call(
                    "operations/copyfile",
                    json!({
                        "srcFs": src_fs,
                        "srcRemote": src_remote,
                        "dstFs": remote,
                        "dstRemote": key,
                    }),
                    None,
                )
                .await
                .map_err(|e| rc_error(name, key, e))?;
                // rclone compares a checksum both ends support after the
                // copy; keepsake checks the size it now holds, and the
                // library file is unchanged (rclone read it as it is now).
                let held = self.head(key).await?;
                if held.as_ref().map(|r| r.size) != Some(size)
                    || blake3_of(local).await?.as_str() != blake3
                {
                    return Err(StoreError::Unavailable(format!(
                        "offsite target {name}: {key} does not hold {size} bytes after the copy, or {} changed; tried again later",
                        local.display()
                    )));
                }
                Ok(None)
            }
            Backend::Manifest { path, listed } => {
                let line = local.to_string_lossy().into_owned();
                if line.contains(['\n', '\r']) {
                    return Err(StoreError::Conflict(format!(
                        "offsite target {name}: {} has a line break in its name, which a manifest cannot list; rename it",
                        local.display()
                    )));
                }
                let meta = tokio::fs::metadata(local)
                    .await
                    .map_err(|e| StoreError::Local(format!("{}: {e}", local.display())))?;
                if meta.len() != size {
                    return Err(changed(local));
                }
                let (path, entry) = (path.clone(), line.clone());
                tokio::task::spawn_blocking(move || append_line(&path, &entry))
                    .await
                    .map_err(|e| StoreError::Local(e.to_string()))?
                    .map_err(|e| StoreError::Unavailable(format!("offsite target {name}: {e}")))?;
                if let Some(lines) = lock(listed).as_mut() {
                    lines.insert(line);
                }
                Ok(None)
            }
        }
    }

    /// Abort an S3 multipart upload an earlier try left (so no parts stay
    /// on the server); an rclone copy needs nothing here.
    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let Backend::S3 { s3, prefix } = &self.backend else {
            return Ok(());
        };
        let object = Self::object(prefix, key)?;
        match s3.abort_multipart(&object, &upload_id.to_string()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => match classify(&self.name, key, e) {
                StoreError::Unavailable(m) if !m.contains("NoSuchUpload") => {
                    Err(StoreError::Unavailable(m))
                }
                // Already completed or aborted, so the server forgot it
                // (some answer AccessDenied for an unknown upload); real
                // refusals show on the next request.
                other => {
                    tracing::warn!(
                        "offsite target {}: could not abort the unfinished upload {upload_id} of {key} ({other}); if its parts remain, a lifecycle rule (AbortIncompleteMultipartUpload) frees them",
                        self.name
                    );
                    Ok(())
                }
            },
        }
    }

    async fn remove_partial(&self, key: &str) -> Result<(), StoreError> {
        let Backend::Rclone { rcd, remote } = &self.backend else {
            return Ok(());
        };
        tracing::warn!(
            "offsite target {}: removing the partial copy of {key} an interrupted push left",
            self.name
        );
        rcd.call(
            "operations/deletefile",
            json!({ "fs": remote, "remote": key }),
            Some(Duration::from_secs(120)),
        )
        .await
        .map(drop)
        .map_err(|e| rc_error(&self.name, key, e))
    }

    async fn compare_existing(
        &self,
        key: &str,
        blake3: &str,
        size: u64,
        remote: Remote,
    ) -> Result<Option<String>, StoreError> {
        let same = remote.size == size
            && match self.hash(key).await? {
                Some(hash) => hash == blake3,
                None => {
                    return Err(StoreError::Unavailable(format!(
                        "offsite target {}: {key} vanished while it was read; tried again later",
                        self.name
                    )));
                }
            };
        if same {
            Ok(remote.etag)
        } else {
            Err(StoreError::Conflict(format!(
                "offsite target {}: {key} already holds other bytes ({} bytes); keepsake never overwrites it",
                self.name, remote.size
            )))
        }
    }

    /// A large file in parts: constant memory, a few parts in flight,
    /// hashed as it is read so a file changed underneath is not pushed. The
    /// upload's id is noted in the ledger first, so a crash or an outage
    /// leaves no parts behind: the next try aborts it.
    async fn put_multipart(
        &self,
        s3: &AmazonS3,
        object: &ObjectPath,
        local: &Path,
        blake3: &str,
        attempt: &Attempt<'_>,
    ) -> Result<object_store::Result<Option<String>>, StoreError> {
        use tokio::io::AsyncReadExt;
        let mut file = crate::effects::fsops::open_nofollow(local)
            .map(tokio::fs::File::from_std)
            .map_err(|e| StoreError::Local(format!("cannot read {}: {e}", local.display())))?;
        let id = match s3.create_multipart(object).await {
            Ok(id) => id,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = (attempt.note)(Some(&id)) {
            let _ = s3.abort_multipart(object, &id).await;
            return Err(StoreError::Local(e));
        }
        // S3 takes at most 10 000 parts: larger files get larger parts.
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS) as usize);
        let uploaded = async {
            let mut hasher = blake3::Hasher::new();
            let mut parts: Vec<Option<object_store::multipart::PartId>> = Vec::new();
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut index = 0usize;
            loop {
                let mut part = Vec::with_capacity(part_size);
                while part.len() < part_size {
                    let n = (&mut file)
                        .take((part_size - part.len()) as u64)
                        .read_to_end(&mut part)
                        .await
                        .map_err(|e| {
                            StoreError::Local(format!("cannot read {}: {e}", local.display()))
                        })?;
                    if n == 0 {
                        break;
                    }
                }
                if part.is_empty() && index > 0 {
                    break;
                }
                hasher.update(&part);
                if let Some(pace) = &self.pace {
                    pace.take(part.len() as u64).await;
                }
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some((i, done)) = in_flight.next().await {
                        let done: object_store::Result<_> = done;
                        parts[i] = Some(done.map_err(|e| classify(&self.name, "a part", e))?);
                    }
                }
                let last = part.len() < part_size;
                parts.push(None);
                let payload = PutPayload::from(part);
                let i = index;
                let id = &id;
                in_flight.push(async move { (i, s3.put_part(object, id, i, payload).await) });
                index += 1;
                if last {
                    break;
                }
            }
            while let Some((i, done)) = in_flight.next().await {
                parts[i] = Some(done.map_err(|e| classify(&self.name, "a part", e))?);
            }
            if hasher.finalize().to_hex().as_str() != blake3 {
                return Err(changed(local));
            }
            Ok(parts.into_iter().flatten().collect::<Vec<_>>())
        }
        .await;
        let parts = match uploaded {
            Ok(parts) => parts,
            Err(e) => {
                if s3.abort_multipart(object, &id).await.is_ok() {
                    let _ = (attempt.note)(None);
                }
                return Err(e);
            }
        };
        // Completing a multipart upload does not take If-None-Match here:
        // look once more right before, so only a write in the last instant
        // could be replaced (keepsake itself never writes a key twice).
        match s3.head(object).await {
            Ok(_) => {
                if s3.abort_multipart(object, &id).await.is_ok() {
                    let _ = (attempt.note)(None);
                }
                return Ok(Err(object_store::Error::AlreadyExists {
                    path: object.to_string(),
                    source: "written while keepsake uploaded it".into(),
                }));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Ok(Err(e)),
        }
        Ok(s3
            .complete_multipart(object, &id, parts)
            .await
            .map(|r| r.e_tag))
    }

    /// Every object under the target (for `restore`): (key, size).
    pub async fn list(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let name = &self.name;
        match &self.backend {
            Backend::Dir { root } => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || list_dir(&root))
                    .await
                    .map_err(|e| StoreError::Local(e.to_string()))?
                    .map_err(|e| StoreError::Unavailable(format!("offsite target {name}: {e}")))
            }
            Backend::S3 { s3, prefix } => {
                let base = if prefix.is_empty() {
                    None
                } else {
                    Some(ObjectPath::parse(prefix).map_err(|e| {
                        StoreError::Refused(format!(
                            "offsite target {name}: prefix {prefix:?}: {e}"
                        ))
                    })?)
                };
                let mut stream = s3.list(base.as_ref());
                let mut out = Vec::new();
                while let Some(meta) = stream.next().await {
                    let meta = meta.map_err(|e| classify(name, "listing", e))?;
                    let key = meta.location.as_ref();
                    let key = if prefix.is_empty() {
                        key
                    } else {
                        key.strip_prefix(prefix.as_str())
                            .map_or(key, |k| k.trim_start_matches('/'))
                    };
                    out.push((key.to_string(), meta.size));
                }
                Ok(out)
            }
            Backend::Rclone { rcd, remote } => {
                let listed = rcd
                    .call(
                        "operations/list",
                        json!({ "fs": remote, "remote": "", "opt": { "recurse": true, "filesOnly": true, "noModTime": true, "noMimeType": true } }),
                        None,
                    )
                    .await
                    .map_err(|e| rc_error(name, "listing", e))?;
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
            Backend::Manifest { .. } => Err(StoreError::Refused(format!(
                "offsite target {name} is a manifest: restore with the tool that read it (restic restore)"
            ))),
        }
    }

    /// Download `key` into the new file `dest`.
    pub async fn download(&self, key: &str, dest: &Path) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let name = &self.name;
        let local = |e: std::io::Error| StoreError::Local(format!("{}: {e}", dest.display()));
        if let Backend::Dir { root } = &self.backend {
            let (from, to) = (root.join(key), dest.to_path_buf());
            return tokio::task::spawn_blocking(move || fsops::copy_to_temp(&from, &to))
                .await
                .map_err(|e| StoreError::Local(e.to_string()))?
                .map(drop)
                .map_err(local);
        }
        let mut out = tokio::fs::File::from_std(fsops::create_staging(dest).map_err(local)?);
        match &self.backend {
            Backend::S3 { s3, prefix } => {
                let got = s3
                    .get(&Self::object(prefix, key)?)
                    .await
                    .map_err(|e| classify(name, key, e))?;
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| classify(name, key, e))?;
                    out.write_all(&chunk).await.map_err(local)?;
                }
            }
            Backend::Rclone { rcd, remote } => {
                let Some(mut stream) = rcd
                    .get(remote, key)
                    .await
                    .map_err(|e| rc_error(name, key, e))?
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
            }
            Backend::Dir { .. } | Backend::Manifest { .. } => {}
        }
        out.flush().await.map_err(local)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn changed(local: &Path) -> StoreError {
    StoreError::Local(format!(
        "{} no longer has the bytes keepsake placed; restore it from another copy",
        local.display()
    ))
}

async fn hash_file(name: &str, path: PathBuf) -> Result<Option<String>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let name = name.to_string();
    tokio::task::spawn_blocking(move || blake3_file(&path))
        .await
        .map_err(|e| StoreError::Local(e.to_string()))?
        .map(Some)
        .map_err(|e| StoreError::Unavailable(format!("offsite target {name}: {e}")))
}

async fn blake3_of(local: &Path) -> Result<String, StoreError> {
    let path = local.to_path_buf();
    tokio::task::spawn_blocking(move || blake3_file(&path))
        .await
        .map_err(|e| StoreError::Local(e.to_string()))?
        .map_err(|e| StoreError::Local(format!("cannot read {}: {e}", local.display())))
}

fn read_manifest(path: &Path) -> std::io::Result<HashSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if path.parent().is_some_and(Path::is_dir) {
                Ok(HashSet::new())
            } else {
                Err(std::io::Error::new(
                    e.kind(),
                    format!("the folder of {} is missing", path.display()),
                ))
            }
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    }
}

/// Append one line to a manifest, durably.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    fsops::append_durably(path, format!("{line}\n").as_bytes())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Remove the temps an interrupted push left on a folder target, once per
/// target and process (at the start, or the first run). Only those not
/// written to for ten minutes: another machine's push may be under way.
fn sweep_push_temps(name: &str, root: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if swept.iter().any(|r| r == root) {
            return;
        }
        swept.push(root.to_path_buf());
    }
    let old = std::time::SystemTime::now() - Duration::from_secs(600);
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".keepsake-push-")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at < old)
                && fsops::remove_temp(&entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            "offsite target {name}: removed {removed} temp files an interrupted push left"
        );
    }
}

fn list_dir(root: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name == MARKER || name.starts_with(".keepsake-push-") {
                    continue;
                }
                if let Ok(key) = path.strip_prefix(root) {
                    out.push((key.to_string_lossy().into_owned(), entry.metadata()?.len()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
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

/// A folder target: temp file beside the destination, synced, re-hashed,
/// then renamed without replacing.
fn put_dir(
    name: &str,
    root: &Path,
    local: &Path,
    dest: &Path,
    blake3: &str,
    pace: Option<&Pace>,
) -> Result<Option<String>, StoreError> {
    let unavailable = |e: std::io::Error| {
        StoreError::Unavailable(format!("offsite target {name}: {}: {e}", dest.display()))
    };
    // Nothing is created on a mount point whose disk is not there.
    if !root.join(MARKER).is_file() {
        return Err(StoreError::Unavailable(format!(
            "offsite target {name}: {} has no {MARKER}: is the disk mounted?",
            root.display()
        )));
    }
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let gained = fsops::create_dirs(dir).map_err(unavailable)?;
    // Unique per push: two pushes of the same bytes may run at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // The name is new: another machine writing to the same share, or an
    // earlier crash, may have left one like it, never removed here.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(
        ".keepsake-push-{}-{}-{nanos}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let copied = match pace {
        None => fsops::copy_to_temp(local, &temp),
        Some(pace) => fsops::copy_to_temp_paced(local, &temp, &|n| pace.take_blocking(n)),
    };
    copied.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && !local.exists() {
            StoreError::Local(format!("{} is missing from the library", local.display()))
        } else {
            unavailable(e)
        }
    })?;
    let mut durable: Vec<&Path> = vec![temp.as_path()];
    durable.extend(gained.iter().map(PathBuf::as_path));
    let checked = fsops::sync_files(&durable)
        .map_err(unavailable)
        .and_then(|()| blake3_file(&temp).map_err(unavailable));
    match checked {
        Ok(hash) if hash == blake3 => {}
        Ok(_) => {
            let _ = fsops::remove_temp(&temp);
            return Err(StoreError::Local(format!(
                "{} no longer has the bytes keepsake placed",
                local.display()
            )));
        }
        Err(e) => {
            let _ = fsops::remove_temp(&temp);
            return Err(e);
        }
    }
    // The disk may have been unplugged since the round began: never fill
    // the empty mount point left behind.
    if !root.join(MARKER).is_file() {
        let _ = fsops::remove_temp(&temp);
        return Err(StoreError::Unavailable(format!(
            "offsite target {name}: {} lost its {MARKER}: is the disk still mounted?",
            root.display()
        )));
    }
    match fsops::rename_no_replace(&temp, dest) {
        Ok(()) => {
            let _ = fsops::fsync_dir(dir);
            Ok(None)
        }
        Err(e) => {
            let _ = fsops::remove_temp(&temp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Err(StoreError::Unavailable(format!(
                    "offsite target {name}: {} appeared while it was written",
                    dest.display()
                )))
            } else {
                Err(unavailable(e))
            }
        }
    }
}

/// An `object_store` error as keepsake acts on it.
fn classify(target: &str, what: &str, error: object_store::Error) -> StoreError {
    use object_store::Error as E;
    let text = format!("{error}");
    let message = format!("offsite target {target}: {what}: {text}");
    match error {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => StoreError::Refused(format!(
            "{message} (check the credentials of [offsite.{target}])"
        )),
        _ if text.contains("NoSuchBucket") => {
            StoreError::Refused(format!("{message} (the bucket does not exist; create it)"))
        }
        E::Generic { store: "local", .. } => StoreError::Local(message),
        _ if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") => {
            StoreError::Refused(format!(
                "{message} (check the credentials of [offsite.{target}])"
            ))
        }
        _ => StoreError::Unavailable(message),
    }
}
