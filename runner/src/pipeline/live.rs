//! Live Photos: a still and its video travel together. They are paired by
//! Apple's MediaGroupUUID on the still and the video's content identifier
//! (the `live.content_id` fact the exif stage records). Failing that, they
//! are paired when they share a name in one folder and their capture times
//! lie within 3 s. The video is then placed beside the still under the
//! still's name (`…_IMG_1.HEIC` → `…_IMG_1.MOV`), as Apple and Immich pair
//! them. A shared name alone, months apart, is not a pair.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::host::CaptureTime;
use crate::ledger::Ledger;

/// How far apart a still and its video may be captured to pair by name.
const PAIR_WINDOW_SECS: i64 = 3;

#[derive(Debug, Clone)]
pub(super) struct Still {
    pub job_id: u64,
    /// Where it goes, relative to the library.
    pub dest: String,
    pub capture_secs: Option<i64>,
}

/// Stills decided in this ingest, by content id and by (folder, stem).
#[derive(Default)]
pub(super) struct Stills {
    by_id: HashMap<String, Still>,
    by_stem: HashMap<(PathBuf, String), Still>,
}

fn stem_key(source: &Path) -> Option<(PathBuf, String)> {
    let dir = source.parent()?.to_path_buf();
    let stem = source.file_stem()?.to_string_lossy().to_ascii_lowercase();
    Some((dir, stem))
}

/// Seconds since the epoch of a capture time (a naive time is read as UTC:
/// only differences between a pair's two times matter).
pub(super) fn capture_secs(capture: &CaptureTime) -> Option<i64> {
    let civil = super::decide::civil(capture).ok()?;
    let utc = jiff::tz::TimeZone::UTC
        .to_timestamp(civil)
        .ok()?
        .as_second();
    Some(utc - capture.offset_minutes.unwrap_or(0) as i64 * 60)
}

impl Stills {
    pub fn register(&mut self, content_id: Option<&str>, source: &Path, still: Still) {
        if let Some(id) = content_id {
            self.by_id.insert(id.to_string(), still.clone());
        }
        if let Some(key) = stem_key(source) {
            self.by_stem.insert(key, still);
        }
    }

    /// The still this video belongs to, if any: in this ingest, or (by
    /// content id) one placed by an earlier run.
    pub fn find(
        &self,
        ledger: &Ledger,
        content_id: Option<&str>,
        source: &Path,
        video_secs: Option<i64>,
    ) -> Option<Still> {
        if let Some(id) = content_id {
            if let Some(still) = self.by_id.get(id) {
                return Some(still.clone());
            }
            let earlier = ledger.read(|c| crate::ledger::ingest::still_by_content_id(c, id));
            if let Ok((job_id, dest)) = earlier {
                return Some(Still {
                    job_id,
                    dest,
                    capture_secs: None,
                });
            }
        }
        let still = self.by_stem.get(&stem_key(source)?)?;
        match (still.capture_secs, video_secs) {
            (Some(a), Some(b)) if (a - b).abs() <= PAIR_WINDOW_SECS => Some(still.clone()),
            _ => None,
        }
    }
}

/// The video's library path beside its still: the still's folder and stem,
/// the video's extension.
pub(super) fn beside(still_dest: &str, video_source: &Path) -> String {
    let (dir, name) = match still_dest.rfind('/') {
        Some(slash) => (&still_dest[..=slash], &still_dest[slash + 1..]),
        None => ("", still_dest),
    };
    let stem = match name.rfind('.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    };
    let ext = video_source
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mov".into());
    format!("{dir}{stem}.{ext}")
}

pub(super) type SharedStills = Mutex<Stills>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_video_takes_the_stills_name() {
        assert_eq!(
            beside(
                "2021/04/20210411_154753_IMG_5195.HEIC",
                Path::new("/in/IMG_5195.MOV")
            ),
            "2021/04/20210411_154753_IMG_5195.MOV"
        );
    }
}
