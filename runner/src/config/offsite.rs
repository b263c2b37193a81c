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
    /// `rclone`: any rclone remote and path (`b2:family/photos`, `nas:/backup`).
    remote: Option<String>,
    /// `rclone`: the program (default `rclone` on the PATH).
    rclone: Option<PathBuf>,
    /// `rclone`: its config file (default: rclone's own default).
    rclone_config: Option<PathBuf>,
    /// Bytes per second at most for this target: `8M`, `512K`, `2MiB`.
    bwlimit: Option<String>,
    /// Client-side encryption to these age recipients (`age1…` public keys;
    /// the secret identity never goes in the config).
    #[serde(default)]
    age_recipients: Vec<String>,
    /// Or a file of recipients, one per line (`#` comments).
    age_recipients_file: Option<PathBuf>,
    /// `dir`: the folder is on the library's disk (same device) and is
    /// still to count as a copy off this machine for `archive plan`.
    #[serde(default)]
    same_disk: bool,
}

/// A validated offsite target.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsiteTarget {
    pub name: String,
    pub kind: TargetKind,
    /// Bytes per second at most.
    pub bwlimit: Option<u64>,
    /// age recipients (`age1…`): objects are encrypted before they leave.
    pub age_recipients: Vec<String>,
    /// A folder target on the library's device that still counts as a copy
    /// off this machine (`same_disk = true`).
    pub same_disk: bool,
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
    /// Any rclone remote, through one `rclone rcd` per target.
    Rclone {
        remote: String,
        program: PathBuf,
        config: Option<PathBuf>,
    },
    /// A `--files-from` list of library paths for restic and friends.
    Manifest {
        path: PathBuf,
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
        let kind = self.target_kind(name, base)?;
        let bwlimit = match &self.bwlimit {
            None => None,
            Some(text) => Some(parse_rate(text).ok_or_else(|| {
                (
                    key("bwlimit"),
                    format!(
                        "{text:?}: a rate like \"8M\", \"512K\" or \"2MiB\" (bytes per second)"
                    ),
                )
            })?),
        };
        let age_recipients = self.read_recipients(name, base, &kind)?;
        if self.same_disk && !matches!(kind, TargetKind::Dir { .. }) {
            return Err((
                key("same_disk"),
                "only a `dir` target can be on the library's disk".into(),
            ));
        }
        Ok(OffsiteTarget {
            name: name.to_string(),
            kind,
            bwlimit,
            age_recipients,
            same_disk: self.same_disk,
        })
    }

    /// The target's `type` and the keys that type needs.
    fn target_kind(&self, name: &str, base: &Path) -> Result<TargetKind, (String, String)> {
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
            "rclone" => {
                let Some(remote) = self.remote.clone().filter(|r| !r.trim().is_empty()) else {
                    return Err((
                        key("remote"),
                        "an `rclone` target needs `remote` (like \"b2:bucket/photos\")".into(),
                    ));
                };
                TargetKind::Rclone {
                    remote,
                    program: self.rclone.clone().unwrap_or_else(|| "rclone".into()),
                    config: self
                        .rclone_config
                        .as_ref()
                        .map(|path| super::resolve(base, path)),
                }
            }
            "manifest" => {
                let Some(path) = &self.path else {
                    return Err((key("path"), "a `manifest` target needs `path`".into()));
                };
                TargetKind::Manifest {
                    path: super::resolve(base, path),
                }
            }
            other => {
                return Err((
                    key("type"),
                    format!(
                        "{other:?}: one of \"s3\" (any S3-compatible server), \"dir\" (a folder), \"rclone\" (any rclone remote) or \"manifest\" (a file list for restic)"
                    ),
                ));
            }
        };
        Ok(kind)
    }

    /// The age recipients, inline and from `age_recipients_file`, checked.
    fn read_recipients(
        &self,
        name: &str,
        base: &Path,
        kind: &TargetKind,
    ) -> Result<Vec<String>, (String, String)> {
        let key = |field: &str| format!("offsite.{name}.{field}");
        let mut age_recipients = self.age_recipients.clone();
        if let Some(file) = &self.age_recipients_file {
            let file = super::resolve(base, file);
            let text = std::fs::read_to_string(&file).map_err(|e| {
                (
                    key("age_recipients_file"),
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            age_recipients.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(str::to_string),
            );
        }
        if let Err(e) = crate::offsite::seal::recipients(&age_recipients) {
            return Err((
                key("age_recipients"),
                format!("{e}; make a key with `keepsake offsite keygen FILE`"),
            ));
        }
        if !age_recipients.is_empty() && matches!(kind, TargetKind::Manifest { .. }) {
            return Err((
                key("age_recipients"),
                "a manifest target copies nothing, so there is nothing to encrypt".into(),
            ));
        }
        if (self.age_recipients_file.is_some() || !self.age_recipients.is_empty())
            && age_recipients.is_empty()
        {
            return Err((
                key("age_recipients_file"),
                "holds no recipient: encryption was asked for but has no key".into(),
            ));
        }
        Ok(age_recipients)
    }
}

/// `8M`, `8MB`, `8MiB`, `8M/s`, `512k`, `1G`, or plain bytes: bytes per
/// second (K, M, G are powers of 1024, as rclone reads them).
pub fn parse_rate(text: &str) -> Option<u64> {
    let text = text.trim().trim_end_matches("/s").trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let rate = (number * scale).round();
    (1.0..1e15).contains(&rate).then_some(rate as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("8M"), Some(8 << 20));
        assert_eq!(parse_rate("8 MiB/s"), Some(8 << 20));
        assert_eq!(parse_rate("512k"), Some(512 << 10));
        assert_eq!(parse_rate("1.5G"), Some(3 << 29));
        assert_eq!(parse_rate("1000"), Some(1000));
        assert_eq!(parse_rate("fast"), None);
        assert_eq!(parse_rate("0"), None);
        assert_eq!(parse_rate("-1M"), None);
    }
}
