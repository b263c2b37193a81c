//! What the commands print: tables for people, JSON lines for tools.

use std::io::{self, Write};

use serde_json::json;

use crate::config::Config;
use crate::host::LoadedStage;
use crate::ledger::{self, JobRecord, JobState, Ledger};
use crate::pipeline::{IngestReport, display_rel};
use crate::rebuild::RebuildReport;

pub fn print_ingest(
    out: &mut impl Write,
    config: &Config,
    report: &IngestReport,
) -> io::Result<()> {
    writeln!(
        out,
        "keepsake ingest: {} file(s) found, {} new, in {:.2} s → {}",
        report.discovered,
        report.discovered - report.unchanged,
        report.elapsed.as_secs_f64(),
        config.library_root.display()
    )?;
    if report.recovered > 0 {
        writeln!(
            out,
            "  recovered    {:>7}  (unfinished work replayed from the journal)",
            report.recovered
        )?;
    }
    let rows = [
        ("processed", report.processed, "new or queued again"),
        ("placed", report.placed, "in the library"),
        (
            "duplicates",
            report.duplicates,
            "same bytes as a file already kept",
        ),
        (
            "quarantined",
            report.quarantined,
            "kept aside with a reason: `keepsake jobs --state quarantined`",
        ),
        (
            "skipped",
            report.skipped,
            "left in the inbox: `keepsake jobs --state skipped`",
        ),
        (
            "failed",
            report.failed,
            "see below; `keepsake retry --failed` after fixing",
        ),
        ("unchanged", report.unchanged, "seen before, not read again"),
    ];
    for (label, n, note) in rows {
        writeln!(out, "  {label:<12} {n:>7}  {note}")?;
    }
    if report.removed_from_inbox > 0 {
        writeln!(
            out,
            "  {:<12} {:>7}  (move-mode inbox files already safe)",
            "removed", report.removed_from_inbox
        )?;
    }
    if report.ignored > 0 {
        writeln!(
            out,
            "  {:<12} {:>7}  partial downloads, dotfiles, symlinks",
            "ignored", report.ignored
        )?;
    }
    for error in report.errors.iter().take(20) {
        writeln!(out, "  ! {error}")?;
    }
    if report.errors.len() > 20 {
        writeln!(
            out,
            "  ! … and {} more (`keepsake jobs --failed`)",
            report.errors.len() - 20
        )?;
    }
    Ok(())
}

/// Where a job's file went, as an absolute path.
fn destination(config: &Config, job: &JobRecord) -> Option<String> {
    let dest = job.dest_path.as_ref()?;
    Some(match job.state {
        JobState::Done => config.library_root.join(dest).display().to_string(),
        _ => dest.clone(),
    })
}

pub fn job_json(config: &Config, job: &JobRecord) -> serde_json::Value {
    json!({
        "id": job.id,
        "inbox": job.inbox,
        "source_path": job.source_path.display().to_string(),
        "relative_path": display_rel(&job.rel_path),
        "state": job.state.as_str(),
        "destination": destination(config, job),
        "size": job.size,
        "media_kind": job.media_kind,
        "blake3": job.blake3,
        "sha1": job.sha1,
        "capture_time": job.capture_time,
        "capture_source": job.capture_source,
        "duplicate_of": job.duplicate_of,
        "reason": job.reason,
        "error": job.last_error,
        "attempts": job.attempts,
        "facts": serde_json::from_str::<serde_json::Value>(&job.facts).unwrap_or_default(),
    })
}

pub fn print_jobs(
    out: &mut impl Write,
    config: &Config,
    jobs: &[JobRecord],
    json: bool,
) -> io::Result<()> {
    if json {
        for job in jobs {
            writeln!(out, "{}", job_json(config, job))?;
        }
        return Ok(());
    }
    if jobs.is_empty() {
        return writeln!(out, "no jobs");
    }
    writeln!(
        out,
        "{:>6}  {:<11}  {:<25}  file → where / why",
        "job", "state", "captured"
    )?;
    for job in jobs {
        let detail = match job.state {
            JobState::Done => destination(config, job).unwrap_or_default(),
            JobState::Duplicate => {
                format!("duplicate of job {}", job.duplicate_of.unwrap_or_default())
            }
            JobState::Failed => job.last_error.clone().unwrap_or_default(),
            _ => job.reason.clone().unwrap_or_default(),
        };
        writeln!(
            out,
            "{:>6}  {:<11}  {:<25}  {} → {}",
            job.id,
            job.state.as_str(),
            job.capture_time.as_deref().unwrap_or("-"),
            display_rel(&job.rel_path),
            detail
        )?;
    }
    Ok(())
}

