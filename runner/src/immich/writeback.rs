//! The write-back sweep: what the family did in Immich (albums, favorites,
//! descriptions, ratings, edited dates and places) goes into each file's
//! XMP sidecar, so a rebuilt Immich, a moved file or another tool gets it
//! back. Immich keeps those only in its database.
//!
//! A `placed`-phase stage's `sweep` reads its service; the host records
//! what it read (`remote_albums`, `remote_album_members`, `remote_assets`)
//! and rewrites a sidecar only when what it would write changed. In the
//! sidecar:
//! - albums: `xmpDM:Album` (one album, as elodie and others read it; the
//!   first by name) and `lr:hierarchicalSubject` items `Albums|<name>`
//!   (every album; Immich shows them as tags, and keepsake's immich stage
//!   puts the file back in those albums when it uploads it again);
//! - the rating as `xmp:Rating`, else a favorite as rating 5;
//! - the description as `dc:description`;
//! - a date or place the user changed in the service (it differs from what
//!   the service first read from the file) as `exif:DateTimeOriginal` and
//!   `photoshop:DateCreated`, `exif:GPSLatitude` and `exif:GPSLongitude`.
//!
//! Albums, ratings and descriptions keepsake wrote and the service no
//! longer has are removed (dates and places stay until edited again);
//! everything else in the sidecar stays. A sidecar that is not XMP keepsake
//! can merge into is left alone and reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{Value, json};

use super::placed::{self, LedgerServices, sidecars_beside};
use crate::config::Config;
use crate::effects::fsops;
use crate::host::{CaptureTime, RemoteAsset, RemoteChange, Services};
use crate::ledger::writeback::DirtyRow;
use crate::ledger::{self, writeback};
use crate::pipeline::{Pipeline, PipelineError};

/// Properties the write-back sets and never removes (see [`write_sidecar`]).
const KEPT: &[&str] = &[
    "exif:DateTimeOriginal",
    "photoshop:DateCreated",
    "exif:GPSLatitude",
    "exif:GPSLongitude",
];
/// Sidecars written per ledger commit.
const BATCH: usize = 256;
/// A full sweep (which finds edits Immich's change feed does not show: its
/// descriptions, ratings, dates and places) at least this often.
pub const FULL_EVERY_SECS: i64 = 24 * 3600;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SweepReport {
    /// Every asset read, not only what changed.
    pub full: bool,
    pub albums_read: u64,
    pub assets_read: u64,
    /// Assets whose albums or metadata changed since the last sweep.
    pub changed: u64,
    pub sidecars_written: u64,
    pub requests: u64,
    pub errors: Vec<String>,
}

/// Sweep every placed-phase stage (Immich) and write what changed into
/// sidecars. Runs on its own thread, as wasi:http needs.
pub fn sweep(pipeline: &Pipeline, full: bool) -> Result<SweepReport, PipelineError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| sweep_here(pipeline, full))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The service's schedule: a sweep every `[immich] pull_minutes`, a full
/// one once a day. `None` when none is due.
pub fn sweep_due(pipeline: &Pipeline) -> Option<bool> {
    let minutes = pipeline
        .config()
        .immich
        .as_ref()
        .map_or(0, |i| i.pull_minutes);
    if minutes == 0 || placed::stages(pipeline).is_empty() {
        return None;
    }
    let now = ledger::now();
    // The stage swept longest ago decides (one never swept: now).
    let mut last = i64::MAX;
    let mut last_full = i64::MAX;
    for stage in placed::stages(pipeline) {
        let (at, full) = pipeline
            .ledger()
            .read(|c| writeback::sweep_times(c, &stage))
            .ok()?
            .unwrap_or((None, None));
        last = last.min(at.unwrap_or(0));
        last_full = last_full.min(full.unwrap_or(0));
    }
    (now - last >= i64::from(minutes) * 60).then_some(now - last_full >= FULL_EVERY_SECS)
}

