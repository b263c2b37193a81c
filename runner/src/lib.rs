//! keepsake: always-on ingest for a family photo library.
//!
//! The binary (`src/main.rs`) only parses the command line and calls
//! [`cli::run`]; everything else lives here so tests drive it directly.
//! The modules the tests reach are public; the rest are the crate's own.

pub mod archive;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod discover;
pub mod effects;
pub mod hashing;
pub mod host;
pub(crate) mod immich;
pub(crate) mod kei;
pub mod ledger;
mod library_jobs;
pub use library_jobs::open_pipeline;
pub(crate) mod media;
pub mod offsite;
pub(crate) mod par;
pub mod pipeline;
pub(crate) mod rebuild;
pub(crate) mod report;
pub(crate) mod service;
pub(crate) mod shutdown;
pub(crate) mod sidecar;
pub mod watch;
