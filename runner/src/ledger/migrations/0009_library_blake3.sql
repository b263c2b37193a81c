-- The BLAKE3 of the library copy's own bytes, where they differ from the
-- original's (XMP embedded into a JPEG): verify, archive and offsite check
-- the copy against this; dedup keeps using `blake3`, the original's.
-- NULL: the copy is byte-identical to the original.
ALTER TABLE assets ADD COLUMN library_blake3 TEXT;
-- Assets placed before: the journal's place entry holds the hash of the
-- bytes that were written.
UPDATE assets SET library_blake3 = (
    SELECT j.blake3 FROM journal j
    WHERE j.job_id = assets.job_id AND j.action = 'place' AND j.state = 'done'
    ORDER BY j.id DESC LIMIT 1
) WHERE library_blake3 IS NULL;
UPDATE assets SET library_blake3 = NULL WHERE library_blake3 = blake3;