fn sweep_here(pipeline: &Pipeline, full: bool) -> Result<SweepReport, PipelineError> {
    let ledger = pipeline.ledger();
    let mut report = SweepReport {
        full,
        ..SweepReport::default()
    };
    for name in placed::stages(pipeline) {
        let Some(stage) = pipeline.stage(&name) else {
            continue;
        };
        let services = Arc::new(LedgerServices::new(&pipeline.ledger_arc()));
        let shared: Arc<dyn Services> = Arc::clone(&services) as Arc<dyn Services>;
        let request = crate::host::SweepRequest {
            send_only: false,
            full,
        };
        let (result, stats) = pipeline.runtime().sweep(stage, request, shared);
        report.requests += stats.requests;
        let now = ledger::now();
        let changes = match result {
            Ok(changes) => changes,
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(stage = name, "sweep: {message}");
                // The next try waits for the schedule like a success:
                // a server that is down gets one request per period.
                ledger.write(|tx| writeback::record_sweep_error(tx, &name, &message, now))?;
                report.errors.push(message);
                continue;
            }
        };
        let held = std::mem::take(&mut *services.held());
        let counts = ledger.write(|tx| {
            for ((stage, key), value) in &held {
                ledger::kv_set(tx, stage, key, value)?;
            }
            let counts = record(tx, &name, &changes)?;
            writeback::record_sweep(tx, &name, now, full)?;
            Ok(counts)
        })?;
        report.albums_read += counts.0;
        report.assets_read += counts.1;
        report.changed += counts.2;
        write_sidecars(pipeline, &name, &mut report)?;
    }
    Ok(report)
}

/// Bring every sidecar the stage's records say is behind up to date.
fn write_sidecars(
    pipeline: &Pipeline,
    stage: &str,
    report: &mut SweepReport,
) -> Result<(), PipelineError> {
    let ledger = pipeline.ledger();
    let config = pipeline.config();
    let mut after = 0i64;
    loop {
        let rows = ledger.read(|c| writeback::dirty_rows(c, stage, after, BATCH))?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let mut rewritten: Vec<u64> = Vec::new();
        after = last.job_id;
        // A sidecar about to be rewritten is a change the archive's
        // verdicts must hear of even if this process stops midway.
        // Only the rows noted here are this sweep's to clear: a row already
        // there is another change's, still to be voided.
        let ids: Vec<u64> = rows
            .iter()
            .filter_map(|r| u64::try_from(r.job_id).ok())
            .collect();
        let noted: Vec<u64> = ledger.write(|tx| {
            let mut noted = Vec::new();
            for id in &ids {
                if crate::ledger::note_unvoided(tx, *id)? {
                    noted.push(*id);
                }
            }
            Ok(noted)
        })?;
        let mut failed: Vec<u64> = Vec::new();
        let mut done: Vec<(i64, String)> = Vec::new();
        for row in &rows {
            let wanted = wanted_properties(row);
            let written: BTreeMap<String, String> =
                serde_json::from_str(&row.written).unwrap_or_default();
            if wanted == written {
                // A crash between writing and recording may have left
                // this sidecar's temp behind.
                if let Some(temp) = media_path(config, row).as_deref().and_then(sidecar_temp) {
                    let _ = fsops::remove_temp(&temp);
                }
                done.push((row.job_id, row.written.clone()));
                continue;
            }
            let Some(media) = media_path(config, row) else {
                // Not in the library (any more): nothing to write.
                done.push((row.job_id, row.written.clone()));
                continue;
            };
            match write_sidecar(&media, &wanted, &written) {
                Ok(changed) => {
                    report.sidecars_written += u64::from(changed);
                    if changed && let Ok(id) = u64::try_from(row.job_id) {
                        rewritten.push(id);
                    }
                    let text = serde_json::to_string(&wanted).unwrap_or_default();
                    done.push((row.job_id, text));
                }
                Err(message) => {
                    // Stays behind; the next sweep tries again. It may have
                    // been replaced before the error: its note stays.
                    if let Ok(id) = u64::try_from(row.job_id) {
                        failed.push(id);
                    }
                    let message = format!("{}: {message}", media.display());
                    tracing::warn!(stage, job = row.job_id, "{message}");
                    report.errors.push(message);
                }
            }
        }
        // The sidecars left as they were changed nothing.
        let unchanged: Vec<u64> = noted
            .iter()
            .copied()
            .filter(|id| !rewritten.contains(id) && !failed.contains(id))
            .collect();
        ledger.write(|tx| {
            for (job_id, written) in &done {
                writeback::mark_remote_asset_written(tx, stage, *job_id, written)?;
            }
            crate::ledger::clear_unvoided(tx, &unchanged)
        })?;
        // A rewritten sidecar is not the one offsite: its years' verdicts
        // stand no more.
        if !rewritten.is_empty() {
            pipeline.void_verdicts(rewritten.into_iter(), &pipeline.kei_files());
        }
    }
}

