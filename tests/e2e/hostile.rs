//! Misbehaving plugins are contained to the job that triggered them.

use std::time::{Duration, Instant};

use keepsake_tests::*;

/// A sandbox whose pipeline runs the hostile guest (misbehaving only on
/// files named `bad*`) before the library stage.
fn hostile_sandbox(mode: &str, limits: &str) -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        "[\"dedup\", \"hostile\", \"library\"]",
        "copy",
        &format!(
            "[stages.hostile]\nwasm = {:?}\nmode = {mode:?}\nonly = \"bad\"\n{limits}\n",
            guest("keepsake_test_hostile").display().to_string()
        ),
    );
    fake_jpeg(&sandbox.inbox().join("a_good.jpg"), 1, 3000);
    fake_jpeg(&sandbox.inbox().join("bad.jpg"), 2, 3000);
    fake_jpeg(&sandbox.inbox().join("z_good.jpg"), 3, 3000);
    sandbox
}

/// Ingest, expect the bad file's job to fail with `expect` in its error and
/// both good files to be placed.
fn assert_contained(sandbox: &Sandbox, expect: &str) -> serde_json::Value {
    let before = hash_tree(&sandbox.inbox());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["placed"], 2, "the other files go through: {report}");
    assert_eq!(report["failed"], 1, "{report}");
    let jobs = sandbox.jobs();
    let bad = job_named(&jobs, "bad.jpg").clone();
    assert_eq!(bad["state"], "failed");
    let error = bad["error"].as_str().unwrap();
    assert!(error.contains(expect), "expected {expect:?} in {error:?}");
    assert!(
        error.contains("hostile"),
        "the error names the stage: {error}"
    );
    // Failed jobs are accounted for: nothing lost, nothing half-written.
    assert!(temp_files(&sandbox.library()).is_empty());
    assert_eq!(hash_tree(&sandbox.inbox()), before);
    bad
}

#[test]
fn an_infinite_loop_times_out_within_the_deadline() {
    let sandbox = hostile_sandbox("loop", "timeout_ms = 300");
    let started = Instant::now();
    assert_contained(&sandbox, "CPU deadline");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_memory_bomb_is_trapped() {
    let sandbox = hostile_sandbox("memory", "memory_mib = 64");
    assert_contained(&sandbox, "64 MiB of memory");
}

#[test]
fn a_panic_fails_the_job_with_the_panic_message() {
    let sandbox = hostile_sandbox("panic", "");
    assert_contained(&sandbox, "hostile stage panics on bad.jpg");
}

#[test]
fn paths_that_escape_the_library_are_rejected() {
    for (mode, expect) in [
        ("escape", "leaves its folder"),
        ("absolute", "is absolute"),
        ("nul", "NUL"),
    ] {
        let sandbox = hostile_sandbox(mode, "");
        assert_contained(&sandbox, expect);
        assert!(!sandbox.path().join("escaped").exists());
        assert!(!std::path::Path::new("/tmp/escaped-bad.jpg").exists());
    }
}

#[test]
fn a_stage_reaches_no_file_environment_or_network() {
    let sandbox = hostile_sandbox("snoop", "");
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 3, "{report}");
    let facts: String = sandbox
        .ledger()
        .query_row(
            "SELECT facts FROM jobs WHERE rel_path = CAST('bad.jpg' AS BLOB)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        facts.contains("all refused"),
        "the stage ran its probes: {facts}"
    );
}

#[test]
fn reads_are_bounded_to_one_mebibyte() {
    let sandbox = hostile_sandbox("huge-read", "");
    fake_jpeg(&sandbox.inbox().join("bad.jpg"), 2, 3 << 20);
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 3);
    assert!(
        report["stage_bytes_read"].as_u64().unwrap() <= 1 << 20,
        "{report}"
    );
}

#[test]
fn a_stage_with_an_unknown_option_is_refused_at_start_naming_the_key() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[stages.library]\ntempalte = \"{year}/{name}\"\n");
    let out = sandbox.run(&["ingest"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stages.library.tempalte") && stderr.contains("template"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused_naming_the_stage() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path().join("junk.wasm"), b"\0asm junk").unwrap();
    sandbox.write_config_with(
        "[\"junk\", \"library\"]",
        "copy",
        "[stages.junk]\nwasm = \"junk.wasm\"\n",
    );
    let out = sandbox.run(&["ingest"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stage `junk`") && stderr.contains("junk.wasm"),
        "{stderr}"
    );
}

#[test]
fn a_plugin_hoarding_http_resources_fails_its_own_call_and_the_next_file_goes_through() {
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let granted = origin.local_addr().unwrap().to_string();
    let sandbox = Sandbox::new();
    let config = |hoard: u32| {
        format!(
            "[stages.snoop]\nwasm = {:?}\nhttp = [\"http://{granted}\"]\ngranted = {granted:?}\nother = {granted:?}\nhoard = \"{hoard}\"\n",
            guest("keepsake_test_snoop_http").display().to_string(),
        )
    };
    let pipeline = "[\"dedup\", \"exif\", \"library\", \"snoop\"]";
    sandbox.write_config_with(pipeline, "copy", &config(200_000));
    fake_jpeg(&sandbox.inbox().join("a.jpg"), 1, 3000);
    let (_, report) = sandbox.ingest();
    // Placed: the file is safe in the library whatever the stage does.
    assert_eq!(report["placed"], 1, "{report}");
    assert_eq!(report["after_placed"]["done"], 0, "{report}");
    let (state, error): (String, Option<String>) = sandbox
        .ledger()
        .query_row(
            "SELECT state, last_error FROM placed_calls WHERE stage = 'snoop'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_ne!(state, "done");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("snoop"),
        "the error names the stage: {error}"
    );
    let placed: Vec<_> = hash_tree(&sandbox.library())
        .into_iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "jpg"))
        .map(|(_, hash)| hash)
        .collect();
    assert_eq!(placed, vec![blake3_of(&sandbox.inbox().join("a.jpg"))]);

    // A modest stage on the next file is served as before.
    sandbox.write_config_with(pipeline, "copy", &config(100));
    fake_jpeg(&sandbox.inbox().join("b.jpg"), 2, 3000);
    let (_, report) = sandbox.ingest();
    assert_eq!(report["placed"], 1, "{report}");
    let hoarded: i64 = sandbox
        .ledger()
        .query_row(
            "SELECT COUNT(*) FROM placed_calls WHERE stage = 'snoop' AND state = 'done' \
             AND json_extract(facts, '$.\"snoop.hoarded\"') = '100'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hoarded, 1, "{report}");
}
