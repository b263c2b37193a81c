//! End-to-end tests: the real binary and library against real files, a real
//! SQLite ledger and real wasm components. One test binary, one link.
#![allow(clippy::unwrap_used)]

mod archive;
mod bad_input;
mod cli;
mod conformance;
mod corpus;
mod crash;
mod edges;
mod exif;
mod hostile;
mod immich;
mod offsite;
mod proof;
mod service;