fn media_path(config: &Config, row: &DirtyRow) -> Option<PathBuf> {
    let (path, root) = (row.library_path.as_ref()?, row.root.as_deref()?);
    let base = if root == "archive" {
        config.archive.root.clone()?
    } else {
        config.library_root.clone()
    };
    Some(base.join(path))
}

/// Record what a sweep read; mark the assets whose sidecar may change.
/// Returns (albums read, assets read, assets changed).
fn record(
    tx: &Connection,
    stage: &str,
    changes: &[RemoteChange],
) -> rusqlite::Result<(u64, u64, u64)> {
    let (mut albums, mut assets) = (0u64, 0u64);
    let mut touched: BTreeSet<u64> = BTreeSet::new();
    for change in changes {
        match change {
            RemoteChange::Album(album) => {
                albums += 1;
                let old_name = writeback::remote_album_name(tx, stage, &album.id)?;
                let old = writeback::remote_album_members(tx, stage, &album.id)?;
                let new: BTreeSet<u64> = album.members.iter().copied().collect();
                if old_name.as_deref() == Some(album.name.as_str()) {
                    touched.extend(old.symmetric_difference(&new));
                } else {
                    touched.extend(old.union(&new));
                }
                writeback::set_remote_album(tx, stage, &album.id, &album.name)?;
                for gone in old.difference(&new) {
                    writeback::remove_remote_album_member(tx, stage, &album.id, *gone)?;
                }
                for added in new.difference(&old) {
                    writeback::add_remote_album_member(tx, stage, &album.id, *added)?;
                }
            }
            RemoteChange::AlbumGone(id) => {
                touched.extend(writeback::remote_album_members(tx, stage, id)?);
                writeback::remove_remote_album(tx, stage, id)?;
            }
            RemoteChange::Asset(asset) => {
                assets += 1;
                let state = state_json(asset).to_string();
                let known = writeback::remote_asset_state(tx, stage, asset.job_id)?;
                if known.flatten().as_deref() == Some(state.as_str()) {
                    continue;
                }
                // The first date and place Immich showed are the file's own
                // (the stage reports an asset only once Immich has read its
                // metadata); a later one is the family's edit.
                writeback::set_remote_asset_state(tx, stage, asset.job_id, &state)?;
                touched.insert(asset.job_id);
            }
        }
    }
    for job_id in &touched {
        writeback::mark_remote_asset_dirty(tx, stage, *job_id)?;
    }
    Ok((albums, assets, touched.len() as u64))
}

/// An asset's state as recorded: what the sidecar is written from.
fn state_json(asset: &RemoteAsset) -> Value {
    json!({
        "favorite": asset.favorite,
        "rating": asset.rating,
        "description": asset.description,
        "taken": asset.taken.as_ref().map(xmp_date),
        "location": asset.location.as_ref().map(|l| [l.latitude, l.longitude]),
    })
}

/// An XMP date: `2019-07-04T10:15:30+02:00`, or without an offset when
/// the service does not know it.
fn xmp_date(time: &CaptureTime) -> String {
    let t = &time.local;
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if let Some(offset) = time.offset_minutes {
        let sign = if offset < 0 { '-' } else { '+' };
        let offset = offset.unsigned_abs();
        text.push_str(&format!("{sign}{:02}:{:02}", offset / 60, offset % 60));
    }
    text
}

