//! The command line as a user meets it.

use keepsake_tests::*;

#[test]
fn init_writes_the_default_config_and_refuses_to_overwrite() {
    let sandbox = Sandbox::new();
    let path = sandbox.path().join("new.toml");
    let out = sandbox.run(&["init", path.to_str().unwrap()]);
    assert!(out.status.success());
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, keepsake::config::DEFAULT_CONFIG);
    let out = sandbox.run(&["init", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

#[test]
fn the_default_config_runs_from_an_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    fake_jpeg(&dir.path().join("inbox/IMG_1.jpg"), 1, 2000);
    let out = std::process::Command::new(keepsake_bin())
        .current_dir(dir.path())
        .env_remove("KEEPSAKE_CONFIG")
        .arg("ingest")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["processed", "placed", "duplicates", "quarantined", "failed"] {
        assert!(
            stdout.contains(label),
            "the summary shows {label}: {stdout}"
        );
    }
    assert_eq!(hash_tree(&dir.path().join("library")).len(), 1);
    assert!(dir.path().join("library/.keepsake/ledger.sqlite").exists());
}

#[test]
fn jobs_json_has_the_stable_fields() {
    let sandbox = Sandbox::new();
    fake_jpeg(&sandbox.inbox().join("IMG_1.jpg"), 1, 2000);
    sandbox.ingest();
    let job = &sandbox.jobs()[0];
    for key in [
        "id",
        "inbox",
        "source_path",
        "state",
        "destination",
        "blake3",
        "sha1",
        "capture_time",
        "capture_source",
        "duplicate_of",
        "error",
    ] {
        assert!(job.get(key).is_some(), "jobs --json lacks {key}: {job}");
    }
    let out = sandbox.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["jobs"]["done"], 1);
    assert_eq!(status["assets"], 1);
}

#[test]
fn config_errors_name_the_key_and_change_nothing() {
    let sandbox = Sandbox::new();
    let cases = [
        ("library = \"library\"\nlibary = 1\n", "libary"),
        (
            "library = \"library\"\n[[inbox]]\nname = \"a\"\npath = \"library/in\"\n",
            "inbox[0].path",
        ),
        (
            "library = \"library\"\n[[inbox]]\nname = \"a\"\npath = \"inbox\"\n[[inbox]]\nname = \"b\"\npath = \"inbox/x\"\n",
            "inbox[1].path",
        ),
        (
            "library = \"library\"\n[[inbox]]\nname = \"a\"\npath = \"inbox\"\npipeline = [\"nope\"]\n",
            "nope",
        ),
    ];
    for (text, key) in cases {
        std::fs::write(sandbox.config_path(), text).unwrap();
        let out = sandbox.run(&["ingest"]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key} in {stderr}");
        assert!(stderr.contains("keepsake.toml"), "names the file: {stderr}");
        assert!(!sandbox.library().exists(), "nothing was created");
    }
}

