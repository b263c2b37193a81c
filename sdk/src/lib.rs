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
//! }
//!
//! export_stage!(Screens);
//! ```
//!
//! A stage that talks to a remote service (Immich) implements
//! [`ServiceGuest`] instead, which adds `sweep`, and exports itself with
//! `export_service_stage!`.
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

/// The `service-stage` world: a stage that also sweeps a remote service.
#[doc(hidden)]
#[allow(unsafe_code, clippy::all, missing_docs)]
pub mod service_bindings {
    wit_bindgen::generate!({
        world: "service-stage",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_service_stage",
        default_bindings_module: "keepsake_sdk::service_bindings",
        with: {
            "keepsake:stage/types@0.5.1": crate::bindings::keepsake::stage::types,
            "keepsake:stage/host@0.5.1": crate::bindings::keepsake::stage::host,
        },
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
/// What a service stage implements: [`Guest`]'s `describe` and `run`, and
/// `sweep`.
pub use service_bindings::Guest as ServiceGuest;
pub use service_bindings::export_service_stage;

/// Dates without a time-zone database: proleptic Gregorian days since
/// 1970-01-01 (Howard Hinnant's algorithms), for stages that turn dates into
/// instants and back.
pub mod calendar {
    /// Days since 1970-01-01 of a date.
    pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
        let y = i64::from(year) - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date (year, month, day) of days since 1970-01-01.
    pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        (year, month, day)
    }
}

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

/// A stage's option: the config's value, else the default `describe`
/// gave it (the host answers with that), else empty.
pub fn option(name: &str) -> String {
    host::get_option(name).unwrap_or_default()
}

/// A stage's option, or `default` for an option `describe` gives no
/// default (the host answers with the described default before this one).
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