/// `DDD,MM.mmmmmmK`, XMP's form of a GPS coordinate.
fn xmp_coordinate(value: f64, positive: char, negative: char) -> String {
    let reference = if value < 0.0 { negative } else { positive };
    let value = value.abs();
    let degrees = value.trunc();
    let minutes = (value - degrees) * 60.0;
    format!("{},{minutes:.6}{reference}", degrees as u32)
}

/// The properties the sidecar should hold from the service. Album tags are
/// one per line; other `lr:hierarchicalSubject` items in the sidecar are
/// kept when it is written. A value keepsake cannot write (control
/// characters, over 64 KiB) leaves what was written before as it is.
fn wanted_properties(row: &DirtyRow) -> BTreeMap<String, String> {
    let written: BTreeMap<String, String> = serde_json::from_str(&row.written).unwrap_or_default();
    let mut wanted = BTreeMap::new();
    let mut put = |name: &str, value: String| {
        let value = value.replace("\r\n", "\n").replace('\r', "\n");
        let writable = value.len() <= 64 << 10
            && !value
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t');
        if writable {
            wanted.insert(name.to_string(), value);
        } else {
            tracing::warn!(
                job = row.job_id,
                "{name}: a value keepsake cannot write; left as it was"
            );
            if let Some(old) = written.get(name) {
                wanted.insert(name.to_string(), old.clone());
            }
        }
    };
    // A name keepsake cannot write (control characters) is left out alone,
    // not the whole list.
    let albums: Vec<String> = row
        .albums
        .iter()
        .filter(|a| !a.is_empty() && !a.chars().any(char::is_control))
        .cloned()
        .collect();
    if let Some(first) = albums.first() {
        put("xmpDM:Album", first.clone());
        let tags: Vec<String> = albums
            .iter()
            .map(|a| format!("{}{a}", keepsake_xmp::ALBUM_TAG))
            .collect();
        put("lr:hierarchicalSubject", tags.join("\n"));
    }
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or(Value::Null)
    };
    let (state, first) = (parse(&row.state), parse(&row.first));
    if state.is_null() {
        // Nothing read of the asset itself yet (only its albums, or Immich
        // was rebuilt and has not got it back): what was written stays.
        for (name, value) in &written {
            if name != "xmpDM:Album" && name != "lr:hierarchicalSubject" {
                put(name, value.clone());
            }
        }
        return wanted;
    }
    // 0 is "no stars" (cleared, or what many cameras write): unrated.
    match state["rating"].as_i64().filter(|r| *r != 0) {
        Some(rating) => put("xmp:Rating", rating.to_string()),
        None if state["favorite"].as_bool() == Some(true) => put("xmp:Rating", "5".into()),
        None => {}
    }
    if let Some(description) = state["description"].as_str() {
        put("dc:description", description.to_string());
    }
    if let Some(taken) = state["taken"].as_str()
        && state["taken"] != first["taken"]
    {
        put("exif:DateTimeOriginal", taken.to_string());
        put("photoshop:DateCreated", taken.to_string());
    }
    if let (Some(lat), Some(lon)) = (state["location"][0].as_f64(), state["location"][1].as_f64())
        && state["location"] != first["location"]
    {
        put("exif:GPSLatitude", xmp_coordinate(lat, 'N', 'S'));
        put("exif:GPSLongitude", xmp_coordinate(lon, 'E', 'W'));
    }
    wanted
}

