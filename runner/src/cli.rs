//! The command line: `init`, `ingest`, `status`, `jobs`, `retry`, `plugins`,
//! `ledger`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG};
use crate::ledger::{self, JobState, Ledger};
use crate::pipeline::{Pipeline, load_stages};
use crate::report;

/// keepsake brings every new photo and video into one library that lasts:
/// sandboxed WebAssembly stages, a journaled ledger, nothing ever lost.
#[derive(Debug, Parser)]
#[command(name = "keepsake", version, about, long_about = None)]
pub struct Cli {
    /// Config file. Default: $KEEPSAKE_CONFIG, else ./keepsake.toml when it
    /// exists, else the built-in default (./inbox → ./library).
    #[arg(long, short, global = true, env = "KEEPSAKE_CONFIG")]
    pub config: Option<PathBuf>,

    /// More log output (-v info, -vv debug).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the commented default config to a file.
    Init {
        /// Where to write it.
        #[arg(default_value = "keepsake.toml")]
        path: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Watch every inbox and take each new file once it is stable, until
    /// Ctrl-C or SIGTERM. The main job: run it as a service (examples/
    /// has a systemd unit and a docker-compose file).
    Run,
    /// Take every new file under the inboxes (or the given paths) through
    /// the pipeline once, then exit. Exit code 1 when any job failed.
    Ingest {
        /// Files or folders to take instead of the configured inboxes. A path
        /// outside every inbox is taken in copy mode with the first inbox's
        /// pipeline.
        paths: Vec<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Jobs per state, the library, and the most recent failures.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    Jobs {
        /// Only failed jobs.
        #[arg(long, conflicts_with = "state")]
        failed: bool,
        /// Only jobs in this state (pending, done, duplicate, quarantined, skipped, failed, deferred).
        #[arg(long)]
        state: Option<String>,
        /// One JSON object per line (a stable format for other tools).
        #[arg(long)]
        json: bool,
    },
    /// Put a job (or every failed and deferred job) back in the queue now;
    /// a running `keepsake run` takes it within seconds, or the next ingest.
    Retry {
        /// The job id.
        #[arg(required_unless_present = "failed")]
        job: Option<u64>,
        /// Every failed and deferred job.
        #[arg(long, conflicts_with = "job")]
        failed: bool,
    },
    /// Stages and plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// The ledger itself.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Rehash every file the ledger holds (library and archive) and report
    /// bit rot, missing and unexpected files. Exit 1 when one is found.
    Verify {
        /// Only files captured in this year.
        #[arg(long)]
        year: Option<i32>,
        /// Only this root: library or archive.
        #[arg(long, value_parser = ["library", "archive"])]
        root: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Archival by year and the rolling iCloud archive.
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Offsite copies: what is pushed where, push now, verify.
    Offsite {
        #[command(subcommand)]
        command: OffsiteCommand,
    },
    /// Immich: the connection, and what the `immich` stage uploaded and
    /// albumed.
    Immich {
        #[command(subcommand)]
        command: ImmichCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImmichCommand {
    /// The server's version (with the API key checked), and the stage's
    /// files: uploaded, albumed, pending, waiting (with why), failed.
    /// Exit 1 when the server cannot be reached or refuses the key.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Send what is waiting to Immich now (pending and waiting files,
    /// whatever their next try), then exit. `keepsake run` does this on its
    /// own. Exit 1 when something is still waiting or failed.
    Sync {
        #[arg(long)]
        json: bool,
        /// Immich was rebuilt or replaced: forget what keepsake knew it
        /// held and send every file again. Albums and favorites come back
        /// from the sidecars (`keepsake immich pull` wrote them there).
        #[arg(long)]
        all: bool,
    },
    /// Write what the family did in Immich into the sidecars now: albums,
    /// favorites, descriptions, ratings, edited dates and places. `keepsake
    /// run` does this every `[immich] pull_minutes`. Exit 1 on errors.
    Pull {
        #[arg(long)]
        json: bool,
        /// Only what Immich reports changed since the last pull (albums and
        /// favorites; Immich 2.4.1 reports no change for an edited
        /// description, rating, date or place, which a full pull finds).
        #[arg(long)]
        changes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OffsiteCommand {
    /// Per target: pushed, pending, deferred (with why), conflicts, bytes,
    /// and the last successful push.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Push what is waiting now (pending and deferred pushes, whatever their
    /// next try), then exit. `keepsake run` does this on its own. Exit 1 when something
    /// could not be pushed.
    Push {
        #[arg(long)]
        json: bool,
    },
    /// Compare what the ledger says was pushed with what each target holds:
    /// size and ETag, or with --deep the content itself. Exit 1 when an
    /// object is missing or damaged.
    Verify {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Download every object and compare its BLAKE3.
        #[arg(long)]
        deep: bool,
        /// Check only this many objects, spread over all of them.
        #[arg(long)]
        sample: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Copy a target's objects back into a folder (after a disk died or the
    /// house burned): decrypts `.age` objects with --identity, checks each
    /// file against the ledger when there is one, never replaces a file.
    Restore {
        /// The target to restore from (may be left out when there is one).
        #[arg(long)]
        target: Option<String>,
        /// The folder to restore into (created when missing).
        #[arg(long)]
        to: std::path::PathBuf,
        /// The age identity file for an encrypted target.
        #[arg(long)]
        identity: Option<std::path::PathBuf>,
        /// Only keys that start with this (like `2019/`).
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make a new age key for an encrypted target: writes the secret
    /// identity to FILE (keep it off this machine, and keep a copy) and
    /// prints the public recipient for `age_recipients`.
    Keygen {
        /// Where to write the identity (never replaced).
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Prove (or not) that a year is safe to delete from iCloud: every file
    /// of the iCloud inboxes that could be of that year (and every item of
    /// an inventory) is in the library or archive, its bytes and sidecars
    /// verify, and every offsite target that is a real copy holds it,
    /// checked by content where the target gives a hash. Writes the plan as
    /// JSON and, when safe, the list of iCloud names, both dated. Exit 1
    /// when not safe.
    Plan {
        /// The year.
        #[arg(long, required_unless_present = "older_than_years")]
        year: Option<i32>,
        /// The rolling policy: every year older than N years.
        #[arg(long, conflicts_with = "year")]
        older_than_years: Option<u32>,
        /// Download every offsite copy and rehash it.
        #[arg(long)]
        deep: bool,
        /// A list of iCloud's items, one file name and creation time per
        /// line (`IMG_0001.HEIC<TAB>2019-05-01T10:00:00Z`): each must be kept.
        #[arg(long, value_name = "FILE")]
        inventory: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Move a year's files and sidecars from the library root to the
    /// archive root, journaled (stop `keepsake run` first).
    Run {
        #[arg(long)]
        year: i32,
        /// Show what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recreate the asset table from the files in the library (after losing
    /// or restoring the ledger): hashes every library file, records the new
    /// ones, drops rows whose file is gone.
    Rebuild {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every stage the config names: where it comes from, its version and options.
    List,
}

/// Log level from `-v`; the service logs what it takes by default.
pub fn init_logging_for(cli: &Cli) {
    let service = matches!(cli.command, Command::Run);
    init_logging(cli.verbose + u8::from(service));
}

pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Load the config the user meant (see [`Cli::config`]).
pub fn load_config(explicit: Option<&Path>) -> anyhow::Result<(Config, bool)> {
    if let Some(path) = explicit {
        return Ok((Config::load(path)?, false));
    }
    let local = Path::new("keepsake.toml");
    if local.is_file() {
        return Ok((Config::load(local)?, false));
    }
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    Ok((Config::default_in(&cwd)?, true))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init { path, force } => {
            if path.exists() && !force {
                bail!("{} exists; pass --force to replace it", path.display());
            }
            std::fs::write(&path, DEFAULT_CONFIG)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "wrote {}; edit it, then run `keepsake ingest`",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let (config, is_default) = load_config(cli.config.as_deref())?;
            check_inboxes(&config, is_default)?;
            crate::service::run(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { paths, json } => {
            let (config, is_default) = load_config(cli.config.as_deref())?;
            if is_default && paths.is_empty() {
                // The built-in default makes its own folders on a fresh machine.
                for inbox in &config.inboxes {
                    std::fs::create_dir_all(&inbox.path)
                        .with_context(|| format!("cannot create {}", inbox.path.display()))?;
                }
            }
            for path in &paths {
                if path.symlink_metadata().is_err() {
                    bail!("{} does not exist", path.display());
                }
            }
            let mut pipeline = Pipeline::open(config.clone())?;
            if std::io::stderr().is_terminal() {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} files  {per_sec}  eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                pipeline.show_progress(bar);
            }
            let mut result = pipeline.ingest(&paths)?;
            if !pipeline.placed_stages().is_empty() {
                result.after_placed = Some(pipeline.run_placed()?);
            }
            if !config.offsite.is_empty() {
                let ledger = pipeline.ledger_arc();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                result.offsite =
                    Some(runtime.block_on(crate::offsite::push_due(ledger, &config, false)));
            }
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&result)?)?;
            } else {
                report::print_ingest(&mut out, &config, &result)?;
            }
            Ok(if result.failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Status { json } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let ledger = open_existing(&config)?;
            let mut out = std::io::stdout().lock();
            report::print_status(&mut out, &config, &ledger, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs {
            failed,
            state,
            json,
        } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let ledger = open_existing(&config)?;
            let state = match (failed, state) {
                (true, _) => Some(JobState::Failed),
                (false, Some(text)) => Some(JobState::parse(&text).with_context(|| {
                    format!("unknown state {text:?}; one of pending, done, duplicate, quarantined, skipped, failed, deferred")
                })?),
                (false, None) => None,
            };
            let jobs = ledger.read(|c| ledger::jobs_in_state(c, state))?;
            let mut out = std::io::stdout().lock();
            report::print_jobs(&mut out, &config, &jobs, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { job, failed } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let ledger = open_existing(&config)?;
            let target = if failed { None } else { job };
            let n = ledger.write(|tx| ledger::retry(tx, target))?;
            match (target, n) {
                (Some(id), 0) => {
                    bail!("job {id} is not failed, quarantined or skipped (see `keepsake jobs`)")
                }
                _ => println!(
                    "{n} job(s) queued again; a running `keepsake run` takes them within seconds, or `keepsake ingest`"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            command: LedgerCommand::Rebuild { json },
        } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let _lock = ledger::StateLock::acquire(&config.state_dir)?;
            let ledger = std::sync::Arc::new(Ledger::open(&config.ledger_path())?);
            let result = crate::rebuild::rebuild(&config, &ledger)?;
            let mut out = std::io::stdout().lock();
            report::print_rebuild(&mut out, &config, &result, json)?;
            Ok(if result.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Verify { year, root, json } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let ledger = open_existing(&config)?;
            recover_archive_moves(&config, &ledger)?;
            let root = root.as_deref().and_then(crate::archive::Root::parse);
            let result = crate::archive::verify(&config, &ledger, year, root)?;
            if !(result.missing.is_empty() && result.damaged.is_empty()) {
                let years = year.map(|y| std::collections::BTreeSet::from([y]));
                crate::archive::void(
                    &config,
                    years.as_ref(),
                    "a library or archive file does not verify",
                );
            }
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&result)?)?;
            } else {
                report::print_library_verify(&mut out, &result)?;
            }
            let bad = !(result.missing.is_empty()
                && result.damaged.is_empty()
                && result.unexpected.is_empty()
                && result.errors.is_empty());
            Ok(if bad {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Archive {
            command:
                ArchiveCommand::Plan {
                    year,
                    older_than_years,
                    deep,
                    inventory,
                    json,
                },
        } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let ledger = std::sync::Arc::new(open_existing(&config)?);
            recover_archive_moves(&config, &ledger)?;
            let years = match (year, older_than_years) {
                (Some(year), _) => vec![year],
                (None, Some(keep)) => crate::archive::years_older_than(&ledger, keep)?,
                (None, None) => bail!("name a year (--year 2019) or --older-than-years N"),
            };
            let mut out = std::io::stdout().lock();
            if years.is_empty() {
                writeln!(out, "no year older than that holds anything")?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut all_safe = true;
            let options = crate::archive::PlanOptions { deep, inventory };
            crate::archive::void_stale(&config);
            for year in years {
                let plan = crate::archive::plan(&config, &ledger, year, &options)?;
                all_safe &= plan.safe;
                if json {
                    writeln!(out, "{}", serde_json::to_string(&plan)?)?;
                } else {
                    report::print_plan(&mut out, &plan)?;
                }
            }
            Ok(if all_safe {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Archive {
            command:
                ArchiveCommand::Run {
                    year,
                    dry_run,
                    json,
                },
        } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let _lock = ledger::StateLock::acquire(&config.state_dir)?;
            let ledger = std::sync::Arc::new(open_existing(&config)?);
            let _turn = crate::archive::turn();
            let result = crate::archive::run(&config, &ledger, year, dry_run)?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&result)?)?;
            } else {
                report::print_archive_run(&mut out, &result)?;
            }
            Ok(if result.errors.is_empty() && result.stopped.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Offsite {
            command: OffsiteCommand::Keygen { file },
        } => {
            let recipient = crate::offsite::seal::keygen(&file)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "wrote the secret identity to {}: keep it off this machine, and keep a copy\npublic key (put it in age_recipients):\n{recipient}",
                file.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Offsite {
            command:
                OffsiteCommand::Restore {
                    target,
                    to,
                    identity,
                    prefix,
                    json,
                },
        } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let target = match target {
                Some(name) if config.offsite.contains_key(&name) => name,
                Some(name) => bail!("no offsite target {name:?} in {}", config.origin),
                None if config.offsite.len() == 1 => {
                    config.offsite.keys().next().cloned().unwrap_or_default()
                }
                None => bail!(
                    "config {} has {} offsite targets: name one with --target",
                    config.origin,
                    config.offsite.len()
                ),
            };
            // After a loss there may be no ledger: restore works without.
            let ledger = open_existing(&config).ok().map(std::sync::Arc::new);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let restored = runtime.block_on(crate::offsite::restore(
                &config,
                ledger,
                &target,
                &to,
                identity.as_deref(),
                prefix.as_deref(),
            ));
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&restored)?)?;
            } else {
                report::print_restore(&mut out, &target, &to, &restored)?;
            }
            Ok(if restored.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Immich { command } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let Some(immich) = config.immich.clone() else {
                bail!(
                    "config {}: no [immich] table; add one with url and api_key_file (see the README)",
                    config.origin
                );
            };
            let mut out = std::io::stdout().lock();
            match command {
                ImmichCommand::Status { json } => {
                    let ledger = open_existing(&config).ok();
                    let status = crate::immich::status(&config, &immich, ledger.as_ref());
                    if json {
                        writeln!(out, "{}", serde_json::to_string(&status)?)?;
                    } else {
                        report::print_immich_status(&mut out, &status)?;
                    }
                    Ok(if status.connection_error.is_some() {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                ImmichCommand::Pull { json, changes } => {
                    let pipeline = Pipeline::open(config.clone())?;
                    let swept = pipeline.sweep(!changes)?;
                    if json {
                        writeln!(out, "{}", serde_json::to_string(&swept)?)?;
                    } else {
                        writeln!(
                            out,
                            "immich: read {} albums and {} assets ({}), {} changed, {} sidecars written ({} requests)",
                            swept.albums_read,
                            swept.assets_read,
                            if swept.full { "all" } else { "changes only" },
                            swept.changed,
                            swept.sidecars_written,
                            swept.requests
                        )?;
                        for error in &swept.errors {
                            writeln!(out, "  ! {error}")?;
                        }
                    }
                    Ok(if swept.errors.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                }
                ImmichCommand::Sync { json, all } => {
                    let pipeline = Pipeline::open(config.clone())?;
                    let forgotten = if all {
                        Some(crate::immich::forget(pipeline.ledger())?)
                    } else {
                        None
                    };
                    if let Some(forgotten) = forgotten
                        && !json
                    {
                        writeln!(
                            out,
                            "immich: forgot what Immich held for {forgotten} files; sending them again"
                        )?;
                    }
                    // Whatever its next try: the person asked for now.
                    pipeline.ledger().write(|tx| {
                        tx.execute(
                            "UPDATE placed_calls SET state = 'pending', wake_at = NULL, attempts = 0 \
                             WHERE stage = 'immich' AND state IN ('deferred', 'failed')",
                            [],
                        )
                    })?;
                    let after = pipeline.run_placed()?;
                    let counts = crate::immich::counts(pipeline.ledger())?;
                    if json {
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({ "ran": after, "counts": counts, "forgotten": forgotten })
                        )?;
                    } else {
                        writeln!(
                            out,
                            "immich: {} sent, {} waiting, {} failed ({} requests)",
                            after.done, after.deferred, after.failed, after.requests
                        )?;
                        for (stage, why) in &after.waiting {
                            writeln!(out, "  ! {stage} is held back: {why}")?;
                        }
                    }
                    Ok(
                        if counts.deferred + counts.failed + counts.pending > 0
                            || !after.waiting.is_empty()
                        {
                            ExitCode::from(1)
                        } else {
                            ExitCode::SUCCESS
                        },
                    )
                }
            }
        }
        Command::Offsite { command } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            if config.offsite.is_empty() {
                bail!(
                    "config {}: no offsite target; add an [offsite.NAME] table (see the README)",
                    config.origin
                );
            }
            let ledger = std::sync::Arc::new(open_existing(&config)?);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut out = std::io::stdout().lock();
            match command {
                OffsiteCommand::Status { json } => {
                    report::print_offsite_status(&mut out, &config, &ledger, json)?;
                    Ok(ExitCode::SUCCESS)
                }
                OffsiteCommand::Push { json } => {
                    let pushed = runtime.block_on(crate::offsite::push_due(ledger, &config, true));
                    if json {
                        writeln!(out, "{}", serde_json::to_string(&pushed)?)?;
                    } else {
                        report::print_push(&mut out, &pushed)?;
                    }
                    Ok(if pushed.deferred + pushed.conflicts > 0 {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                OffsiteCommand::Verify {
                    target,
                    deep,
                    sample,
                    json,
                } => {
                    if let Some(name) = &target
                        && !config.offsite.contains_key(name)
                    {
                        bail!("no offsite target {name:?} in {}", config.origin);
                    }
                    let verified = runtime.block_on(crate::offsite::verify(
                        ledger, &config, target, deep, sample,
                    ));
                    if json {
                        writeln!(out, "{}", serde_json::to_string(&verified)?)?;
                    } else {
                        report::print_verify(&mut out, &verified, deep)?;
                    }
                    let bad = !verified.missing.is_empty()
                        || !verified.damaged.is_empty()
                        || !verified.errors.is_empty();
                    if !(verified.missing.is_empty() && verified.damaged.is_empty()) {
                        crate::archive::void(&config, None, "an offsite copy does not verify");
                    }
                    Ok(if bad {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                OffsiteCommand::Restore { .. } | OffsiteCommand::Keygen { .. } => {
                    bail!("offsite restore and keygen are handled before the ledger opens")
                }
            }
        }
        Command::Plugins {
            command: PluginsCommand::List,
        } => {
            let (config, _) = load_config(cli.config.as_deref())?;
            let (_, stages) = load_stages(&config)?;
            let mut out = std::io::stdout().lock();
            report::print_plugins(&mut out, &config, stages.values())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Every inbox folder exists (the built-in default creates its own, and
/// the library), or the service refuses to start, naming the key.
fn check_inboxes(config: &Config, is_default: bool) -> anyhow::Result<()> {
    if is_default {
        for dir in config
            .inboxes
            .iter()
            .map(|i| &i.path)
            .chain([&config.library_root])
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    if config.inboxes.is_empty() {
        bail!(
            "config {}: no [[inbox]] to watch; add one (see `keepsake init`)",
            config.origin
        );
    }
    for (i, inbox) in config.inboxes.iter().enumerate() {
        if !inbox.path.is_dir() {
            bail!(
                "config {}: `inbox[{i}].path`: the folder {} of inbox {:?} does not exist; create it or fix the path",
                config.origin,
                inbox.path.display(),
                inbox.name
            );
        }
    }
    Ok(())
}

/// Finish archive moves a crash interrupted, unless another keepsake (the
/// service) holds the state folder: it does that itself when it starts.
fn recover_archive_moves(config: &Config, ledger: &Ledger) -> anyhow::Result<()> {
    if let Ok(_lock) = ledger::StateLock::acquire(&config.state_dir) {
        crate::archive::recover(config, ledger)?;
    }
    Ok(())
}

fn open_existing(config: &Config) -> anyhow::Result<Ledger> {
    let path = config.ledger_path();
    if !path.exists() {
        bail!(
            "no ledger at {} yet; `keepsake ingest` creates it (config: {})",
            path.display(),
            config.origin
        );
    }
    Ok(Ledger::open(&path)?)
}
