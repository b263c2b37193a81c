//! `[offsite.NAME]` tables: where the `offsite` stage's pushes go.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    #[serde(rename = "type")]
    kind: String,
    /// `dir`: the folder (a mounted NAS share, a USB disk).
    path: Option<PathBuf>,
    /// `s3`: any S3-compatible endpoint (default: AWS).
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    #[serde(default)]
    prefix: String,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO, Garage and
    /// most self-hosted servers want; default true when an endpoint is set.
    path_style: Option<bool>,
    /// Environment variables holding the keys.
    access_key_env: Option<String>,
    secret_key_env: Option<String>,
    /// Or a file of `AWS_ACCESS_KEY_ID=…` / `AWS_SECRET_ACCESS_KEY=…` lines.
    credentials_file: Option<PathBuf>,
}

/// A validated offsite target.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsiteTarget {
    pub name: String,
    pub kind: TargetKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetKind {
    Dir {
        path: PathBuf,
    },
    S3 {
        endpoint: Option<String>,
        region: String,
        bucket: String,
        prefix: String,
        path_style: bool,
        credentials: Credentials,
    },
}

/// Where an S3 target's keys come from; read when the target is used, so a
/// missing key is an error naming the target, not a start-up failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    Env { access: String, secret: String },
    File(PathBuf),
}

impl Credentials {
    /// (access key id, secret access key).
    pub fn read(&self) -> Result<(String, String), String> {
        match self {
            Credentials::Env { access, secret } => {
                let get = |name: &str| {
                    std::env::var(name)
                        .map_err(|_| format!("environment variable {name} is not set"))
                };
                Ok((get(access)?, get(secret)?))
            }
            Credentials::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let value = |name: &str| {
                    text.lines()
                        .filter_map(|line| line.trim().split_once('='))
                        .find(|(k, _)| k.trim() == name)
                        .map(|(_, v)| v.trim().trim_matches('"').to_string())
                        .ok_or_else(|| format!("{} has no {name}= line", path.display()))
                };
                Ok((value("AWS_ACCESS_KEY_ID")?, value("AWS_SECRET_ACCESS_KEY")?))
            }
        }
    }
}

impl RawTarget {
    pub(super) fn validate(
        &self,
        name: &str,
        base: &Path,
    ) -> Result<OffsiteTarget, (String, String)> {
        let key = |field: &str| format!("offsite.{name}.{field}");
        let kind = match self.kind.as_str() {
            "dir" => {
                let Some(path) = &self.path else {
                    return Err((key("path"), "a `dir` target needs `path`".into()));
                };
                TargetKind::Dir {
                    path: super::resolve(base, path),
                }
            }
            "s3" => {
                let Some(bucket) = self.bucket.clone().filter(|b| !b.is_empty()) else {
                    return Err((key("bucket"), "an `s3` target needs `bucket`".into()));
                };
                if let Some(endpoint) = &self.endpoint
                    && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                {
                    return Err((
                        key("endpoint"),
                        "must start with http:// or https://".into(),
                    ));
                }
                if self.prefix.starts_with('/') || self.prefix.contains("..") {
                    return Err((key("prefix"), "must be relative, without `..`".into()));
                }
                let credentials = match &self.credentials_file {
                    Some(path) => Credentials::File(super::resolve(base, path)),
                    None => Credentials::Env {
                        access: self
                            .access_key_env
                            .clone()
                            .unwrap_or_else(|| "AWS_ACCESS_KEY_ID".into()),
                        secret: self
                            .secret_key_env
                            .clone()
                            .unwrap_or_else(|| "AWS_SECRET_ACCESS_KEY".into()),
                    },
                };
                TargetKind::S3 {
                    endpoint: self.endpoint.clone(),
                    region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
                    bucket,
                    prefix: self.prefix.clone(),
                    path_style: self.path_style.unwrap_or(self.endpoint.is_some()),
                    credentials,
                }
            }
            other => {
                return Err((
                    key("type"),
                    format!(
                        "{other:?}: one of \"s3\" (any S3-compatible server) or \"dir\" (a folder)"
                    ),
                ));
            }
        };
        Ok(OffsiteTarget {
            name: name.to_string(),
            kind,
        })
    }
}
