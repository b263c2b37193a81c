//! `keepsake ledger rebuild`: the files are the source of truth, so the
//! asset table can be recreated from the library alone. Every file in the
//! library (sidecars and keepsake's own state aside) is hashed and recorded;
//! asset rows whose file is gone are dropped, so the next ingest places those
//! bytes again instead of calling them duplicates of nothing.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::Root;
use crate::config::Config;
use crate::discover::{is_ignored, is_sidecar};
use crate::hashing::hash_reader;
use crate::ledger::{self, JobState, Ledger, LedgerError, NewJob};
use crate::media;
use crate::pipeline::{Dated, PipelineError};

/// The pseudo-inbox that rebuilt assets are recorded under.
pub const REBUILD_INBOX: &str = "(library)";

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RebuildReport {
    /// Files found in the library.
    pub files: usize,
    /// Already recorded with the same bytes.
    pub unchanged: usize,
    /// Recorded now.
    pub added: usize,
    /// Recorded with other bytes than the file has now: re-recorded.
    pub changed: usize,
    /// Asset rows whose file is gone from the library, dropped.
    pub missing: Vec<String>,
    /// Files whose bytes are already recorded at another path.
    pub duplicates: Vec<String>,
    /// JPEGs with embedded XMP whose original's hash was read back.
    pub originals: usize,
    pub errors: Vec<String>,
}

pub fn rebuild(config: &Config, ledger: &Arc<Ledger>) -> Result<RebuildReport, LedgerError> {
    let mut report = RebuildReport::default();
    let mut walked = Walked::default();
    // A root that cannot be read now (an archive disk not mounted) is not
    // taken as "every file in it is gone".
    let mut unreadable: Vec<&str> = Vec::new();
    // Folders inside a root that cannot be read: their rows are kept too
    // (dropped rows would make their bytes get placed again).
    for root in [Root::Library, Root::Archive] {
        if let Some(base) = root.path(config) {
            if std::fs::read_dir(base).is_err() {
                report.errors.push(format!(
                    "{} root {} cannot be read (not mounted?): its rows are kept",
                    root.as_str(),
                    base.display()
                ));
                unreadable.push(root.as_str());
                continue;
            }
            walk_root(config, ledger, root, base, &mut walked, &mut report);
        }
    }
    // The files (and the sidecars beside them) date themselves: the real
    // exif stage reads them as an ingest would.
    let Walked {
        found,
        recorded,
        unread_dirs,
    } = walked;
    match date_files(config, ledger, &recorded) {
        Ok(dates) => ledger.write(|tx| {
            for ((job_id, _, _), dated) in recorded.iter().zip(dates) {
                let Some((time, source, confidence)) = dated else {
                    continue;
                };
                ledger::rebuild::set_capture(tx, *job_id, &time, &source, &confidence)?;
            }
            Ok(())
        })?,
        Err(e) => report
            .errors
            .push(format!("cannot date the recorded files: {e}")),
    }
    // Rows whose file is in neither root.
    let recorded = ledger.read(ledger::rebuild::asset_locations)?;
    for (job_id, path, root) in recorded {
        if unreadable.contains(&root.as_str())
            || (root == "archive" && config.archive.root.is_none())
        {
            continue;
        }
        let in_unread_dir = unread_dirs.iter().any(|(dir_root, dir)| {
            *dir_root == root
                && Root::parse(&root)
                    .and_then(|r| r.path(config))
                    .is_some_and(|base| base.join(&path).starts_with(dir))
        });
        if in_unread_dir {
            continue;
        }
        if !found.contains(&(root.clone(), path.clone())) {
            ledger.write(|tx| ledger::rebuild::drop_asset_of_job(tx, job_id))?;
            report.missing.push(if root == "library" {
                path
            } else {
                format!("{root}:{path}")
            });
        }
    }
    Ok(report)
}

/// Date files already in a root with the real `exif` stage, as an ingest
/// would (sidecars beside them count). `files`: (job id, path, sidecar
/// names beside it). None for a file the stage could not date, or when the
/// config has no `exif` stage.
fn date_files(
    config: &Config,
    ledger: &Arc<Ledger>,
    files: &[(u64, PathBuf, Vec<String>)],
) -> Result<Vec<Option<Dated>>, PipelineError> {
    if !config.stages.contains_key("exif") || files.is_empty() {
        return Ok(vec![None; files.len()]);
    }
    crate::pipeline::capture_times(config, ledger, &["exif".to_string()], REBUILD_INBOX, files)
}

/// What the walks of the roots found.
#[derive(Default)]
struct Walked {
    /// (root, path below it) of every file found.
    found: std::collections::HashSet<(String, String)>,
    /// Jobs recorded now: (job, file, its sidecars' names).
    recorded: Vec<(u64, PathBuf, Vec<String>)>,
    /// Folders inside a root that cannot be read: their rows are kept
    /// (dropped rows would make their bytes get placed again).
    unread_dirs: Vec<(String, PathBuf)>,
}

