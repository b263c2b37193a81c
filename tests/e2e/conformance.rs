//! One conformance suite that every kind of offsite target runs, the way
//! restic runs one backend suite against each backend: a real S3 server
//! (s3s-fs) on 127.0.0.1, a folder, rclone's local backend, and a manifest
//! where it applies.
//!
//! Each target starts unreachable, so every push waits with its key chosen.
//! The test then lays out on the target what a family's history may have
//! left there, and checks, byte for byte:
//! - a key that already holds the same bytes counts as pushed and is not
//!   written again;
//! - a key that holds other bytes is a conflict, and its bytes stay;
//! - an upload that a `kill -9` cut short leaves nothing on the target once
//!   the push is done (no parts, no temps, no partial copies);
//! - pushing again writes nothing;
//! - a restore into a folder that does not exist yet gives the library's
//!   bytes;
//! - `verify --deep` finds an object damaged on the target, and a restore
//!   refuses that object while it restores the others.
// The tests play the target's disk: they write and damage objects in place.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keepsake_tests::{S3Server, Sandbox, blake3_of, corpus_media, wait_for, write_large};

const PIPELINE: &str = "[\"dedup\", \"exif\", \"library\", \"offsite\"]";
const PHOTOS: [&str; 3] = [
    "exiftool_Canon.jpg",
    "exiftool_Nikon.jpg",
    "exiftool_Apple.jpg",
];
const STRANGER: &[u8] = b"someone else's bytes, not keepsake's";

/// One kind of target, as the suite drives it.
struct Kind<'a> {
    /// The target's name in the config.
    name: &'a str,
    /// Its `[offsite.NAME]` table, unreachable at first, with a bandwidth
    /// limit so that a kill lands in the middle of the large upload.
    table: String,
    /// Make the target reachable.
    reach: Box<dyn Fn(&Sandbox) + 'a>,
    /// Where the target keeps the bytes of `key` on its disk.
    object: Box<dyn Fn(&str) -> PathBuf + 'a>,
    /// An upload of `key` is under way (parts, a temp, a partial copy).
    uploading: Box<dyn Fn(&str) -> bool + 'a>,
    /// What interrupted uploads left on the target.
    leftovers: Box<dyn Fn() -> Vec<PathBuf> + 'a>,
    /// Time passes before the next push.
    later: Box<dyn Fn() + 'a>,
}

