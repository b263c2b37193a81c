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
    let mut from = open_nofollow(source)?;
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

/// Make written files (or folders) durable. On a filesystem whose `syncfs`
/// is known to reach the storage (ext4, XFS, btrfs, ZFS, f2fs, bcachefs,
/// tmpfs), a batch of more than four is made durable with one `syncfs` (one
/// flush instead of one per file). Everywhere else each path gets its own
/// `fsync`: FUSE does not pass `syncfs` to its daemon (mergerfs, Unraid's
/// shfs, bindfs, ntfs-3g, exfat-fuse), CIFS/SMB and NFS send no flush for
/// it, and an unknown filesystem is not trusted.
pub fn sync_files(paths: &[&Path]) -> io::Result<()> {
    if paths.len() <= 4 || per_file_sync_forced() {
        for path in paths {
            File::open(path)?.sync_all()?;
        }
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    // Per device: whether one syncfs serves it, and the paths on it.
    let mut devices: std::collections::HashMap<u64, (bool, Vec<File>)> =
        std::collections::HashMap::new();
    for path in paths {
        let file = File::open(path)?;
        let dev = file.metadata()?.dev();
        let slot = devices
            .entry(dev)
            .or_insert_with(|| (syncfs_reaches_storage(&file), Vec::new()));
        slot.1.push(file);
    }
    for (whole, files) in devices.into_values() {
        if whole {
            if let Some(first) = files.first() {
                rustix::fs::syncfs(first)?;
            }
        } else {
            for file in &files {
                file.sync_all()?;
            }
        }
    }
    Ok(())
}

/// `KEEPSAKE_SYNC=per-file` makes every filesystem get an fsync per file
/// (the benchmark measures both ways).
fn per_file_sync_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("KEEPSAKE_SYNC").is_ok_and(|v| v == "per-file"))
}

/// What a filesystem is, by `statfs` f_type: the names keepsake reports.
pub fn filesystem_kind(path: &Path) -> &'static str {
    match rustix::fs::statfs(path) {
        #[allow(clippy::unnecessary_cast)] // f_type's width differs by platform
        Ok(stat) => kind_of(stat.f_type as i64),
        Err(_) => "unknown",
    }
}

fn kind_of(f_type: i64) -> &'static str {
    match f_type {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0xCA45_1A4E => "bcachefs",
        0x0102_1994 => "tmpfs",
        0x6573_5546 => "fuse",
        0xFF53_4D42 => "cifs",
        0xFE53_4D42 => "smb2",
        0x6969 => "nfs",
        0x0102_1997 => "9p",
        0x794C_7630 => "overlay",
        _ => "unknown",
    }
}

/// Whether one `syncfs` on this filesystem makes every written file durable.
fn syncfs_reaches_storage(file: &File) -> bool {
    #[allow(clippy::unnecessary_cast)] // f_type's width differs by platform
    rustix::fs::fstatfs(file).is_ok_and(|stat| {
        matches!(
            kind_of(stat.f_type as i64),
            "ext4" | "xfs" | "btrfs" | "zfs" | "f2fs" | "bcachefs" | "tmpfs"
        )
    })
}

/// Open a file for reading without following a symlink at its last
/// component (`O_NOFOLLOW`): inside an inbox or a root a link is never
/// followed, so a link where a file was expected is an error (`ELOOP`).
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Whether `path` below `root` is reached through a symlink: any component
/// after `root`, the last one included, that is a link (or does not exist).
pub fn through_symlink(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return true;
    };
    let mut cursor = root.to_path_buf();
    for component in rel.components() {
        cursor.push(component);
        match std::fs::symlink_metadata(&cursor) {
            Ok(meta) if meta.file_type().is_symlink() => return true,
            Ok(_) => {}
            // Gone: nothing to follow; the caller finds it missing.
            Err(_) => return false,
        }
    }
    false
}

/// Devices whose `RENAME_NOREPLACE` was found to replace anyway (some CIFS
/// servers): renames there go the hard-link way.
static LINK_DEVICES: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

fn device_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    std::fs::metadata(dir).ok().map(|m| m.dev())
}

/// Check that a no-replace rename in `root` really refuses to replace a
/// file. Where it replaces anyway, the hard-link way is checked and used
/// from then on; where that does not refuse either, `Err` names the root.
pub fn probe_no_replace(root: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let fail = |what: String| format!("cannot check {}: {what}", root.display());
    let a = root.join(format!(".keepsake-probe-{}-a", std::process::id()));
    let b = root.join(format!(".keepsake-probe-{}-b", std::process::id()));
    let cleanup = || {
        let _ = remove_temp(&a);
        let _ = remove_temp(&b);
    };
    cleanup();
    let written = write_temp(&a, b"a").and_then(|_| write_temp(&b, b"b"));
    if let Err(e) = written {
        cleanup();
        return Err(fail(e.to_string()));
    }
    let refused = |outcome: io::Result<()>| {
        matches!(&outcome, Err(e) if e.kind() == io::ErrorKind::AlreadyExists)
            && std::fs::read(&b).is_ok_and(|bytes| bytes == b"b")
    };
    if refused(rename_plain_no_replace(&a, &b)) {
        cleanup();
        return Ok(());
    }
    // It replaced: put the probe back and try the hard-link way.
    let _ = remove_temp(&a);
    let _ = remove_temp(&b);
    let rewritten = write_temp(&a, b"a").and_then(|_| write_temp(&b, b"b"));
    let linked = rewritten.and_then(|_| std::fs::hard_link(&a, &b));
    let link_refuses = refused(linked);
    cleanup();
    if link_refuses {
        let dev = std::fs::metadata(root)
            .map(|m| m.dev())
            .map_err(|e| fail(e.to_string()))?;
        tracing::warn!(
            "{}: a no-replace rename replaces files here; keepsake uses hard links instead",
            root.display()
        );
        LINK_DEVICES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dev);
        return Ok(());
    }
    Err(format!(
        "{} replaces existing files on a rename that must not (and on a hard link): keepsake cannot place files there without risking an overwrite; mount it with another filesystem or server option (for SMB: a server with POSIX extensions), then start again",
        root.display()
    ))
}

