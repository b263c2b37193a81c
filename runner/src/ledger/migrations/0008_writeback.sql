-- The write-back sweep (`keepsake immich pull`): what a remote service
-- (Immich) holds about keepsake's assets, and what keepsake last wrote
-- from it into their XMP sidecars.
CREATE TABLE remote_albums (
    stage TEXT NOT NULL,
    id    TEXT NOT NULL,
    name  TEXT NOT NULL,
    PRIMARY KEY (stage, id)
);
CREATE TABLE remote_album_members (
    stage    TEXT    NOT NULL,
    album_id TEXT    NOT NULL,
    job_id   INTEGER NOT NULL,
    PRIMARY KEY (stage, album_id, job_id)
);
CREATE INDEX remote_album_members_job ON remote_album_members(stage, job_id);
CREATE TABLE remote_assets (
    stage   TEXT    NOT NULL,
    job_id  INTEGER NOT NULL,
    -- The asset as the service has it now, and as first seen (JSON): a
    -- date or place that differs from the first is the user's edit.
    state   TEXT,
    first   TEXT,
    -- The properties keepsake last wrote into the sidecar (JSON object).
    written TEXT    NOT NULL DEFAULT '{}',
    -- 1 while the sidecar is behind what the service holds.
    dirty   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stage, job_id)
);
CREATE INDEX remote_assets_dirty ON remote_assets(stage, job_id) WHERE dirty = 1;
-- When each stage last swept, for the service's schedule and `status`.
CREATE TABLE sweeps (
    stage        TEXT PRIMARY KEY,
    last_at      INTEGER,
    last_full_at INTEGER,
    last_error   TEXT
);
