//! Archival by year: the plan that proves a year safe to delete from
//! iCloud, the journaled move to the archive root, `verify`, and `ledger
//! rebuild` over both roots; crashes at every step and a full disk.
// The tests play bit rot and a lost offsite copy.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keepsake_tests::{Sandbox, blake3_of, corpus_media, hash_tree};

const PIPELINE: &str = "[\"dedup\", \"exif\", \"library\", \"offsite\"]";

/// A library of `per_year` photos for each year 2015..=2025, made from a
/// corpus JPEG whose EXIF dates exiftool rewrites (one exiftool process),
/// taken from an inbox named as icloudpd's, pushed to a folder target
/// `usb`; the archive root is `archive`.
fn years_sandbox(scratch: &Path, archive: &Path, per_year: u64) -> Sandbox {
    let sandbox = Sandbox::new();
    let usb = scratch.join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    sandbox.write_config_with(
        PIPELINE,
        "copy",
        &format!(
            "[stages.offsite]\ntargets = \"usb\"\n\n[offsite.usb]\ntype = \"dir\"\nsame_disk = true\npath = {:?}\n\n[archive]\nroot = {:?}\nicloud_inboxes = [\"inbox\"]\n",
            usb.display().to_string(),
            archive.display().to_string()
        ),
    );
    let photo = std::fs::read(corpus_media().join("exiftool_Canon.jpg")).unwrap();
    let mut args = String::new();
    for year in 2015..=2025u64 {
        for i in 0..per_year {
            let path = sandbox.inbox().join(format!("{year}/IMG_{i:04}.JPG"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &photo).unwrap();
            if i % 2 == 0 {
                // A sidecar (no date in it: the EXIF date stands) to travel
                // with its photo.
                std::fs::write(
                    path.with_extension("JPG.xmp"),
                    "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
                )
                .unwrap();
            }
            args.push_str(&format!(
                "-overwrite_original\n-AllDates={year}:07:{:02} 12:00:{:02}\n{}\n-execute\n",
                i % 28 + 1,
                i % 60,
                path.display()
            ));
        }
    }
    let argfile = scratch.join(format!("exiftool-args-{}.txt", std::process::id()));
    std::fs::write(&argfile, args).unwrap();
    let status = std::process::Command::new("exiftool")
        .args(["-q", "-q", "-@"])
        .arg(&argfile)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("exiftool (scripts/test.sh installs it)");
    assert!(status.success());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["offsite"]["deferred"], 0, "{report}");
    sandbox
}

fn run(sandbox: &Sandbox, args: &[&str]) -> (i32, String) {
    sandbox.run_text(args)
}

