//! Every state the ledger stores, as Rust enums. This file is the one
//! boundary between them and their SQL spelling: `as_sql` writes one,
//! `from_sql` reads one, and `may_follow` is the state machine of
//! `FORMAT.md` §3, which the ledger functions that change a state assert.

use serde::Serialize;

/// The state of an entry of either journal: the effect journal (`journal`)
/// and the archive's move journal (`moves`). Both follow one protocol,
/// intent → done | rolled back; a move has `placed` between (its copy is
/// durable, its source not yet removed) and may end `lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JournalState {
    /// Recorded before anything is touched.
    Intent,
    /// (Moves only.) The copy is durable and verified and the asset lives
    /// in the archive; the library copy may still exist.
    Placed,
    /// Finished: the file is at its destination.
    Done,
    /// Given up: nothing of the entry counts, its temp is removed.
    RolledBack,
    /// (Moves only.) At recovery neither a verified copy nor the source
    /// was found.
    Lost,
}

impl JournalState {
    pub const ALL: [JournalState; 5] = [
        JournalState::Intent,
        JournalState::Placed,
        JournalState::Done,
        JournalState::RolledBack,
        JournalState::Lost,
    ];

    pub fn as_sql(self) -> &'static str {
        match self {
            JournalState::Intent => "intent",
            JournalState::Placed => "placed",
            JournalState::Done => "done",
            JournalState::RolledBack => "rolled_back",
            JournalState::Lost => "lost",
        }
    }

    pub fn from_sql(text: &str) -> Option<JournalState> {
        JournalState::ALL.into_iter().find(|s| s.as_sql() == text)
    }

    /// Whether an entry in state `from` may be set to `self`.
    pub fn may_follow(self, from: JournalState) -> bool {
        use JournalState::*;
        matches!(
            (from, self),
            (Intent, Placed | Done | RolledBack | Lost) | (Placed, Done | RolledBack | Lost)
        )
    }

    /// Neither finished nor given up: what recovery settles.
    pub fn is_open(self) -> bool {
        matches!(self, JournalState::Intent | JournalState::Placed)
    }
}

/// The two tables that hold a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// `journal`: the effects of jobs (place, companion, quarantine).
    Effects,
    /// `moves`: files moved from the library root to the archive root.
    Moves,
}

impl Journal {
    pub fn table(self) -> &'static str {
        match self {
            Journal::Effects => "journal",
            Journal::Moves => "moves",
        }
    }

    /// Whether this journal's entries ever take `state`.
    pub fn uses(self, state: JournalState) -> bool {
        match self {
            Journal::Effects => matches!(
                state,
                JournalState::Intent | JournalState::Done | JournalState::RolledBack
            ),
            Journal::Moves => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Done,
    Duplicate,
    Quarantined,
    Skipped,
    Failed,
    /// A stage asked to be run again later (`wake_at`).
    Deferred,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Done,
        JobState::Duplicate,
        JobState::Quarantined,
        JobState::Skipped,
        JobState::Failed,
        JobState::Deferred,
    ];

    pub fn as_sql(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Done => "done",
            JobState::Duplicate => "duplicate",
            JobState::Quarantined => "quarantined",
            JobState::Skipped => "skipped",
            JobState::Failed => "failed",
            JobState::Deferred => "deferred",
        }
    }

    pub fn from_sql(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_sql() == text)
    }

    /// The name users see (`status`, `jobs --state`): the SQL spelling.
    pub fn as_str(self) -> &'static str {
        self.as_sql()
    }

    /// Read a name users typed (or the SQL spelling: they are the same).
    pub fn parse(text: &str) -> Option<JobState> {
        JobState::from_sql(text)
    }

    /// Whether a job in state `from` may be set to `self` (`FORMAT.md`
    /// §3.1). A pending job may end any way, or be rolled back to pending
    /// by recovery.
    pub fn may_follow(self, from: JobState) -> bool {
        use JobState::*;
        match from {
            Pending => true,
            Failed | Deferred => matches!(self, Pending | Skipped),
            Quarantined | Skipped => self == Pending,
            // A duplicate whose original's copy no longer verifies.
            Duplicate => self == Failed,
            Done => false,
        }
    }
}

/// The state of a push of one file to one offsite target (`pushes.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushState {
    /// Recorded with the job's commit; not tried yet.
    Pending,
    /// The target could not take it: tried again at `wake_at`.
    Deferred,
    /// The target holds these bytes under the key.
    Done,
    /// The key holds other bytes: never overwritten, reported.
    Conflict,
}

impl PushState {
    pub const ALL: [PushState; 4] = [
        PushState::Pending,
        PushState::Deferred,
        PushState::Done,
        PushState::Conflict,
    ];

