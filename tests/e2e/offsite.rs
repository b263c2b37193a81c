//! Offsite push against real targets: a real S3 server (s3s-fs) on
//! 127.0.0.1 and a folder; outages, tampering and refusals.
// The tests play the server's disk going bad.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use keepsake_tests::{S3Server, Sandbox, blake3_of, copy_tree, corpus_media, write_large};

const PIPELINE: &str = "[\"dedup\", \"exif\", \"library\", \"offsite\"]";

fn sandbox_with(targets: &str, target_tables: &str) -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        PIPELINE,
        "copy",
        &format!("[stages.offsite]\ntargets = \"{targets}\"\n\n{target_tables}"),
    );
    sandbox
}

/// A folder target `usb` under `dir` (created): its path and its
/// `[offsite.usb]` table, with `extra` lines.
fn usb_target(dir: &Path, extra: &str) -> (PathBuf, String) {
    let usb = dir.join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let table = format!(
        "[offsite.usb]\ntype = \"dir\"\npath = {:?}\n{extra}",
        usb.display().to_string()
    );
    (usb, table)
}

/// (target, key, library file) of every push the ledger records as done.
fn done_pushes(sandbox: &Sandbox) -> Vec<(String, String, PathBuf)> {
    let conn = sandbox.ledger();
    let mut stmt = conn
        .prepare("SELECT target, key, file FROM pushes WHERE state = 'done' ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            sandbox.library().join(r.get::<_, String>(2)?),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn count(sandbox: &Sandbox, condition: &str) -> i64 {
    sandbox
        .ledger()
        .query_row(
            &format!("SELECT COUNT(*) FROM pushes WHERE {condition}"),
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn run(sandbox: &Sandbox, args: &[&str]) -> (i32, String) {
    sandbox.run_text(args)
}

#[test]
fn the_corpus_goes_to_s3_and_a_folder_and_verifies_deep() {
    let scratch = tempfile::tempdir().unwrap();
    let server = S3Server::start(&scratch.path().join("s3"));
    let (usb, usb_table) = usb_target(scratch.path(), "");
    let sandbox = sandbox_with(
        "s3,usb",
        &format!("{}\n{usb_table}", server.target("s3", scratch.path())),
    );
    copy_tree(&corpus_media(), &sandbox.inbox());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    let placed = report["placed"].as_u64().unwrap();
    let pushed = report["offsite"]["pushed"].as_u64().unwrap();
    assert!(
        pushed >= 2 * placed,
        "every placed file (and its sidecars) to both targets: {report}"
    );
    assert_eq!(report["offsite"]["deferred"], 0, "{report}");
    let pushes = done_pushes(&sandbox);
    assert_eq!(pushes.len() as u64, pushed);
    assert!(
        pushes.iter().any(|(_, key, _)| key.ends_with(".xmp")),
        "sidecars travel with their files"
    );
    for (target, key, file) in &pushes {
        let remote = match target.as_str() {
            "s3" => server.object(key),
            _ => usb.join(key),
        };
        assert_eq!(blake3_of(&remote), blake3_of(file), "{target}: {key}");
    }
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{pushed} checked, {pushed} as pushed")),
        "{out}"
    );
    // Pushing again pushes nothing twice.
    let (code, out) = run(&sandbox, &["offsite", "push"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 pushed"), "{out}");
    let (_, status) = run(&sandbox, &["offsite", "status"]);
    assert!(
        status.contains(&format!("pushed {}", pushed / 2)),
        "{status}"
    );
}

#[test]
fn an_outage_defers_pushes_and_they_complete_when_the_server_returns() {
    let scratch = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(&scratch.path().join("s3"));
    let sandbox = sandbox_with("s3", &server.target("s3", scratch.path()));
    for name in [
        "exiftool_Canon.jpg",
        "mde_with-gps.mov",
        "exifsamples_IMG_5195.HEIC",
    ] {
        sandbox.add(name, &corpus_media().join(name));
    }
    // A large file goes up in parts.
    write_large(&sandbox.inbox().join("VID_0001.MOV"), 40);
    server.stop();
    let (code, report) = sandbox.ingest();
    assert_eq!(
        code, 0,
        "the jobs are done; only their pushes wait: {report}"
    );
    assert_eq!(report["offsite"]["pushed"], 0, "{report}");
    assert!(
        report["offsite"]["deferred"].as_u64().unwrap() >= 4,
        "{report}"
    );
    let (_, status) = run(&sandbox, &["offsite", "status"]);
    assert!(
        status.contains("deferred") && status.contains("offsite target s3"),
        "{status}"
    );
    assert_eq!(count(&sandbox, "state = 'done'"), 0);

    server.restart();
    let (code, out) = run(&sandbox, &["offsite", "push"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&sandbox, "state != 'done'"), 0, "{out}");
    for (_, key, file) in done_pushes(&sandbox) {
        assert_eq!(blake3_of(&server.object(&key)), blake3_of(&file), "{key}");
    }
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn tampering_on_the_server_is_reported_by_verify() {
    let scratch = tempfile::tempdir().unwrap();
    let server = S3Server::start(&scratch.path().join("s3"));
    let sandbox = sandbox_with("s3", &server.target("s3", scratch.path()));
    for name in [
        "exiftool_Canon.jpg",
        "exiftool_Nikon.jpg",
        "mde_with-gps.mov",
    ] {
        sandbox.add(name, &corpus_media().join(name));
    }
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    let pushes = done_pushes(&sandbox);
    let media: Vec<&(String, String, PathBuf)> = pushes
        .iter()
        .filter(|(_, key, _)| !key.ends_with(".xmp"))
        .collect();
    assert!(media.len() >= 3);
    // One object deleted, one corrupted in place (same size).
    let (_, deleted, _) = media[0];
    let (_, corrupted, _) = media[1];
    std::fs::remove_file(server.object(deleted)).unwrap();
    let mut bytes = std::fs::read(server.object(corrupted)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(server.object(corrupted), bytes).unwrap();

    let (code, out) = run(&sandbox, &["offsite", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("missing  s3: {deleted}")), "{out}");
    assert!(out.contains("1 missing, 0 damaged"), "{out}");
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 missing, 1 damaged"), "{out}");
    assert!(out.contains(&format!("damaged  s3: {corrupted}")), "{out}");
}

#[test]
fn refusals_name_the_target_and_mark_nothing_pushed() {
    let scratch = tempfile::tempdir().unwrap();
    let server = S3Server::start(&scratch.path().join("s3"));
    let good = server.target("s3", scratch.path());
    let cases = [
        (
            good.replace(
                "credentials_file",
                "access_key_env = \"KEEPSAKE_NO_SUCH_KEY\"\n# credentials_file",
            ),
            "KEEPSAKE_NO_SUCH_KEY",
        ),
        (
            {
                let wrong = scratch.path().join("wrong.env");
                std::fs::write(
                    &wrong,
                    "AWS_ACCESS_KEY_ID=keepsake-test\nAWS_SECRET_ACCESS_KEY=wrong\n",
                )
                .unwrap();
                format!(
                    "[offsite.s3]\ntype = \"s3\"\nendpoint = \"http://127.0.0.1:{}\"\nbucket = \"photos\"\ncredentials_file = {:?}\n",
                    server.port,
                    wrong.display().to_string()
                )
            },
            "credentials",
        ),
        (
            good.replace("bucket = \"photos\"", "bucket = \"nobucket\""),
            "offsite target s3",
        ),
        (
            good.replace(&format!("127.0.0.1:{}", server.port), "127.0.0.1:9"),
            "offsite target s3",
        ),
    ];
    for (table, expected) in cases {
        let sandbox = sandbox_with("s3", &table);
        sandbox.add("a.jpg", &corpus_media().join("exiftool_Canon.jpg"));
        let (code, report) = sandbox.ingest();
        assert_eq!(code, 0, "{table}: {report}");
        assert_eq!(report["offsite"]["pushed"], 0, "{table}: {report}");
        let (_, status) = run(&sandbox, &["offsite", "status"]);
        assert!(status.contains(expected), "{table}: {status}");
        assert_eq!(count(&sandbox, "state = 'done'"), 0, "{table}");
        assert!(count(&sandbox, "state = 'deferred'") > 0, "{table}");
    }
    assert!(
        !scratch.path().join("s3/nobucket").exists(),
        "no bucket is created"
    );
}

#[test]
fn a_stage_naming_an_unknown_target_fails_its_job_with_the_fix() {
    let sandbox = sandbox_with("nowhere", "");
    sandbox.add("a.jpg", &corpus_media().join("exiftool_Canon.jpg"));
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 1, "{report}");
    let jobs = sandbox.jobs();
    assert!(
        jobs[0]["error"]
            .as_str()
            .unwrap()
            .contains("[offsite.nowhere]"),
        "{jobs:?}"
    );
}

#[test]
fn kill_9_during_uploads_leaves_every_object_exactly_once() {
    let scratch = tempfile::tempdir().unwrap();
    let server = S3Server::start(&scratch.path().join("s3"));
    let sandbox = sandbox_with("s3", &server.target("s3", scratch.path()));
    let mut config = std::fs::read_to_string(sandbox.config_path()).unwrap();
    config.push_str("\n[service]\nstability_secs = 0.2\nrescan_secs = 0\n");
    std::fs::write(sandbox.config_path(), config).unwrap();
    for i in 0..300u64 {
        keepsake_tests::fake_jpeg(
            &sandbox
                .inbox()
                .join(format!("{:02}/IMG_{i:04}.jpg", i % 10)),
            i + 1,
            30_000 + (i as usize * 997) % 200_000,
        );
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("kill seed {seed}");
    let mut service = sandbox.start();
    for round in 0..4u64 {
        std::thread::sleep(std::time::Duration::from_millis(
            400 + (seed.wrapping_mul(round + 7) >> 3) % 900,
        ));
        service.kill9();
        service = sandbox.start();
    }
    service.wait_for(
        std::time::Duration::from_secs(300),
        "every push done",
        || {
            sandbox.count_jobs("state = 'done'") == 300
                && count(&sandbox, "state != 'done'") == 0
                && count(&sandbox, "1 = 1") >= 300
        },
    );
    let (status, _) = service.stop(std::time::Duration::from_secs(30));
    assert!(status.success());
    // Every object once: the server's folder holds exactly the pushed keys.
    let pushes = done_pushes(&sandbox);
    let on_server: Vec<PathBuf> = keepsake_tests::hash_tree(&server.root.join("photos/family"))
        .into_keys()
        .filter(|p| !p.iter().any(|part| part.to_string_lossy().starts_with('.')))
        .collect();
    assert_eq!(on_server.len(), pushes.len(), "no extra or missing objects");
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn an_unmounted_disk_is_not_filled_in_its_place() {
    let scratch = tempfile::tempdir().unwrap();
    let (usb, usb_table) = usb_target(scratch.path(), "");
    let sandbox = sandbox_with("usb", &usb_table);
    sandbox.add("a.jpg", &corpus_media().join("exiftool_Canon.jpg"));
    let (code, report) = sandbox.ingest();
    assert_eq!(
        (code, report["offsite"]["pushed"].as_u64()),
        (0, Some(1)),
        "{report}"
    );
    // The disk is unplugged: an empty mount point is left behind.
    std::fs::rename(&usb, scratch.path().join("usb-unplugged")).unwrap();
    std::fs::create_dir_all(&usb).unwrap();
    sandbox.add("b.jpg", &corpus_media().join("exiftool_Nikon.jpg"));
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["offsite"]["deferred"], 1, "{report}");
    assert_eq!(
        std::fs::read_dir(&usb).unwrap().count(),
        0,
        "nothing is written into the empty mount point"
    );
    let (_, status) = run(&sandbox, &["offsite", "status"]);
    assert!(status.contains("is the disk mounted?"), "{status}");
    // Plugged in again: the push completes.
    std::fs::remove_dir(&usb).unwrap();
    std::fs::rename(scratch.path().join("usb-unplugged"), &usb).unwrap();
    let (code, out) = run(&sandbox, &["offsite", "push"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&sandbox, "state = 'done'"), 2);
}

/// An rclone wrapper that records each start, so a test can count them.
fn rclone_wrapper(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let starts = dir.join("rclone-starts.log");
    let wrapper = dir.join("rclone-wrapper.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$$ $*\" >> {:?}\nexec rclone \"$@\"\n",
            starts.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, starts)
}

fn rcd_processes(marker: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn an_rclone_remote_takes_the_corpus_through_one_rcd() {
    let scratch = tempfile::tempdir().unwrap();
    let remote_dir = scratch.path().join("nas-share");
    let rclone_conf = scratch.path().join("rclone.conf");
    std::fs::write(&rclone_conf, "[nas]\ntype = local\n").unwrap();
    let (wrapper, starts) = rclone_wrapper(scratch.path());
    let sandbox = sandbox_with(
        "nas",
        &format!(
            "[offsite.nas]\ntype = \"rclone\"\nremote = \"nas:{}\"\nrclone = {:?}\nrclone_config = {:?}\n",
            remote_dir.display(),
            wrapper.display().to_string(),
            rclone_conf.display().to_string()
        ),
    );
    copy_tree(&corpus_media(), &sandbox.inbox());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    // 68 placed (the empty file and the one cut short are quarantined),
    // each pushed, with the sidecars it carries.
    assert_eq!(report["placed"], 68, "{report}");
    let pushed = report["offsite"]["pushed"].as_u64().unwrap();
    assert!(pushed >= 68, "{report}");
    assert_eq!(report["offsite"]["deferred"], 0, "{report}");
    let started = std::fs::read_to_string(&starts).unwrap();
    assert_eq!(
        started.lines().count(),
        1,
        "one rclone rcd for {pushed} files: {started}"
    );
    assert!(started.contains("rcd"), "{started}");
    // It does not outlive keepsake.
    keepsake_tests::wait_for(
        std::time::Duration::from_secs(10),
        "rclone rcd to exit with keepsake",
        || rcd_processes(&rclone_conf.display().to_string()) == 0,
    );
    let pushes = done_pushes(&sandbox);
    assert_eq!(pushes.len() as u64, pushed);
    for (_, key, file) in &pushes {
        assert_eq!(blake3_of(&remote_dir.join(key)), blake3_of(file), "{key}");
    }
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{pushed} checked, {pushed} as pushed")),
        "{out}"
    );

    // Tampering on the remote is found, through rclone.
    let media: Vec<&(String, String, PathBuf)> = pushes
        .iter()
        .filter(|(_, key, _)| !key.ends_with(".xmp"))
        .collect();
    let (_, deleted, _) = media[0];
    let (_, corrupted, _) = media[1];
    std::fs::remove_file(remote_dir.join(deleted)).unwrap();
    let mut bytes = std::fs::read(remote_dir.join(corrupted)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(remote_dir.join(corrupted), bytes).unwrap();
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 missing, 1 damaged"), "{out}");
    assert!(out.contains(&format!("missing  nas: {deleted}")), "{out}");
    assert!(out.contains(&format!("damaged  nas: {corrupted}")), "{out}");

    // A remote rclone does not know is a refusal naming the target.
    let other = sandbox_with(
        "nas",
        &format!(
            "[offsite.nas]\ntype = \"rclone\"\nremote = \"nosuch:photos\"\nrclone_config = {:?}\n",
            rclone_conf.display().to_string()
        ),
    );
    other.add("a.jpg", &corpus_media().join("exiftool_Canon.jpg"));
    let (code, report) = other.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["offsite"]["pushed"], 0, "{report}");
    let (_, status) = run(&other, &["offsite", "status"]);
    assert!(
        status.contains("offsite target nas") && status.contains("rclone config"),
        "{status}"
    );
    assert_eq!(count(&other, "state = 'done'"), 0);
}

#[test]
fn a_manifest_lists_library_files_for_restic() {
    let scratch = tempfile::tempdir().unwrap();
    let manifest = scratch.path().join("restic-files.txt");
    let sandbox = sandbox_with(
        "restic",
        &format!(
            "[offsite.restic]\ntype = \"manifest\"\npath = {:?}\n",
            manifest.display().to_string()
        ),
    );
    for name in ["exiftool_Canon.jpg", "mde_with-gps.mov"] {
        sandbox.add(name, &corpus_media().join(name));
    }
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    let pushes = done_pushes(&sandbox);
    assert!(pushes.len() >= 2, "{report}");
    let listed = std::fs::read_to_string(&manifest).unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), pushes.len(), "{listed}");
    for (_, _, file) in &pushes {
        assert!(lines.contains(&file.to_str().unwrap()), "{listed}");
    }
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 0, "{out}");
    // Once listed, never twice.
    sandbox
        .ledger()
        .execute("UPDATE pushes SET state = 'pending'", [])
        .unwrap();
    let (code, out) = run(&sandbox, &["offsite", "push"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), listed);
}

#[test]
fn encrypted_pushes_verify_and_restore_only_with_the_identity() {
    let scratch = tempfile::tempdir().unwrap();
    let server = S3Server::start(&scratch.path().join("s3"));
    let identity = scratch.path().join("offsite-key.txt");
    let keygen = std::process::Command::new(keepsake_tests::keepsake_bin())
        .args(["offsite", "keygen"])
        .arg(&identity)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let printed = String::from_utf8_lossy(&keygen.stdout);
    let recipient = printed
        .lines()
        .find(|l| l.starts_with("age1"))
        .expect("the public key is printed")
        .to_string();
    let recipients_file = scratch.path().join("recipients.txt");
    std::fs::write(
        &recipients_file,
        format!("# family offsite key\n{recipient}\n"),
    )
    .unwrap();
    let sandbox = sandbox_with(
        "s3",
        &format!(
            "{}age_recipients_file = {:?}\n",
            server.target("s3", scratch.path()),
            recipients_file.display().to_string()
        ),
    );
    for name in [
        "exiftool_Canon.jpg",
        "mde_with-gps.mov",
        "exifsamples_IMG_5195.HEIC",
    ] {
        sandbox.add(name, &corpus_media().join(name));
    }
    // Names S3 clients like to percent-encode: the object keeps the name.
    sandbox.add(
        "Beach [1] #2 50%.jpg",
        &corpus_media().join("exiftool_Nikon.jpg"),
    );
    write_large(&sandbox.inbox().join("VID_0002.MOV"), 20);
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["offsite"]["deferred"], 0, "{report}");
    let pushes = done_pushes(&sandbox);
    assert!(pushes.len() >= 5);
    assert!(
        pushes.iter().any(|(_, key, _)| key.contains("[1] #2 50%")),
        "{pushes:?}"
    );
    for (_, key, file) in &pushes {
        assert!(!server.object(key).exists(), "no plaintext object {key}");
        let sealed = std::fs::read(server.object(&format!("{key}.age"))).unwrap();
        assert!(
            sealed.starts_with(b"age-encryption.org/v1\n"),
            "{key} is an age file"
        );
        assert_ne!(blake3::hash(&sealed).to_hex().to_string(), blake3_of(file));
    }
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 0, "{out}");

    // A crash between the upload and its record: the object is recognised
    // by the ciphertext noted before it was sent, not uploaded again.
    let (_, first_key, _) = &pushes[0];
    let before = blake3_of(&server.object(&format!("{first_key}.age")));
    sandbox
        .ledger()
        .execute(
            "UPDATE pushes SET state = 'pending' WHERE id = (SELECT MIN(id) FROM pushes)",
            [],
        )
        .unwrap();
    let (code, out) = run(&sandbox, &["offsite", "push"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&sandbox, "state = 'done'"), pushes.len() as i64);
    assert_eq!(
        blake3_of(&server.object(&format!("{first_key}.age"))),
        before
    );

    // Without the identity nothing is restored; with it, every file is
    // back, byte for byte, and checked against the ledger.
    let restored = scratch.path().join("restored");
    let (code, out) = run(
        &sandbox,
        &["offsite", "restore", "--to", restored.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--identity"), "{out}");
    // A temp an interrupted restore left in the destination goes.
    std::fs::create_dir_all(&restored).unwrap();
    let leftover = restored.join(".keepsake-restore-999-0");
    std::fs::write(&leftover, b"half a file").unwrap();
    let (code, out) = run(
        &sandbox,
        &[
            "offsite",
            "restore",
            "--to",
            restored.to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{} files", pushes.len()))
            && out.contains(&format!("{} checked against the ledger", pushes.len())),
        "{out}"
    );
    for (_, key, file) in &pushes {
        assert_eq!(blake3_of(&restored.join(key)), blake3_of(file), "{key}");
    }
    assert!(!leftover.exists(), "the old restore temp was swept");
    // After the house burned: no ledger, a new folder; the identity alone
    // brings everything back.
    std::fs::remove_file(sandbox.config().ledger_path()).unwrap();
    let again = scratch.path().join("restored-without-ledger");
    let (code, out) = run(
        &sandbox,
        &[
            "offsite",
            "restore",
            "--target",
            "s3",
            "--to",
            again.to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    for (_, key, file) in &pushes {
        assert_eq!(blake3_of(&again.join(key)), blake3_of(file), "{key}");
    }
}

#[test]
fn a_bandwidth_limit_holds_and_an_outage_mid_upload_leaves_no_parts() {
    let scratch = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(&scratch.path().join("s3"));
    let sandbox = sandbox_with(
        "s3",
        &format!("{}bwlimit = \"8M\"\n", server.target("s3", scratch.path())),
    );
    write_large(&sandbox.inbox().join("VID_0003.MOV"), 48);
    server.stop();
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["offsite"]["deferred"], 1, "{report}");
    server.restart();

    // The server goes away while the parts go up.
    let mut push = sandbox
        .command(&["offsite", "push"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    keepsake_tests::wait_for(
        std::time::Duration::from_secs(30),
        "the first parts to reach the server",
        || {
            std::fs::read_dir(&server.root)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
        },
    );
    server.stop();
    let status = push.wait().unwrap();
    assert_eq!(status.code(), Some(1), "the push waits for the server");
    assert_eq!(count(&sandbox, "state = 'deferred'"), 1);
    assert_eq!(
        count(&sandbox, "upload_id IS NOT NULL"),
        1,
        "the unfinished upload is remembered"
    );
    let (_, status) = run(&sandbox, &["offsite", "status"]);
    assert!(status.contains("offsite target s3"), "{status}");

    server.restart();
    let started = std::time::Instant::now();
    let (code, out) = run(&sandbox, &["offsite", "push"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&sandbox, "state = 'done' AND upload_id IS NULL"), 1);
    // 48 MiB at 8 MiB/s: the limit holds (the first piece goes at once).
    assert!(
        took >= std::time::Duration::from_secs(4),
        "48 MiB took {took:?} under an 8 MiB/s limit"
    );
    let (_, key, file) = &done_pushes(&sandbox)[0];
    assert_eq!(blake3_of(&server.object(key)), blake3_of(file));
    let leftovers: Vec<String> = std::fs::read_dir(&server.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".upload"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "parts left on the server: {leftovers:?}"
    );
    let (code, out) = run(&sandbox, &["offsite", "verify", "--deep"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_folder_target_keeps_to_its_bandwidth_limit() {
    let scratch = tempfile::tempdir().unwrap();
    let (_, usb_table) = usb_target(scratch.path(), "bwlimit = \"4M\"\n");
    let sandbox = sandbox_with("usb", &usb_table);
    write_large(&sandbox.inbox().join("VID_0004.MOV"), 12);
    let started = std::time::Instant::now();
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["offsite"]["pushed"], 1, "{report}");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(2),
        "12 MiB took {took:?} under a 4 MiB/s limit"
    );
}

#[test]
fn an_interrupted_rclone_copy_is_replaced_but_a_stranger_object_never_is() {
    let scratch = tempfile::tempdir().unwrap();
    let remote_dir = scratch.path().join("sftp-like");
    let table = |program: &str| {
        format!(
            "[offsite.nas]\ntype = \"rclone\"\nremote = {:?}\nrclone = {program:?}\n",
            remote_dir.display().to_string()
        )
    };
    // rclone missing at first: every push waits, naming the fix.
    let sandbox = sandbox_with("nas", &table("/nonexistent/rclone"));
    for name in ["exiftool_Canon.jpg", "exiftool_Nikon.jpg"] {
        sandbox.add(name, &corpus_media().join(name));
    }
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["offsite"]["pushed"], 0, "{report}");
    let (_, status) = run(&sandbox, &["offsite", "status"]);
    assert!(status.contains("install rclone"), "{status}");
    let keys: Vec<(i64, String)> = {
        let conn = sandbox.ledger();
        let mut stmt = conn
            .prepare("SELECT id, key FROM pushes WHERE key NOT LIKE '%.xmp' ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(keys.len(), 2);
    // A copy keepsake began and a crash cut short: half the bytes, and the
    // ledger's note that keepsake began it.
    let (ours_id, ours) = &keys[0];
    let library_file = sandbox.library().join(ours);
    let partial = std::fs::read(&library_file).unwrap();
    std::fs::create_dir_all(remote_dir.join(ours).parent().unwrap()).unwrap();
    std::fs::write(remote_dir.join(ours), &partial[..partial.len() / 2]).unwrap();
    sandbox
        .ledger()
        .execute(
            "UPDATE pushes SET upload_id = 'rclone' WHERE id = ?1",
            [ours_id],
        )
        .unwrap();
    // Someone else's object at the other key.
    let (_, theirs) = &keys[1];
    std::fs::create_dir_all(remote_dir.join(theirs).parent().unwrap()).unwrap();
    std::fs::write(remote_dir.join(theirs), b"not keepsake's").unwrap();

    std::fs::write(sandbox.config_path(), {
        let config = std::fs::read_to_string(sandbox.config_path()).unwrap();
        config.replace("/nonexistent/rclone", "rclone")
    })
    .unwrap();
    let (code, out) = run(&sandbox, &["offsite", "push"]);
    assert_eq!(code, 1, "a conflict is reported: {out}");
    assert_eq!(blake3_of(&remote_dir.join(ours)), blake3_of(&library_file));
    assert_eq!(
        std::fs::read(remote_dir.join(theirs)).unwrap(),
        b"not keepsake's"
    );
    assert_eq!(count(&sandbox, "state = 'conflict'"), 1);
    let (_, status) = run(&sandbox, &["offsite", "status"]);
    assert!(status.contains("never overwrites"), "{status}");
}
