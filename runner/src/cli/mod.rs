//! The command line: the arguments (clap), one function per command in
//! one module per group, and the exit codes, decided here and only here.

mod archive;
mod immich;
mod ingest;
mod ledger_cmd;
mod offsite;
mod queue;
mod service;
mod setup;
mod verify;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::ledger::{self, Ledger};

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

/// How a command ended, when it did not fail outright (that is exit 2,
/// from `main`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exit 0.
    Done,
    /// Exit 1: it ran, and found or left something the person must see
    /// (a failed job, a year not safe, a copy that does not verify).
    Problems,
}

impl Outcome {
    /// Done when `ok`, else Problems.
    pub(crate) fn ok_if(ok: bool) -> Outcome {
        if ok { Outcome::Done } else { Outcome::Problems }
    }
}

/// Run one command: each arm is one call.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_deref();
    let outcome = match cli.command {
        Command::Init { path, force } => setup::init(&path, force)?,
        Command::Run => service::run(config)?,
        Command::Ingest { paths, json } => ingest::ingest(config, &paths, json)?,
        Command::Status { json } => queue::status(config, json)?,
        Command::Jobs {
            failed,
            state,
            json,
        } => queue::jobs(config, failed, state.as_deref(), json)?,
        Command::Retry { job, failed } => queue::retry(config, job, failed)?,
        Command::Ledger {
            command: LedgerCommand::Rebuild { json },
        } => ledger_cmd::rebuild(config, json)?,
        Command::Verify { year, root, json } => {
            verify::verify(config, year, root.as_deref(), json)?
        }
        Command::Archive { command } => archive::archive(config, command)?,
        Command::Offsite { command } => offsite::offsite(config, command)?,
        Command::Immich { command } => immich::immich(config, command)?,
        Command::Plugins {
            command: PluginsCommand::List,
        } => setup::plugins_list(config)?,
    };
    Ok(match outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Problems => ExitCode::from(1),
    })
}

/// Finish archive moves a crash interrupted, unless another keepsake (the
/// service) holds the state folder: it does that itself when it starts.
pub(crate) fn recover_archive_moves(config: &Config, ledger: &Ledger) -> anyhow::Result<()> {
    if let Ok(_lock) = ledger::StateLock::acquire(&config.state_dir) {
        crate::archive::recover(config, ledger)?;
        crate::archive::void_pending(config, ledger, "archive moves an unclean stop left")?;
    }
    Ok(())
}

pub(crate) fn open_existing(config: &Config) -> anyhow::Result<Ledger> {
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