#[test]
fn a_second_keepsake_on_the_same_ledger_is_refused() {
    let sandbox = Sandbox::new();
    let config = sandbox.config();
    let _held = keepsake::ledger::StateLock::acquire(&config.state_dir).unwrap();
    let out = sandbox.run(&["ingest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another keepsake"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compiled_components_are_cached_across_starts() {
    let sandbox = Sandbox::new();
    let first = keepsake::open_pipeline(sandbox.config()).unwrap();
    assert!(
        first
            .stages()
            .all(|s| s.cache == keepsake::host::CacheOutcome::Compiled)
    );
    drop(first);
    let second = keepsake::open_pipeline(sandbox.config()).unwrap();
    assert!(
        second
            .stages()
            .all(|s| s.cache == keepsake::host::CacheOutcome::Hit)
    );
    drop(second);
    // A damaged cache file is recompiled, never loaded.
    for entry in std::fs::read_dir(sandbox.config().cache_dir())
        .unwrap()
        .flatten()
    {
        let mut bytes = std::fs::read(entry.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(entry.path(), bytes).unwrap();
    }
    let third = keepsake::open_pipeline(sandbox.config()).unwrap();
    assert!(
        third
            .stages()
            .all(|s| s.cache == keepsake::host::CacheOutcome::Compiled)
    );
}

#[test]
fn ledger_rebuild_recreates_the_assets_from_the_library_alone() {
    let sandbox = Sandbox::new();
    for name in [
        "exiftool_Canon.jpg",
        "exiftool_PNG.png",
        "exifsamples_IMG_5195.HEIC",
        "phockup_exif.mp4",
    ] {
        sandbox.add(name, &corpus_media().join(name));
    }
    std::fs::write(
        sandbox.inbox().join("exiftool_Canon.jpg.xmp"),
        b"<x:xmpmeta/>",
    )
    .unwrap();
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 4);
    let assets = |sandbox: &Sandbox| -> Vec<(String, String)> {
        let conn = sandbox.ledger();
        let mut stmt = conn
            .prepare("SELECT library_path, blake3 FROM assets ORDER BY library_path")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = assets(&sandbox);

    // The ledger is lost; the library is not.
    std::fs::remove_dir_all(sandbox.library().join(".keepsake")).unwrap();
    let out = sandbox.run(&["ledger", "rebuild", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rebuilt["added"], 4, "{rebuilt}");
    assert_eq!(
        assets(&sandbox),
        before,
        "the same paths and bytes, sidecars aside"
    );

    // Ingesting the same inbox again places nothing twice.
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 0, "{report}");
    assert_eq!(report["duplicates"], 4, "{report}");

    // A file removed from the library is dropped from the assets, so its
    // bytes are no longer taken for kept.
    let (gone, _) = before[0].clone();
    #[allow(clippy::disallowed_methods)]
    std::fs::remove_file(sandbox.library().join(&gone)).unwrap();
    let out = sandbox.run(&["ledger", "rebuild", "--json"]);
    let rebuilt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rebuilt["missing"], serde_json::json!([gone]), "{rebuilt}");
    assert_eq!(rebuilt["unchanged"], 3);
}

#[test]
fn the_readme_first_command_takes_the_example_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = workspace_root().join("examples/inbox");
    let before = hash_tree(&inbox);
    let out = std::process::Command::new(keepsake_bin())
        .current_dir(dir.path())
        .env_remove("KEEPSAKE_CONFIG")
        .args(["ingest", "--json"])
        .arg(&inbox)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["placed"].as_u64(), report["duplicates"].as_u64()),
        (Some(4), Some(1)),
        "{report}"
    );
    assert_eq!(
        (report["quarantined"].as_u64(), report["ignored"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let library: Vec<String> = hash_tree(&dir.path().join("library"))
        .into_keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    for expected in [
        "2019/07/20190704_101530_IMG_0001.jpg",
        "2021/08/20210814_170211_IMG_0002.jpg",
        "2021/08/20210814_170211_IMG_0002.jpg.xmp",
        "2024/05/20240512_101010_Screenshot_20240512-101010.png",
    ] {
        assert!(
            library.iter().any(|p| p == expected),
            "{expected} in {library:?}"
        );
    }
    assert_eq!(
        hash_tree(&inbox),
        before,
        "the example inbox is never modified"
    );
}

#[test]
fn the_readme_first_command_runs_the_service_on_the_default_config() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let child = std::process::Command::new(keepsake_bin())
        .current_dir(dir.path())
        .env_remove("KEEPSAKE_CONFIG")
        .arg("run")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut service = keepsake_tests::Service { child, log };
    service.wait_for(
        std::time::Duration::from_secs(60),
        "the service to start",
        || service.log_text().contains("keepsake is running"),
    );
    assert!(dir.path().join("inbox").is_dir() && dir.path().join("library").is_dir());
    // The quick start: drop the example files into ./inbox while it runs.
    keepsake_tests::copy_tree(
        &workspace_root().join("examples/inbox"),
        &dir.path().join("inbox"),
    );
    let ledger = dir.path().join("library/.keepsake/ledger.sqlite");
    service.wait_for(
        std::time::Duration::from_secs(180),
        "the example files to be taken",
        || {
            rusqlite::Connection::open(&ledger)
                .and_then(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM jobs WHERE state IN ('done', 'duplicate', 'quarantined')",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .is_ok_and(|n| n == 6)
        },
    );
    let (status, _) = service.stop(std::time::Duration::from_secs(30));
    assert!(status.success(), "{}", service.log_text());
    assert!(
        dir.path()
            .join("library/2019/07/20190704_101530_IMG_0001.jpg")
            .is_file(),
        "{}",
        service.log_text()
    );
}

#[test]
fn the_example_configs_are_valid() {
    let docker = "examples/docker/keepsake.toml";
    let text = std::fs::read_to_string(workspace_root().join(docker)).unwrap();
    let config = keepsake::config::Config::parse(&text, docker, std::path::Path::new("/"))
        .unwrap_or_else(|e| panic!("{docker}: {e}"));
    assert_eq!(config.inboxes.len(), 2);
    // The config in the README's quick start, as printed there.
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a TOML config");
    let config = keepsake::config::Config::parse(block, "README.md", std::path::Path::new("/"))
        .unwrap_or_else(|e| panic!("the README's config: {e}"));
    assert_eq!(config.inboxes.len(), 2);
    assert_eq!(config.service, keepsake::config::ServiceConfig::default());
    let default = keepsake::config::Config::default_in(std::path::Path::new("/tmp")).unwrap();
    assert_eq!(default.service, keepsake::config::ServiceConfig::default());
}
