//! The guest side of keepsake's stage contract (`wit/stage.wit`).
//!
//! A stage is one file:
//!
//! ```no_run
//! use keepsake_sdk::*;
//!
//! struct Screens;
//!
//! impl Guest for Screens {
//!     fn describe() -> Description {
//!         describe("screens", env!("CARGO_PKG_VERSION"), "screenshots go to screens/", &[])
//!     }
//!     fn run(job: Job) -> Result<Vec<Effect>, StageError> {
//!         if file_name(&job).starts_with("Screenshot") {
//!             return Ok(vec![Effect::Place(Placement {
//!                 root: "library".into(),
//!                 path: format!("screens/{}", file_name(&job)),
//!             })]);
//!         }
//!         Ok(vec![])
//!     }
//!     // Only stages that talk to a remote service (Immich) send or read
//!     // anything here.
//!     fn sweep(_: SweepRequest) -> Result<Vec<RemoteChange>, StageError> {
//!         Ok(vec![])
//!     }
//! }
//!
//! export_stage!(Screens);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and name the
//! `.wasm` file in the config.

#[doc(hidden)]
#[allow(unsafe_code, clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "stage",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_stage",
        default_bindings_module: "keepsake_sdk::bindings",
    });
}

pub use bindings::Guest;
pub use bindings::export_stage;
pub use bindings::keepsake::stage::host;
pub use bindings::keepsake::stage::types::{
    AssetRef, CaptureTime, Confidence, Datetime, DeferUntil, Description, Effect, Fact, Job,
    Location, LogLevel, MediaKind, OptionSpec, Phase, Placement, PushRequest, RemoteAlbum,
    RemoteAsset, RemoteChange, StageError, SweepRequest, XmpTarget, XmpWrite,
};
pub use keepsake_xmp as xmp;

/// The last component of the job's relative path.
pub fn file_name(job: &Job) -> &str {
    job.relative_path
        .rsplit('/')
        .next()
        .unwrap_or(job.relative_path.as_str())
}

/// The value of a fact earlier stages set.
pub fn fact<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.facts
        .iter()
        .rev()
        .find(|f| f.key == key)
        .map(|f| f.value.as_str())
}

/// A stage's option, or its default.
pub fn option_or(name: &str, default: &str) -> String {
    host::get_option(name).unwrap_or_else(|| default.to_string())
}

/// Build a `Description` from plain strings; options are
/// `(name, description, default)`. Pass `env!("CARGO_PKG_VERSION")` as version.
pub fn describe(
    name: &str,
    version: &str,
    summary: &str,
    options: &[(&str, &str, Option<&str>)],
) -> Description {
    Description {
        name: name.to_string(),
        version: version.to_string(),
        summary: summary.to_string(),
        options: options
            .iter()
            .map(|(name, description, default)| OptionSpec {
                name: name.to_string(),
                description: description.to_string(),
                default_value: default.map(str::to_string),
            })
            .collect(),
        phase: Phase::Decide,
    }
}

/// [`describe`] for a stage that runs once the file is placed
/// ([`Phase::Placed`]).
pub fn describe_placed(
    name: &str,
    version: &str,
    summary: &str,
    options: &[(&str, &str, Option<&str>)],
) -> Description {
    Description {
        phase: Phase::Placed,
        ..describe(name, version, summary, options)
    }
}

/// Log through the host (shown with the job id and stage name).
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}
