//! The two kinds of offsite target: a folder (a mounted NAS share, a USB
//! disk) and any S3-compatible server (through `object_store`, which does the
//! SigV4 signing, retries and multipart uploads). Neither ever deletes or
//! overwrites an object: a key that exists is compared, never replaced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};

use crate::config::{OffsiteTarget, TargetKind};
use crate::effects::fsops;
use crate::hashing::blake3_file;

/// In a folder target, written at its first push.
const MARKER: &str = ".keepsake-target";

/// Files at least this large go up in parts (constant memory).
const MULTIPART_FROM: u64 = 16 << 20;
const PART_SIZE: usize = 8 << 20;

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

pub enum Store {
    Dir {
        name: String,
        root: PathBuf,
    },
    S3 {
        name: String,
        s3: AmazonS3,
        prefix: String,
    },
}

impl Store {
    /// Connect to a target (no request yet for S3: the first one tells).
    pub fn open(target: &OffsiteTarget) -> Result<Store, StoreError> {
        match &target.kind {
            TargetKind::Dir { path } => Ok(Store::Dir {
                name: target.name.clone(),
                root: path.clone(),
            }),
            TargetKind::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                path_style,
                credentials,
            } => {
                let (access, secret) = credentials.read().map_err(|e| {
                    StoreError::Refused(format!("offsite target {}: {e}", target.name))
                })?;
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
                let s3 = builder.build().map_err(|e| {
                    StoreError::Refused(format!("offsite target {}: {e}", target.name))
                })?;
                Ok(Store::S3 {
                    name: target.name.clone(),
                    s3,
                    prefix: prefix.trim_end_matches('/').to_string(),
                })
            }
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Store::Dir { name, .. } | Store::S3 { name, .. } => name,
        }
    }

    /// Check that the target is there and usable (the folder exists, the
    /// bucket answers with these credentials). A folder target carries a
    /// marker file from its first push on: a disk that is not mounted leaves
    /// an empty mount point, which must not be filled instead.
    pub async fn check(&self, pushed_before: bool) -> Result<(), StoreError> {
        match self {
            Store::Dir { root, name } => {
                let marker = root.join(MARKER);
                if marker.is_file() {
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
            Store::S3 { s3, name, .. } => s3
                .list_with_delimiter(Some(&ObjectPath::from("keepsake-check")))
                .await
                .map(drop)
                .map_err(|e| classify(name, "checking the bucket", e)),
        }
    }

    fn object(prefix: &str, key: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{prefix}/{key}"))
        }
    }

    /// What the target holds under `key`, if anything.
    pub async fn head(&self, key: &str) -> Result<Option<Remote>, StoreError> {
        match self {
            Store::Dir { root, name } => {
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
            Store::S3 { s3, name, prefix } => match s3.head(&Self::object(prefix, key)).await {
                Ok(meta) => Ok(Some(Remote {
                    size: meta.size,
                    etag: meta.e_tag,
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(classify(name, key, e)),
            },
        }
    }

    /// BLAKE3 of what the target holds under `key` (downloads it).
    pub async fn hash(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Dir { root, name } => {
                let path = root.join(key);
                if !path.exists() {
                    return Ok(None);
                }
                tokio::task::spawn_blocking(move || blake3_file(&path))
                    .await
                    .map_err(|e| StoreError::Local(e.to_string()))?
                    .map(Some)
                    .map_err(|e| StoreError::Unavailable(format!("offsite target {name}: {e}")))
            }
            Store::S3 { s3, name, prefix } => {
                let got = match s3.get(&Self::object(prefix, key)).await {
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
        }
    }

    /// Copy the library file `local` (BLAKE3 `blake3`, `size` bytes) to
    /// `key`. A key that already holds the same bytes is done (a push a
    /// crash interrupted after the upload); other bytes are a conflict.
    pub async fn put(
        &self,
        local: &Path,
        key: &str,
        blake3: &str,
        size: u64,
    ) -> Result<Option<String>, StoreError> {
        if let Some(remote) = self.head(key).await? {
            return self.compare_existing(key, blake3, size, remote).await;
        }
        match self {
            Store::Dir { root, name } => {
                let dest = root.join(key);
                let (local, blake3) = (local.to_path_buf(), blake3.to_string());
                let name = name.clone();
                let root = root.clone();
                tokio::task::spawn_blocking(move || put_dir(&name, &root, &local, &dest, &blake3))
                    .await
                    .map_err(|e| StoreError::Local(e.to_string()))?
            }
            Store::S3 { s3, name, prefix } => {
                let object = Self::object(prefix, key);
                let result = if size < MULTIPART_FROM {
                    let bytes = tokio::fs::read(local).await.map_err(|e| {
                        StoreError::Local(format!("cannot read {}: {e}", local.display()))
                    })?;
                    if blake3::hash(&bytes).to_hex().as_str() != blake3 {
                        return Err(StoreError::Local(format!(
                            "{} no longer has the bytes keepsake placed; restore it from another copy",
                            local.display()
                        )));
                    }
                    let options = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    s3.put_opts(&object, PutPayload::from(bytes), options)
                        .await
                        .map(|r| r.e_tag)
                } else {
                    put_multipart(s3, &object, local, blake3).await
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
        }
    }

    async fn compare_existing(
        &self,
        key: &str,
        blake3: &str,
        size: u64,
        remote: Remote,
    ) -> Result<Option<String>, StoreError> {
        let same = remote.size == size && self.hash(key).await?.as_deref() == Some(blake3);
        if same {
            Ok(remote.etag)
        } else {
            Err(StoreError::Conflict(format!(
                "offsite target {}: {key} already holds other bytes ({} bytes); keepsake never overwrites it",
                self.name(),
                remote.size
            )))
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
) -> Result<Option<String>, StoreError> {
    let unavailable = |e: std::io::Error| {
        StoreError::Unavailable(format!("offsite target {name}: {}: {e}", dest.display()))
    };
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let gained = fsops::create_dirs(dir).map_err(unavailable)?;
    // Unique per push: two pushes of the same bytes may run at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let temp = dir.join(format!(
        ".keepsake-push-{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = fsops::remove_temp(&temp);
    fsops::copy_to_temp(local, &temp).map_err(|e| {
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

/// A large file in parts: constant memory, at most a few parts in flight,
/// hashed as it is read so a file changed underneath is not pushed.
async fn put_multipart(
    s3: &AmazonS3,
    object: &ObjectPath,
    local: &Path,
    blake3: &str,
) -> object_store::Result<Option<String>> {
    use tokio::io::AsyncReadExt;
    let mut file =
        tokio::fs::File::open(local)
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })?;
    let upload = s3.put_multipart(object).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                });
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        // Two parts in flight per upload: with four uploads at once, memory
        // stays near 100 MiB whatever the file sizes.
        if let Err(e) = writer.wait_for_capacity(2).await {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.write(&buf[..n]);
    }
    if hasher.finalize().to_hex().as_str() != blake3 {
        let _ = writer.abort().await;
        return Err(object_store::Error::Generic {
            store: "local",
            source: format!("{} changed while it was pushed", local.display()).into(),
        });
    }
    // object_store completes a multipart upload without If-None-Match: look
    // once more right before, so only a write in the last instant could be
    // replaced (keepsake itself never writes a key twice).
    match s3.head(object).await {
        Ok(_) => {
            let _ = writer.abort().await;
            return Err(object_store::Error::AlreadyExists {
                path: object.to_string(),
                source: "written while keepsake uploaded it".into(),
            });
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            let _ = writer.abort().await;
            return Err(e);
        }
    }
    writer.finish().await.map(|r| r.e_tag)
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
