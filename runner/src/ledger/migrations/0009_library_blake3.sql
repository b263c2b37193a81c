-- The BLAKE3 of the library copy's own bytes, where they differ from the
-- original's (XMP embedded into a JPEG): verify, archive and offsite check
-- the copy against this; dedup keeps using `blake3`, the original's.
-- NULL: the copy is byte-identical to the original.
ALTER TABLE assets ADD COLUMN library_blake3 TEXT;
