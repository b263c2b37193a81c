//! Any S3-compatible server as an offsite target, through `object_store`,
//! which does the SigV4 signing and retries. Small files go up in one
//! conditional PUT (`If-None-Match: *`); large ones in parts, constant
//! memory, the upload's id noted in the ledger first so the next try aborts
//! an upload a crash or an outage left.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use super::store::{Attempt, Backend, Remote, StoreError, Write, changed, compare_existing};
use crate::config::TargetKind;
use crate::effects::fsops;

/// Files at least this large go up in parts (constant memory).
const MULTIPART_FROM: u64 = 16 << 20;
const PART_SIZE: usize = 8 << 20;
const MAX_PARTS: u64 = 10_000;
/// Parts in flight per upload: with four uploads at once, memory stays near
/// 100 MiB whatever the file sizes.
const PARTS_IN_FLIGHT: usize = 2;

pub struct S3 {
    name: String,
    s3: AmazonS3,
    prefix: String,
}

impl S3 {
    /// No request yet: the first one tells whether the server answers.
    pub fn open(name: String, kind: &TargetKind) -> Result<S3, StoreError> {
        let TargetKind::S3 {
            endpoint,
            region,
            bucket,
            prefix,
            path_style,
            credentials,
        } = kind
        else {
            return Err(StoreError::Refused(format!(
                "offsite target {name} is not an S3 target"
            )));
        };
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
            // A dead server must not stall the queue for minutes: keepsake
            // defers and retries on its own schedule.
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
        Ok(S3 {
            name,
            s3,
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    /// The object for a key, byte for byte (`ObjectPath::from` would
    /// percent-encode `[`, `#`, `%` and friends, which are common in names).
    fn object(&self, key: &str) -> Result<ObjectPath, StoreError> {
        let raw = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&raw)
            .map_err(|e| StoreError::Conflict(format!("{raw:?} cannot be an object key: {e}")))
    }

    fn classify(&self, what: &str, error: object_store::Error) -> StoreError {
        classify(&self.name, what, error)
    }

    /// A large file in parts: constant memory, a few parts in flight,
    /// hashed as it is read so a file changed underneath is not pushed. The
    /// upload's id is noted in the ledger first, so a crash or an outage
    /// leaves no parts behind: the next try aborts it.
    async fn put_multipart(
        &self,
        object: &ObjectPath,
        write: &Write<'_>,
    ) -> Result<object_store::Result<Option<String>>, StoreError> {
        use tokio::io::AsyncReadExt;
        let (s3, local, attempt): (&AmazonS3, &Path, &Attempt<'_>) =
            (&self.s3, write.local, write.attempt);
        let mut file = fsops::open_nofollow(local)
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
                if let Some(pace) = write.pace {
                    pace.take(part.len() as u64).await;
                }
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some((i, done)) = in_flight.next().await {
                        let done: object_store::Result<_> = done;
                        parts[i] = Some(done.map_err(|e| self.classify("a part", e))?);
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
                parts[i] = Some(done.map_err(|e| self.classify("a part", e))?);
            }
            if hasher.finalize().to_hex().as_str() != write.blake3 {
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
}

#[async_trait::async_trait]
impl Backend for S3 {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self, _pushed_before: bool) -> Result<(), StoreError> {
        self.s3
            .list_with_delimiter(Some(&self.object("keepsake-check")?))
            .await
            .map(drop)
            .map_err(|e| self.classify("checking the bucket", e))
    }

    async fn head(&self, key: &str) -> Result<Option<Remote>, StoreError> {
        match self.s3.head(&self.object(key)?).await {
            Ok(meta) => Ok(Some(Remote {
                size: meta.size,
                etag: meta.e_tag,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.classify(key, e)),
        }
    }

    /// The SHA-256 the server stored when it checked the upload (a HEAD in
    /// checksum mode); `None` for a multipart object on a server that keeps
    /// no checksum of the whole file.
    async fn digest(&self, key: &str) -> Result<Option<(&'static str, String)>, StoreError> {
        use object_store::signer::{SignedUrlOptions, Signer};
        let name = &self.name;
        let options = SignedUrlOptions::new().with_signed_header(
            http::HeaderName::from_static("x-amz-checksum-mode"),
            http::HeaderValue::from_static("ENABLED"),
        );
        let url = self
            .s3
            .signed_url_opts(
                http::Method::HEAD,
                &self.object(key)?,
                Duration::from_secs(300),
                &options,
            )
            .await
            .map_err(|e| self.classify(key, e))?;
        let response = reqwest::Client::new()
            .head(url)
            .header("x-amz-checksum-mode", "ENABLED")
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(format!("offsite target {name}: {key}: {e}")))?;
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

    async fn hash(&self, key: &str) -> Result<Option<String>, StoreError> {
        let got = match self.s3.get(&self.object(key)?).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.classify(key, e)),
        };
        let mut hasher = blake3::Hasher::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.classify(key, e))?;
            hasher.update(&chunk);
        }
        Ok(Some(hasher.finalize().to_hex().to_string()))
    }

    async fn write(&self, write: &Write<'_>) -> Result<Option<String>, StoreError> {
        let (key, local) = (write.key, write.local);
        let object = self.object(key)?;
        let result = if write.size < MULTIPART_FROM {
            let bytes = tokio::fs::read(local)
                .await
                .map_err(|e| StoreError::Local(format!("cannot read {}: {e}", local.display())))?;
            if blake3::hash(&bytes).to_hex().as_str() != write.blake3 {
                return Err(changed(local));
            }
            if let Some(pace) = write.pace {
                pace.take(bytes.len() as u64).await;
            }
            let options = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            self.s3
                .put_opts(&object, PutPayload::from(bytes), options)
                .await
                .map(|r| r.e_tag)
        } else {
            self.put_multipart(&object, write).await?
        };
        match result {
            Ok(etag) => Ok(etag),
            // Someone else wrote the key between our look and the write:
            // compare, never replace.
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => match self.head(key).await? {
                Some(remote) => compare_existing(self, key, write.blake3, write.size, remote).await,
                None => Err(StoreError::Unavailable(format!(
                    "offsite target {}: {key} changed while it was written",
                    self.name
                ))),
            },
            Err(e) => Err(self.classify(key, e)),
        }
    }

    /// Abort the multipart upload an earlier try left, so no parts stay on
    /// the server.
    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let object = self.object(key)?;
        match self
            .s3
            .abort_multipart(&object, &upload_id.to_string())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => match self.classify(key, e) {
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

    async fn list(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let (name, prefix) = (&self.name, &self.prefix);
        let base = if prefix.is_empty() {
            None
        } else {
            Some(ObjectPath::parse(prefix).map_err(|e| {
                StoreError::Refused(format!("offsite target {name}: prefix {prefix:?}: {e}"))
            })?)
        };
        let mut stream = self.s3.list(base.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.classify("listing", e))?;
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

    async fn download(&self, key: &str, dest: &Path) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let local = |e: std::io::Error| StoreError::Local(format!("{}: {e}", dest.display()));
        let mut out = tokio::fs::File::from_std(fsops::create_staging(dest).map_err(local)?);
        let got = self
            .s3
            .get(&self.object(key)?)
            .await
            .map_err(|e| self.classify(key, e))?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.classify(key, e))?;
            out.write_all(&chunk).await.map_err(local)?;
        }
        out.flush().await.map_err(local)
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
