//! `keepsake run`: the always-on service. One async loop (tokio, one thread)
//! waits on inbox events, timers and signals; blocking work (walks, hashing,
//! stage calls, copies, SQLite) runs on tokio's blocking threads, one
//! processing cycle at a time.
//!
//! A cycle registers the files that became stable, wakes failed jobs whose
//! backoff passed and deferred jobs whose time came, and runs every pending
//! job. On SIGINT/SIGTERM no new cycle starts; the running one stops between
//! batches (a large file's read stops within a chunk) and the process exits
//! once it has, or when the grace period ends: the journal resumes whatever
//! was in flight at the next start.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use crate::config::{Config, ServiceConfig};
use crate::discover;
use crate::immich::placed::{self, PlacedPhase};
use crate::immich::writeback;
use crate::ledger::{self, Ledger};
use crate::pipeline::{IngestReport, Pipeline, PipelineError};
use crate::watch::tracker::{Stable, Tracker};
use crate::watch::{self, Change, WatchedInbox};

/// How often an idle service looks at the ledger for jobs queued by
/// `keepsake retry` or woken by their time.
const POLL: Duration = Duration::from_secs(2);
/// After a cycle failed on the ledger itself (e.g. a full disk), wait this
/// long before the next.
const CYCLE_RETRY: Duration = Duration::from_secs(30);
/// After a new folder appears in an inbox, a rescan this much later.
const NEW_FOLDER_RESCAN: Duration = Duration::from_secs(1);
/// `keepsake status` is updated at most this often.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(
        "cannot watch the inboxes: {0}; check that the folders exist and that the inotify limit (fs.inotify.max_user_watches) is high enough, or set `watch = false` on the inbox"
    )]
    Watch(#[from] notify::Error),
    #[error("cannot start the service: {0}")]
    Io(#[from] std::io::Error),
}

/// What one cycle did.
#[derive(Debug, Default)]
struct Cycle {
    report: IngestReport,
    woken: usize,
    /// Files that changed between their stable look and registration.
    unsettled: Vec<(usize, PathBuf)>,
}

/// What one rescan found.
#[derive(Debug)]
struct Rescan {
    unseen: Vec<(usize, PathBuf)>,
    files: usize,
    errors: Vec<String>,
    took: Duration,
}

/// Run until SIGINT or SIGTERM. The pipeline is opened first: a second
/// service on the same ledger, a bad stage or a broken journal stops here,
/// before anything is watched or taken.
pub fn run(config: Config) -> Result<(), ServiceError> {
    crate::par::set_threads(config.service.concurrency);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()?;
    let result = runtime.block_on(async {
        // Signals first: a stop during the journal replay or the stage
        // compilation is a clean stop too.
        let mut signals = Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        };
        let opening = tokio::task::spawn_blocking({
            let config = config.clone();
            move || crate::library_jobs::open_pipeline(config)
        });
        let pipeline = tokio::select! {
            _ = signals.recv() => {
                tracing::info!("stopped before it started");
                return Ok(());
            }
            opened = opening => match opened {
                Ok(pipeline) => Arc::new(pipeline?),
                Err(e) => return Err(ServiceError::Io(std::io::Error::other(e))),
            },
        };
        if pipeline.recovery.finished + pipeline.recovery.requeued > 0 {
            tracing::info!(
                finished = pipeline.recovery.finished,
                requeued = pipeline.recovery.requeued,
                "replayed the journal of the last run"
            );
        }
        serve(pipeline, config, signals).await
    });
    // A cycle still running past the grace period is left to the journal.
    runtime.shutdown_background();
    result
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Events waiting for the loop; beyond this many, they are dropped and a
/// rescan finds what they were about (bounded memory in a storm).
const EVENT_QUEUE: usize = 65_536;

async fn serve(
    pipeline: Arc<Pipeline>,
    config: Config,
    mut signals: Signals,
) -> Result<(), ServiceError> {
    let inboxes = Arc::new(WatchedInbox::all(&config));
    // Files placed go on to Immich and the like, between cycles.
    let placed = Arc::new(PlacedPhase::default());
    let service = &config.service;
    let (send, mut events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    // Watch before the first rescan, so nothing lands unseen between them.
    let _watcher = watch_inboxes(&inboxes, service, send, Arc::clone(&overflowed))?;
    announce(&config, &inboxes);
    let mut tracker = Tracker::new(service.stability);
    let mut ready: Vec<Stable> = Vec::new();
    let mut work: Option<JoinHandle<Result<Cycle, PipelineError>>> = None;
    let mut rescan: Option<JoinHandle<Rescan>> = None;
    // Offsite pushes run beside the cycles, on this thread (async uploads).
    let mut pushing: Option<JoinHandle<crate::offsite::PushReport>> = None;
    let mut push_now = !config.offsite.is_empty();
    // The rolling archive: plans (and, with auto_run, moves) on a schedule,
    // between cycles, never beside one.
    let sweep_every = config.archive.sweep_every;
    let mut sweep_at = sweep_every.map(|every| Instant::now() + every.min(SWEEP_FIRST));
    let mut sweeping: Option<tokio::sync::oneshot::Receiver<()>> = None;
    let mut rescan_at = Some(Instant::now());
    let mut last_rescan: Option<(i64, Duration, usize)> = None;
    // Jobs left pending by the last run go first.
    let mut check_queue = true;
    let mut poll_at = Instant::now() + POLL;
    let mut published = Instant::now() - PUBLISH_EVERY;
    let mut dirty = true;
    publish_started(&pipeline);

    loop {
        let now = Instant::now();
        if work.is_none()
            && sweeping.is_none()
            && let (Some(at), Some(every)) = (sweep_at, sweep_every)
            && at <= now
        {
            sweep_at = Some(now + every);
            sweeping = start_sweep(&pipeline, &config);
        }
        if work.is_none() && (!ready.is_empty() || check_queue) {
            let batch = std::mem::take(&mut ready);
            work = Some(start_cycle(
                &pipeline,
                &placed,
                &inboxes,
                batch,
                service.backoff,
            ));
            check_queue = false;
            dirty = true;
        }
        if push_now && pushing.is_none() {
            push_now = false;
            pushing = Some(start_push(&pipeline, &config));
        }
        if rescan.is_none() && rescan_at.is_some_and(|at| at <= now) {
            rescan = Some(start_rescan(&pipeline, &inboxes));
            rescan_at = None;
        }
        if dirty && now.duration_since(published) >= PUBLISH_EVERY {
            publish_waiting(&pipeline, tracker.len(), last_rescan);
            published = now;
            dirty = false;
        }
        let tracker_due = tracker.next_due();
        // Wake for the next publish only when there is something to publish.
        let publish_at = dirty.then_some(published + PUBLISH_EVERY);

        tokio::select! {
            _ = signals.recv() => break,
            Some(event) = events.recv() => {
                take_events(event, &mut events, &inboxes, &mut tracker, &mut rescan_at, &overflowed);
                dirty = true;
            }
            done = async { work.as_mut().expect("guarded by the if").await }, if work.is_some() => {
                work = None;
                push_now = !config.offsite.is_empty();
                cycle_done(done, &mut tracker, &mut poll_at, &mut rescan_at);
                dirty = true;
            }
            _ = async { pushing.as_mut().expect("guarded by the if").await }, if pushing.is_some() => {
                pushing = None;
            }
            _ = async { sweeping.as_mut().expect("guarded by the if").await }, if sweeping.is_some() => {
                sweeping = None;
            }
            _ = sleep_until(sweep_at), if sweep_at.is_some() && sweeping.is_none() && work.is_none() => {}
            done = async { rescan.as_mut().expect("guarded by the if").await }, if rescan.is_some() => {
                rescan = None;
                rescan_done(done, service, &mut tracker, &mut rescan_at, &mut last_rescan);
                dirty = true;
            }
            _ = sleep_until(tracker_due), if tracker_due.is_some() => {
                ready.extend(tracker.take_stable(Instant::now()));
                dirty = true;
            }
            _ = tokio::time::sleep_until(poll_at.into()), if work.is_none() => {
                poll_at = Instant::now() + POLL;
                check_queue = queue_has_work(&pipeline, &config);
                if !config.offsite.is_empty() && pushing.is_none() {
                    push_now = pushes_due(&pipeline, &config);
                }
            }
            _ = sleep_until(publish_at), if publish_at.is_some() => {}
        }
    }

    stop(&pipeline, service, work, sweeping, pushing).await;
    Ok(())
}

/// Start the inbox watcher (events go to `send`; `overflowed` is set when
/// the queue is full) and warn about every inbox it cannot watch.
fn watch_inboxes(
    inboxes: &[WatchedInbox],
    service: &ServiceConfig,
    send: tokio::sync::mpsc::Sender<notify::Result<notify::Event>>,
    overflowed: Arc<AtomicBool>,
) -> Result<notify::RecommendedWatcher, ServiceError> {
    let (watcher, unwatched) = watch::start_watcher(inboxes, move |event| {
        if send.try_send(event).is_err() {
            overflowed.store(true, Ordering::Relaxed);
        }
    })?;
    for (inbox, error) in unwatched {
        match service.rescan {
            Some(every) => tracing::warn!(
                "cannot watch inbox {inbox} ({error}); it is rescanned every {} s instead (raise fs.inotify.max_user_watches, or set `watch = false` to silence this)",
                every.as_secs()
            ),
            None => tracing::warn!(
                "cannot watch inbox {inbox} ({error}) and rescan_secs = 0: its new files are only found at the next start; set rescan_secs"
            ),
        }
    }
    Ok(watcher)
}

/// Void stale archive verdicts and log that the service is running.
fn announce(config: &Config, inboxes: &[WatchedInbox]) {
    // Verdicts made on another set of offsite targets stand no more.
    crate::archive::void_stale(config);
    let watched: Vec<&str> = inboxes.iter().map(|i| i.name.as_str()).collect();
    tracing::info!(
        inboxes = %watched.join(", "),
        library = %config.library_root.display(),
        stability_secs = config.service.stability.as_secs_f64(),
        "keepsake is running; Ctrl-C or SIGTERM stops it"
    );
}

/// Record for `keepsake status` that this process has started.
fn publish_started(pipeline: &Arc<Pipeline>) {
    publish(
        pipeline,
        vec![
            ("pid", std::process::id().to_string()),
            ("started_at", ledger::now().to_string()),
            ("stopped_at", String::new()),
            ("in_flight", "0".into()),
        ],
    );
}

/// Record for `keepsake status` the files waiting and the last rescan.
fn publish_waiting(
    pipeline: &Arc<Pipeline>,
    waiting: usize,
    last_rescan: Option<(i64, Duration, usize)>,
) {
    let mut values = vec![("waiting", waiting.to_string())];
    if let Some((at, took, files)) = last_rescan {
        values.push(("last_rescan_at", at.to_string()));
        values.push(("last_rescan_ms", took.as_millis().to_string()));
        values.push(("last_rescan_files", files.to_string()));
    }
    publish(pipeline, values);
}

/// Start the archive sweep on its own thread; None if it cannot start.
fn start_sweep(
    pipeline: &Arc<Pipeline>,
    config: &Config,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let (done, wait) = tokio::sync::oneshot::channel();
    let pipeline = Arc::clone(pipeline);
    let config = config.clone();
    // Its own thread: the plan checks offsite copies on a runtime
    // of its own.
    let started = std::thread::Builder::new()
        .name("archive-sweep".into())
        .spawn(move || {
            sweep(&config, &pipeline);
            let _ = done.send(());
        });
    match started {
        Ok(_) => Some(wait),
        Err(e) => {
            tracing::error!("cannot start the archive sweep: {e}");
            None
        }
    }
}

/// Start a processing cycle of `batch` on a blocking thread.
fn start_cycle(
    pipeline: &Arc<Pipeline>,
    placed: &Arc<PlacedPhase>,
    inboxes: &Arc<Vec<WatchedInbox>>,
    batch: Vec<Stable>,
    backoff: ledger::Backoff,
) -> JoinHandle<Result<Cycle, PipelineError>> {
    let pipeline = Arc::clone(pipeline);
    let placed = Arc::clone(placed);
    let inboxes = Arc::clone(inboxes);
    tokio::task::spawn_blocking(move || {
        // Takes turns with the archive sweep's moves.
        let _turn = crate::archive::MOVING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cycle(&pipeline, &placed, &inboxes, batch, &backoff)
    })
}

/// Start a rescan of every inbox on a blocking thread.
fn start_rescan(pipeline: &Arc<Pipeline>, inboxes: &Arc<Vec<WatchedInbox>>) -> JoinHandle<Rescan> {
    let pipeline = Arc::clone(pipeline);
    let inboxes = Arc::clone(inboxes);
    tokio::task::spawn_blocking(move || rescan_all(&pipeline, &inboxes))
}

/// Start pushing what is due offsite, as a task on this thread.
fn start_push(pipeline: &Pipeline, config: &Config) -> JoinHandle<crate::offsite::PushReport> {
    let ledger = pipeline.ledger_arc();
    let config = config.clone();
    tokio::spawn(async move { crate::offsite::push_due(ledger, &config, false).await })
}

/// Handle `first` and every other inbox event already queued.
fn take_events(
    first: notify::Result<notify::Event>,
    events: &mut tokio::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    inboxes: &[WatchedInbox],
    tracker: &mut Tracker,
    rescan_at: &mut Option<Instant>,
    overflowed: &AtomicBool,
) {
    handle_event(first, inboxes, tracker, rescan_at);
    // Drain what else is queued before the next turn of the loop.
    while let Ok(event) = events.try_recv() {
        handle_event(event, inboxes, tracker, rescan_at);
    }
    if overflowed.swap(false, Ordering::Relaxed) {
        tracing::warn!("more inbox events than keepsake could queue; rescanning");
        *rescan_at = Some(Instant::now());
    }
}

/// Log a finished cycle and track its unsettled files again; after a
/// failed one, schedule the retry.
fn cycle_done(
    done: Result<Result<Cycle, PipelineError>, tokio::task::JoinError>,
    tracker: &mut Tracker,
    poll_at: &mut Instant,
    rescan_at: &mut Option<Instant>,
) {
    match done {
        Ok(Ok(cycle)) => {
            log_cycle(&cycle);
            let now = Instant::now();
            for (inbox, path) in cycle.unsettled {
                tracker.observe(inbox, path, false, now);
            }
        }
        failed => {
            match failed {
                Ok(Err(e)) => tracing::error!("{e}; trying again in {} s", CYCLE_RETRY.as_secs()),
                _ => tracing::error!(
                    "a processing cycle stopped; trying again in {} s",
                    CYCLE_RETRY.as_secs()
                ),
            }
            // The files of that cycle may not be registered:
            // a rescan finds them again.
            let again = Instant::now() + CYCLE_RETRY;
            *poll_at = again;
            *rescan_at = Some(rescan_at.map_or(again, |at| at.min(again)));
        }
    }
}

/// Schedule the next rescan, log a finished one, track the files it found
/// and note when it ran.
fn rescan_done(
    done: Result<Rescan, tokio::task::JoinError>,
    service: &ServiceConfig,
    tracker: &mut Tracker,
    rescan_at: &mut Option<Instant>,
    last_rescan: &mut Option<(i64, Duration, usize)>,
) {
    // A rescan asked for while this one ran (lost events) stays.
    *rescan_at = rescan_at.or(service.rescan.map(|every| Instant::now() + every));
    match done {
        Ok(found) => {
            for error in &found.errors {
                tracing::warn!("rescan: {error}");
            }
            tracing::debug!(
                files = found.files,
                new = found.unseen.len(),
                ms = found.took.as_millis() as u64,
                "rescanned the inboxes"
            );
            let now = Instant::now();
            for (inbox, path) in found.unseen {
                tracker.observe(inbox, path, false, now);
            }
            *last_rescan = Some((ledger::now(), found.took, found.files));
        }
        Err(e) => tracing::error!("a rescan stopped: {e}"),
    }
}

/// The ledger holds offsite pushes due on a configured target.
fn pushes_due(pipeline: &Pipeline, config: &Config) -> bool {
    let targets: Vec<&str> = config.offsite.keys().map(String::as_str).collect();
    pipeline
        .ledger()
        .read(|c| ledger::has_due_pushes(c, &targets))
        .unwrap_or(false)
}

/// Stopping: no new cycle; the running one, the sweep and the pushes get
/// the grace period to end; then the stop is recorded.
async fn stop(
    pipeline: &Pipeline,
    service: &ServiceConfig,
    work: Option<JoinHandle<Result<Cycle, PipelineError>>>,
    sweeping: Option<tokio::sync::oneshot::Receiver<()>>,
    pushing: Option<JoinHandle<crate::offsite::PushReport>>,
) {
    // Stopping: no new cycle; the running one ends between batches.
    crate::shutdown::request();
    tracing::info!(
        grace_secs = service.grace.as_secs(),
        "stopping: finishing the work in flight"
    );
    let mut finished = true;
    if let Some(work) = work {
        match tokio::time::timeout(service.grace, work).await {
            Ok(Ok(Ok(cycle))) => log_cycle(&cycle),
            Ok(Ok(Err(e))) => tracing::error!("{e}"),
            Ok(Err(e)) => tracing::error!("a processing cycle stopped: {e}"),
            Err(_) => {
                finished = false;
                tracing::warn!(
                    "the grace period ended with work in flight; the journal resumes it at the next start"
                );
            }
        }
    }
    if let Some(sweeping) = sweeping {
        // The sweep stops between years; a move in flight is journaled.
        if tokio::time::timeout(service.grace, sweeping).await.is_err() {
            tracing::warn!(
                "the archive sweep was still running at the end of the grace period; its journal finishes it at the next start"
            );
        }
    }
    if let Some(pushing) = pushing {
        // Uploads are idempotent (a key already holding the bytes is done):
        // what does not finish in the grace period is pushed next time.
        if tokio::time::timeout(service.grace, pushing).await.is_err() {
            tracing::warn!(
                "offsite pushes still running at the end of the grace period; they resume at the next start"
            );
        }
    }
    if finished {
        let stopped = pipeline.ledger().write(|tx| {
            ledger::set_service_state(tx, "stopped_at", &ledger::now().to_string())?;
            ledger::set_service_state(tx, "in_flight", "0")?;
            ledger::set_service_state(tx, "waiting", "0")
        });
        if let Err(e) = stopped {
            tracing::warn!("cannot record the service state: {e}");
        }
    }
    tracing::info!("stopped");
}

/// The first sweep comes a little after start, once the queue left by the
/// last run is taken.
const SWEEP_FIRST: Duration = Duration::from_secs(60);

/// The rolling archive: a plan for every year older than `keep_years`;
/// with `auto_run`, a year proven safe is moved to the archive root.
fn sweep(config: &Config, pipeline: &Pipeline) {
    let ledger = pipeline.ledger_arc();
    let years = match crate::archive::years_older_than(&ledger, config.archive.keep_years) {
        Ok(years) => years,
        Err(e) => {
            tracing::error!("archive sweep: {e}");
            return;
        }
    };
    crate::archive::void_stale(config);
    for year in years {
        if crate::shutdown::requested() {
            return;
        }
        // The plan rehashes every copy, which takes long: it is made
        // without the turn, so ingest goes on meanwhile, and written under
        // the turn only if no cycle changed anything while it was made
        // (else made again; the third time under the turn). Its moves and
        // the removal of iCloud copies come in the same turn as its writing.
        let mut tries = 0;
        let made = loop {
            tries += 1;
            let seen = match crate::archive::changes(&ledger) {
                Ok(seen) => seen,
                Err(e) => break Err(e),
            };
            if tries == 3 {
                let turn = crate::archive::turn();
                break crate::archive::plan_unwritten(config, &ledger, year, &Default::default())
                    .map(|plan| (plan, turn, seen));
            }
            let made = crate::archive::plan_unwritten(config, &ledger, year, &Default::default());
            let turn = crate::archive::turn();
            match made {
                Ok(plan) if crate::archive::changes(&ledger).is_ok_and(|now| now == seen) => {
                    break Ok((plan, turn, seen));
                }
                Ok(_) => tracing::debug!(year, "archive sweep: the year changed while planned"),
                Err(e) => break Err(e),
            }
        };
        let (mut plan, _turn, seen) = match made {
            Ok(made) => made,
            Err(e) => {
                tracing::error!("archive sweep, plan {year}: {e}");
                continue;
            }
        };
        if let Err(e) = crate::archive::record(config, &mut plan) {
            tracing::error!("archive sweep, plan {year}: {e}");
            continue;
        }
        // Another process (`keepsake verify`) may have counted a change
        // meanwhile: written first, then checked, as `archive plan` does.
        if !crate::archive::changes(&ledger).is_ok_and(|now| now == seen) {
            crate::archive::void(
                config,
                Some(&std::collections::BTreeSet::from([year])),
                "the year changed while it was planned",
            );
            continue;
        }
        tracing::info!("archive sweep: {}", plan.verdict());
        if !(plan.safe && config.archive.auto_run) {
            continue;
        }
        match crate::archive::run(config, &ledger, year, false) {
            Ok(run) => {
                tracing::info!(
                    year,
                    moved = run.moved,
                    sidecars = run.sidecars,
                    already = run.already,
                    "archive sweep: moved the year to the archive root"
                );
                for error in &run.errors {
                    tracing::error!("archive sweep {year}: {error}");
                }
                if let Some(why) = run.stopped {
                    tracing::error!("archive sweep {year}: {why}");
                    return;
                }
            }
            Err(e) => tracing::error!("archive sweep, run {year}: {e}"),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn handle_event(
    event: notify::Result<notify::Event>,
    inboxes: &[WatchedInbox],
    tracker: &mut Tracker,
    rescan_at: &mut Option<Instant>,
) {
    let event = match event {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!("inbox watch: {e}; rescanning");
            *rescan_at = Some(Instant::now());
            return;
        }
    };
    let now = Instant::now();
    for change in watch::changes(event) {
        match change {
            Change::Lost => {
                tracing::warn!("the kernel dropped inbox events; rescanning");
                *rescan_at = Some(now);
            }
            Change::Gone(path) => tracker.forget(&path),
            Change::Touched { path, whole } => {
                let Some(inbox) = watch::inbox_of(inboxes, &path) else {
                    continue;
                };
                match path.symlink_metadata() {
                    Ok(meta) if meta.is_dir() => {
                        // Files may have landed before the folder's watch.
                        for file in watch::files_under(&path, &inboxes[inbox].ignore) {
                            tracker.observe(inbox, file, whole, now);
                        }
                        // notify reports a new folder before it watches it:
                        // a file created in between has no event and was not
                        // there for this walk yet. A rescan a moment later
                        // finds it (unchanged files cost a stat each).
                        let soon = now + NEW_FOLDER_RESCAN;
                        *rescan_at = Some(rescan_at.map_or(soon, |at| at.min(soon)));
                    }
                    Ok(_) => tracker.observe(inbox, path, whole, now),
                    Err(_) => tracker.forget(&path),
                }
            }
        }
    }
}

/// One processing cycle, on a blocking thread.
fn cycle(
    pipeline: &Pipeline,
    placed: &PlacedPhase,
    inboxes: &[WatchedInbox],
    ready: Vec<Stable>,
    backoff: &ledger::Backoff,
) -> Result<Cycle, PipelineError> {
    let mut report = IngestReport::default();
    let mut unsettled = Vec::new();
    for (inbox, dir, folder) in watch::by_folder(ready) {
        let Some(watched) = inboxes.get(inbox) else {
            continue;
        };
        let names: std::collections::HashSet<_> = folder.keys().cloned().collect();
        let walk = discover::walk_names(&watched.root, &dir, &names, &watched.ignore);
        report.errors.extend(walk.errors);
        // Changed since it was found stable: it waits again.
        let (files, changed): (Vec<_>, Vec<_>) = walk.files.into_iter().partition(|file| {
            let look = (file.size, file.mtime_ns, file.inode);
            file.path
                .file_name()
                .and_then(|name| folder.get(name))
                .is_none_or(|stable| *stable == look)
        });
        unsettled.extend(changed.into_iter().map(|file| (inbox, file.path)));
        for sidecar in &walk.folded {
            warn_if_late(pipeline, &watched.name, &watched.root, sidecar, &names);
        }
        pipeline.register_files(&watched.name, files, &mut report)?;
    }
    let ledger = pipeline.ledger();
    let woken = ledger.write(|tx| ledger::wake_due(tx, ledger::now(), backoff))?;
    let pending = ledger.read(ledger::pending_count)?;
    let _ = ledger.write(|tx| ledger::set_service_state(tx, "in_flight", &pending.to_string()));
    let result = pipeline.run_pending();
    let _ = ledger.write(|tx| ledger::set_service_state(tx, "in_flight", "0"));
    let processed = result?;
    report.processed += processed.processed;
    report.placed += processed.placed;
    report.duplicates += processed.duplicates;
    report.quarantined += processed.quarantined;
    report.skipped += processed.skipped;
    report.failed += processed.failed;
    report.deferred += processed.deferred;
    report.removed_from_inbox += processed.removed_from_inbox;
    report.errors.extend(processed.errors);
    report.elapsed = processed.elapsed;
    // Files placed by now go to Immich and the like; what they defer wakes
    // a later cycle (see `queue_has_work`).
    match placed.run_for(pipeline, Some(std::time::Duration::from_secs(60))) {
        Ok(after) => {
            if after.done + after.deferred + after.failed > 0 {
                tracing::info!(
                    done = after.done,
                    deferred = after.deferred,
                    failed = after.failed,
                    "placed-phase stages ran"
                );
            }
            for (stage, why) in &after.waiting {
                tracing::warn!(stage, "held back: {why}");
            }
        }
        Err(e) => tracing::warn!("placed-phase stages: {e}"),
    }
    // What the family did in Immich goes into the sidecars, on schedule.
    if let Some(full) = writeback::sweep_due(pipeline) {
        match writeback::sweep(pipeline, full) {
            Ok(swept) => {
                if swept.sidecars_written > 0 || !swept.errors.is_empty() {
                    tracing::info!(
                        changed = swept.changed,
                        sidecars = swept.sidecars_written,
                        errors = swept.errors.len(),
                        "write-back sweep"
                    );
                }
            }
            Err(e) => tracing::warn!("write-back sweep: {e}"),
        }
    }
    Ok(Cycle {
        report,
        woken,
        unsettled,
    })
}

/// A sidecar that landed after its photo was taken is not copied on its
/// own (it would have no file to sit beside): say so, instead of dropping
/// it silently.
fn warn_if_late(
    pipeline: &Pipeline,
    inbox: &str,
    root: &std::path::Path,
    sidecar: &std::path::Path,
    names: &std::collections::HashSet<std::ffi::OsString>,
) {
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = sidecar.file_name() else {
        return;
    };
    let base = discover::sidecar_base(name.as_bytes());
    let owner_in_batch = names.iter().any(|n| {
        let n = n.as_bytes();
        n.eq_ignore_ascii_case(&base) || discover::stem(n).eq_ignore_ascii_case(&base)
    });
    if owner_in_batch {
        return;
    }
    let dir = sidecar.parent().unwrap_or(root);
    let rel = dir
        .strip_prefix(root)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    let prefix = if rel.is_empty() {
        Vec::new()
    } else {
        [rel, b"/".to_vec()].concat()
    };
    let taken = pipeline
        .ledger()
        .read(|c| {
            ledger::ingest::taken_sources(
                c,
                inbox,
                &[prefix.clone(), base.clone()].concat(),
                &format!("{}%", String::from_utf8_lossy(&[prefix, base].concat())),
            )
        })
        .unwrap_or(0);
    if taken > 0 {
        tracing::warn!(
            "{} arrived after its photo was taken; it is not copied to the library (copy it beside the library file by hand)",
            sidecar.display()
        );
    }
}

fn log_cycle(cycle: &Cycle) {
    let r = &cycle.report;
    for error in &r.errors {
        tracing::warn!("{error}");
    }
    if r.processed > 0 || r.skipped > 0 {
        tracing::info!(
            placed = r.placed,
            duplicates = r.duplicates,
            quarantined = r.quarantined,
            skipped = r.skipped,
            failed = r.failed,
            deferred = r.deferred,
            retried = cycle.woken,
            secs = r.elapsed.as_secs_f64(),
            "took {} file(s)",
            r.processed
        );
    }
}

/// Walk every inbox; the files the ledger has not seen as they are now.
fn rescan_all(pipeline: &Pipeline, inboxes: &[WatchedInbox]) -> Rescan {
    let started = Instant::now();
    let mut found = Rescan {
        unseen: Vec::new(),
        files: 0,
        errors: Vec::new(),
        took: Duration::ZERO,
    };
    for (i, inbox) in inboxes.iter().enumerate() {
        if crate::shutdown::requested() {
            break;
        }
        if !inbox.root.is_dir() {
            found.errors.push(format!(
                "inbox {}: folder {} is missing (unmounted?); its files wait until it is back",
                inbox.name,
                inbox.root.display()
            ));
            continue;
        }
        let walk = discover::walk(&inbox.root, &inbox.ignore);
        found.files += walk.files.len();
        found.errors.extend(walk.errors);
        match pipeline.split_unseen(&inbox.name, walk.files) {
            Ok((unseen, seen)) => {
                found.unseen.extend(unseen.into_iter().map(|c| (i, c.path)));
                // Move mode: files whose job finished but which a crash
                // left in the inbox are removed now.
                let move_mode = pipeline
                    .config()
                    .inbox(&inbox.name)
                    .is_some_and(|c| c.mode == crate::config::InboxMode::Move);
                if move_mode && !seen.is_empty() {
                    let mut report = IngestReport::default();
                    if let Err(e) = pipeline.register_files(&inbox.name, seen, &mut report) {
                        found.errors.push(e.to_string());
                    }
                    found.errors.extend(report.errors);
                }
            }
            Err(e) => found.errors.push(e.to_string()),
        }
    }
    found.took = started.elapsed();
    found
}

/// Jobs queued from outside (`keepsake retry`) or due to wake.
fn queue_has_work(pipeline: &Pipeline, config: &Config) -> bool {
    let ledger: &Ledger = pipeline.ledger();
    let pending = ledger.read(ledger::pending_count).unwrap_or(0);
    let next_wake = ledger
        .read(|c| ledger::next_wake(c, &config.service.backoff))
        .ok()
        .flatten();
    pending > 0
        || next_wake.is_some_and(|at| at <= ledger::now())
        || placed_due(pipeline)
        || writeback::sweep_due(pipeline).is_some()
}

/// A placed-phase call (Immich, ...) is due, or a placed file has none yet.
fn placed_due(pipeline: &Pipeline) -> bool {
    if placed::stages(pipeline).is_empty() {
        return false;
    }
    let now = ledger::now();
    placed::stages(pipeline).iter().any(|stage| {
        pipeline
            .ledger()
            .read(|c| ledger::placed_call_due(c, stage, now))
            .unwrap_or(false)
    })
}

/// Record values for `keepsake status` (best effort, off the async loop).
fn publish(pipeline: &Arc<Pipeline>, values: Vec<(&'static str, String)>) {
    let pipeline = Arc::clone(pipeline);
    tokio::task::spawn_blocking(move || {
        let result = pipeline.ledger().write(|tx| {
            for (key, value) in &values {
                ledger::set_service_state(tx, key, value)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::warn!("cannot record the service state: {e}");
        }
    });
}
