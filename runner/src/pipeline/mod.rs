//! The flow of one file: discover → fingerprint → hash (BLAKE3 + SHA-1, one
//! read) → job row → stages (wasm: look, decide) → effects applied by the
//! host, journaled → done.

mod dating;
mod decide;
mod hooks;
mod live;
pub mod paths;
mod plan;
mod queue;
mod read;
mod register;
mod services;

use services::IngestServices;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, InboxMode, StageSource};
use crate::discover;
use crate::effects::{self, Applied, Recovery};
use crate::host::{LoadError, LoadedStage, Services, StageRuntime};
use crate::kei::{KeiCache, KeiFiles};
use crate::ledger::{self, JobRecord, JobState, Ledger, LedgerError, StateLock};

pub use dating::{Dated, capture_times};
pub use decide::Decision;
pub(crate) use decide::local_mtime;
pub use hooks::{NoVerdicts, OnProgress, Progress, Verdicts};
pub(crate) use services::KvMeter;

/// Jobs processed together: one intent commit, one sync, one done commit.
const BATCH_FILES: usize = 256;
const FIRST_BATCH_FILES: usize = 16;
/// ... or fewer, when they add up to this many bytes.
const BATCH_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Apply(#[from] effects::ApplyError),
    #[error("{0}")]
    Setup(String),
}

/// What one `ingest` did, for the summary table and `--json`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IngestReport {
    pub discovered: usize,
    pub unchanged: usize,
    pub ignored: usize,
    pub processed: usize,
    pub placed: usize,
    pub duplicates: usize,
    pub quarantined: usize,
    pub skipped: usize,
    pub failed: usize,
    pub deferred: usize,
    pub bytes_hashed: u64,
    pub removed_from_inbox: usize,
    pub recovered: usize,
    pub errors: Vec<String>,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Time spent inside stage calls, summed, and how many calls.
    pub stage_micros: u64,
    pub stage_calls: u64,
    /// Bytes stages read through the host's bounded `read`.
    pub stage_bytes_read: u64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Which inbox a job belongs to, and so which pipeline runs it.
#[derive(Debug, Clone)]
struct InboxPlan {
    root: PathBuf,
    mode: InboxMode,
    pipeline: Vec<String>,
    ignore: Vec<String>,
}

/// A batch's plans, and the staged copies its reads made.
type Batch = (Vec<effects::JobPlan>, Vec<PathBuf>);

/// What [`Pipeline::discover`] found, for [`Pipeline::process`].
pub struct Discovery {
    inboxes: HashMap<String, InboxPlan>,
    report: IngestReport,
    started: Instant,
}

/// An open ledger with its stages loaded: what `ingest` (and later `run`) drive.
pub struct Pipeline {
    config: Config,
    ledger: Arc<Ledger>,
    runtime: StageRuntime,
    stages: BTreeMap<String, LoadedStage>,
    pub recovery: Recovery,
    /// Told while jobs are decided (the CLI shows a bar on a terminal).
    progress: Option<OnProgress>,
    /// Hear of every change an ingest makes to what they read.
    verdicts: Arc<dyn Verdicts>,
    /// kei's files, read again only when its database (or its WAL) changed.
    kei_cache: KeiCache,
    /// The device each inbox's files were last found on, as recorded.
    inbox_devices: std::sync::Mutex<HashMap<String, u64>>,
    _lock: StateLock,
}

