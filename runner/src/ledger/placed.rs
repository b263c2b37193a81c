//! The placed-phase queue (`placed_calls`): one row per job and stage that
//! runs after the file is in the library (Immich).

use rusqlite::Transaction;

/// Put a stage's deferred and failed calls back in the queue, due now
/// (the person asked for now, whatever their next try). How many.
pub fn wake_placed_calls(tx: &Transaction<'_>, stage: &str) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE placed_calls SET state = 'pending', wake_at = NULL, attempts = 0 \
         WHERE stage = ?1 AND state IN ('deferred', 'failed')",
        [stage],
    )
}