/// Write `wanted` into the media file's sidecar (its own `IMG.jpg.xmp` or
/// `IMG.xmp`, else a new `IMG.jpg.xmp`), removing what keepsake wrote
/// before and no longer wants. Atomic: a temp file synced, then renamed.
/// Whether the file changed.
fn write_sidecar(
    media: &Path,
    wanted: &BTreeMap<String, String>,
    written: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let dir = media.parent().ok_or("no folder")?;
    let name = media
        .file_name()
        .ok_or("no file name")?
        .to_string_lossy()
        .into_owned();
    if !media.exists() {
        return Err("the file is not there (is its disk mounted?)".into());
    }
    let own = dir.join(format!("{name}.xmp"));
    let own_name = format!("{name}.xmp");
    // The file's own sidecar, else `IMG.xmp`, unless another file (the RAW
    // of a RAW+JPEG pair) shares that one: then the file gets its own,
    // starting from the shared one's content.
    let (target, source) = match sidecars_beside(media).first() {
        Some(found) if found.eq_ignore_ascii_case(&own_name) => {
            (dir.join(found), Some(dir.join(found)))
        }
        Some(found) if shares_stem(dir, media) => (own, Some(dir.join(found))),
        Some(found) => (dir.join(found), Some(dir.join(found))),
        None => (own, None),
    };
    let existing = match &source {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        },
        None => None,
    };
    let unchanged_at_target = source.as_ref() == Some(&target);
    let subjects = "lr:hierarchicalSubject";
    let mut properties: Vec<(String, String)> = wanted
        .iter()
        .filter(|(k, _)| *k != subjects)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A date or place the user set stays until they set another: when
    // Immich shows the file's own again (it was rebuilt and read the file
    // without this sidecar), that is not the user taking the edit back.
    let mut remove: Vec<String> = written
        .keys()
        .filter(|k| !wanted.contains_key(*k) && *k != subjects && !KEPT.contains(&k.as_str()))
        .cloned()
        .collect();
    // Album tags are keepsake's; other tags in the sidecar stay.
    let mut tags: Vec<String> = existing
        .as_deref()
        .map(|text| keepsake_xmp::items(text, subjects))
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !t.starts_with(keepsake_xmp::ALBUM_TAG) && !t.contains('\n'))
        .collect();
    let had_tags = !tags.is_empty() || written.contains_key(subjects);
    tags.extend(
        wanted
            .get(subjects)
            .into_iter()
            .flat_map(|v| v.lines().map(str::to_string)),
    );
    if !tags.is_empty() {
        properties.push((subjects.to_string(), tags.join("\n")));
    } else if had_tags {
        remove.push(subjects.to_string());
    }
    let content = match &existing {
        Some(text) => {
            crate::sidecar::merge_removing(text, &properties, &remove).ok_or_else(|| {
                format!(
                    "{} is not XMP keepsake can merge into; it is left as it is",
                    target.display()
                )
            })?
        }
        None if properties.is_empty() => return Ok(false),
        None => crate::sidecar::fresh(&properties),
    };
    if unchanged_at_target && existing.as_deref() == Some(content.as_str()) {
        return Ok(false);
    }
    let temp = sidecar_temp(media).ok_or_else(|| format!("{} has no name", media.display()))?;
    let _ = fsops::remove_temp(&temp);
    let io = |e: std::io::Error| format!("cannot write {}: {e}", target.display());
    fsops::write_temp(&temp, content.as_bytes()).map_err(io)?;
    fsops::sync_files(&[temp.as_path()]).map_err(io)?;
    fsops::rename_over(&temp, &target).map_err(io)?;
    fsops::fsync_dir(dir).map_err(io)?;
    Ok(true)
}

/// The temp a sidecar of `media` is written through (a dotfile beside it,
/// cut to fit a name's 255 bytes).
fn sidecar_temp(media: &Path) -> Option<PathBuf> {
    let name = media.file_name()?.to_string_lossy().into_owned();
    let dir = media.parent()?;
    let temp = crate::pipeline::paths::fit_name(&format!(".{name}.xmp.keepsake-tmp"), 250);
    Some(dir.join(temp))
}