impl Pipeline {
    /// Lock the state folder, open the ledger, replay the journal, load stages.
    /// Only the core: `crate::open_pipeline` is the one way in from outside,
    /// as it also finishes interrupted archive moves and sets the verdicts.
    pub(crate) fn open(config: Config) -> Result<Pipeline, PipelineError> {
        let lock = StateLock::acquire(&config.state_dir)?;
        // Never overwrite: checked, not assumed, on each root it writes.
        for root in [&config.library_root, &config.state_dir] {
            if root.is_dir() {
                effects::fsops::probe_no_replace(root).map_err(PipelineError::Setup)?;
            }
        }
        // Stages load (mostly CPU) while the ledger opens and replays (mostly
        // waiting on the disk).
        let (opened, loaded) = std::thread::scope(|scope| {
            let loading = scope.spawn(|| {
                let started = Instant::now();
                let loaded = load_stages(&config);
                tracing::debug!(
                    load_ms = started.elapsed().as_millis() as u64,
                    "stages loaded"
                );
                loaded
            });
            let opened = open_ledger(&config);
            let loaded = loading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (opened, loaded)
        });
        let (ledger, recovery) = opened?;
        let (runtime, stages) = loaded?;
        Ok(Pipeline {
            config,
            ledger,
            runtime,
            stages,
            recovery,
            progress: None,
            verdicts: Arc::new(NoVerdicts),
            kei_cache: KeiCache::default(),
            inbox_devices: Default::default(),
            _lock: lock,
        })
    }

    /// A retried job whose inbox file is gone (a move-mode inbox empties
    /// as files are quarantined) is read from its quarantine copy, which
    /// holds the same bytes and stays where it is.
    fn read_from_quarantine(&self, job: &mut JobRecord) {
        if job.source_path.symlink_metadata().is_ok() {
            return;
        }
        let Ok(Some(copy)) = self.ledger.read(|c| ledger::quarantine_copy(c, job.id)) else {
            return;
        };
        let Ok(meta) = std::fs::symlink_metadata(&copy) else {
            return;
        };
        if meta.is_file() && meta.len() == job.size {
            use std::os::unix::fs::MetadataExt;
            job.companions_in = job.source_path.parent().map(Path::to_path_buf);
            job.source_path = copy;
            job.mtime_ns = discover::mtime_ns(&meta);
            job.inode = meta.ino();
            job.from_quarantine = true;
        }
    }

    /// Tell `progress` how far each [`Pipeline::process`] is: the number
    /// of jobs to take once discovery is done, then each batch decided.
    pub fn on_progress(&mut self, progress: impl Fn(Progress) + Send + Sync + 'static) {
        self.progress = Some(Box::new(progress));
    }

