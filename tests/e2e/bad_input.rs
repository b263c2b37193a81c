//! Bad input: a clear error or skip for each file, nothing lost, the run goes on.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use keepsake_tests::*;

/// Root reads a mode-000 file anyway, so as root the test runs keepsake as
/// `nobody` (with setpriv). /proc/self belongs to the effective user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn bad_files_get_clear_errors_and_the_rest_is_processed() {
    let sandbox = Sandbox::new();
    let inbox = sandbox.inbox();
    let good = corpus_media().join("exiftool_Canon.jpg");
    std::fs::write(inbox.join("good.jpg"), std::fs::read(&good).unwrap()).unwrap();
    std::fs::write(inbox.join("empty.jpg"), b"").unwrap();
    std::fs::write(inbox.join("notes.jpg"), b"this is not a photo at all").unwrap();
    // A directory named like a photo, with a real photo inside.
    std::fs::create_dir(inbox.join("IMG_9999.JPG")).unwrap();
    fake_jpeg(&inbox.join("IMG_9999.JPG/inside.jpg"), 7, 3000);
    // Non-UTF-8 name, and the same word in NFC and NFD (different bytes).
    let latin1 = inbox.join(std::ffi::OsStr::from_bytes(b"caf\xe9.jpg"));
    fake_jpeg(&latin1, 8, 3000);
    fake_jpeg(&inbox.join("caf\u{e9}-nfc.jpg"), 9, 3000);
    fake_jpeg(&inbox.join("cafe\u{301}-nfd.jpg"), 10, 3000);
    // A symlink leaving the inbox is never followed.
    let outside = sandbox.path().join("outside.jpg");
    fake_jpeg(&outside, 11, 3000);
    std::os::unix::fs::symlink(&outside, inbox.join("link.jpg")).unwrap();
    // Partial downloads are never taken.
    fake_jpeg(&inbox.join("IMG_2.JPG.part"), 12, 3000);
    fake_jpeg(&inbox.join(".syncthing.IMG_3.JPG.tmp"), 13, 3000);
    let before = hash_tree(&inbox);

    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 5, "{report}");
    assert_eq!(report["quarantined"], 2, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let jobs = sandbox.jobs();
    let by_name = |name: &str| {
        jobs.iter()
            .find(|j| j["relative_path"] == name)
            .unwrap_or_else(|| panic!("no job for {name}: {jobs:?}"))
    };
    assert!(
        by_name("empty.jpg")["reason"]
            .as_str()
            .unwrap()
            .contains("empty")
    );
    assert!(
        by_name("notes.jpg")["reason"]
            .as_str()
            .unwrap()
            .contains("not a photo or video")
    );
    assert_eq!(by_name("IMG_9999.JPG/inside.jpg")["state"], "done");
    assert_eq!(by_name("caf\u{FFFD}.jpg")["state"], "done");
    assert!(
        jobs.iter()
            .all(|j| !j["relative_path"].as_str().unwrap().contains("link"))
    );
    assert!(
        jobs.iter()
            .all(|j| !j["relative_path"].as_str().unwrap().contains("IMG_2"))
    );
    let library = hash_tree(&sandbox.library());
    assert!(
        !library.values().any(|h| *h == blake3_of(&outside)),
        "the symlink target was taken"
    );
    // The NFC and NFD names are different files and both are kept.
    assert!(
        library
            .keys()
            .any(|p| p.to_string_lossy().ends_with("caf\u{e9}-nfc.jpg"))
    );
    assert!(
        library
            .keys()
            .any(|p| p.to_string_lossy().ends_with("cafe\u{301}-nfd.jpg"))
    );
    assert_consistent(&sandbox, &before);
}

