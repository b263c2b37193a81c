-- The BLAKE3 of the source a journaled write keeps (the original's for a
-- copy with embedded XMP, the inbox sidecar's for a lossless merge); empty
-- when the write keeps no source whole. NULL in older rows: `blake3`.
ALTER TABLE journal ADD COLUMN keeps TEXT;
