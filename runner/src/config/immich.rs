//! `[immich]`: the Immich server the built-in `immich` stage talks to, and
//! where its API key comes from. The key is read when stages load and handed
//! to the host's HTTP layer only: the stage never sees it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImmich {
    url: Option<String>,
    /// A file holding the API key (one line), readable by keepsake only.
    api_key_file: Option<PathBuf>,
    /// Or the environment variable holding it.
    api_key_env: Option<String>,
    /// Minutes between write-back sweeps in `run` (0: only `keepsake immich pull`).
    pull_minutes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImmichConfig {
    /// As written, without a trailing `/` (may carry a path prefix).
    pub url: String,
    /// `scheme://host:port`: the one origin the stage may reach.
    pub origin: String,
    pub key: KeySource,
    /// Minutes between the service's write-back sweeps; 0 turns them off.
    pub pull_minutes: u32,
}

impl KeySource {
    /// The key, read now (a rotated key is picked up at the next start).
    pub fn read(&self) -> Result<String, String> {
        let key = match self {
            KeySource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the Immich API key from {}: {e}; create it (one line, the key from Immich → Account settings → API keys) or fix `[immich] api_key_file`",
                    path.display()
                )
            })?,
            KeySource::Env(name) => std::env::var(name).map_err(|_| {
                format!(
                    "the Immich API key is to come from the environment variable {name}, which is not set; set it or use `[immich] api_key_file`"
                )
            })?,
        };
        let key = key.trim().to_string();
        if key.is_empty() || key.contains(['\r', '\n']) {
            return Err("the Immich API key is empty or not one line".into());
        }
        Ok(key)
    }
}

impl ImmichConfig {
    /// The API key, read now (a rotated key is picked up at the next start).
    pub fn api_key(&self) -> Result<String, String> {
        self.key.read()
    }
}

impl RawImmich {
    pub(super) fn is_set(&self) -> bool {
        self.url.is_some()
            || self.api_key_file.is_some()
            || self.api_key_env.is_some()
            || self.pull_minutes.is_some()
    }

    pub(super) fn validate(&self, base: &Path) -> Result<Option<ImmichConfig>, (String, String)> {
        if !self.is_set() {
            return Ok(None);
        }
        let Some(url) = &self.url else {
            return Err((
                "immich.url".into(),
                "is missing: the Immich server, e.g. \"http://immich.local:2283\"".into(),
            ));
        };
        // The form Immich's own CLI takes ends in /api; keepsake adds it.
        let url = url.trim_end_matches('/');
        let url = url.strip_suffix("/api").unwrap_or(url).to_string();
        if url.contains(['@', '?', '#']) {
            return Err((
                "immich.url".into(),
                format!(
                    "{url:?}: give the server alone, without a user, query or fragment (the key goes in api_key_file)"
                ),
            ));
        }
        let uri: http::Uri = url.parse().map_err(|e| {
            (
                "immich.url".to_string(),
                format!("{url:?} is not a URL: {e}"),
            )
        })?;
        let origin = crate::host::HttpGrant::origin_of(&uri)
            .filter(|_| matches!(uri.scheme_str(), Some("http" | "https")))
            .ok_or_else(|| {
                (
                    "immich.url".to_string(),
                    format!("{url:?}: give http:// or https:// and the server, e.g. \"http://immich.local:2283\""),
                )
            })?;
        let key = match (&self.api_key_file, &self.api_key_env) {
            (Some(_), Some(_)) => {
                return Err((
                    "immich.api_key_file".into(),
                    "give api_key_file or api_key_env, not both".into(),
                ));
            }
            (Some(file), None) => KeySource::File(super::resolve(base, file)),
            (None, Some(env)) => KeySource::Env(env.clone()),
            (None, None) => KeySource::Env("IMMICH_API_KEY".into()),
        };
        let pull_minutes = self.pull_minutes.unwrap_or(15);
        if pull_minutes > 7 * 24 * 60 {
            return Err((
                "immich.pull_minutes".into(),
                format!("{pull_minutes} is more than a week; give 0 to turn the sweeps off"),
            ));
        }
        Ok(Some(ImmichConfig {
            url,
            origin,
            key,
            pull_minutes,
        }))
    }
}
