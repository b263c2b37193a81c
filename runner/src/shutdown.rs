//! A process-wide request to stop: set by `keepsake run` on SIGINT/SIGTERM,
//! read by the pipeline between batches and by reads of large files, so
//! in-flight work ends at a point the journal can resume from.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}

pub fn requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// A reader that fails once a stop is requested: a long hash or copy ends
/// within one chunk instead of running to the end of a large file.
pub struct Stoppable<R>(pub R);

impl<R: std::io::Read> std::io::Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if requested() {
            return Err(std::io::Error::other(Stopping));
        }
        self.0.read(buf)
    }
}

/// The error a [`Stoppable`] read returns.
#[derive(Debug)]
pub struct Stopping;

impl std::fmt::Display for Stopping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("keepsake is stopping")
    }
}

impl std::error::Error for Stopping {}