fn walk_root(
    config: &Config,
    ledger: &Ledger,
    root: Root,
    base: &Path,
    walked: &mut Walked,
    report: &mut RebuildReport,
) {
    let Walked {
        found,
        recorded,
        unread_dirs,
    } = walked;
    let mut stack = vec![base.to_path_buf()];
    let mut sidecar_index = crate::archive::SidecarIndex::default();
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                report.errors.push(format!(
                    "cannot read folder {}: {e}; its rows are kept (fix its permissions and rebuild again)",
                    dir.display()
                ));
                unread_dirs.push((root.as_str().to_string(), dir.clone()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = entry.path();
            if path.starts_with(&config.state_dir) || is_ignored(name.as_bytes(), &[]) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && !is_sidecar(name.as_bytes()) {
                report.files += 1;
                let Ok(rel) = path.strip_prefix(base) else {
                    continue;
                };
                let rel = rel.to_string_lossy().into_owned();
                found.insert((root.as_str().to_string(), rel.clone()));
                match record(ledger, root, &path, &rel, &meta, report) {
                    Ok(Some(job_id)) => {
                        let sidecars = sidecar_index
                            .of(&path)
                            .iter()
                            .filter_map(|p| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                            .collect();
                        recorded.push((job_id, path.clone(), sidecars));
                    }
                    Ok(None) => {}
                    Err(e) => report.errors.push(format!("{}: {e}", path.display())),
                }
            }
        }
    }
}

fn record(
    ledger: &Ledger,
    root: Root,
    path: &Path,
    rel: &str,
    meta: &std::fs::Metadata,
    report: &mut RebuildReport,
) -> Result<Option<u64>, Box<dyn std::error::Error>> {
    let file = crate::effects::fsops::open_nofollow(path)?;
    let hashes = hash_reader(&file, meta.len())?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = media::refine_tiff(media::sniff(&hashes.head), &name);
    // A JPEG keepsake embedded XMP into keeps the original's hash there.
    let original = (kind == media::MediaKind::Jpeg)
        .then(|| embedded_original(path))
        .flatten()
        .unwrap_or_else(|| hashes.blake3.clone());
    if original != hashes.blake3 {
        report.originals += 1;
    }
    if let Some(asset) = ledger.read(|c| ledger::asset_by_path(c, rel))? {
        if asset.copy_blake3 == hashes.blake3 {
            // The file may have moved between the roots behind our back.
            ledger.write(|tx| {
                ledger::rebuild::set_asset_root(tx, rel, root.as_str())?;
                // A row an older rebuild keyed by the embedded copy's own
                // hash learns its original's (unless another row has it).
                if asset.blake3 != original && ledger::asset_by_hash(tx, &original)?.is_none() {
                    ledger::rebuild::set_original_hash(
                        tx,
                        asset.job_id,
                        rel,
                        &original,
                        &hashes.blake3,
                    )?;
                }
                Ok(())
            })?;
            report.unchanged += 1;
            return Ok(None);
        }
        ledger.write(|tx| ledger::rebuild::drop_asset_at(tx, rel))?;
        report.changed += 1;
    } else if let Some(other) = ledger.read(|c| ledger::asset_by_hash(c, &original))? {
        report
            .duplicates
            .push(format!("{rel} (same bytes as {})", other.library_path));
        return Ok(None);
    } else {
        report.added += 1;
    }
    let job_id = ledger.write(|tx| {
        let job_id = ledger::insert_job(
            tx,
            &NewJob {
                inbox: REBUILD_INBOX.to_string(),
                rel_path: rel.as_bytes().to_vec(),
                source_path: path.to_path_buf(),
                size: hashes.size,
                mtime_ns: crate::discover::mtime_ns(meta),
                inode: meta.ino(),
                companions: Vec::new(),
                settled: Some((
                    JobState::Done,
                    "recorded by `keepsake ledger rebuild`".into(),
                )),
            },
        )?;
        ledger::rebuild::set_rebuilt_job(tx, job_id, &original, &hashes.sha1, kind.as_str(), rel)?;
        ledger::insert_asset(
            tx,
            &ledger::NewAsset {
                job_id,
                blake3: &original,
                sha1: &hashes.sha1,
                size: hashes.size,
                media_kind: kind.as_str(),
                capture_time: None,
                capture_source: None,
                library_path: rel,
                library_blake3: Some(&hashes.blake3),
            },
        )?;
        ledger::rebuild::set_asset_root(tx, rel, root.as_str())?;
        Ok(job_id)
    })?;
    Ok(Some(job_id))
}

/// The original's BLAKE3 keepsake embedded into this JPEG's XMP, trusted
/// only while the image data still has the hash recorded beside it (an
/// editor that re-encoded the picture made it another photo).
fn embedded_original(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let mut file = crate::effects::fsops::open_nofollow(path).ok()?;
    if file.metadata().ok()?.len() > crate::sidecar::MAX_EMBED + (1 << 20) {
        return None;
    }
    file.read_to_end(&mut bytes).ok()?;
    let xmp = crate::sidecar::jpeg_xmp(&bytes)?;
    let hex = |h: &String| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    let original = keepsake_xmp::property(xmp, crate::sidecar::ORIGINAL_BLAKE3).filter(hex)?;
    let image = keepsake_xmp::property(xmp, crate::sidecar::IMAGE_BLAKE3).filter(hex)?;
    (crate::sidecar::blake3_without_xmp(&bytes)? == image).then_some(original)
}
