-- One journal protocol: the move journal spells its rolled-back state as
-- the effect journal does (`ledger::JournalState::RolledBack`). The state
-- column has no CHECK constraint, so the rows are updated in place; the
-- partial index `moves_open` (intent, placed) is not affected.
UPDATE moves SET state = 'rolled_back' WHERE state = 'rolledback';
