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
    offsite: Option<&crate::offsite::PushReport>,
    after_placed: Option<&crate::immich::placed::PlacedReport>,
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
    if let Some(pushed) = offsite {
        writeln!(
            out,
            "  {:<12} {:>7}  pushed offsite ({} MiB); {} deferred, {} conflicts (`keepsake offsite status`)",
            "offsite",
            pushed.pushed,
            pushed.bytes >> 20,
            pushed.deferred,
            pushed.conflicts
        )?;
        for error in pushed.errors.iter().take(5) {
            writeln!(out, "  ! {error}")?;
        }
    }
    if let Some(after) = after_placed {
        writeln!(
            out,
            "  {:<12} {:>7}  sent to services such as Immich; {} waiting, {} failed (`keepsake immich status`)",
            "services", after.done, after.deferred, after.failed
        )?;
        for (stage, why) in &after.waiting {
            writeln!(out, "  ! {stage} is held back: {why}")?;
        }
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
        "wake_at": job.wake_at,
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

/// What `keepsake run` last published, and whether it still runs.
struct ServiceView {
    running: bool,
    pid: Option<u32>,
    started_at: Option<i64>,
    stopped_at: Option<i64>,
    in_flight: u64,
    waiting: u64,
    last_rescan_at: Option<i64>,
    last_rescan_ms: Option<u64>,
    last_rescan_files: Option<u64>,
}

impl ServiceView {
    fn read(ledger: &Ledger) -> io::Result<ServiceView> {
        let state = ledger
            .read(ledger::service_state)
            .map_err(io::Error::other)?;
        let num = |key: &str| state.get(key).and_then(|v| v.parse::<i64>().ok());
        let pid = num("pid").map(|p| p as u32);
        let stopped_at = num("stopped_at");
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        let running = alive && stopped_at.is_none();
        Ok(ServiceView {
            running,
            pid,
            started_at: num("started_at"),
            stopped_at,
            in_flight: if running {
                num("in_flight").unwrap_or(0) as u64
            } else {
                0
            },
            waiting: if running {
                num("waiting").unwrap_or(0) as u64
            } else {
                0
            },
            last_rescan_at: num("last_rescan_at"),
            last_rescan_ms: num("last_rescan_ms").map(|v| v as u64),
            last_rescan_files: num("last_rescan_files").map(|v| v as u64),
        })
    }
}

/// A Unix time as local date and time.
pub fn local_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| secs.to_string())
}

/// What `keepsake status` shows from the ledger: job counts, the failed and
/// deferred jobs, and the service's published state.
struct StatusView {
    counts: Vec<(JobState, u64)>,
    per_inbox: Vec<(String, JobState, u64)>,
    assets: u64,
    failed: Vec<JobRecord>,
    deferred: Vec<JobRecord>,
    service: ServiceView,
    pending: u64,
}

impl StatusView {
    /// Read everything `keepsake status` shows from the ledger.
    fn read(ledger: &Ledger) -> io::Result<StatusView> {
        let counts = ledger
            .read(ledger::state_counts)
            .map_err(io::Error::other)?;
        let per_inbox = ledger
            .read(ledger::inbox_counts)
            .map_err(io::Error::other)?;
        let assets = ledger.read(ledger::asset_count).map_err(io::Error::other)?;
        let failed = ledger
            .read(|c| ledger::jobs_in_state(c, Some(JobState::Failed)))
            .map_err(io::Error::other)?;
        let deferred = ledger
            .read(|c| ledger::jobs_in_state(c, Some(JobState::Deferred)))
            .map_err(io::Error::other)?;
        let service = ServiceView::read(ledger)?;
        let pending = counts
            .iter()
            .find(|(s, _)| *s == JobState::Pending)
            .map_or(0, |(_, n)| *n);
        Ok(StatusView {
            counts,
            per_inbox,
            assets,
            failed,
            deferred,
            service,
            pending,
        })
    }
}

pub fn print_status(
    out: &mut impl Write,
    config: &Config,
    ledger: &Ledger,
    json: bool,
) -> io::Result<()> {
    let view = StatusView::read(ledger)?;
    if json {
        return print_status_json(out, config, ledger, &view);
    }
    print_status_overview(out, config, ledger, &view)?;
    print_status_offsite(out, config, ledger)?;
    print_status_inboxes(out, config, &view.per_inbox)?;
    print_status_jobs(out, config, &view)
}