    /// Who keeps the verdicts an ingest's changes void (the rolling
    /// archive's plans); until set, none are kept.
    pub fn set_verdicts(&mut self, verdicts: Arc<dyn Verdicts>) {
        self.verdicts = verdicts;
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn ledger_arc(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    pub fn stages(&self) -> impl Iterator<Item = &LoadedStage> {
        self.stages.values()
    }

    /// The loaded stage of that name (for the phases run after an ingest).
    pub(crate) fn stage(&self, name: &str) -> Option<&LoadedStage> {
        self.stages.get(name)
    }

    /// The runtime the stages run on.
    pub(crate) fn runtime(&self) -> &StageRuntime {
        &self.runtime
    }

    fn inbox_plans(&self, paths: &[PathBuf]) -> Vec<(String, InboxPlan, Option<PathBuf>)> {
        let default_pipeline = self.config.default_pipeline();
        let configured = |name: &str| {
            self.config.inbox(name).map(|inbox| InboxPlan {
                root: inbox.path.clone(),
                mode: inbox.mode,
                pipeline: inbox.pipeline.clone(),
                ignore: inbox.ignore.clone(),
            })
        };
        if paths.is_empty() {
            return self
                .config
                .inboxes
                .iter()
                .filter_map(|inbox| {
                    configured(&inbox.name).map(|plan| (inbox.name.clone(), plan, None))
                })
                .collect();
        }
        paths
            .iter()
            .map(|path| {
                let path = crate::config::absolute(path);
                // Inside a configured inbox: that inbox, its mode and pipeline.
                for inbox in &self.config.inboxes {
                    if path.starts_with(&inbox.path)
                        && let Some(plan) = configured(&inbox.name)
                    {
                        return (inbox.name.clone(), plan, Some(path));
                    }
                }
                // Elsewhere: an ad-hoc copy-mode inbox named by its path, so
                // its fingerprints never mix with another folder's.
                let root = if path.is_dir() {
                    path.clone()
                } else {
                    path.parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from("/"))
                };
                let plan = InboxPlan {
                    root: root.clone(),
                    mode: InboxMode::Copy,
                    pipeline: default_pipeline.clone(),
                    ignore: Vec::new(),
                };
                (root.display().to_string(), plan, Some(path))
            })
            .collect()
    }

    /// Take every new file under the inboxes (or `paths`) through the
    /// pipeline once.
    pub fn ingest(&mut self, paths: &[PathBuf]) -> Result<IngestReport, PipelineError> {
        let discovery = self.discover(paths)?;
        self.process(discovery)
    }

    /// Walk the inboxes (or `paths`) and record a job for every file that is
    /// new or changed. Reads no file contents.
    pub fn discover(&self, paths: &[PathBuf]) -> Result<Discovery, PipelineError> {
        let started = Instant::now();
        let mut report = IngestReport {
            recovered: self.recovery.finished + self.recovery.requeued,
            ..IngestReport::default()
        };
        let plans = self.inbox_plans(paths);
        let mut inboxes: HashMap<String, InboxPlan> = HashMap::new();
        for (name, plan, walk_root) in &plans {
            let root = walk_root.clone().unwrap_or_else(|| plan.root.clone());
            if !plan.root.is_dir() {
                report.errors.push(format!(
                    "inbox {name}: folder {} does not exist; create it or fix `path` in the config",
                    plan.root.display()
                ));
                continue;
            }
            let walk = discover::walk(&root, &plan.ignore);
            report.ignored += walk.ignored;
            report.errors.extend(walk.errors);
            if !walk.files.is_empty() {
                self.note_inbox_device(name, &plan.root)?;
            }
            self.register(name, plan, walk.files, &mut report)?;
            inboxes.insert(name.clone(), plan.clone());
        }
        tracing::debug!(
            files = report.discovered,
            discover_ms = started.elapsed().as_millis() as u64,
            "inboxes walked and jobs registered"
        );
        Ok(Discovery {
            inboxes,
            report,
            started,
        })
    }

    /// Record the device an inbox's files are on (`inbox_dev:NAME`), once
    /// per start and when it changes: the archive's plan compares it with the
    /// folder's device now, as an unmounted disk leaves an empty mount point
    /// that looks like an inbox with nothing new. Only an inbox where files
    /// were found counts: an empty mount point never records its device.
    fn note_inbox_device(&self, name: &str, root: &Path) -> Result<(), PipelineError> {
        use std::os::unix::fs::MetadataExt;
        let Ok(dev) = std::fs::metadata(root).map(|m| m.dev()) else {
            return Ok(());
        };
        let mut known = self
            .inbox_devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.get(name) == Some(&dev) {
            return Ok(());
        }
        self.ledger.write(|tx| {
            ledger::set_service_state(tx, &ledger::inbox_device_key(name), &dev.to_string())
        })?;
        known.insert(name.to_string(), dev);
        Ok(())
    }

    /// Run every pending job (new ones and those queued again) through its
    /// pipeline and apply the results.
    pub fn process(&self, discovery: Discovery) -> Result<IngestReport, PipelineError> {
        let Discovery {
            inboxes,
            mut report,
            started,
        } = discovery;
        if let Some(progress) = &self.progress {
            let pending = self.ledger.read(ledger::pending_count)?;
            progress(Progress::Started { jobs: pending });
        }
        self.process_pending(&inboxes, &mut report)?;
        if let Some(progress) = &self.progress {
            progress(Progress::Finished);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Decide batch N+1 (hash, stages) on this thread while another applies
    /// batch N (copy, sync, rename): the disk and the CPU work at once.
    fn process_pending(
        &self,
        inboxes: &HashMap<String, InboxPlan>,
        report: &mut IngestReport,
    ) -> Result<(), PipelineError> {
        // Copies an earlier run left (it stopped on an error before its
        // applier took them) are scratch: no batch is in flight now.
        let _ = effects::fsops::clear_staging(&self.config.state_dir.join("staging"));
        let services = Arc::new(IngestServices {
            ledger: Arc::clone(&self.ledger),
            reserved: Mutex::new(HashMap::new()),
            reserved_paths: Mutex::new(HashSet::new()),
            stills: Mutex::new(Default::default()),
            kv_meter: Default::default(),
            kei: self.kei_files(),
        });
        let applied = std::thread::scope(|scope| -> Result<Vec<(u64, Applied)>, PipelineError> {
            let (to_apply, batches) = std::sync::mpsc::sync_channel::<Batch>(1);
            let ledger = Arc::clone(&self.ledger);
            let applier_services = Arc::clone(&services);
            let applier = scope.spawn(move || -> Result<Vec<(u64, Applied)>, PipelineError> {
                let mut all = Vec::new();
                for (plans, staged) in batches {
                    let written: Vec<(u64, Vec<PathBuf>)> = plans
                        .iter()
                        .map(|p| (p.job_id, p.writes.iter().map(|w| w.dest.clone()).collect()))
                        .collect();
                    let started = Instant::now();
                    let files = plans.len();
                    // Copies no write takes (duplicates, quarantines) go
                    // before the batch's sync, which would write them out.
                    let taken: HashSet<&PathBuf> = plans
                        .iter()
                        .flat_map(|p| p.writes.iter().filter_map(|w| w.staged.as_ref()))
                        .collect();
                    for path in staged.iter().filter(|path| !taken.contains(path)) {
                        let _ = effects::fsops::remove_temp(path);
                    }
                    drop(taken);
                    let results = effects::apply(&ledger, plans);
                    tracing::debug!(
                        files,
                        apply_ms = started.elapsed().as_millis() as u64,
                        "applied a batch"
                    );
                    // Staged copies that did not become library files
                    // (duplicates, quarantines, failures) are scratch.
                    for path in &staged {
                        let _ = effects::fsops::remove_temp(path);
                    }
                    let results = results?;
                    // Committed (or failed): the ledger and the disk now
                    // answer for these names and hashes.
                    applier_services.release(&written);
                    all.extend(results);
                }
                Ok(all)
            });
            let decided = self.decide_batches(inboxes, report, &services, &to_apply);
            drop(to_apply);
            let applied = applier
                .join()
                .map_err(|_| PipelineError::Setup("the thread applying effects panicked".into()))?;
            decided?;
            applied
        });
        // Each batch counted its change as it committed. Batches may have
        // committed before an error, and which years they touched is not
        // known here: every verdict goes.
        if applied.is_err() {
            self.verdicts.changed();
            let pending = self.ledger.read(ledger::unvoided_jobs);
            if self.verdicts.void(None, "an ingest stopped on an error")
                && let Ok(pending) = pending
            {
                self.verdicts.settled(&pending);
            }
        }
        let applied = applied?;
        effects::pause_point("ingest-committed");
        self.void_verdicts(applied.iter().map(|(id, _)| *id), &services.kei);
        for (job_id, applied) in applied {
            report.processed += 1;
            match applied {
                Applied::Finished(JobState::Done) => report.placed += 1,
                Applied::Finished(JobState::Duplicate) => report.duplicates += 1,
                Applied::Finished(JobState::Quarantined) => report.quarantined += 1,
                Applied::Finished(JobState::Skipped) => report.skipped += 1,
                Applied::Finished(JobState::Deferred) => report.deferred += 1,
                Applied::Finished(JobState::Pending) => {}
                Applied::Finished(JobState::Failed) | Applied::Failed(_) => {
                    report.failed += 1;
                    if let Ok(Some(job)) = self.ledger.read(|c| ledger::job(c, job_id)) {
                        report.errors.push(format!(
                            "job {job_id} ({}): {}",
                            job.source_path.display(),
                            job.last_error.unwrap_or_default()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// kei's albums and favourites of the files it downloaded, when its
    /// state is configured: read again only when kei changed it (an
    /// unreadable one is logged and changes nothing).
    pub(crate) fn kei_files(&self) -> Arc<KeiFiles> {
        self.kei_cache
            .files(self.config.archive.kei_state.as_deref())
    }

    /// Jobs changed: the verdicts of their years (of every year, for a
    /// job without a date, or when the ledger cannot say) stand no more.
    /// A job's years are those the verdicts give it (for the archive's
    /// plan: its folder, its capture time in every zone) and kei's
    /// creation time of its file.
    pub(crate) fn void_verdicts(&self, jobs: impl Iterator<Item = u64>, kei: &KeiFiles) {
        let jobs: Vec<u64> = jobs.collect();
        if jobs.is_empty() {
            return;
        }
        // A verdict being made meanwhile must not be written: it may have
        // read the year before this change. (A committed batch counted
        // itself; a rewritten sidecar is counted here.)
        self.verdicts.changed();
        if self.void_years_of(&jobs, kei) {
            self.verdicts.settled(&jobs);
        }
    }

    /// The voiding of [`Self::void_verdicts`]; whether it is complete.
    fn void_years_of(&self, jobs: &[u64], kei: &KeiFiles) -> bool {
        if !self.verdicts.any() {
            return true;
        }
        let mut years = std::collections::BTreeSet::new();
        for id in jobs {
            let job = match self.ledger.read(|c| ledger::job(c, *id)) {
                Ok(Some(job)) => job,
                Ok(None) => {
                    return self
                        .verdicts
                        .void(None, &format!("the ledger has no job {id}"));
                }
                Err(e) => {
                    return self.verdicts.void(
                        None,
                        &format!("the ledger could not say which years job {id} is of ({e})"),
                    );
                }
            };
            match self.verdicts.years_of_job(&job) {
                Some(of_job) => years.extend(of_job),
                None => return self.verdicts.void(None, "a photo without a date was taken"),
            }
            if let Some(info) = kei.get(&job.source_path) {
                years.extend(crate::kei::years_of(info.created_at));
            }
        }
        years.is_empty()
            || self
                .verdicts
                .void(Some(&years), "new photos of the year were taken")
    }

    /// Read and decide every pending job, batch by batch, handing each
    /// batch's plans to the applier.
    fn decide_batches(
        &self,
        inboxes: &HashMap<String, InboxPlan>,
        report: &mut IngestReport,
        services: &Arc<IngestServices>,
        to_apply: &std::sync::mpsc::SyncSender<Batch>,
    ) -> Result<(), PipelineError> {
        let default_inbox = InboxPlan {
            root: PathBuf::from("/"),
            mode: InboxMode::Copy,
            pipeline: self.config.default_pipeline(),
            ignore: Vec::new(),
        };
        let stage_services: Arc<dyn Services> = Arc::clone(services) as Arc<dyn Services>;
        let deciding = Deciding {
            inboxes,
            default_inbox: &default_inbox,
            services,
            stage_services: &stage_services,
        };
        let mut after = 0u64;
        // Files are copied while hashed only where the copy can then be
        // renamed into the library: a state folder on another disk would
        // cost every file a second copy.
        let staging = Some(self.config.state_dir.join("staging"))
            .filter(|_| same_filesystem(&self.config.state_dir, &self.config.library_root));
        // The first batches are small so the applier starts copying early;
        // then they double up to the full size, which amortizes each sync.
        let mut batch_files = FIRST_BATCH_FILES;
        loop {
            // Stopping: the jobs not yet read stay pending for the next start.
            if crate::shutdown::requested() {
                return Ok(());
            }
            let jobs = self
                .ledger
                .read(|conn| ledger::pending_jobs(conn, after, batch_files))?;
            batch_files = (batch_files * 2).min(BATCH_FILES);
            if jobs.is_empty() {
                return Ok(());
            }
            // Cut the batch by bytes too, so one sync covers a bounded amount.
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            for mut job in jobs {
                self.read_from_quarantine(&mut job);
                bytes += job.size;
                after = job.id;
                batch.push(job);
                if bytes >= BATCH_BYTES {
                    break;
                }
            }
            let started = Instant::now();
            let read = read::read_all(&batch, staging.as_deref());
            let read_ms = started.elapsed().as_millis() as u64;
            let staged: Vec<PathBuf> = read
                .iter()
                .filter_map(|r| r.as_ref().ok().and_then(|r| r.staged.clone()))
                .collect();
            if crate::shutdown::requested() {
                for path in &staged {
                    let _ = effects::fsops::remove_temp(path);
                }
                return Ok(());
            }
            for read in read.iter().flatten() {
                report.bytes_hashed += read.hashes.size;
            }
            let (plans, steps) = self.decide_and_plan(&deciding, &batch, read, report);
            self.record_steps(&steps)?;
            if let Some(progress) = &self.progress {
                progress(Progress::Decided(plans.len() as u64));
            }
            tracing::debug!(
                files = plans.len(),
                read_ms,
                decide_ms = started.elapsed().as_millis() as u64 - read_ms,
                "decided a batch"
            );
            if to_apply.send((plans, staged)).is_err() {
                // The applier stopped on an error; it reports it.
                return Ok(());
            }
        }
    }

    /// Decide a batch's jobs and plan each, in the batch's order; returns
    /// the plans and the steps to record.
    fn decide_and_plan(
        &self,
        deciding: &Deciding<'_>,
        batch: &[JobRecord],
        read: Vec<Result<read::ReadFile, read::ReadError>>,
        report: &mut IngestReport,
    ) -> (Vec<effects::JobPlan>, Vec<StepRow>) {
        let Deciding {
            inboxes,
            default_inbox,
            services,
            stage_services,
        } = *deciding;
        // Stage calls of different jobs are independent: they run on
        // every core. A file whose bytes appeared earlier in the batch is
        // decided after the earlier one is planned, so its stages see it
        // (dedup says "duplicate of"). Plans are made in order: names and
        // Live Photo pairs depend on it.
        let mut seen_hashes = HashSet::new();
        let (firsts, repeats): (Vec<_>, Vec<_>) =
            batch.iter().zip(read).partition(|(_, read)| match read {
                Ok(read) => seen_hashes.insert(read.hashes.blake3.clone()),
                Err(_) => true,
            });
        let decide_one = |job: &JobRecord, read: Result<read::ReadFile, read::ReadError>| {
            let inbox = inboxes.get(&job.inbox).unwrap_or(default_inbox);
            decide::decide(
                &self.runtime,
                &self.stages,
                &inbox.pipeline,
                job,
                read,
                stage_services,
            )
        };
        let first_jobs: Vec<&JobRecord> = firsts.iter().map(|(job, _)| *job).collect();
        let decided_firsts = crate::par::map_owned(firsts, |(job, read)| decide_one(job, read));
        let mut plans = Vec::with_capacity(batch.len());
        let mut steps = Vec::with_capacity(batch.len());
        let mut plan_one = |job: &JobRecord, decided: decide::Decided| {
            let inbox = inboxes.get(&job.inbox).unwrap_or(default_inbox);
            for call in &decided.calls {
                report.stage_calls += 1;
                report.stage_micros += call.micros;
                report.stage_bytes_read += call.bytes_read;
            }
            steps.push((
                job.id,
                job.attempts + 1,
                decided.calls.clone(),
                decided.hashes.clone(),
            ));
            plans.push(plan::plan(
                &self.config,
                &self.ledger,
                job,
                decided,
                inbox.mode == InboxMode::Move && !job.from_quarantine,
                services,
            ));
        };
        for (job, decided) in first_jobs.into_iter().zip(decided_firsts) {
            plan_one(job, decided);
        }
        for (job, read) in repeats {
            let decided = decide_one(job, read);
            plan_one(job, decided);
        }
        (plans, steps)
    }

    /// Record a batch's hashes and stage calls in the ledger, in one
    /// transaction.
    fn record_steps(&self, steps: &[StepRow]) -> Result<(), PipelineError> {
        self.ledger.write(|tx| {
            for (job_id, attempt, calls, hashes) in steps {
                if let Some((blake3, sha1, kind)) = hashes {
                    ledger::set_hashes(tx, *job_id, blake3, sha1, kind)?;
                }
                for call in calls {
                    ledger::record_step(
                        tx,
                        &ledger::Step {
                            job_id: *job_id,
                            attempt: *attempt,
                            stage: &call.stage,
                            effects_json: &call.effects_json,
                            error: call.error.as_deref(),
                            micros: call.micros,
                            bytes_read: call.bytes_read,
                        },
                    )?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// What deciding a batch's jobs reads besides the jobs.
#[derive(Clone, Copy)]
struct Deciding<'a> {
    inboxes: &'a HashMap<String, InboxPlan>,
    default_inbox: &'a InboxPlan,
    services: &'a Arc<IngestServices>,
    stage_services: &'a Arc<dyn Services>,
}

/// A job's decided attempt, for the ledger: (job id, attempt, its stage
/// calls, its hashes when the file was read).
type StepRow = (
    u64,
    u32,
    Vec<decide::StepCall>,
    Option<(String, String, String)>,
);

fn relative_to(root: &Path, path: &Path) -> Option<Vec<u8>> {
    path.strip_prefix(root)
        .ok()
        .map(|rel| rel.as_os_str().as_bytes().to_vec())
        .filter(|rel| !rel.is_empty())
}

fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

/// Open the ledger and bring it and the folders back to a clean state:
/// unfinished effects are completed or rolled back, and staging scratch is
/// cleared. (The library jobs' own journals, such as the archive's moves,
/// are their callers' to replay, after this.)
fn open_ledger(config: &Config) -> Result<(Arc<Ledger>, Recovery), PipelineError> {
    let ledger = Arc::new(Ledger::open(&config.ledger_path())?);
    let recovery = effects::recover(&ledger)?;
    // Staging copies are never journaled: whatever a crash left is scratch.
    let _ = effects::fsops::clear_staging(&config.state_dir.join("staging"));
    if recovery.finished + recovery.requeued > 0 {
        tracing::info!(
            finished = recovery.finished,
            requeued = recovery.requeued,
            temps_removed = recovery.temps_removed,
            "replayed the journal after an unclean stop"
        );
    }
    Ok((ledger, recovery))
}

/// Compile or load from the cache every stage the config names.
pub fn load_stages(
    config: &Config,
) -> Result<(StageRuntime, BTreeMap<String, LoadedStage>), PipelineError> {
    let max_memory = config
        .stages
        .values()
        .map(|s| s.memory_bytes)
        .max()
        .unwrap_or(256 << 20);
    let runtime = StageRuntime::new(Some(config.cache_dir()), max_memory)?;
    // Each load reads (or compiles) a component and calls its `describe`: in
    // parallel, as start-up time is mostly this.
    let loaded: Vec<Result<LoadedStage, PipelineError>> = std::thread::scope(|scope| {
        let runtime = &runtime;
        let loads: Vec<_> = config
            .stages
            .iter()
            .map(|(name, stage)| scope.spawn(move || load_stage(runtime, name, stage)))
            .collect();
        loads
            .into_iter()
            .map(|load| {
                load.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut stages = BTreeMap::new();
    for stage in loaded {
        let stage = stage?;
        stages.insert(stage.name.clone(), stage);
    }
    Ok((runtime, stages))
}

fn load_stage(
    runtime: &StageRuntime,
    name: &str,
    stage: &crate::config::StageConfig,
) -> Result<LoadedStage, PipelineError> {
    let (bytes, origin): (std::borrow::Cow<'static, [u8]>, String) = match &stage.source {
        StageSource::Builtin => match crate::builtin::wasm(name) {
            Some(bytes) => (bytes.into(), format!("built-in `{name}`")),
            None => {
                return Err(PipelineError::Setup(format!(
                    "no built-in stage named `{name}`"
                )));
            }
        },
        StageSource::File(path) => match std::fs::read(path) {
            Ok(bytes) => (bytes.into(), path.display().to_string()),
            Err(source) => {
                return Err(LoadError::Read {
                    stage: name.to_string(),
                    path: path.clone(),
                    source,
                }
                .into());
            }
        },
    };
    let grant = stage.http_grant().map_err(PipelineError::Setup)?;
    Ok(runtime.load(
        name,
        &origin,
        &bytes,
        crate::host::StageSetup {
            timeout: stage.timeout,
            memory_bytes: stage.memory_bytes,
            kv_quota: stage.kv_quota,
            options: stage.options.clone(),
            grant,
        },
    )?)
}

/// A lossy, display-friendly form of a raw relative path.
pub fn display_rel(rel: &[u8]) -> String {
    OsStr::from_bytes(rel).to_string_lossy().into_owned()
}
