//! The one rule for removing a source (DESIGN invariant 7, the README's
//! Guarantees): a move-mode inbox file, a library file leaving for the
//! archive, or an iCloud download is removed only once the host itself has
//! verified that bytes with the source's BLAKE3 are durable in the library,
//! the archive or quarantine: the copy hashed, fsynced, and its folder
//! fsynced, on the filesystem it really lives on.
//!
//! A [`Kept`] is that proof. Only this module makes one, and
//! [`remove_source`] is the only way to remove a source, so no plugin effect
//! (`duplicate-of` included), symlink or filesystem quirk can get around it.

use std::path::{Path, PathBuf};

use super::fsops;
use crate::hashing::blake3_file;

/// Proof that the bytes of a source (by BLAKE3) are durable at `at`.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The BLAKE3 of the source these bytes keep (for a library copy with
    /// embedded XMP, the original's: the copy is the original plus metadata).
    source_blake3: String,
    at: PathBuf,
}

impl Kept {
    /// Verify a copy that is already in place: `at` (never through a link)
    /// holds bytes with `copy_blake3`; it and its folder are fsynced again
    /// (cheap when nothing is dirty, and what makes it durable when an
    /// earlier sync did not reach the storage). `source_blake3` is what the
    /// copy keeps: the same hash, or the original's for an embedded copy.
    pub fn verify(at: &Path, copy_blake3: &str, source_blake3: &str) -> Result<Kept, String> {
        match blake3_file(at) {
            Ok(hash) if hash == copy_blake3 => {}
            Ok(_) => {
                return Err(format!(
                    "{} does not hold the bytes keepsake recorded for it",
                    at.display()
                ));
            }
            Err(e) => return Err(format!("cannot verify {}: {e}", at.display())),
        }
        durable(at)?;
        Ok(Kept {
            source_blake3: source_blake3.to_string(),
            at: at.to_path_buf(),
        })
    }

    /// [`Self::verify`] for a duplicate: `source` is to go because `at`
    /// keeps its bytes. Where the copy's bytes differ from the source's
    /// (XMP embedded into it), both files must be byte for byte the same
    /// but for their XMP segment, read from both now: what the ledger claims
    /// about an embedded copy is never taken on trust.
    pub fn verify_for(
        at: &Path,
        copy_blake3: &str,
        source: &Path,
        source_blake3: &str,
    ) -> Result<Kept, String> {
        if copy_blake3 != source_blake3 {
            let limit = crate::sidecar::MAX_EMBED + (1 << 20);
            let image = |path: &Path| crate::sidecar::image_blake3_of(path, limit);
            match (image(at), image(source)) {
                (Some(kept), Some(inbox)) if kept == inbox => {}
                _ => {
                    return Err(format!(
                        "{} is not {} with other XMP",
                        at.display(),
                        source.display()
                    ));
                }
            }
        }
        Kept::verify(at, copy_blake3, source_blake3)
    }

    /// [`super::apply`] wrote `at` through a temp that it fsynced and
    /// re-hashed (`copy_blake3` matched), renamed it into place and fsynced
    /// the folder without an error.
    pub(super) fn written(at: &Path, source_blake3: &str) -> Kept {
        Kept {
            source_blake3: source_blake3.to_string(),
            at: at.to_path_buf(),
        }
    }

    pub fn at(&self) -> &Path {
        &self.at
    }
}

/// [`remove_source`], once `source` is read again and still has the bytes
/// the proof is about: for sources that may be edited while keepsake works
/// (library files leaving for the archive, sidecars), where a fingerprint
/// taken earlier is not enough.
pub fn remove_unchanged_source(
    source: &Path,
    source_blake3: &str,
    kept: &Kept,
) -> Result<(), String> {
    match blake3_file(source) {
        Ok(now) if now == source_blake3 => remove_source(source, source_blake3, kept),
        Ok(_) => Err(format!(
            "{} stays: it changed after keepsake copied it",
            source.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "{} stays: cannot read it again: {e}",
            source.display()
        )),
    }
}

fn same_file(source: &std::fs::Metadata, other: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(other)
        .is_ok_and(|m| m.dev() == source.dev() && m.ino() == source.ino())
}