#[test]
fn an_unreadable_file_fails_with_a_clear_error_and_retry_takes_it_later() {
    let sandbox = Sandbox::new();
    let inbox = sandbox.inbox();
    fake_jpeg(&inbox.join("ok.jpg"), 1, 4000);
    fake_jpeg(&inbox.join("locked.jpg"), 2, 4000);
    std::fs::set_permissions(
        inbox.join("locked.jpg"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    // As root a mode-000 file is readable: run keepsake as `nobody` then,
    // with the sandbox open to it.
    let as_nobody = is_root();
    if as_nobody {
        for dir in [sandbox.path(), &inbox] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::set_permissions(inbox.join("ok.jpg"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let run = |args: &[&str]| {
        let mut cmd = if as_nobody {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(keepsake_bin());
            cmd
        } else {
            Command::new(keepsake_bin())
        };
        cmd.current_dir(sandbox.path())
            .arg("--config")
            .arg(sandbox.config_path())
            .args(args);
        cmd.output().unwrap()
    };
    let out = run(&["ingest"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed job makes ingest exit 1: {stdout}"
    );
    assert!(
        stdout.contains("locked.jpg") && stdout.contains("ermission denied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("keepsake retry"),
        "the error says what to do next: {stdout}"
    );
    let failed = sandbox.run(&["jobs", "--failed", "--json"]);
    let failed = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.lines().count(), 1, "{failed}");
    let status = String::from_utf8_lossy(&sandbox.run(&["status"]).stdout).into_owned();
    assert!(
        status.contains("failed 1") && status.contains("locked.jpg"),
        "{status}"
    );

    // Fix it, retry, and it goes through.
    std::fs::set_permissions(
        inbox.join("locked.jpg"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = run(&["retry", "--failed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["ingest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let jobs = sandbox.jobs();
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:?}");
    let locked = job_named(&jobs, "locked.jpg");
    assert_eq!(locked["attempts"], 2);
}

#[test]
fn a_file_deleted_between_discovery_and_processing_is_skipped_and_the_run_goes_on() {
    let sandbox = Sandbox::new();
    fake_jpeg(&sandbox.inbox().join("stays.jpg"), 1, 4000);
    fake_jpeg(&sandbox.inbox().join("goes.jpg"), 2, 4000);
    let pipeline = keepsake::open_pipeline(sandbox.config()).unwrap();
    let discovery = pipeline.discover(&[]).unwrap();
    #[allow(clippy::disallowed_methods)]
    std::fs::remove_file(sandbox.inbox().join("goes.jpg")).unwrap();
    let report = pipeline.process(discovery).unwrap();
    assert_eq!(report.placed, 1);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.failed, 0);
    drop(pipeline);
    let jobs = sandbox.jobs();
    let gone = job_named(&jobs, "goes.jpg");
    assert_eq!(gone["state"], "skipped");
    assert!(gone["reason"].as_str().unwrap().contains("disappeared"));
}

#[test]
fn a_file_rewritten_between_discovery_and_reading_is_not_taken_half_and_stays_in_a_move_inbox() {
    let sandbox = Sandbox::new();
    sandbox.write_config_with("[\"dedup\", \"exif\", \"library\"]", "move", "");
    fake_jpeg(&sandbox.inbox().join("rewritten.jpg"), 1, 40_000);
    let pipeline = keepsake::open_pipeline(sandbox.config()).unwrap();
    let discovery = pipeline.discover(&[]).unwrap();
    // A sync tool rewrites the file in place after keepsake found it.
    fake_jpeg(&sandbox.inbox().join("rewritten.jpg"), 2, 50_000);
    let newer = blake3_of(&sandbox.inbox().join("rewritten.jpg"));
    let report = pipeline.process(discovery).unwrap();
    assert_eq!((report.placed, report.skipped), (0, 1));
    drop(pipeline);
    let jobs = sandbox.jobs();
    let job = job_named(&jobs, "rewritten.jpg");
    assert_eq!(job["state"], "skipped");
    assert!(job["reason"].as_str().unwrap().contains("changed"), "{job}");
    assert_eq!(
        blake3_of(&sandbox.inbox().join("rewritten.jpg")),
        newer,
        "the newer version stays in the move-mode inbox"
    );
    // The next run takes the newer version.
    let (code, report) = sandbox.ingest();
    assert_eq!((code, report["placed"].as_u64()), (0, Some(1)), "{report}");
    assert!(!sandbox.inbox().join("rewritten.jpg").exists());
}

#[test]
fn files_cut_short_are_quarantined_saying_where_they_end_and_the_whole_download_is_taken_later() {
    let sandbox = Sandbox::new();
    let inbox = sandbox.inbox();
    let cut = |name: &str, from: &str, len: fn(usize) -> usize| {
        let bytes = std::fs::read(corpus_media().join(from)).unwrap();
        std::fs::write(inbox.join(name), &bytes[..len(bytes.len())]).unwrap();
    };
    // The first half of a JPEG: its EXIF intact, the image cut.
    cut("half.jpg", "mde_Apple iPhone 4.jpg", |n| n / 2);
    // A JPEG whose APP1 (its EXIF) claims more bytes than the file has.
    cut("app1.jpg", "mde_Samsung GT-I9000 (Galaxy S).jpg", |_| 1000);
    cut(
        "no-iend.png",
        "mde_photoshop-8x12-rgb24-all-metadata.png",
        |n| n - 12,
    );
    cut("half.heic", "exifsamples_IMG_5195.HEIC", |n| n / 2);
    cut("half.mp4", "mde_with-gps.mp4", |n| n / 2);
    cut("half.mov", "elodie_video.mov", |n| n * 2 / 3);
    let before = hash_tree(&inbox);
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (report["placed"].as_u64(), report["quarantined"].as_u64()),
        (Some(0), Some(6)),
        "{report}"
    );
    let jobs = sandbox.jobs();
    for (name, why) in [
        ("half.jpg", "without its end-of-image marker"),
        ("app1.jpg", "APP1 segment at byte 2 claims 10838 bytes"),
        ("no-iend.png", "without its IEND chunk"),
        ("half.heic", "box at byte"),
        ("half.mp4", "`mdat` box at byte"),
        ("half.mov", "box at byte"),
    ] {
        let job = job_named(&jobs, name);
        assert_eq!(job["state"], "quarantined", "{job}");
        let reason = job["reason"].as_str().unwrap();
        assert!(
            reason.contains(why) && reason.contains("ends early"),
            "{name}: {reason}"
        );
    }
    // Never placed: the library holds no file; the copy-mode inbox holds
    // every byte it had.
    assert!(
        hash_tree(&sandbox.library())
            .keys()
            .all(|p| p.starts_with(".keepsake")),
        "{:?}",
        hash_tree(&sandbox.library())
    );
    assert_eq!(hash_tree(&inbox), before);

    // The download completes: the whole file is taken, byte for byte.
    let whole = corpus_media().join("mde_Apple iPhone 4.jpg");
    std::fs::write(inbox.join("half.jpg"), std::fs::read(&whole).unwrap()).unwrap();
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 1, "{report}");
    let jobs = sandbox.jobs();
    let placed = jobs
        .iter()
        .find(|j| j["relative_path"] == "half.jpg" && j["state"] == "done")
        .unwrap_or_else(|| panic!("the whole download was not taken: {jobs:?}"));
    let dest = std::path::Path::new(placed["destination"].as_str().unwrap());
    assert_eq!(blake3_of(dest), blake3_of(&whole));
}