    pub fn as_sql(self) -> &'static str {
        match self {
            PushState::Pending => "pending",
            PushState::Deferred => "deferred",
            PushState::Done => "done",
            PushState::Conflict => "conflict",
        }
    }

    pub fn from_sql(text: &str) -> Option<PushState> {
        PushState::ALL.into_iter().find(|s| s.as_sql() == text)
    }

    /// Whether a push in state `from` may be set to `self` (`FORMAT.md`
    /// §3): only a push that waits is tried, and done and conflict are
    /// final.
    pub fn may_follow(self, from: PushState) -> bool {
        use PushState::*;
        matches!(
            (from, self),
            (Pending | Deferred, Deferred | Done | Conflict)
        )
    }
}

/// The state of a placed call: one stage's `placed` for one committed job
/// (`placed_calls.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Pending,
    /// The service was down, or the stage asked for later: at `wake_at`.
    Deferred,
    Done,
    /// The stage failed it; `immich retry` (or a config change) queues it again.
    Failed,
}

impl CallState {
    pub const ALL: [CallState; 4] = [
        CallState::Pending,
        CallState::Deferred,
        CallState::Done,
        CallState::Failed,
    ];

    pub fn as_sql(self) -> &'static str {
        match self {
            CallState::Pending => "pending",
            CallState::Deferred => "deferred",
            CallState::Done => "done",
            CallState::Failed => "failed",
        }
    }

    pub fn from_sql(text: &str) -> Option<CallState> {
        CallState::ALL.into_iter().find(|s| s.as_sql() == text)
    }

    /// Whether a call in state `from` may be set to `self`: a call that
    /// waits runs to any end; any call may be queued again (a retry, an
    /// archive move, a rebuilt Immich).
    pub fn may_follow(self, from: CallState) -> bool {
        use CallState::*;
        match self {
            Pending => true,
            Deferred | Done | Failed => matches!(from, Pending | Deferred),
        }
    }
}

/// The root an asset's file lives under (`assets.root`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Root {
    Library,
    Archive,
}

impl Root {
    pub fn as_sql(self) -> &'static str {
        match self {
            Root::Library => "library",
            Root::Archive => "archive",
        }
    }

    pub fn from_sql(text: &str) -> Option<Root> {
        match text {
            "library" => Some(Root::Library),
            "archive" => Some(Root::Archive),
            _ => None,
        }
    }

    /// The name users see (`library:2019/…`): the SQL spelling.
    pub fn as_str(self) -> &'static str {
        self.as_sql()
    }

    pub fn parse(text: &str) -> Option<Root> {
        Root::from_sql(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_sql() {
        for state in JournalState::ALL {
            assert_eq!(JournalState::from_sql(state.as_sql()), Some(state));
        }
        for state in JobState::ALL {
            assert_eq!(JobState::from_sql(state.as_sql()), Some(state));
        }
        for state in PushState::ALL {
            assert_eq!(PushState::from_sql(state.as_sql()), Some(state));
        }
        for state in CallState::ALL {
            assert_eq!(CallState::from_sql(state.as_sql()), Some(state));
        }
        for root in [Root::Library, Root::Archive] {
            assert_eq!(Root::from_sql(root.as_sql()), Some(root));
        }
        // The move journal's old spelling is gone (migration 0011).
        assert_eq!(JournalState::from_sql("rolledback"), None);
    }

    #[test]
    fn finished_journal_entries_stay_finished() {
        for to in JournalState::ALL {
            for from in [
                JournalState::Done,
                JournalState::RolledBack,
                JournalState::Lost,
            ] {
                assert!(!to.may_follow(from), "{from:?} -> {to:?}");
            }
            assert!(!JournalState::Intent.may_follow(to));
        }
        assert!(JournalState::Placed.may_follow(JournalState::Intent));
        assert!(JournalState::Done.may_follow(JournalState::Placed));
        assert!(!Journal::Effects.uses(JournalState::Placed));
        assert!(!Journal::Effects.uses(JournalState::Lost));
    }

    #[test]
    fn a_push_done_or_in_conflict_is_final() {
        for to in PushState::ALL {
            assert!(!to.may_follow(PushState::Done), "done -> {to:?}");
            assert!(!to.may_follow(PushState::Conflict), "conflict -> {to:?}");
            assert!(!PushState::Pending.may_follow(to), "{to:?} -> pending");
        }
        assert!(PushState::Done.may_follow(PushState::Deferred));
        assert!(!CallState::Failed.may_follow(CallState::Done));
        assert!(CallState::Pending.may_follow(CallState::Done));
    }
}
