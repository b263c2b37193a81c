//! A family plugin: files whose name starts with "Screenshot" go to
//! `screens/` in the library instead of the dated folders.
//!
//! It sees only what the host hands it (the job and its options) and returns
//! a decision; it cannot touch a file itself.

use keepsake_sdk::{
    Description, Effect, Guest, Job, Placement, StageError, describe, export_stage, file_name,
    option,
};

struct Screens;

impl Guest for Screens {
    fn describe() -> Description {
        describe(
            "screenshots",
            env!("CARGO_PKG_VERSION"),
            "screenshots go to their own folder",
            &[
                (
                    "prefixes",
                    "comma-separated name prefixes",
                    Some("Screenshot,Screen Shot"),
                ),
                ("folder", "library folder for screenshots", Some("screens")),
            ],
        )
    }

    fn run(job: Job) -> Result<Vec<Effect>, StageError> {
        let name = file_name(&job);
        let prefixes = option("prefixes");
        let is_screenshot = prefixes
            .split(',')
            .map(str::trim)
            .any(|prefix| !prefix.is_empty() && name.starts_with(prefix));
        if !is_screenshot {
            return Ok(vec![]);
        }
        let folder = option("folder");
        Ok(vec![Effect::Place(Placement {
            root: "library".into(),
            path: format!("{folder}/{name}"),
        })])
    }
}

export_stage!(Screens);