pub fn print_status(
    out: &mut impl Write,
    config: &Config,
    ledger: &Ledger,
    json: bool,
) -> io::Result<()> {
    let counts = ledger
        .read(ledger::state_counts)
        .map_err(io::Error::other)?;
    let assets = ledger.read(ledger::asset_count).map_err(io::Error::other)?;
    let failed = ledger
        .read(|c| ledger::jobs_in_state(c, Some(JobState::Failed)))
        .map_err(io::Error::other)?;
    if json {
        let per_state: serde_json::Map<String, serde_json::Value> = counts
            .iter()
            .map(|(s, n)| (s.as_str().to_string(), json!(n)))
            .collect();
        let failures: Vec<_> = failed
            .iter()
            .rev()
            .take(20)
            .map(|j| job_json(config, j))
            .collect();
        return writeln!(
            out,
            "{}",
            json!({
                "config": config.origin,
                "ledger": ledger.path().display().to_string(),
                "library": config.library_root.display().to_string(),
                "assets": assets,
                "jobs": per_state,
                "recent_failures": failures,
            })
        );
    }
    writeln!(out, "config   {}", config.origin)?;
    writeln!(out, "ledger   {}", ledger.path().display())?;
    writeln!(
        out,
        "library  {} ({assets} files)",
        config.library_root.display()
    )?;
    let line: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    writeln!(out, "jobs     {}", line.join(" · "))?;
    if !failed.is_empty() {
        writeln!(
            out,
            "recent failures (`keepsake retry --failed` queues them again):"
        )?;
        for job in failed.iter().rev().take(10) {
            writeln!(
                out,
                "  job {:>5}  {}  {}",
                job.id,
                job.source_path.display(),
                job.last_error.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

pub fn print_plugins<'a>(
    out: &mut impl Write,
    config: &Config,
    stages: impl Iterator<Item = &'a LoadedStage>,
) -> io::Result<()> {
    for stage in stages {
        let used_by: Vec<&str> = config
            .inboxes
            .iter()
            .filter(|i| i.pipeline.contains(&stage.name))
            .map(|i| i.name.as_str())
            .collect();
        writeln!(
            out,
            "{}  v{}  ({})\n  {}\n  inboxes: {}",
            stage.name,
            stage.info.version,
            stage.origin,
            stage.info.summary,
            if used_by.is_empty() {
                "-".to_string()
            } else {
                used_by.join(", ")
            }
        )?;
        for (name, description, default) in &stage.info.options {
            writeln!(
                out,
                "  option {name}: {description}{}",
                default
                    .as_ref()
                    .map(|d| format!(" (default {d:?})"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

pub fn print_rebuild(
    out: &mut impl Write,
    config: &Config,
    report: &RebuildReport,
    json: bool,
) -> io::Result<()> {
    if json {
        return writeln!(
            out,
            "{}",
            serde_json::to_string(report).map_err(io::Error::other)?
        );
    }
    writeln!(
        out,
        "keepsake ledger rebuild: {} file(s) in {}",
        report.files,
        config.library_root.display()
    )?;
    writeln!(
        out,
        "  {:<12} {:>7}  already recorded",
        "unchanged", report.unchanged
    )?;
    writeln!(out, "  {:<12} {:>7}  recorded now", "added", report.added)?;
    writeln!(
        out,
        "  {:<12} {:>7}  recorded again: their bytes changed",
        "changed", report.changed
    )?;
    writeln!(
        out,
        "  {:<12} {:>7}  recorded but gone from the library: dropped",
        "missing",
        report.missing.len()
    )?;
    for path in report.missing.iter().take(20) {
        writeln!(out, "  - missing: {path}")?;
    }
    for path in report.duplicates.iter().take(20) {
        writeln!(out, "  = duplicate in the library: {path}")?;
    }
    for error in &report.errors {
        writeln!(out, "  ! {error}")?;
    }
    Ok(())
}
