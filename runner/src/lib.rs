//! keepsake: always-on ingest for a family photo library.
//!
//! The binary (`src/main.rs`) only parses the command line and calls
//! [`cli::run`]; everything else lives here so tests drive it directly.

pub mod archive;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod discover;
pub mod effects;
pub mod hashing;
pub mod host;
pub mod immich;
pub mod kei;
pub mod ledger;
mod library_jobs;
pub mod media;
pub mod offsite;
pub mod par;
pub mod pipeline;
pub mod rebuild;
pub mod report;
pub mod service;
pub mod shutdown;
pub mod sidecar;
pub mod watch;