/// `keepsake status --json`: the whole status as one JSON object.
fn print_status_json(
    out: &mut impl Write,
    config: &Config,
    ledger: &Ledger,
    view: &StatusView,
) -> io::Result<()> {
    let backoff = &config.service.backoff;
    let next_retry = |job: &ledger::JobRecord| backoff.next_run(job.attempts, job.updated_at);
    let service = &view.service;
    let per_state: serde_json::Map<String, serde_json::Value> = view
        .counts
        .iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    let mut inboxes = serde_json::Map::new();
    for (inbox, state, n) in &view.per_inbox {
        let entry = inboxes.entry(inbox.clone()).or_insert_with(|| json!({}));
        entry[state.as_str()] = json!(n);
    }
    let failures: Vec<_> = view
        .failed
        .iter()
        .rev()
        .take(20)
        .map(|j| {
            let mut value = job_json(config, j);
            value["next_retry_at"] = json!(next_retry(j));
            value
        })
        .collect();
    let deferrals: Vec<_> = view
        .deferred
        .iter()
        .take(20)
        .map(|j| job_json(config, j))
        .collect();
    writeln!(
        out,
        "{}",
        json!({
            "config": config.origin,
            "ledger": ledger.path().display().to_string(),
            "library": config.library_root.display().to_string(),
            "assets": view.assets,
            "jobs": per_state,
            "inboxes": inboxes,
            "service": {
                "running": service.running,
                "pid": service.pid,
                "started_at": service.started_at,
                "stopped_at": service.stopped_at,
                "queue": view.pending,
                "in_flight": service.in_flight,
                "waiting_for_stability": service.waiting,
                "last_rescan_at": service.last_rescan_at,
                "last_rescan_ms": service.last_rescan_ms,
                "last_rescan_files": service.last_rescan_files,
            },
            "recent_failures": failures,
            "deferred": deferrals,
        })
    )
}

/// The text status's head: config, ledger, library, archive, service,
/// queue, last rescan and the job counts.
fn print_status_overview(
    out: &mut impl Write,
    config: &Config,
    ledger: &Ledger,
    view: &StatusView,
) -> io::Result<()> {
    let service = &view.service;
    let assets = view.assets;
    let pending = view.pending;
    writeln!(out, "config   {}", config.origin)?;
    if let Ok(state) = ledger.read(ledger::service_state)
        && let Some(full) = state.get("disk_full").filter(|p| !p.is_empty())
    {
        writeln!(out, "  ! a disk is full: {full}")?;
    }
    writeln!(out, "ledger   {}", ledger.path().display())?;
    writeln!(
        out,
        "library  {} ({assets} files)",
        config.library_root.display()
    )?;
    if let Some(root) = &config.archive.root {
        let state = ledger
            .read(ledger::service_state)
            .map_err(io::Error::other)?;
        writeln!(out, "archive  {}", root.display())?;
        if let Some(problem) = state.get("archive_problem").filter(|p| !p.is_empty()) {
            writeln!(out, "  ! last archive run: {problem}")?;
        }
    }
    match (service, service.running) {
        (s, true) => writeln!(
            out,
            "service  running (pid {}, since {})",
            s.pid.unwrap_or(0),
            s.started_at.map(local_time).unwrap_or_default()
        )?,
        (s, false) => match s.stopped_at.or(s.started_at) {
            Some(at) => writeln!(
                out,
                "service  not running (last stopped {}); `keepsake run` starts it",
                local_time(at)
            )?,
            None => writeln!(out, "service  not running; `keepsake run` starts it")?,
        },
    }
    writeln!(
        out,
        "queue    {pending} pending · {} in flight · {} waiting for their files to settle",
        service.in_flight, service.waiting
    )?;
    match service.last_rescan_at {
        Some(at) => writeln!(
            out,
            "rescan   last at {} ({} files in {} ms)",
            local_time(at),
            service.last_rescan_files.unwrap_or(0),
            service.last_rescan_ms.unwrap_or(0)
        )?,
        None => writeln!(out, "rescan   none yet")?,
    }
    let line: Vec<String> = view
        .counts
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    writeln!(out, "jobs     {}", line.join(" · "))?;
    Ok(())
}