/// (key, library file, state) of every media push, in order.
fn media_pushes(sandbox: &Sandbox, target: &str) -> Vec<(String, PathBuf, String)> {
    let conn = sandbox.ledger();
    let mut stmt = conn
        .prepare(
            "SELECT key, file, state FROM pushes WHERE target = ?1 AND key NOT LIKE '%.xmp' ORDER BY id",
        )
        .unwrap();
    stmt.query_map([target], |r| {
        Ok((
            r.get::<_, String>(0)?,
            sandbox.library().join(r.get::<_, String>(1)?),
            r.get::<_, String>(2)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn state_of(sandbox: &Sandbox, target: &str, key: &str) -> String {
    sandbox
        .ledger()
        .query_row(
            "SELECT state FROM pushes WHERE target = ?1 AND key = ?2",
            [target, key],
            |r| r.get(0),
        )
        .unwrap()
}

/// Every file under `root` whose name `matches`.
fn files_under(root: &Path, matches: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches(&entry.file_name().to_string_lossy()) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn place(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// (inode, mtime): whether a file was written again.
fn identity(path: &Path) -> (u64, SystemTime) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.modified().unwrap())
}

fn conformance(kind: Kind<'_>) {
    let name = kind.name;
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        PIPELINE,
        "copy",
        &format!("[stages.offsite]\ntargets = \"{name}\"\n\n{}", kind.table),
    );
    for photo in PHOTOS {
        sandbox.add(photo, &corpus_media().join(photo));
    }
    write_large(&sandbox.inbox().join("VID_0001.MOV"), 48);
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{name}: {report}");
    assert_eq!(
        report["offsite"]["pushed"], 0,
        "{name} is unreachable at first: {report}"
    );
    let media = media_pushes(&sandbox, name);
    assert_eq!(media.len(), 4, "{name}: {media:?}");
    let large = media
        .iter()
        .find(|(key, ..)| key.ends_with(".MOV"))
        .unwrap();
    let photos: Vec<_> = media
        .iter()
        .filter(|(key, ..)| !key.ends_with(".MOV"))
        .collect();
    let (same, other, untouched) = (photos[0], photos[1], photos[2]);

    (kind.reach)(&sandbox);
    // Already there with the same bytes (a push a crash cut short after
    // the upload, or a copy the family made by hand).
    place(&(kind.object)(&same.0), &std::fs::read(&same.1).unwrap());
    let same_before = identity(&(kind.object)(&same.0));
    // Someone else's object at a key keepsake chose.
    place(&(kind.object)(&other.0), STRANGER);

    // A push killed in the middle of the large upload.
    let mut push = sandbox
        .command(&["offsite", "push"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        &format!("{name}: the large upload to begin"),
        || (kind.uploading)(&large.0),
    );
    push.kill().unwrap();
    push.wait().unwrap();
    assert_ne!(
        state_of(&sandbox, name, &large.0),
        "done",
        "{name}: the kill came too late to interrupt the upload"
    );
    (kind.later)();

    let (code, out) = sandbox.run_text(&["offsite", "push"]);
    assert_eq!(code, 1, "{name}: the conflict is reported: {out}");
    assert!(out.contains(&other.0), "{name}: names the conflict: {out}");
    for (key, file, _) in [same, untouched, large] {
        assert_eq!(
            state_of(&sandbox, name, key),
            "done",
            "{name}: {key}: {out}"
        );
        assert_eq!(
            blake3_of(&(kind.object)(key)),
            blake3_of(file),
            "{name}: {key} holds the library's bytes"
        );
    }
    assert_eq!(
        identity(&(kind.object)(&same.0)),
        same_before,
        "{name}: a key with the same bytes is not written again"
    );
    assert_eq!(state_of(&sandbox, name, &other.0), "conflict", "{name}");
    assert_eq!(
        std::fs::read((kind.object)(&other.0)).unwrap(),
        STRANGER,
        "{name}: never overwritten"
    );
    let left = (kind.leftovers)();
    assert!(left.is_empty(), "{name}: left on the target: {left:?}");

    // Pushing again writes nothing.
    let large_before = identity(&(kind.object)(&large.0));
    let (_, out) = sandbox.run_text(&["offsite", "push"]);
    assert!(out.contains("0 pushed"), "{name}: {out}");
    assert_eq!(identity(&(kind.object)(&large.0)), large_before, "{name}");
    assert_eq!(
        std::fs::read((kind.object)(&other.0)).unwrap(),
        STRANGER,
        "{name}"
    );

    // A restore into a folder that is not there yet.
    let restored = sandbox.path().join("restore/first");
    let (code, out) = sandbox.run_text(&[
        "offsite",
        "restore",
        "--target",
        name,
        "--to",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{name}: {out}");
    for (key, file, _) in [same, untouched, large] {
        assert_eq!(
            blake3_of(&restored.join(key)),
            blake3_of(file),
            "{name}: restored {key}"
        );
    }

    // Damage on the target, same size: verify finds it, restore refuses it.
    let damaged = (kind.object)(&untouched.0);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&damaged, bytes).unwrap();
    let (code, out) = sandbox.run_text(&["offsite", "verify", "--deep", "--target", name]);
    assert_eq!(code, 1, "{name}: {out}");
    assert!(
        out.contains(&format!("damaged  {name}: {}", untouched.0)),
        "{name}: {out}"
    );
    let again = sandbox.path().join("restore/second");
    let (code, out) = sandbox.run_text(&[
        "offsite",
        "restore",
        "--target",
        name,
        "--to",
        again.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{name}: {out}");
    assert!(
        out.contains(&untouched.0) && out.contains("damaged"),
        "{name}: {out}"
    );
    assert!(
        !again.join(&untouched.0).exists(),
        "{name}: a damaged copy is not restored"
    );
    assert_eq!(
        blake3_of(&again.join(&large.0)),
        blake3_of(&large.1),
        "{name}"
    );
}

#[test]
fn an_s3_server_keeps_the_offsite_contract() {
    let scratch = tempfile::tempdir().unwrap();
    let server = std::cell::RefCell::new(S3Server::start(&scratch.path().join("s3")));
    let table = format!(
        "{}bwlimit = \"8M\"\n",
        server.borrow().target("s3", scratch.path())
    );
    server.borrow_mut().stop();
    let root = server.borrow().root.clone();
    let uploads = move || {
        files_under(&root, &|name| {
            name.starts_with(".upload_id-") || name.contains(".upload-")
        })
    };
    let object = |key: &str| server.borrow().object(key);
    conformance(Kind {
        name: "s3",
        table,
        reach: Box::new(|_| server.borrow_mut().restart()),
        object: Box::new(object),
        uploading: Box::new({
            let uploads = uploads.clone();
            move |_| !uploads().is_empty()
        }),
        leftovers: Box::new(uploads),
        later: Box::new(|| {}),
    });
}

#[test]
fn a_folder_keeps_the_offsite_contract() {
    let scratch = tempfile::tempdir().unwrap();
    let usb = scratch.path().join("usb");
    let temps = {
        let usb = usb.clone();
        move || files_under(&usb, &|name| name.starts_with(".keepsake-push-"))
    };
    conformance(Kind {
        name: "usb",
        // Not mounted yet: the folder is missing.
        table: format!(
            "[offsite.usb]\ntype = \"dir\"\npath = {:?}\nbwlimit = \"8M\"\n",
            usb.display().to_string()
        ),
        reach: Box::new(|_| std::fs::create_dir_all(&usb).unwrap()),
        object: Box::new(|key| usb.join(key)),
        // A temp beside the key (only the large file goes to its folder).
        uploading: Box::new(|key| {
            let folder = usb.join(key);
            !files_under(folder.parent().unwrap(), &|name| {
                name.starts_with(".keepsake-push-")
            })
            .is_empty()
        }),
        leftovers: Box::new(temps.clone()),
        // A temp is swept once nobody has written to it for ten minutes
        // (another machine may be pushing to the same share): let them age.
        later: Box::new(move || {
            let old = SystemTime::now() - Duration::from_secs(11 * 60);
            for temp in temps() {
                std::fs::File::options()
                    .write(true)
                    .open(&temp)
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
        }),
    });
}

#[test]
fn an_rclone_remote_keeps_the_offsite_contract() {
    let scratch = tempfile::tempdir().unwrap();
    let remote = scratch.path().join("nas");
    let table = |program: &str| {
        format!(
            "[offsite.nas]\ntype = \"rclone\"\nremote = {:?}\nrclone = {program:?}\nbwlimit = \"8M\"\n",
            remote.display().to_string()
        )
    };
    let partials = {
        let remote = remote.clone();
        move || files_under(&remote, &|name| name.ends_with(".partial"))
    };
    conformance(Kind {
        name: "nas",
        // rclone is not installed yet.
        table: table("/nonexistent/rclone"),
        reach: Box::new(|sandbox| {
            let config = std::fs::read_to_string(sandbox.config_path()).unwrap();
            std::fs::write(
                sandbox.config_path(),
                config.replace("/nonexistent/rclone", "rclone"),
            )
            .unwrap();
        }),
        object: Box::new(|key| remote.join(key)),
        // In place, or as rclone's `.partial` beside it.
        uploading: Box::new(|key| {
            let path = remote.join(key);
            let stem = path.file_name().unwrap().to_string_lossy().into_owned();
            !files_under(path.parent().unwrap(), &|name| name.starts_with(&stem)).is_empty()
        }),
        leftovers: Box::new(partials),
        later: Box::new(|| {}),
    });
}

/// A manifest copies nothing: the library file is the copy restic reads.
/// What applies: every file listed once and durably, never twice; damage
/// found by `verify --deep`; restore refused with the tool to use.
#[test]
fn a_manifest_keeps_the_offsite_contract_where_it_applies() {
    let scratch = tempfile::tempdir().unwrap();
    let manifest = scratch.path().join("restic/files.txt");
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        PIPELINE,
        "copy",
        &format!(
            "[stages.offsite]\ntargets = \"restic\"\n\n[offsite.restic]\ntype = \"manifest\"\npath = {:?}\n",
            manifest.display().to_string()
        ),
    );
    for photo in PHOTOS {
        sandbox.add(photo, &corpus_media().join(photo));
    }
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["offsite"]["pushed"], 0,
        "its folder is missing: {report}"
    );
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    let (code, out) = sandbox.run_text(&["offsite", "push"]);
    assert_eq!(code, 0, "{out}");
    let media = media_pushes(&sandbox, "restic");
    assert_eq!(media.len(), 3, "{media:?}");
    let listed = std::fs::read_to_string(&manifest).unwrap();
    for (_, file, state) in &media {
        assert_eq!(state, "done");
        let line = file.to_str().unwrap();
        assert_eq!(listed.lines().filter(|l| *l == line).count(), 1, "{listed}");
    }
    let (_, out) = sandbox.run_text(&["offsite", "push"]);
    assert!(out.contains("0 pushed"), "{out}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), listed);

    let damaged = &media[0];
    let mut bytes = std::fs::read(&damaged.1).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&damaged.1, bytes).unwrap();
    let (code, out) = sandbox.run_text(&["offsite", "verify", "--deep"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("damaged  restic: "), "{out}");

    let to = sandbox.path().join("restore");
    let (code, out) = sandbox.run_text(&[
        "offsite",
        "restore",
        "--target",
        "restic",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("restic restore"), "{out}");
    assert!(!to.exists() || files_under(&to, &|_| true).is_empty());
}
