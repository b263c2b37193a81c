//! Built-in stage `exif`: the capture time of every photo and video, by a
//! fixed precedence (the first valid source wins), and the facts later
//! stages use (camera, GPS, orientation, size).
//!
//! Precedence: an XMP sidecar (`IMG.jpg.xmp` before `IMG.xmp`) → EXIF
//! DateTimeOriginal (+ SubSecTimeOriginal + OffsetTimeOriginal; never
//! OffsetTime) → EXIF CreateDate (DateTimeDigitized) → embedded XMP → the
//! video's local time (Keys CreationDate, ©day) → QuickTime CreateDate (UTC)
//! → Google Takeout `photoTakenTime` (UTC) → GPS date and time (UTC) → the
//! file name → a dated folder → the file's modification time. Zero dates,
//! impossible fields, dates before 1970, cameras' clock-reset defaults and
//! dates more than a day in the future fall through to the next source.
//! An offset is kept only when a source states it.

pub mod capture;
pub mod embedded;
pub mod names;
pub mod quicktime;
pub mod source;
pub mod takeout;
pub mod time;
pub mod xmp;

use keepsake_sdk::{
    CaptureTime, Confidence, Datetime, Description, Effect, Fact, Guest, Job, StageError,
    XmpTarget, XmpWrite, describe, export_stage, host,
};

use capture::{Inputs, Sidecar};
use source::Bytes;

/// What one file may cost in reads.
const READ_BUDGET: u64 = 8 << 20;
/// Sidecars larger than this are not metadata.
const MAX_SIDECAR: u32 = 1 << 20;

/// The job's file, through the host's bounded `read`.
struct HostFile {
    size: u64,
}

impl Bytes for HostFile {
    fn read_at(&self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        host::read(offset, len).map_err(std::io::Error::other)
    }
    fn len(&self) -> u64 {
        self.size
    }
}

fn read_companion(name: &str) -> Option<String> {
    let bytes = host::read_companion(name, 0, MAX_SIDECAR).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

struct Exif;

impl Guest for Exif {
    fn describe() -> Description {
        describe(
            "exif",
            env!("CARGO_PKG_VERSION"),
            "the capture time of every photo and video, from metadata, sidecars, names and folders",
            &[
                (
                    "use_mtime",
                    "date files with no other source by their modification time (true/false)",
                    Some("true"),
                ),
                (
                    "write",
                    "where dates from outside the file are recorded: sidecar (IMG.jpg.xmp) or embed (inside the library copy of a JPEG)",
                    Some("sidecar"),
                ),
            ],
        )
    }

    fn run(job: Job) -> Result<Vec<Effect>, StageError> {
        let file = HostFile { size: job.size };
        let sidecars = job
            .companions
            .iter()
            .filter_map(|name| {
                read_companion(name).map(|text| Sidecar {
                    name: name.clone(),
                    text,
                })
            })
            .collect();
        let inputs = Inputs {
            relative_path: &job.relative_path,
            sidecars,
            mtime: Some((
                time::Stamp {
                    year: job.mtime.year as i32,
                    month: job.mtime.month as u32,
                    day: job.mtime.day as u32,
                    hour: job.mtime.hour as u32,
                    minute: job.mtime.minute as u32,
                    second: job.mtime.second as u32,
                    nanos: 0,
                },
                job.mtime_offset_minutes,
            ))
            .filter(|_| keepsake_sdk::option_or("use_mtime", "true") != "false"),
            now: host::now(),
        };
        let found = capture::examine(&file, READ_BUDGET, &inputs);
        let mut effects: Vec<Effect> = found
            .facts
            .into_iter()
            .map(|(key, value)| Effect::SetFact(Fact { key, value }))
            .collect();
        let target = match keepsake_sdk::option_or("write", "sidecar").as_str() {
            "embed" => XmpTarget::Embed,
            _ => XmpTarget::Sidecar,
        };
        effects.extend(found.xmp.into_iter().map(|(name, value)| {
            Effect::WriteXmp(XmpWrite {
                name,
                value,
                target,
            })
        }));
        if let Some(best) = found.capture {
            effects.push(Effect::SetCaptureTime(CaptureTime {
                local: Datetime {
                    year: best.stamp.year.clamp(0, u16::MAX as i32) as u16,
                    month: best.stamp.month as u8,
                    day: best.stamp.day as u8,
                    hour: best.stamp.hour as u8,
                    minute: best.stamp.minute as u8,
                    second: best.stamp.second.min(59) as u8,
                    nanosecond: best.stamp.nanos,
                },
                offset_minutes: best.offset_minutes,
                source: best.source,
                confidence: match best.confidence {
                    capture::Confidence::Low => Confidence::Low,
                    capture::Confidence::Medium => Confidence::Medium,
                    capture::Confidence::High => Confidence::High,
                },
            }));
        }
        Ok(effects)
    }
}

export_stage!(Exif);