/// (root, path) → (BLAKE3, size, capture time) of every asset the ledger holds.
fn assets(sandbox: &Sandbox) -> BTreeMap<(String, String), (String, u64, Option<String>)> {
    let conn = sandbox.ledger();
    let mut stmt = conn
        .prepare("SELECT root, library_path, blake3, size, capture_time FROM assets")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?, r.get(4)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Every asset is in exactly the root the ledger says, with its bytes,
/// and in no other.
fn assert_agrees(sandbox: &Sandbox, archive: &Path) {
    for ((root, path), (blake3, _, _)) in assets(sandbox) {
        let (here, other) = if root == "archive" {
            (archive.join(&path), sandbox.library().join(&path))
        } else {
            (sandbox.library().join(&path), archive.join(&path))
        };
        assert!(here.exists(), "{root}:{path} is missing");
        assert_eq!(blake3_of(&here), blake3, "{root}:{path}");
        assert!(!other.exists(), "{path} is in both roots");
    }
}

/// The archive root's files, its marker aside.
fn archive_tree(archive: &Path) -> BTreeMap<PathBuf, String> {
    let mut tree = hash_tree(archive);
    tree.remove(Path::new(".keepsake-archive"));
    tree
}

fn media_of_year(tree: &BTreeMap<PathBuf, String>, year: &str) -> Vec<PathBuf> {
    tree.keys()
        .filter(|p| {
            p.starts_with(year) && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg"))
        })
        .cloned()
        .collect()
}

#[test]
fn a_year_is_proven_safe_then_archived_and_verified() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let sandbox = years_sandbox(scratch.path(), &archive, 4);
    let usb = scratch.path().join("usb");

    // Safe: every 2019 item is held, verifies, and is on the USB disk.
    let (code, out) = run(&sandbox, &["archive", "plan", "--year", "2019"]);
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap();
    assert_eq!(
        last, "2019: 4 items, all verified — safe to delete from iCloud",
        "{out}"
    );
    assert!(out.contains("--skip-created-before 2020-01-01"), "{out}");
    let state = sandbox.config().state_dir;
    let list = std::fs::read_to_string(state.join("archive/safe-to-delete-2019.txt")).unwrap();
    let names: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(names.len(), 4, "{list}");
    assert!(
        names
            .iter()
            .all(|l| l.starts_with("IMG_") && l.contains("\t2019-07-")),
        "{list}"
    );
    let plan: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("archive/plan-2019.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(plan["safe"], true);
    assert_eq!(plan["items"].as_array().unwrap().len(), 4);

    // One copy gone from the USB disk, one byte rotten in the library: not
    // safe, and the plan names exactly those two files and why.
    let library = hash_tree(&sandbox.library());
    let in_2019 = media_of_year(&library, "2019");
    assert_eq!(in_2019.len(), 4);
    let (lost, rotten) = (&in_2019[0], &in_2019[1]);
    let lost_bytes = std::fs::read(usb.join(lost)).unwrap();
    std::fs::remove_file(usb.join(lost)).unwrap();
    let good = std::fs::read(sandbox.library().join(rotten)).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(sandbox.library().join(rotten), &bad).unwrap();
    let (code, out) = run(&sandbox, &["archive", "plan", "--year", "2019"]);
    assert_eq!(code, 1, "{out}");
    let blocked: Vec<&str> = out.lines().filter(|l| l.contains("blocked")).collect();
    assert_eq!(blocked.len(), 2, "{out}");
    assert!(
        blocked
            .iter()
            .any(|l| l.contains(&lost.display().to_string()) && l.contains("offsite usb: missing")),
        "{out}"
    );
    assert!(
        blocked
            .iter()
            .any(|l| l.contains(&rotten.display().to_string()) && l.contains("bytes changed")),
        "{out}"
    );
    assert!(out.lines().last().unwrap().contains("NOT safe"), "{out}");
    assert!(
        !state.join("archive/safe-to-delete-2019.txt").exists(),
        "no list outlives its proof"
    );
    let (code, out) = run(&sandbox, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("damaged     library:{}", rotten.display())),
        "{out}"
    );
    assert!(out.contains("0 missing, 1 damaged, 0 unexpected"), "{out}");
    std::fs::write(usb.join(lost), lost_bytes).unwrap();
    std::fs::write(sandbox.library().join(rotten), good).unwrap();

    // The move: a dry run first, then the real thing.
    let (code, out) = run(&sandbox, &["archive", "run", "--year", "2019", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 files"), "{out}");
    assert_eq!(
        hash_tree(&sandbox.library()),
        library,
        "a dry run moves nothing"
    );
    let (code, out) = run(&sandbox, &["archive", "run", "--year", "2019"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 files"), "{out}");
    let archived = archive_tree(&archive);
    for path in &in_2019 {
        assert_eq!(archived.get(path), library.get(path), "{path:?}");
        assert!(!sandbox.library().join(path).exists());
    }
    let sidecars_moved = archived
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "xmp"))
        .count();
    assert_eq!(
        sidecars_moved, 2,
        "sidecars travel with their files: {archived:?}"
    );
    assert_eq!(
        hash_tree(&sandbox.library()).len() + archived.len(),
        library.len(),
        "nothing lost, nothing doubled"
    );
    assert_agrees(&sandbox, &archive);
    let (code, out) = run(&sandbox, &["archive", "run", "--year", "2019"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 files") && out.contains("4 already archived"),
        "{out}"
    );

    // Still safe, now from the archive; verify covers both roots.
    let (code, out) = run(&sandbox, &["archive", "plan", "--year", "2019"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&sandbox, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("44 files checked"), "{out}");
    let (code, out) = run(&sandbox, &["verify", "--root", "archive"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 files checked"), "{out}");
    let (code, out) = run(&sandbox, &["verify", "--year", "2020"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 files checked"), "{out}");
    std::fs::write(
        sandbox.library().join("2020/stray.jpg"),
        b"\xFF\xD8\xFF\xD9",
    )
    .unwrap();
    let (code, out) = run(&sandbox, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unexpected  library:2020/stray.jpg"), "{out}");
    std::fs::remove_file(sandbox.library().join("2020/stray.jpg")).unwrap();

    // A year keepsake knows nothing of is not "safe": nothing proves it.
    let (code, out) = run(&sandbox, &["archive", "plan", "--year", "2012"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no iCloud item of 2012"), "{out}");

    // The rolling policy names every year older than it keeps.
    let (_, out) = run(&sandbox, &["archive", "plan", "--older-than-years", "8"]);
    assert!(out.contains("archive plan 2015"), "{out}");
    assert!(!out.contains("archive plan 2019"), "{out}");

    // The files are the truth: a ledger rebuilt from both roots holds the
    // same assets.
    let before = assets(&sandbox);
    std::fs::remove_file(sandbox.config().ledger_path()).unwrap();
    let (code, out) = run(&sandbox, &["ledger", "rebuild"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(assets(&sandbox), before);
    assert!(before.values().all(|(_, _, time)| time.is_some()));
    // ... and the years can be verified and planned by year again.
    let (code, out) = run(&sandbox, &["verify", "--year", "2019"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 files checked"), "{out}");
}

/// Every fault point of an archive run, on the same filesystem (renames)
/// and across filesystems (copy, verify, remove).
#[test]
fn a_crash_at_any_step_of_an_archive_run_loses_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let other_fs = Path::new("/dev/shm");
    let mut roots = vec![scratch.path().join("archive-same-fs")];
    if other_fs.is_dir() {
        roots.push(tempfile::tempdir_in(other_fs).unwrap().keep());
    }
    for archive_base in roots {
        let mut k = 1;
        loop {
            let archive = archive_base.join(format!("k{k}"));
            std::fs::create_dir_all(&archive).unwrap();
            let sandbox = years_sandbox(scratch.path(), &archive, 2);
            let library_before = hash_tree(&sandbox.library());
            let status = sandbox
                .command(&["archive", "run", "--year", "2019"])
                .env("KEEPSAKE_FAULT_AFTER", k.to_string())
                .output()
                .unwrap()
                .status;
            // Nothing lost even before recovery: every file is in a root.
            let mut union = hash_tree(&sandbox.library());
            for (path, hash) in archive_tree(&archive) {
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".keepsake")
                {
                    continue;
                }
                union.insert(path, hash);
            }
            for (path, hash) in &library_before {
                assert_eq!(union.get(path), Some(hash), "k={k}: {path:?} lost");
            }
            // The next run finishes the journal and the move.
            let (code, out) = run(&sandbox, &["archive", "run", "--year", "2019"]);
            assert_eq!(code, 0, "k={k}: {out}");
            assert_agrees(&sandbox, &archive);
            let archived = archive_tree(&archive);
            assert!(
                archived
                    .keys()
                    .all(|p| !p.to_string_lossy().contains(".keepsake")),
                "k={k}: temp files left: {archived:?}"
            );
            assert_eq!(
                hash_tree(&sandbox.library()).len() + archived.len(),
                library_before.len(),
                "k={k}: nothing lost or doubled"
            );
            let (code, out) = run(&sandbox, &["verify"]);
            assert_eq!(code, 0, "k={k}: {out}");
            if status.success() {
                break;
            }
            k += 1;
            assert!(k < 40, "the run never finished");
        }
        let _ = std::fs::remove_dir_all(&archive_base);
    }
}

#[test]
fn a_full_archive_disk_stops_the_move_cleanly() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("small-disk");
    std::fs::create_dir_all(&archive).unwrap();
    // A real small filesystem when this machine lets us mount one; else the
    // archive is told the disk is full at its third file.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&archive)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    eprintln!("archive on a 16 KiB tmpfs: {mounted}");
    let sandbox = years_sandbox(scratch.path(), &archive, 8);
    let library_before = hash_tree(&sandbox.library());
    let mut command = sandbox.command(&["archive", "run", "--year", "2019"]);
    if !mounted {
        command.env("KEEPSAKE_FAULT_FULL_AFTER", "3");
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let checks = || {
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("archive disk is full"), "{text}");
        assert!(text.contains("free space and run again"), "{text}");
        let mut union = hash_tree(&sandbox.library());
        let archived = archive_tree(&archive);
        assert!(
            archived
                .keys()
                .all(|p| !p.to_string_lossy().contains(".keepsake")),
            "no temp file left on the full disk: {archived:?}"
        );
        union.extend(archived);
        for (path, hash) in &library_before {
            assert_eq!(union.get(path), Some(hash), "{path:?} lost");
        }
        assert_agrees(&sandbox, &archive);
        let (code, out) = run(&sandbox, &["verify"]);
        assert_eq!(code, 0, "{out}");
        let (_, status) = run(&sandbox, &["status"]);
        assert!(
            status.contains("last archive run: 2019: the archive disk is full"),
            "{status}"
        );
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(checks));
    if mounted {
        let _ = std::process::Command::new("umount").arg(&archive).status();
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_sweep_archives_years_past_the_rolling_policy_when_allowed() {
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let sandbox = years_sandbox(scratch.path(), &archive, 2);
    // [archive] is the last table of the config: these keys land in it.
    let mut config = std::fs::read_to_string(sandbox.config_path()).unwrap();
    // Whatever the year is now, the policy lets 2015-2017 go and keeps 2018.
    let this_year = i32::from(
        jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .datetime()
            .year(),
    );
    let keep = this_year - 2018;
    config.push_str(&format!(
        "keep_years = {keep}\nsweep_hours = 0.0005\nauto_run = true\nremove_icloud_copies = true\n"
    ));
    std::fs::write(sandbox.config_path(), config).unwrap();
    let old_years: Vec<i32> = (2015..2018).collect();
    let mut service = sandbox.start();
    service.wait_for(
        std::time::Duration::from_secs(60),
        "the sweep to archive the old years",
        || {
            let archived = sandbox
                .ledger()
                .query_row(
                    "SELECT COUNT(*) FROM assets WHERE root = 'archive'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap();
            let downloads_left: usize = old_years
                .iter()
                .map(|year| photos_in(&sandbox.inbox().join(year.to_string())))
                .sum();
            archived == 2 * old_years.len() as i64 && downloads_left == 0
        },
    );
    let (status, _) = service.stop(std::time::Duration::from_secs(30));
    let log = service.log_text();
    assert!(status.success(), "{log}");
    assert!(log.contains("safe to delete from iCloud"), "{log}");
    assert_agrees(&sandbox, &archive);
    let state = sandbox.config().state_dir;
    for year in &old_years {
        assert!(
            state.join(format!("archive/plan-{year}.json")).exists(),
            "plan of {year}"
        );
    }
    let kept = 2018;
    assert!(
        !archive.join(kept.to_string()).exists(),
        "{kept} stays in the library"
    );
    // Archived, verified and proven safe: their iCloud downloads are gone;
    // the years iCloud keeps are untouched.
    // Sidecars stay: keepsake may have merged them, so it cannot prove the
    // archive holds their bytes.
    for year in &old_years {
        assert_eq!(
            photos_in(&sandbox.inbox().join(year.to_string())),
            0,
            "{year}"
        );
    }
    assert_eq!(photos_in(&sandbox.inbox().join(kept.to_string())), 2);
}

fn photos_in(dir: &Path) -> usize {
    hash_tree(dir)
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")))
        .count()
}
