//! The `[service]` table: how `keepsake run` watches, waits, retries and stops.

use std::time::Duration;

use serde::Deserialize;

use crate::ledger::Backoff;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    stability_secs: Option<f64>,
    rescan_secs: Option<u64>,
    concurrency: Option<usize>,
    grace_secs: Option<u64>,
    max_attempts: Option<u32>,
    retry_secs: Option<u64>,
}

/// How `keepsake run` behaves (the `[service]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// A file is taken once its size and mtime are unchanged this long.
    pub stability: Duration,
    /// A full rescan of every inbox this often (and at start); None: only at start.
    pub rescan: Option<Duration>,
    /// Threads for hashing, stage calls and copies.
    pub concurrency: usize,
    /// After SIGINT/SIGTERM, in-flight work gets this long to finish.
    pub grace: Duration,
    pub backoff: Backoff,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            stability: Duration::from_secs(5),
            rescan: Some(Duration::from_secs(15 * 60)),
            concurrency: default_concurrency(),
            grace: Duration::from_secs(20),
            backoff: Backoff {
                max_attempts: 5,
                base_secs: 60,
                cap_secs: 6 * 3600,
            },
        }
    }
}

fn default_concurrency() -> usize {
    crate::par::cores()
}

impl RawService {
    /// Validated, or (key, message) naming what is wrong.
    pub(super) fn validate(&self) -> Result<ServiceConfig, (String, String)> {
        let mut service = ServiceConfig::default();
        let bad = |key: &str, message: &str| Err((format!("service.{key}"), message.to_string()));
        if let Some(secs) = self.stability_secs {
            if !(0.0..=3600.0).contains(&secs) {
                return bad("stability_secs", "must be between 0 and 3600 seconds");
            }
            service.stability = Duration::from_secs_f64(secs);
        }
        if let Some(secs) = self.rescan_secs {
            if secs > 7 * 24 * 3600 {
                return bad(
                    "rescan_secs",
                    "must be at most a week (604800); 0 rescans only at start",
                );
            }
            service.rescan = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(n) = self.concurrency {
            if n > 256 {
                return bad("concurrency", "must be 0 (one per core) to 256");
            }
            service.concurrency = if n == 0 { default_concurrency() } else { n };
        }
        if let Some(secs) = self.grace_secs {
            if secs > 3600 {
                return bad("grace_secs", "must be at most 3600");
            }
            service.grace = Duration::from_secs(secs);
        }
        if let Some(n) = self.max_attempts {
            if !(1..=100).contains(&n) {
                return bad("max_attempts", "must be 1 to 100");
            }
            service.backoff.max_attempts = n;
        }
        if let Some(secs) = self.retry_secs {
            if !(1..=86_400).contains(&secs) {
                return bad("retry_secs", "must be 1 to 86400");
            }
            service.backoff.base_secs = secs as i64;
        }
        Ok(service)
    }
}