/// Rename `from` to `to` unless `to` exists. `Err(AlreadyExists)` when it does.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let linked = device_of(to).is_some_and(|dev| {
        LINK_DEVICES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&dev)
    });
    if linked {
        std::fs::hard_link(from, to)?;
        return std::fs::remove_file(from);
    }
    rename_plain_no_replace(from, to)
}

fn rename_plain_no_replace(from: &Path, to: &Path) -> io::Result<()> {
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

/// fsync a folder. Some filesystems cannot fsync a folder at all (EINVAL or
/// ENOTSUP: vboxsf, some FUSE daemons and CIFS kernels); there a rename is
/// as durable as the filesystem makes it, and that is said once. Any other
/// error (EIO) is an error.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir)?.sync_all() {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(code) if code == rustix::io::Errno::INVAL.raw_os_error()
                    || code == rustix::io::Errno::NOTSUP.raw_os_error()
            ) =>
        {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "{}: this filesystem cannot fsync a folder ({e}); keepsake relies on its own durability for renames there",
                    dir.display()
                );
            });
            Ok(())
        }
        other => other,
    }
}

/// The temp name of a journaled write, for both journals:
/// `<dest dir>/.keepsake-<journal>-<id>.tmp`, where `<journal>` is the
/// table holding the entry (`journal` or `moves`) and `<id>` its row id. In
/// `dest`'s folder, so the final rename is atomic and never crosses a
/// filesystem; a dotfile ending in `.tmp`, so the inbox walker and other
/// tools ignore it; at most 42 bytes (`journal` and a 20-digit id), so it always fits a name.
///
/// Older versions wrote `.keepsake-<id>.tmp` (effects) and
/// `.keepsake-archive-<id>-<name>.tmp` (moves). Each entry stores its temp
/// name, and recovery removes the stored one, so those are still cleaned up.
pub fn temp_name(dest: &Path, journal: &str, id: u64) -> PathBuf {
    let dir = dest.parent().unwrap_or(Path::new("."));
    dir.join(format!(".keepsake-{journal}-{id}.tmp"))
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

/// Remove a source file: only [`super::kept::remove_source`] calls this,
/// once it holds the proof that the source's bytes are kept. A failed
/// folder fsync is an error: the removal is not durable yet.
pub(super) fn unlink_source(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_name_sits_beside_its_destination_and_names_its_entry() {
        let temp = temp_name(Path::new("/library/2019/IMG_1.jpg"), "moves", 7);
        assert_eq!(
            temp.as_path(),
            Path::new("/library/2019/.keepsake-moves-7.tmp")
        );
    }

    #[test]
    fn a_path_through_a_link_is_told_apart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("inbox");
        std::fs::create_dir_all(root.join("real/2003")).unwrap();
        std::fs::write(root.join("real/2003/a.jpg"), b"a").unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("view")).unwrap();
        assert!(!through_symlink(&root, &root.join("real/2003/a.jpg")));
        assert!(through_symlink(&root, &root.join("view/2003/a.jpg")));
        assert!(through_symlink(&root, &root.join("view")));
        assert!(through_symlink(&root, Path::new("/elsewhere/a.jpg")));
        // Opening through a link at the last component fails.
        std::os::unix::fs::symlink(root.join("real/2003/a.jpg"), root.join("b.jpg")).unwrap();
        assert!(open_nofollow(&root.join("b.jpg")).is_err());
        assert!(open_nofollow(&root.join("real/2003/a.jpg")).is_ok());
    }

    #[test]
    fn a_batch_is_synced_and_no_replace_is_probed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files: Vec<PathBuf> = (0..6).map(|i| dir.path().join(format!("{i}"))).collect();
        for file in &files {
            write_temp(file, b"x").unwrap();
        }
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        sync_files(&refs).unwrap();
        assert_ne!(filesystem_kind(dir.path()), "");
        probe_no_replace(dir.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("probe"))
            .collect();
        assert!(left.is_empty(), "the probe leaves nothing behind");
        assert_eq!(kind_of(0x6573_5546), "fuse");
        assert_eq!(kind_of(0xFF53_4D42), "cifs");
        assert_eq!(kind_of(0x1234), "unknown");
    }

    #[test]
    fn the_hard_link_way_never_replaces_and_leaves_one_name() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let dev = std::fs::metadata(dir.path()).unwrap().dev();
        // As the probe does on a root whose no-replace rename replaces.
        LINK_DEVICES.lock().unwrap().push(dev);
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        write_temp(&a, b"new").unwrap();
        write_temp(&b, b"kept").unwrap();
        let refused = rename_no_replace(&a, &b);
        let moved = rename_no_replace(&a, &c);
        LINK_DEVICES.lock().unwrap().retain(|d| *d != dev);
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"kept");
        moved.unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), b"new");
        assert!(!a.exists(), "the temp name is gone");
    }
}