/// One line per offsite target: its pushes by state.
fn print_status_offsite(out: &mut impl Write, config: &Config, ledger: &Ledger) -> io::Result<()> {
    if !config.offsite.is_empty() {
        let summary = ledger
            .read(ledger::push_summary)
            .map_err(io::Error::other)?;
        for name in config.offsite.keys() {
            let line: Vec<String> = summary
                .iter()
                .filter(|(target, _, _, _)| target == name)
                .map(|(_, state, n, _)| format!("{state} {n}"))
                .collect();
            let line = if line.is_empty() {
                "nothing yet".to_string()
            } else {
                line.join(" · ")
            };
            writeln!(out, "offsite  {name}: {line} (`keepsake offsite status`)")?;
        }
    }
    Ok(())
}

/// One line per inbox, configured ones first: its jobs by state.
fn print_status_inboxes(
    out: &mut impl Write,
    config: &Config,
    per_inbox: &[(String, JobState, u64)],
) -> io::Result<()> {
    let mut names: Vec<&str> = config.inboxes.iter().map(|i| i.name.as_str()).collect();
    for (inbox, _, _) in per_inbox {
        if !names.contains(&inbox.as_str()) {
            names.push(inbox);
        }
    }
    for name in names {
        let line: Vec<String> = per_inbox
            .iter()
            .filter(|(inbox, _, n)| inbox == name && *n > 0)
            .map(|(_, s, n)| format!("{} {n}", s.as_str()))
            .collect();
        let line = if line.is_empty() {
            "nothing yet".to_string()
        } else {
            line.join(" · ")
        };
        writeln!(out, "  {name:<14} {line}")?;
    }
    Ok(())
}

