//! Offsite push against real targets: a real S3 server (s3s-fs) on
//! 127.0.0.1 and a folder; outages, tampering and refusals.
// The tests play the server's disk going bad.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use keepsake_tests::{S3Server, Sandbox, blake3_of, copy_tree, corpus_media};

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
    let out = sandbox.run(args);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_corpus_goes_to_s3_and_a_folder_and_verifies_deep() {
    let scratch = tempfile::tempdir().unwrap();
    let server = S3Server::start(&scratch.path().join("s3"));
    let usb = scratch.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let sandbox = sandbox_with(
        "s3,usb",
        &format!(
            "{}\n[offsite.usb]\ntype = \"dir\"\npath = {:?}\n",
            server.target("s3", scratch.path()),
            usb.display().to_string()
        ),
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

fn write_large(path: &Path, mib: usize) {
    let mut bytes = vec![0u8; mib << 20];
    bytes[..12].copy_from_slice(b"\0\0\0\x14ftypqt  ");
    for (i, chunk) in bytes.chunks_mut(4096).enumerate().skip(1) {
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
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
    let usb = scratch.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let sandbox = sandbox_with(
        "usb",
        &format!(
            "[offsite.usb]\ntype = \"dir\"\npath = {:?}\n",
            usb.display().to_string()
        ),
    );
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
