//! Built-in stage `library`: decides where a file lives in the library, from
//! the capture time earlier stages set (or the file's mtime when none did).
//! The host makes the name collision-safe and never overwrites.

use keepsake_sdk::{
    CaptureTime, Confidence, Datetime, Description, Effect, Guest, Job, MediaKind, Placement,
    StageError, describe, export_stage, file_name, option_or,
};

const DEFAULT_TEMPLATE: &str = "{year}/{month}/{yyyy}{mm}{dd}_{HHMMSS}_{name}";
const DEFAULT_UNDATED: &str = "undated/{name}";

struct Library;

impl Guest for Library {
    fn describe() -> Description {
        describe(
            "library",
            env!("CARGO_PKG_VERSION"),
            "places each file in the library by a template of its capture time",
            &[
                (
                    "template",
                    "path of a dated file; {year} {month} {day} {yyyy} {mm} {dd} {HH} {MM} {SS} {HHMMSS} {name} {stem} {ext} {inbox}",
                    Some(DEFAULT_TEMPLATE),
                ),
                (
                    "undated",
                    "path of a file with no capture time",
                    Some(DEFAULT_UNDATED),
                ),
                (
                    "use_mtime",
                    "date files no earlier stage dated by their modification time (true/false)",
                    Some("true"),
                ),
            ],
        )
    }

    fn run(job: Job) -> Result<Vec<Effect>, StageError> {
        if job.size == 0 {
            return Ok(vec![Effect::Quarantine(
                "empty file (0 bytes): nothing to keep; if it is a failed download, download it again"
                    .into(),
            )]);
        }
        if job.media_kind == MediaKind::Unknown {
            return Ok(vec![Effect::Quarantine(
                "not a photo or video: its first bytes match no image or video format keepsake knows"
                    .into(),
            )]);
        }
        if job.placement.is_some() {
            // A family plugin earlier in the pipeline already chose a place.
            return Ok(vec![]);
        }
        let use_mtime = option_or("use_mtime", "true") != "false";
        let mut effects = Vec::new();
        let capture = match &job.capture_time {
            Some(capture) => Some(capture.local),
            None if use_mtime => {
                effects.push(Effect::SetCaptureTime(CaptureTime {
                    local: job.mtime,
                    offset_minutes: Some(job.mtime_offset_minutes),
                    source: "file:mtime".into(),
                    confidence: Confidence::Low,
                }));
                Some(job.mtime)
            }
            None => None,
        };
        let template = match capture {
            Some(_) => option_or("template", DEFAULT_TEMPLATE),
            None => option_or("undated", DEFAULT_UNDATED),
        };
        let path = render(&template, &job, capture.as_ref())
            .map_err(|e| StageError::Internal(format!("option template: {e}")))?;
        effects.push(Effect::Place(Placement {
            root: "library".into(),
            path,
        }));
        Ok(effects)
    }
}

/// Fill `{field}`s of a template. Unknown fields are an error, so a typo in
/// the config shows up on the first file instead of as a folder named `{yaer}`.
fn render(template: &str, job: &Job, time: Option<&Datetime>) -> Result<String, String> {
    let name = file_name(job);
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot + 1..]),
        _ => (name, ""),
    };
    let mut out = String::with_capacity(template.len() + name.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let field = &after[..close];
        let value = match (field, time) {
            ("name", _) => name.to_string(),
            ("stem", _) => stem.to_string(),
            ("ext", _) => ext.to_string(),
            ("inbox", _) => job.inbox.clone(),
            ("year" | "yyyy", Some(t)) => format!("{:04}", t.year),
            ("month" | "mm", Some(t)) => format!("{:02}", t.month),
            ("day" | "dd", Some(t)) => format!("{:02}", t.day),
            ("HH", Some(t)) => format!("{:02}", t.hour),
            ("MM", Some(t)) => format!("{:02}", t.minute),
            ("SS", Some(t)) => format!("{:02}", t.second),
            ("HHMMSS", Some(t)) => format!("{:02}{:02}{:02}", t.hour, t.minute, t.second),
            (
                "year" | "yyyy" | "month" | "mm" | "day" | "dd" | "HH" | "MM" | "SS" | "HHMMSS",
                None,
            ) => {
                return Err(format!(
                    "{{{field}}} needs a capture time; the undated template cannot use it"
                ));
            }
            _ => return Err(format!("unknown field {{{field}}} in {template:?}")),
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

export_stage!(Library);
