//! Built-in stage `offsite`: decides which offsite targets each placed file
//! goes to, and under which key. The host does the transfer (bulk I/O) once
//! the file is in the library, and records every push in the ledger.
//!
//! Options: `targets` (comma-separated names of `[offsite.NAME]` tables),
//! `key` (`{path}` is the file's final library path; also `{inbox}`,
//! `{kind}`), and filters `inboxes`, `kinds`, `max_size_mib`.

use keepsake_sdk::{
    Description, Effect, Guest, Job, MediaKind, PushRequest, StageError, describe, export_stage,
    option_or,
};

struct Offsite;

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Jpeg => "jpeg",
        MediaKind::Heic => "heic",
        MediaKind::Avif => "avif",
        MediaKind::Png => "png",
        MediaKind::Gif => "gif",
        MediaKind::Webp => "webp",
        MediaKind::Tiff => "tiff",
        MediaKind::Raw => "raw",
        MediaKind::Video => "video",
        MediaKind::Unknown => "unknown",
    }
}

fn list(option: &str) -> Vec<String> {
    option_or(option, "")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Guest for Offsite {
    fn describe() -> Description {
        describe(
            "offsite",
            env!("CARGO_PKG_VERSION"),
            "pushes each placed file and its sidecars to offsite targets",
            &[
                (
                    "targets",
                    "comma-separated [offsite.NAME] targets (default: none)",
                    Some(""),
                ),
                (
                    "key",
                    "object key; {path} is the library path, also {inbox} and {kind}",
                    Some("{path}"),
                ),
                (
                    "inboxes",
                    "only files from these inboxes (comma-separated; default: all)",
                    Some(""),
                ),
                (
                    "kinds",
                    "only these kinds: jpeg, heic, png, video, raw, ... (default: all)",
                    Some(""),
                ),
                (
                    "max_size_mib",
                    "skip files larger than this (0: no limit)",
                    Some("0"),
                ),
            ],
        )
    }

    fn run(job: Job) -> Result<Vec<Effect>, StageError> {
        if job.placement.is_none() {
            return Ok(vec![]);
        }
        let inboxes = list("inboxes");
        if !inboxes.is_empty() && !inboxes.contains(&job.inbox) {
            return Ok(vec![]);
        }
        let kind = kind_name(job.media_kind);
        let kinds = list("kinds");
        if !kinds.is_empty() && !kinds.iter().any(|k| k == kind) {
            return Ok(vec![]);
        }
        let max_mib: u64 = option_or("max_size_mib", "0")
            .parse()
            .map_err(|_| StageError::Internal("max_size_mib must be a whole number".into()))?;
        if max_mib > 0 && job.size > max_mib << 20 {
            return Ok(vec![]);
        }
        let key = option_or("key", "{path}")
            .replace("{inbox}", &job.inbox)
            .replace("{kind}", kind);
        Ok(list("targets")
            .into_iter()
            .map(|target| {
                Effect::Push(PushRequest {
                    target,
                    key: key.clone(),
                })
            })
            .collect())
    }
}

export_stage!(Offsite);