/// fsync a file and its folder.
fn durable(at: &Path) -> Result<(), String> {
    fsops::sync_files(&[at]).map_err(|e| format!("cannot sync {}: {e}", at.display()))?;
    if let Some(dir) = at.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsops::fsync_dir(dir).map_err(|e| format!("cannot sync folder {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Remove `source`, whose bytes hash to `source_blake3`, because `kept`
/// proves they are durable elsewhere. Refused when the proof is about other
/// bytes, when it is the source itself, or when `source` is not a regular
/// file (a link is never followed, and never removed in a file's stead).
pub fn remove_source(source: &Path, source_blake3: &str, kept: &Kept) -> Result<(), String> {
    if kept.source_blake3 != source_blake3 {
        return Err(format!(
            "{} stays: keepsake has no verified copy of its bytes (the copy at {} holds other bytes)",
            source.display(),
            kept.at.display()
        ));
    }
    if kept.at == source {
        return Err(format!(
            "{} stays: it is the only copy of its bytes",
            source.display()
        ));
    }
    match std::fs::symlink_metadata(source) {
        // The same file seen at two paths (a bind mount below a root) is
        // still the only copy.
        Ok(meta) if meta.is_file() && same_file(&meta, &kept.at) => {
            return Err(format!(
                "{} stays: {} is the same file, not a copy",
                source.display(),
                kept.at.display()
            ));
        }
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(format!(
                "{} stays: it is not a regular file",
                source.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot check {}: {e}", source.display())),
    }
    fsops::unlink_source(source).map_err(|e| format!("cannot remove {}: {e}", source.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // test scratch files
    fn a_source_goes_only_with_a_proof_of_its_own_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = dir.path().join("in.jpg");
        let copy = dir.path().join("copy.jpg");
        let other = dir.path().join("other.jpg");
        std::fs::write(&source, b"photo").unwrap();
        std::fs::write(&copy, b"photo").unwrap();
        std::fs::write(&other, b"another photo").unwrap();
        let hash = blake3::hash(b"photo").to_hex().to_string();
        let other_hash = blake3::hash(b"another photo").to_hex().to_string();

        // A proof about other bytes removes nothing.
        let kept_other = Kept::verify(&other, &other_hash, &other_hash).unwrap();
        assert!(remove_source(&source, &hash, &kept_other).is_err());
        assert!(source.exists());
        // A copy that does not hold what it should is no proof at all.
        assert!(Kept::verify(&other, &hash, &hash).is_err());
        // A link where the copy should be is not followed.
        let link = dir.path().join("link.jpg");
        std::os::unix::fs::symlink(&copy, &link).unwrap();
        assert!(Kept::verify(&link, &hash, &hash).is_err());
        // The source itself is never its own proof.
        let kept_self = Kept::verify(&source, &hash, &hash).unwrap();
        assert!(remove_source(&source, &hash, &kept_self).is_err());
        // A link in the source's place is left alone.
        let kept = Kept::verify(&copy, &hash, &hash).unwrap();
        let source_link = dir.path().join("in-link.jpg");
        std::os::unix::fs::symlink(&copy, &source_link).unwrap();
        assert!(remove_source(&source_link, &hash, &kept).is_err());
        assert!(source_link.symlink_metadata().is_ok());
        // The same file at a second path (a bind mount, a hard link) is no
        // copy of it.
        let twin = dir.path().join("twin.jpg");
        std::fs::hard_link(&source, &twin).unwrap();
        let kept_twin = Kept::verify(&twin, &hash, &hash).unwrap();
        assert!(remove_source(&source, &hash, &kept_twin).is_err());
        assert!(source.exists());
        // An edited source is not removed for the proof of its old bytes.
        std::fs::write(&other, b"another photo, edited").unwrap();
        assert!(remove_unchanged_source(&other, &other_hash, &kept).is_err());
        assert!(other.exists());
        // Rewritten in place with the same size and mtime (kei embedding
        // a rating inside XMP padding): read again, so it stays, new bytes
        // and all.
        let download = dir.path().join("download.jpg");
        std::fs::write(&download, b"photo").unwrap();
        let mtime = std::fs::metadata(&download).unwrap().modified().unwrap();
        std::fs::write(&download, b"PHOTO").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&download)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            std::fs::metadata(&download).unwrap().modified().unwrap(),
            mtime
        );
        assert!(remove_unchanged_source(&download, &hash, &kept).is_err());
        assert_eq!(std::fs::read(&download).unwrap(), b"PHOTO");
        // With the proof of its bytes: gone, the copy stays.
        remove_source(&source, &hash, &kept).unwrap();
        assert!(!source.exists());
        assert_eq!(std::fs::read(&copy).unwrap(), b"photo");
    }
}