/// The recent failures (with when each is retried) and the deferred jobs.
fn print_status_jobs(out: &mut impl Write, config: &Config, view: &StatusView) -> io::Result<()> {
    let backoff = &config.service.backoff;
    let next_retry = |job: &ledger::JobRecord| backoff.next_run(job.attempts, job.updated_at);
    if !view.failed.is_empty() {
        writeln!(
            out,
            "recent failures (`keepsake retry --failed` queues them again now):"
        )?;
        for job in view.failed.iter().rev().take(10) {
            let retry = match next_retry(job) {
                Some(at) => format!("retried at {}", local_time(at)),
                None => format!("{} attempts used; not retried on its own", job.attempts),
            };
            writeln!(
                out,
                "  job {:>5}  {}  {} ({retry})",
                job.id,
                job.source_path.display(),
                job.last_error.as_deref().unwrap_or("")
            )?;
        }
    }
    if !view.deferred.is_empty() {
        writeln!(out, "deferred (`keepsake retry JOB` runs one now):")?;
        for job in view.deferred.iter().take(10) {
            writeln!(
                out,
                "  job {:>5}  {}  wakes {}: {}",
                job.id,
                job.source_path.display(),
                job.wake_at.map(local_time).unwrap_or_default(),
                job.reason.as_deref().unwrap_or("")
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
        if stage.info.sweeps {
            writeln!(out, "  sweeps: exports `sweep` (a service stage)")?;
        }
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

pub fn print_push(out: &mut impl Write, pushed: &crate::offsite::PushReport) -> io::Result<()> {
    writeln!(
        out,
        "offsite: {} pushed ({} MiB), {} deferred, {} conflicts",
        pushed.pushed,
        pushed.bytes >> 20,
        pushed.deferred,
        pushed.conflicts
    )?;
    for error in &pushed.errors {
        writeln!(out, "  ! {error}")?;
    }
    Ok(())
}

pub fn print_verify(
    out: &mut impl Write,
    verified: &crate::offsite::VerifyReport,
    deep: bool,
) -> io::Result<()> {
    writeln!(
        out,
        "offsite verify{}: {} checked, {} as pushed, {} missing, {} damaged",
        if deep { " --deep" } else { "" },
        verified.checked,
        verified.ok,
        verified.missing.len(),
        verified.damaged.len()
    )?;
    for (target, key) in &verified.missing {
        writeln!(out, "  missing  {target}: {key}")?;
    }
    for (target, key, why) in &verified.damaged {
        writeln!(out, "  damaged  {target}: {key}: {why}")?;
    }
    for error in &verified.errors {
        writeln!(out, "  ! {error}")?;
    }
    Ok(())
}

pub fn print_library_verify(
    out: &mut impl Write,
    verified: &crate::archive::VerifyReport,
) -> io::Result<()> {
    writeln!(
        out,
        "verify: {} files checked ({:.1} MiB), {} as recorded, {} missing, {} damaged, {} unexpected",
        verified.checked,
        verified.bytes as f64 / (1 << 20) as f64,
        verified.ok,
        verified.missing.len(),
        verified.damaged.len(),
        verified.unexpected.len()
    )?;
    for path in &verified.missing {
        writeln!(out, "  missing     {path}")?;
    }
    for path in &verified.damaged {
        writeln!(
            out,
            "  damaged     {path}: its bytes changed since keepsake placed it (restore it from offsite)"
        )?;
    }
    for path in &verified.unexpected {
        writeln!(
            out,
            "  unexpected  {path}: no ledger row (`keepsake ledger rebuild` records it)"
        )?;
    }
    for error in &verified.errors {
        writeln!(out, "  ! {error}")?;
    }
    Ok(())
}

pub fn print_plan(out: &mut impl Write, plan: &crate::archive::Plan) -> io::Result<()> {
    writeln!(
        out,
        "archive plan {} (made {}): {} items from the iCloud inboxes ({})",
        plan.year,
        plan.made_at,
        plan.items.len(),
        plan.icloud_inboxes.join(", ")
    )?;
    writeln!(out, "  items from: {}", plan.basis.items_from)?;
    for (target, how) in &plan.basis.targets {
        writeln!(out, "  offsite {target}: {how}")?;
    }
    for blind in &plan.basis.cannot_see {
        writeln!(out, "  cannot see: {blind}")?;
    }
    for why in &plan.general {
        writeln!(out, "  blocked  {why}")?;
    }
    for item in plan.blocked().take(200) {
        writeln!(
            out,
            "  blocked  {} ({}): {}",
            item.icloud_name,
            item.held_at
                .as_deref()
                .or(item.inbox_path.as_deref())
                .unwrap_or("not held"),
            item.blockers.join("; ")
        )?;
    }
    let blocked = plan.blocked().count();
    if blocked > 200 {
        writeln!(out, "  … and {} more (see the JSON plan)", blocked - 200)?;
    }
    if !plan.size_only.is_empty() {
        writeln!(
            out,
            "  {} offsite copies checked by size only (the target gives no hash without a download; `--deep` downloads them):",
            plan.size_only.len()
        )?;
        for line in plan.size_only.iter().take(20) {
            writeln!(out, "    {line}")?;
        }
    }
    if let Some(file) = &plan.plan_file {
        writeln!(out, "plan written to {}", file.display())?;
    }
    if let Some(list) = &plan.safe_list {
        writeln!(
            out,
            "safe-to-delete list (iCloud names): {}
before deleting these in iCloud, stop icloudpd from downloading {} again: run it with --skip-created-before {}-01-01 (it then skips everything created before that day)",
            list.display(),
            plan.year,
            plan.year + 1
        )?;
    }
    writeln!(out, "{}", plan.verdict())
}

pub fn print_archive_run(out: &mut impl Write, run: &crate::archive::RunReport) -> io::Result<()> {
    writeln!(
        out,
        "archive run {}{}: {} files ({:.1} MiB) and {} sidecars {}, {} already archived",
        run.year,
        if run.dry_run { " --dry-run" } else { "" },
        run.moved,
        run.bytes as f64 / (1 << 20) as f64,
        run.sidecars,
        if run.dry_run { "would move" } else { "moved" },
        run.already
    )?;
    if run.dry_run {
        for file in &run.files {
            writeln!(out, "  {file}")?;
        }
    }
    if let Some(why) = &run.stopped {
        writeln!(out, "  stopped: {why}")?;
    }
    if run.icloud_removed > 0 {
        writeln!(
            out,
            "  removed {} files of {} from the icloudpd download folder (archived and verified)",
            run.icloud_removed, run.year
        )?;
    }
    if let Some(why) = &run.icloud_kept {
        writeln!(out, "  {why}")?;
    }
    for error in &run.errors {
        writeln!(out, "  ! {error}")?;
    }
    Ok(())
}

pub fn print_restore(
    out: &mut impl Write,
    target: &str,
    to: &std::path::Path,
    restored: &crate::offsite::RestoreReport,
) -> io::Result<()> {
    writeln!(
        out,
        "offsite restore from {target} into {}: {} files ({:.1} MiB), {} checked against the ledger, {} already there, {} errors",
        to.display(),
        restored.restored,
        restored.bytes as f64 / (1 << 20) as f64,
        restored.verified,
        restored.skipped.len(),
        restored.errors.len()
    )?;
    for error in &restored.errors {
        writeln!(out, "  ! {error}")?;
    }
    Ok(())
}

pub fn print_offsite_status(
    out: &mut impl Write,
    config: &Config,
    ledger: &Ledger,
    json: bool,
) -> io::Result<()> {
    let summary = ledger
        .read(ledger::push_summary)
        .map_err(io::Error::other)?;
    let mut targets = Vec::new();
    for name in config.offsite.keys() {
        let count = |state: &str| {
            summary
                .iter()
                .filter(|(t, s, _, _)| t == name && s == state)
                .map(|(_, _, n, bytes)| (*n, *bytes))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        };
        let last = ledger
            .read(|c| ledger::last_push(c, name))
            .map_err(io::Error::other)?;
        let problems = ledger
            .read(|c| {
                let mut rows = ledger::pushes_of(c, Some(name), Some("deferred"))?;
                rows.extend(ledger::pushes_of(c, Some(name), Some("conflict"))?);
                Ok(rows)
            })
            .map_err(io::Error::other)?;
        targets.push((
            name.clone(),
            count("done"),
            count("pending"),
            count("deferred"),
            count("conflict"),
            last,
            problems,
        ));
    }
    if json {
        let value: Vec<_> = targets
            .iter()
            .map(|(name, done, pending, deferred, conflict, last, problems)| {
                json!({
                    "target": name,
                    "pushed": done.0,
                    "pushed_bytes": done.1,
                    "pending": pending.0,
                    "deferred": deferred.0,
                    "conflicts": conflict.0,
                    "last_success": last,
                    "problems": problems.iter().take(20).map(|p| json!({
                        "key": p.key, "state": p.state, "error": p.last_error, "wake_at": p.wake_at,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return writeln!(out, "{}", json!(value));
    }
    for (name, done, pending, deferred, conflict, last, problems) in &targets {
        writeln!(
            out,
            "{name:<12} pushed {} ({} MiB) · pending {} · deferred {} · conflicts {} · last success {}",
            done.0,
            done.1 >> 20,
            pending.0,
            deferred.0,
            conflict.0,
            last.map(local_time).unwrap_or_else(|| "never".into())
        )?;
        for push in problems.iter().take(10) {
            writeln!(
                out,
                "  {} {}: {}{}",
                push.state,
                push.key,
                push.last_error.as_deref().unwrap_or(""),
                push.wake_at
                    .map(|at| format!(" (next try {})", local_time(at)))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

pub fn print_immich_status(out: &mut impl Write, status: &crate::immich::Status) -> io::Result<()> {
    match (&status.server_version, &status.connection_error) {
        (Some(version), _) => writeln!(
            out,
            "immich  {}: Immich {version}, API key accepted",
            status.url
        )?,
        (None, Some(error)) => writeln!(out, "immich  {}: ! {error}", status.url)?,
        (None, None) => writeln!(out, "immich  {}", status.url)?,
    }
    let c = &status.counts;
    writeln!(
        out,
        "  uploaded {}  albumed {}  rejected {}  pending {}  waiting {}  failed {}  ({} requests)",
        c.uploaded, c.albumed, c.rejected, c.pending, c.deferred, c.failed, c.requests
    )?;
    if let Some(at) = c.next_try_at {
        writeln!(
            out,
            "  next try in {} s (`keepsake immich sync` tries now)",
            (at - crate::ledger::now()).max(0)
        )?;
    }
    if let Some(error) = &c.last_error {
        writeln!(out, "  ! {error}")?;
    }
    let now = crate::ledger::now();
    match c.last_pull_at {
        Some(at) => writeln!(
            out,
            "  write-back: last pull {} s ago (full: {}), {} sidecars behind",
            (now - at).max(0),
            c.last_full_pull_at.map_or_else(
                || "never".to_string(),
                |f| format!("{} s ago", (now - f).max(0))
            ),
            c.sidecars_behind
        )?,
        None => writeln!(out, "  write-back: no pull yet (`keepsake immich pull`)")?,
    }
    if let Some(error) = &c.last_pull_error {
        writeln!(out, "  ! write-back: {error}")?;
    }
    Ok(())
}
