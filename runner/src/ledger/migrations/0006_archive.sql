-- Archival moves by year. An asset lives under the library root or, once
-- its year is archived, under the archive root; its path below the root
-- stays the same.
ALTER TABLE assets ADD COLUMN root TEXT NOT NULL DEFAULT 'library';

-- The move journal: every file (and sidecar) moved to the archive is
-- recorded as an intent before anything is touched, and marked done only
-- after the copy is durable and verified and the source is gone. Start-up
-- finishes or rolls back what is neither.
-- state: intent | placed (dest durable and verified, asset updated; the
-- source may still exist) | done | rolledback
CREATE TABLE moves (
    id          INTEGER PRIMARY KEY,
    asset_id    INTEGER REFERENCES assets(id),  -- NULL for a sidecar
    rel_path    TEXT    NOT NULL,               -- the same under both roots
    source      BLOB    NOT NULL,
    dest        BLOB    NOT NULL,
    temp        BLOB    NOT NULL,
    blake3      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX moves_open ON moves(state) WHERE state IN ('intent', 'placed');
