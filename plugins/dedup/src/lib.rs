//! Built-in stage `dedup`: a file whose original bytes (BLAKE3) match an asset
//! keepsake already has is recorded as a duplicate of it and goes no further.
//! Nothing is deleted: in a copy-mode inbox the file stays where it is.

use keepsake_sdk::{Description, Effect, Guest, Job, StageError, describe, export_stage, host};

struct Dedup;

impl Guest for Dedup {
    fn describe() -> Description {
        describe(
            "dedup",
            env!("CARGO_PKG_VERSION"),
            "exact duplicates by BLAKE3 of the original bytes are recorded, not placed again",
            &[],
        )
    }

    fn run(job: Job) -> Result<Vec<Effect>, StageError> {
        Ok(match host::find_by_hash(&job.blake3) {
            Some(original) if original.job_id != job.id => {
                vec![Effect::DuplicateOf(original.job_id)]
            }
            _ => vec![],
        })
    }
}

export_stage!(Dedup);
