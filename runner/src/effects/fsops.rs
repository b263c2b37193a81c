//! The only code that writes, renames or removes files. Every write goes to a
//! temp name in the destination folder, is fsynced and verified, and is
//! renamed into place without ever replacing an existing file.
#![allow(clippy::disallowed_methods)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Copy `source` to `temp` (which must not exist), keeping the source's
/// modification time. Not yet synced: see [`sync_files`].
pub fn copy_to_temp(source: &Path, temp: &Path) -> io::Result<u64> {
    // std's copy uses copy_file_range on Linux: in-kernel, reflinks where the
    // filesystem can.
    copy_with(source, temp, io::copy)
}

/// Open `source` and the new file `temp`, copy with `copy`, keep the
/// source's modification time; `temp` is removed when the copy fails.
fn copy_with(
    source: &Path,
    temp: &Path,
    copy: impl FnOnce(&mut File, &mut File) -> io::Result<u64>,
) -> io::Result<u64> {
    let mut from = File::open(source)?;
    let modified = from.metadata()?.modified()?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp)?;
    let copied = match copy(&mut from, &mut to) {
        Ok(n) => n,
        Err(e) => {
            drop(to);
            let _ = std::fs::remove_file(temp);
            return Err(e);
        }
    };
    to.set_modified(modified)?;
    Ok(copied)
}

/// Write bytes keepsake made to `temp` (which must not exist). Not yet
/// synced: see [`sync_files`].
pub fn write_temp(temp: &Path, bytes: &[u8]) -> io::Result<u64> {
    use std::io::Write;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp)?;
    if let Err(e) = to.write_all(bytes) {
        drop(to);
        let _ = std::fs::remove_file(temp);
        return Err(e);
    }
    Ok(bytes.len() as u64)
}

/// A scratch file for copying a file while it is hashed. Staging
/// files are never journaled: keepsake removes any it finds at start.
pub fn create_staging(path: &Path) -> io::Result<File> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
    };
    match create() {
        Ok(file) => Ok(file),
        // Left by an earlier attempt: scratch.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            create()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            create()
        }
        Err(e) => Err(e),
    }
}

/// Move a staged copy to its journaled temp name (same filesystem: a
/// rename, no second copy). Keeps the source's modification time.
pub fn take_staged(staged: &Path, temp: &Path, source: &Path) -> io::Result<()> {
    let modified = std::fs::metadata(source)?.modified()?;
    std::fs::rename(staged, temp)?;
    File::options()
        .write(true)
        .open(temp)?
        .set_modified(modified)
}

/// Remove every staging file (at start, after a crash).
pub fn clear_staging(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Make written files (or folders) durable: one `syncfs` per filesystem when
/// there are many (one journal commit instead of one per file), `fsync` each
/// otherwise.
pub fn sync_files(paths: &[&Path]) -> io::Result<()> {
    if paths.len() <= 4 {
        for path in paths {
            File::open(path)?.sync_all()?;
        }
        return Ok(());
    }
    let mut devices = std::collections::HashSet::new();
    for path in paths {
        use std::os::unix::fs::MetadataExt;
        let file = File::open(path)?;
        if devices.insert(file.metadata()?.dev()) {
            rustix::fs::syncfs(&file)?;
        }
    }
    Ok(())
}

/// Rename `from` to `to` unless `to` exists. `Err(AlreadyExists)` when it does.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(io::ErrorKind::AlreadyExists.into()),
        // Filesystems without RENAME_NOREPLACE (some network and FUSE
        // filesystems): a hard link fails atomically when the name exists.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::NOTSUP) => {
            match std::fs::hard_link(from, to) {
                Ok(()) => std::fs::remove_file(from),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
                // No hard links either (exFAT, some SMB): check, then rename.
                // keepsake holds the state lock, so no other keepsake races us.
                Err(_) => {
                    if to.symlink_metadata().is_ok() {
                        return Err(io::ErrorKind::AlreadyExists.into());
                    }
                    std::fs::rename(from, to)
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Replace `to` with `from`: only for keepsake's own cache files, never for
/// anything in the library.
pub fn rename_over(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Remove one of keepsake's own temp files; a missing one is fine.
pub fn remove_temp(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// (size, mtime in ns, inode) of a file, as the ledger fingerprints it.
pub fn fingerprint(path: &Path) -> Option<(u64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.len(), crate::discover::mtime_ns(&meta), meta.ino()))
}

/// Remove an inbox file after its library copy is verified and committed.
pub fn remove_source(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Create `dir` and any missing parents. Returns the folders that gained an
/// entry: they must be synced (see [`sync_files`]) before the files in the new
/// folders count as durable.
pub fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut gained = Vec::new();
    if dir.is_dir() {
        return Ok(gained);
    }
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.is_dir() {
            break;
        }
        missing.push(path);
        cursor = path.parent();
    }
    for path in missing.iter().rev() {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => continue,
            Err(e) => return Err(e),
        }
        if let Some(parent) = path.parent() {
            gained.push(parent.to_path_buf());
        }
    }
    Ok(gained)
}

/// Write a secret (a key) to `path`, which must not exist, readable by its
/// owner only, and make it durable.
pub fn write_secret(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// [`copy_to_temp`] in 1 MiB pieces, calling `pace` before each (a
/// bandwidth limit).
pub fn copy_to_temp_paced(source: &Path, temp: &Path, pace: &dyn Fn(u64)) -> io::Result<u64> {
    use std::io::{Read, Write};
    copy_with(source, temp, |from, to| {
        let mut buf = vec![0u8; 1 << 20];
        let mut copied = 0u64;
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                return Ok(copied);
            }
            pace(n as u64);
            to.write_all(&buf[..n])?;
            copied += n as u64;
        }
    })
}

/// Append to a file keepsake keeps (an offsite manifest) and make it
/// durable; the file and its folder are created when missing.
pub fn append_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    if !existed && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsync_dir(dir)?;
    }
    Ok(())
}
