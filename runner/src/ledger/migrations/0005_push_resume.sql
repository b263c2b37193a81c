-- Offsite pushes that outlive a crash or an outage:
-- upload_id: the S3 multipart upload in progress, aborted before the next
--   try so no parts are left behind on the server.
-- sealed_blake3, sealed_size: for a target with client-side encryption, the
--   ciphertext recorded before it is sent (age output differs each time, so
--   an object found after a crash is recognised by this, not by re-encrypting).
ALTER TABLE pushes ADD COLUMN upload_id TEXT;
ALTER TABLE pushes ADD COLUMN sealed_blake3 TEXT;
ALTER TABLE pushes ADD COLUMN sealed_size INTEGER;