/// Whether another media file in `dir` has the stem of `media`
/// (`IMG_1.CR2` beside `IMG_1.JPG`), so `IMG_1.xmp` belongs to both.
fn shares_stem(dir: &Path, media: &Path) -> bool {
    let (Some(name), Some(stem)) = (media.file_name(), media.file_stem()) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let other = entry.file_name();
        let other_path = Path::new(&other);
        other != name
            && other_path.file_stem() == Some(stem)
            && !other_path.extension().is_some_and(|e| {
                ["xmp", "aae", "json", "thm"]
                    .iter()
                    .any(|s| e.eq_ignore_ascii_case(s))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_jpeg_pair_gets_a_sidecar_each_and_other_tags_stay() {
        let dir = std::env::temp_dir().join(format!(
            "keepsake-writeback-{}-{}",
            std::process::id(),
            ledger::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (jpg, raw, shared) = (
            dir.join("IMG_1.JPG"),
            dir.join("IMG_1.CR2"),
            dir.join("IMG_1.xmp"),
        );
        std::fs::write(&jpg, b"jpeg").unwrap();
        std::fs::write(&raw, b"raw").unwrap();
        let original = crate::sidecar::fresh(&[(
            "lr:hierarchicalSubject".to_string(),
            "People|Anna".to_string(),
        )]);
        std::fs::write(&shared, &original).unwrap();
        let wanted = BTreeMap::from([
            ("xmpDM:Album".to_string(), "Summer".to_string()),
            (
                "lr:hierarchicalSubject".to_string(),
                "Albums|Summer".to_string(),
            ),
        ]);
        assert_eq!(write_sidecar(&jpg, &wanted, &BTreeMap::new()), Ok(true));
        assert_eq!(std::fs::read_to_string(&shared).unwrap(), original);
        let own = std::fs::read_to_string(dir.join("IMG_1.JPG.xmp")).unwrap();
        assert_eq!(
            keepsake_xmp::items(&own, "lr:hierarchicalSubject"),
            ["People|Anna", "Albums|Summer"]
        );
        // Written again with nothing new: unchanged. Albums gone: removed,
        // the other tag stays.
        assert_eq!(write_sidecar(&jpg, &wanted, &wanted), Ok(false));
        assert_eq!(write_sidecar(&jpg, &BTreeMap::new(), &wanted), Ok(true));
        let own = std::fs::read_to_string(dir.join("IMG_1.JPG.xmp")).unwrap();
        assert_eq!(
            keepsake_xmp::items(&own, "lr:hierarchicalSubject"),
            ["People|Anna"]
        );
        assert!(keepsake_xmp::albums(&own).is_empty(), "{own}");
        // A sidecar spelled `.XMP` is the file's own, merged into, not
        // hidden behind a new `.xmp`.
        let png = dir.join("P.png");
        std::fs::write(&png, b"png").unwrap();
        std::fs::write(dir.join("P.png.XMP"), &original).unwrap();
        assert_eq!(write_sidecar(&png, &wanted, &BTreeMap::new()), Ok(true));
        assert!(!dir.join("P.png.xmp").exists(), "no second sidecar");
        let upper = std::fs::read_to_string(dir.join("P.png.XMP")).unwrap();
        assert_eq!(keepsake_xmp::albums(&upper), ["Summer"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn xmp_forms() {
        assert_eq!(xmp_coordinate(52.5, 'N', 'S'), "52,30.000000N");
        assert_eq!(xmp_coordinate(-0.25, 'E', 'W'), "0,15.000000W");
        let row = DirtyRow {
            job_id: 1,
            state: Some(
                json!({"favorite": true, "rating": null, "description": "Beach",
                       "taken": "2024-07-01T10:00:00+02:00", "location": [1.5, 2.0]})
                .to_string(),
            ),
            first: Some(
                json!({"favorite": false, "rating": null, "description": null,
                       "taken": "2024-07-01T10:00:00+02:00", "location": null})
                .to_string(),
            ),
            written: "{}".into(),
            albums: vec!["Family".into(), "Summer".into()],
            library_path: None,
            root: None,
        };
        let wanted = wanted_properties(&row);
        assert_eq!(wanted["xmp:Rating"], "5");
        assert_eq!(wanted["xmpDM:Album"], "Family");
        assert_eq!(
            wanted["lr:hierarchicalSubject"],
            "Albums|Family\nAlbums|Summer"
        );
        assert_eq!(wanted["dc:description"], "Beach");
        assert!(
            !wanted.contains_key("exif:DateTimeOriginal"),
            "the date is not an edit"
        );
        assert_eq!(wanted["exif:GPSLatitude"], "1,30.000000N");
    }
}
