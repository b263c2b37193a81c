//! The `immich` stage against a fake Immich that follows the v2.4.1 OpenAPI
//! contract (`tests/fake-immich`, which validates every answer it sends
//! against the schema): uploads, albums, Live Photos, outages, a wrong key,
//! and a plugin that tries to leave its HTTP grant.

use std::collections::{BTreeMap, BTreeSet};

use fake_immich::FakeImmich;
use keepsake_tests::{Sandbox, copy_tree, corpus_media, guest};

const PIPELINE: &str = "[\"dedup\", \"exif\", \"library\", \"immich\"]";

/// A sandbox whose pipeline ends with `immich`, talking to `fake` with its
/// key (or `key` instead), and `stage` lines under `[stages.immich]`.
fn immich_sandbox(fake: &FakeImmich, key: Option<&str>, stage: &str) -> Sandbox {
    let sandbox = Sandbox::new();
    let key_file = sandbox.path().join("immich.key");
    std::fs::write(&key_file, format!("{}\n", key.unwrap_or(fake.api_key()))).unwrap();
    sandbox.write_config_with(
        PIPELINE,
        "copy",
        &format!(
            "[immich]\nurl = {:?}\napi_key_file = \"immich.key\"\n\n[stages.immich]\n{stage}\n",
            fake.url()
        ),
    );
    sandbox
}

/// Copies these corpus files into the sandbox's inbox.
fn add_corpus(sandbox: &Sandbox, names: &[&str]) {
    for name in names {
        sandbox.add(name, &corpus_media().join(name));
    }
}

/// (job id → (state, facts)) of the immich stage's calls.
fn calls(sandbox: &Sandbox) -> BTreeMap<u64, (String, serde_json::Value)> {
    let conn = sandbox.ledger();
    let mut stmt = conn
        .prepare("SELECT job_id, state, facts FROM placed_calls WHERE stage = 'immich'")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, u64>(0)?,
            (
                r.get::<_, String>(1)?,
                serde_json::from_str(&r.get::<_, String>(2)?).unwrap(),
            ),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Jobs that are a Live Photo's video (shown through their still).
fn live_videos(conn: &rusqlite::Connection) -> BTreeSet<u64> {
    conn.prepare(
        "SELECT id FROM jobs WHERE json_extract(facts, '$.\"live.still_job\"') IS NOT NULL",
    )
    .unwrap()
    .query_map([], |r| r.get(0))
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Base64 of a hex SHA-1, as Immich stores checksums.
fn base64_of_hex(hex: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn upload_mode_puts_the_corpus_in_immich_once_in_its_albums() {
    let fake = FakeImmich::start();
    let sandbox = immich_sandbox(
        &fake,
        None,
        "albums_by_inbox = { inbox = \"Family\" }\nalbum_from_folder = true\nalbum_by_date = \"{yyyy}\"",
    );
    copy_tree(&corpus_media(), &sandbox.inbox().join("anna"));
    let (_, report) = sandbox.ingest();
    let after = &report["after_placed"];
    assert_eq!(after["failed"], 0, "{report}");
    assert_eq!(after["deferred"], 0, "{report}");

    // Every library file is in Immich exactly once, with its own bytes.
    let conn = sandbox.ledger();
    let assets: BTreeMap<u64, (String, Option<String>)> = conn
        .prepare("SELECT job_id, sha1, capture_time FROM assets")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let calls = calls(&sandbox);
    assert_eq!(calls.len(), assets.len());
    let in_immich = fake.assets();
    let uploaded: Vec<u64> = calls
        .iter()
        .filter(|(_, (state, facts))| state == "done" && facts.get("immich.rejected").is_none())
        .map(|(job, _)| *job)
        .collect();
    assert_eq!(in_immich.len(), uploaded.len(), "one Immich asset per file");
    assert!(uploaded.len() >= 60, "{} uploaded", uploaded.len());
    let checksums: BTreeSet<String> = in_immich.iter().map(|a| a.checksum.clone()).collect();
    assert_eq!(checksums.len(), in_immich.len(), "no asset twice");
    for job in &uploaded {
        let (sha1, _) = &assets[job];
        assert!(
            checksums.contains(&base64_of_hex(sha1)),
            "job {job}: its bytes are not in Immich"
        );
        let id = calls[job].1["immich.asset_id"].as_str().unwrap();
        assert!(in_immich.iter().any(|a| a.id == id));
    }

    // Albums: the inbox's, the folder's, the capture year's; a Live
    // Photo's video is shown through its still, so only stills join.
    let albums: BTreeMap<String, BTreeSet<String>> = fake
        .albums()
        .into_iter()
        .map(|a| (a.name, a.asset_ids.into_iter().collect()))
        .collect();
    let live_videos = live_videos(&conn);
    let all: BTreeSet<String> = uploaded
        .iter()
        .filter(|job| !live_videos.contains(job))
        .map(|job| {
            calls[job].1["immich.asset_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(albums["Family"], all);
    assert_eq!(albums["anna"], all);
    for job in uploaded.iter().filter(|job| !live_videos.contains(job)) {
        let id = calls[job].1["immich.asset_id"]
            .as_str()
            .unwrap()
            .to_string();
        if let Some(capture) = &assets[job].1 {
            assert!(
                albums[&capture[..4]].contains(&id),
                "job {job} not in {capture}"
            );
        }
    }
    assert_eq!(fake.albums().len(), albums.len(), "each album made once");

    // A second run sends nothing again.
    let uploads = fake.request_count("POST", "/api/assets");
    let album_writes = fake.request_count("PUT", "/api/albums");
    let (_, again) = sandbox.ingest();
    assert_eq!(again["after_placed"]["done"], 0, "{again}");
    let (code, text) = sandbox.run_text(&["immich", "sync"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(fake.request_count("POST", "/api/assets"), uploads);
    assert_eq!(fake.request_count("PUT", "/api/albums"), album_writes);
    // Album additions go in batches: one write per album (three rules
    // here put every asset in three), and each album looked up or made once.
    assert_eq!(album_writes, albums.len(), "one batched write per album");
    assert!(fake.request_count("POST", "/api/albums") <= albums.len());

    let (code, text) = sandbox.run_text(&["immich", "status"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Immich 2.4.1, API key accepted"), "{text}");
    assert!(
        text.contains(&format!("uploaded {}", uploaded.len())),
        "{text}"
    );
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}

#[test]
fn a_live_photo_video_goes_first_and_its_still_links_it() {
    let fake = FakeImmich::start();
    let sandbox = immich_sandbox(&fake, None, "albums = \"Phone\"");
    super::exif::generate(
        &sandbox,
        "exiftool_Canon.jpg",
        "IMG_0100.jpg",
        &["-DateTimeOriginal=2020:01:01 10:00:00"],
    );
    super::exif::generate(
        &sandbox,
        "mde_with-gps.mov",
        "IMG_0100.MOV",
        &["-Keys:CreationDate=2020:01:01 10:00:02+00:00"],
    );
    let (_, report) = sandbox.ingest();
    assert_eq!(report["after_placed"]["done"], 2, "{report}");
    let assets = fake.assets();
    assert_eq!(assets.len(), 2);
    let video = assets
        .iter()
        .find(|a| a.original_file_name.to_lowercase().ends_with(".mov"))
        .unwrap();
    let still = assets
        .iter()
        .find(|a| a.original_file_name.to_lowercase().ends_with(".jpg"))
        .unwrap();
    assert_eq!(
        still.live_photo_video_id.as_deref(),
        Some(video.id.as_str())
    );
    // Albums hold the still; Immich shows the video through it.
    let phone = fake
        .albums()
        .into_iter()
        .find(|a| a.name == "Phone")
        .unwrap();
    assert_eq!(phone.asset_ids, vec![still.id.clone()]);
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}

#[test]
fn an_outage_defers_with_one_request_per_try_and_nothing_is_lost() {
    let fake = FakeImmich::start();
    let sandbox = immich_sandbox(&fake, None, "albums = \"Family\"");
    add_corpus(
        &sandbox,
        &[
            "exiftool_Canon.jpg",
            "exiftool_Nikon.jpg",
            "immich_denali.webp",
            "mde_with-gps.mp4",
            "exifsamples_IMG_5195.HEIC",
        ],
    );
    fake.set_down(true);
    let (_, report) = sandbox.ingest();
    assert_eq!(report["placed"], 5, "{report}");
    assert_eq!(report["after_placed"]["done"], 0, "{report}");
    assert!(
        fake.requests().len() <= 1,
        "a down server costs one request, not one per file: {:?}",
        fake.requests()
    );
    let (code, text) = sandbox.run_text(&["immich", "status"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("waiting 5"), "{text}");
    // Still waiting: a second ingest does not knock again before the backoff.
    let seen = fake.requests().len();
    sandbox.ingest();
    assert_eq!(fake.requests().len(), seen);

    // Back, but answering 500 twice: each try meets one and stops there;
    // the third takes everything, each file once.
    fake.set_down(false);
    fake.fail_next(2);
    for _ in 0..2 {
        let (code, text) = sandbox.run_text(&["immich", "sync"]);
        assert_eq!(code, 1, "a try meets a 500: {text}");
        assert!(text.contains("500"), "{text}");
    }
    let (code, text) = sandbox.run_text(&["immich", "sync"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(fake.assets().len(), 5);
    let family = fake
        .albums()
        .into_iter()
        .find(|a| a.name == "Family")
        .unwrap();
    assert_eq!(family.asset_ids.len(), 5);
    assert!(calls(&sandbox).values().all(|(state, _)| state == "done"));
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}

#[test]
fn a_wrong_key_is_a_clear_error_without_a_retry_storm() {
    let fake = FakeImmich::start();
    let sandbox = immich_sandbox(&fake, Some("not-the-key"), "");
    add_corpus(
        &sandbox,
        &[
            "exiftool_Canon.jpg",
            "exiftool_Nikon.jpg",
            "immich_denali.webp",
            "orient_Landscape_0.jpg",
        ],
    );
    let (_, report) = sandbox.ingest();
    assert_eq!(report["after_placed"]["done"], 0, "{report}");
    assert!(fake.requests().len() <= 1, "{:?}", fake.requests());
    let (code, text) = sandbox.run_text(&["immich", "status"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("refused the API key"), "{text}");
    assert!(
        !text.contains("not-the-key"),
        "the key is never printed: {text}"
    );
    // Fixed: everything goes.
    std::fs::write(sandbox.path().join("immich.key"), fake.api_key()).unwrap();
    let (code, text) = sandbox.run_text(&["immich", "sync"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(fake.assets().len(), 4);
}

#[test]
fn a_plugin_cannot_leave_its_grant_or_set_the_key() {
    let fake = FakeImmich::start();
    // An origin the plugin is not granted, watched for connections.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let granted = fake.url().trim_start_matches("http://").to_string();
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        "[\"dedup\", \"exif\", \"library\", \"snoop\"]",
        "copy",
        &format!(
            "[stages.snoop]\nwasm = {:?}\nhttp = [{:?}]\ngranted = {granted:?}\nother = {:?}\n",
            guest("keepsake_test_snoop_http").display().to_string(),
            fake.url(),
            other.local_addr().unwrap().to_string()
        ),
    );
    sandbox.add("a.jpg", &corpus_media().join("exiftool_Canon.jpg"));
    let (_, report) = sandbox.ingest();
    assert_eq!(report["after_placed"]["done"], 1, "{report}");
    let facts: serde_json::Value = sandbox
        .ledger()
        .query_row(
            "SELECT facts FROM placed_calls WHERE stage = 'snoop'",
            [],
            |r| r.get::<_, String>(0),
        )
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(facts["snoop.other"], "denied", "{facts}");
    assert!(other.accept().is_err(), "nothing reached the other origin");
    let set_key = facts["snoop.set_key"].as_str().unwrap();
    assert!(set_key.starts_with("header refused"), "{facts}");
    // It reaches its own origin, without any key (only the built-in immich
    // stage gets one, added by the host).
    assert_eq!(facts["snoop.granted"], "status 401", "{facts}");
    assert_eq!(facts["snoop.env"], "", "no environment: {facts}");
}

#[test]
fn immich_config_errors_name_the_key() {
    let sandbox = Sandbox::new();
    sandbox.write_config_with(PIPELINE, "copy", "");
    let (code, text) = sandbox.run_text(&["ingest"]);
    assert_ne!(code, 0);
    assert!(text.contains("[immich]"), "{text}");
    for (table, names) in [
        ("[immich]\nurl = \"immich.local\"\n", "immich.url"),
        (
            "[immich]\nurl = \"http://user:secret@immich.local\"\n",
            "immich.url",
        ),
        (
            "[immich]\nurl = \"http://immich.local/?x=1\"\n",
            "immich.url",
        ),
        // The key is for the [immich] server only: no second url.
        (
            "[immich]\nurl = \"http://127.0.0.1:9/api\"\n[stages.immich]\nurl = \"http://elsewhere:80\"\n",
            "stages.immich.url",
        ),
        (
            "[immich]\nurl = \"http://127.0.0.1:9\"\napi_key_file = \"missing.key\"\n",
            "missing.key",
        ),
    ] {
        sandbox.write_config_with(PIPELINE, "copy", table);
        let (code, text) = sandbox.run_text(&["ingest"]);
        assert_ne!(code, 0, "{table}");
        assert!(text.contains(names), "{table}: {text}");
    }
    // A stage that decides may not be granted HTTP.
    sandbox.write_config(&format!(
        "[stages.hostile]\nwasm = {:?}\nhttp = [\"http://127.0.0.1:9\"]\n[[inbox]]\nname = \"b\"\npath = \"b\"\npipeline = [\"hostile\"]\n",
        guest("keepsake_test_hostile").display().to_string()
    ));
    std::fs::create_dir_all(sandbox.path().join("b")).unwrap();
    let (code, text) = sandbox.run_text(&["ingest"]);
    assert_ne!(code, 0);
    assert!(text.contains("placed"), "{text}");
}

#[test]
fn external_library_mode_finds_each_file_by_path_once_immich_has_scanned() {
    let fake = FakeImmich::start();
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.library()).unwrap();
    let library_id = fake.create_external_library(&sandbox.library().display().to_string());
    // Immich indexes a scan's files a while after it was asked for.
    fake.set_scan_delay(std::time::Duration::from_secs(2));
    std::fs::write(sandbox.path().join("immich.key"), fake.api_key()).unwrap();
    sandbox.write_config_with(
        PIPELINE,
        "copy",
        &format!(
            "[immich]\nurl = {:?}\napi_key_file = \"immich.key\"\n\n[stages.immich]\nmode = \"external-library\"\nlibrary_id = {library_id:?}\nalbums = \"Trip\"\n",
            fake.url()
        ),
    );
    copy_tree(&corpus_media(), &sandbox.inbox().join("trip"));
    let (_, report) = sandbox.ingest();
    let placed = report["placed"].as_u64().unwrap();
    assert!(placed >= 60, "{report}");
    // Not indexed yet: every file waits, one scan was asked for, nothing
    // was uploaded.
    assert_eq!(report["after_placed"]["done"], 0, "{report}");
    assert_eq!(report["after_placed"]["deferred"], placed, "{report}");
    assert_eq!(fake.request_count("POST", "/api/libraries"), 1);
    let (code, text) = sandbox.run_text(&["immich", "status"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("waiting for Immich to index"), "{text}");

    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (code, text) = sandbox.run_text(&["immich", "sync"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(fake.request_count("POST", "/api/assets"), 0, "no upload");

    // Each call found the asset whose path is the file's, exactly (the
    // search matches substrings, with `_` as a wildcard).
    let conn = sandbox.ledger();
    let paths: BTreeMap<u64, String> = conn
        .prepare("SELECT job_id, library_path FROM assets")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let in_immich: BTreeMap<String, String> = fake
        .assets()
        .into_iter()
        .map(|a| (a.id, a.original_path))
        .collect();
    let calls = calls(&sandbox);
    assert_eq!(calls.len() as u64, placed);
    for (job, (state, facts)) in &calls {
        assert_eq!(state, "done", "job {job}: {facts}");
        let id = facts["immich.asset_id"].as_str().unwrap();
        let expected = sandbox.library().join(&paths[job]);
        assert_eq!(
            in_immich[id],
            expected.display().to_string(),
            "job {job} is matched to its own file"
        );
    }
    let live_videos = live_videos(&conn);
    let trip = fake
        .albums()
        .into_iter()
        .find(|a| a.name == "Trip")
        .unwrap();
    let albumed: BTreeSet<String> = trip.asset_ids.into_iter().collect();
    let stills: BTreeSet<String> = calls
        .iter()
        .filter(|(job, _)| !live_videos.contains(job))
        .map(|(_, (_, f))| f["immich.asset_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(albumed, stills);
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}

#[test]
fn an_embedded_date_uploads_the_library_copy_as_it_is() {
    let fake = FakeImmich::start();
    let sandbox = immich_sandbox(&fake, None, "");
    let config = std::fs::read_to_string(sandbox.config_path()).unwrap();
    std::fs::write(
        sandbox.config_path(),
        format!("{config}\n[stages.exif]\nwrite = \"embed\"\n"),
    )
    .unwrap();
    // Dated by its name only: the date is embedded into the library copy.
    sandbox.add(
        "IMG_20190704_120000.jpg",
        &corpus_media().join("elodie_no-exif.jpg"),
    );
    let (_, report) = sandbox.ingest();
    assert_eq!(report["after_placed"]["done"], 1, "{report}");
    let library_path: String = sandbox
        .ledger()
        .query_row("SELECT library_path FROM assets", [], |r| r.get(0))
        .unwrap();
    let bytes = std::fs::read(sandbox.library().join(&library_path)).unwrap();
    let original = std::fs::read(sandbox.inbox().join("IMG_20190704_120000.jpg")).unwrap();
    assert_ne!(bytes.len(), original.len(), "the copy carries the date");
    let assets = fake.assets();
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].bytes_len, bytes.len() as u64);
    let sha1 = std::process::Command::new("sha1sum")
        .arg(sandbox.library().join(&library_path))
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&sha1.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(assets[0].checksum, base64_of_hex(&hex));
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}

/// The library copy of each job and its Immich asset id.
fn placed_assets(sandbox: &Sandbox) -> BTreeMap<u64, (std::path::PathBuf, String)> {
    let conn = sandbox.ledger();
    let paths: BTreeMap<u64, String> = conn
        .prepare("SELECT job_id, library_path FROM assets")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    calls(sandbox)
        .into_iter()
        .filter_map(|(job, (_, facts))| {
            let id = facts["immich.asset_id"].as_str()?.to_string();
            Some((job, (sandbox.library().join(&paths[&job]), id)))
        })
        .collect()
}

fn sidecar_text(media: &std::path::Path) -> String {
    let path = media.with_file_name(format!(
        "{}.xmp",
        media.file_name().unwrap().to_string_lossy()
    ));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// exiftool's reading of a sidecar.
fn exiftool_reads(media: &std::path::Path) -> serde_json::Value {
    let path = media.with_file_name(format!(
        "{}.xmp",
        media.file_name().unwrap().to_string_lossy()
    ));
    let out = std::process::Command::new("exiftool")
        .args(["-j", "-n", "-XMP:all"])
        .arg(&path)
        .output()
        .expect("exiftool (the test command installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

fn pull(sandbox: &Sandbox, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["immich", "pull", "--json"];
    all.extend_from_slice(args);
    let (code, text) = sandbox.run_text(&all);
    assert_eq!(code, 0, "{text}");
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn write_back_keeps_immich_edits_in_sidecars_and_a_rebuilt_immich_gets_them_back() {
    let fake = FakeImmich::start();
    let sandbox = immich_sandbox(&fake, None, "");
    let names = [
        "exiftool_Canon.jpg",
        "exiftool_Nikon.jpg",
        "orient_Landscape_0.jpg",
        "immich_denali.webp",
        "exifsamples_IMG_5195.HEIC",
    ];
    add_corpus(&sandbox, &names);
    let (_, report) = sandbox.ingest();
    assert_eq!(report["after_placed"]["done"], 5, "{report}");
    let placed: Vec<(u64, (std::path::PathBuf, String))> =
        placed_assets(&sandbox).into_iter().collect();
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| placed[i].1.clone());
    // The service's first sweep after the upload sees the files as Immich
    // read them: nothing to write yet.
    let swept = pull(&sandbox, &[]);
    assert_eq!(swept["assets_read"], 5, "{swept}");
    assert_eq!(swept["sidecars_written"], 0, "{swept}");

    // Verdicts of the year of `a`, and of a year no file is of.
    let year_of_a: String =
        a.0.strip_prefix(sandbox.library())
            .unwrap()
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
    let verdicts = sandbox.config().state_dir.join("archive");
    std::fs::create_dir_all(&verdicts).unwrap();
    for year in [year_of_a.as_str(), "1901"] {
        std::fs::write(verdicts.join(format!("plan-{year}.json")), "{}").unwrap();
        std::fs::write(verdicts.join(format!("safe-to-delete-{year}.txt")), "").unwrap();
    }

    // What the family does in Immich's web UI.
    fake.add_to_album_as_user("Summer 2024", &a.1);
    fake.add_to_album_as_user("Trips & Tours", &a.1);
    fake.add_to_album_as_user("Trips & Tours", &e.1);
    fake.edit_asset(&b.1, Some(true), None, None);
    fake.edit_asset(&c.1, None, Some("Grandma's 90th <3".into()), Some(3));
    let taken = "2001-02-03T04:05:06Z".parse().unwrap();
    fake.edit_place(&d.1, Some(taken), Some((48.8584, -2.2945)));

    let swept = pull(&sandbox, &[]);
    assert_eq!(swept["sidecars_written"], 5, "{swept}");
    assert_eq!(swept["errors"], serde_json::json!([]), "{swept}");
    // A rewritten sidecar is not the one offsite: its year's verdict goes,
    // another year's stays.
    assert!(
        !verdicts
            .join(format!("safe-to-delete-{year_of_a}.txt"))
            .exists()
            && !verdicts.join(format!("plan-{year_of_a}.json")).exists(),
        "the verdict of {year_of_a} is voided by the write-back"
    );
    assert!(verdicts.join("safe-to-delete-1901.txt").exists());

    // keepsake's own XMP reader (the one the exif stage uses) ...
    let text = sidecar_text(&a.0);
    assert_eq!(
        keepsake_xmp::albums(&text),
        ["Summer 2024", "Trips & Tours"]
    );
    assert_eq!(
        keepsake_xmp::property(&text, "xmpDM:Album").as_deref(),
        Some("Summer 2024")
    );
    let text = sidecar_text(&b.0);
    assert_eq!(
        keepsake_xmp::property(&text, "xmp:Rating").as_deref(),
        Some("5")
    );
    let text = sidecar_text(&c.0);
    assert_eq!(
        keepsake_xmp::property(&text, "dc:description").as_deref(),
        Some("Grandma's 90th <3")
    );
    assert_eq!(
        keepsake_xmp::property(&text, "xmp:Rating").as_deref(),
        Some("3")
    );
    let text = sidecar_text(&d.0);
    assert_eq!(
        keepsake_xmp::property(&text, "exif:DateTimeOriginal").as_deref(),
        Some("2001-02-03T04:05:06")
    );
    // ... and exiftool read the same.
    let tool = exiftool_reads(&a.0);
    assert_eq!(tool["Album"], "Summer 2024", "{tool}");
    assert_eq!(
        tool["HierarchicalSubject"],
        serde_json::json!(["Albums|Summer 2024", "Albums|Trips & Tours"]),
        "{tool}"
    );
    assert_eq!(exiftool_reads(&b.0)["Rating"], 5);
    let tool = exiftool_reads(&c.0);
    assert_eq!(tool["Description"], "Grandma's 90th <3", "{tool}");
    assert_eq!(tool["Rating"], 3, "{tool}");
    let tool = exiftool_reads(&d.0);
    assert_eq!(tool["DateTimeOriginal"], "2001:02:03 04:05:06", "{tool}");
    let lat = tool["GPSLatitude"].as_f64().unwrap();
    let lon = tool["GPSLongitude"].as_f64().unwrap();
    assert!(
        (lat - 48.8584).abs() < 1e-5 && (lon + 2.2945).abs() < 1e-5,
        "{tool}"
    );

    // Nothing changed: nothing is read twice or written again.
    let albums_read = fake.request_count("GET", "/api/albums/");
    let swept = pull(&sandbox, &["--changes"]);
    assert_eq!(swept["sidecars_written"], 0, "{swept}");
    assert_eq!(fake.request_count("GET", "/api/albums/"), albums_read);
    // A removal moves no `updatedAt` in Immich; the album's count tells.
    fake.remove_from_album_as_user("Trips & Tours", &a.1);
    let swept = pull(&sandbox, &["--changes"]);
    assert_eq!(swept["sidecars_written"], 1, "{swept}");
    assert_eq!(keepsake_xmp::albums(&sidecar_text(&a.0)), ["Summer 2024"]);
    assert_eq!(keepsake_xmp::albums(&sidecar_text(&e.0)), ["Trips & Tours"]);
    // An album the family deletes (its assets stay) leaves the sidecars.
    fake.delete_album_as_user("Trips & Tours");
    let swept = pull(&sandbox, &["--changes"]);
    assert_eq!(swept["sidecars_written"], 1, "{swept}");
    assert!(keepsake_xmp::albums(&sidecar_text(&e.0)).is_empty());
    fake.add_to_album_as_user("Trips & Tours", &e.1);
    pull(&sandbox, &["--changes"]);
    assert_eq!(keepsake_xmp::albums(&sidecar_text(&e.0)), ["Trips & Tours"]);

    // Immich is rebuilt, empty. A sweep of it stops before it strips the
    // sidecars of their albums, and says what to do.
    fake.reset();
    let (code, text) = sandbox.run_text(&["immich", "pull"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("immich sync --all"), "{text}");
    assert_eq!(keepsake_xmp::albums(&sidecar_text(&a.0)), ["Summer 2024"]);
    // Everything goes again and the albums and favorites come back from
    // the sidecars.
    let (code, text) = sandbox.run_text(&["immich", "sync", "--all"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(fake.assets().len(), 5, "{text}");
    let again = placed_assets(&sandbox);
    let new_id = |media: &std::path::Path| {
        again
            .values()
            .find(|(path, _)| path == media)
            .map(|(_, id)| id.clone())
            .unwrap()
    };
    let albums = fake.albums();
    let members = |name: &str| -> BTreeSet<String> {
        albums
            .iter()
            .filter(|al| al.name == name)
            .flat_map(|al| al.asset_ids.clone())
            .collect()
    };
    assert_eq!(members("Summer 2024"), BTreeSet::from([new_id(&a.0)]));
    assert_eq!(members("Trips & Tours"), BTreeSet::from([new_id(&e.0)]));
    assert!(fake.asset(&new_id(&b.0)).unwrap().is_favorite);
    let c_again = fake.asset(&new_id(&c.0)).unwrap();
    assert_eq!(c_again.description, "Grandma's 90th <3");
    assert_eq!(c_again.rating, Some(3));
    // The next pull agrees with the sidecars: nothing to write, and the
    // edited date stays although the rebuilt Immich shows the file's own.
    let swept = pull(&sandbox, &[]);
    assert_eq!(swept["errors"], serde_json::json!([]), "{swept}");
    assert_eq!(
        keepsake_xmp::property(&sidecar_text(&d.0), "exif:DateTimeOriginal").as_deref(),
        Some("2001-02-03T04:05:06")
    );
    assert_eq!(keepsake_xmp::albums(&sidecar_text(&a.0)), ["Summer 2024"]);
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}

#[test]
fn an_archived_external_library_file_gets_its_albums_and_favorite_back_on_its_new_asset() {
    let fake = FakeImmich::start();
    let sandbox = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    let (usb, archive) = (outside.path().join("usb"), sandbox.path().join("archive"));
    std::fs::create_dir_all(&usb).unwrap();
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(sandbox.library()).unwrap();
    // One Immich library over both roots, as a NAS mount would be.
    let library_id = fake.create_external_library(&sandbox.path().display().to_string());
    std::fs::write(sandbox.path().join("immich.key"), fake.api_key()).unwrap();
    sandbox.write_config_with(
        "[\"dedup\", \"exif\", \"library\", \"offsite\", \"immich\"]",
        "copy",
        &format!(
            "[stages.offsite]\ntargets = \"usb\"\n\n[offsite.usb]\ntype = \"dir\"\npath = {:?}\n\n\
             [archive]\nroot = {:?}\nicloud_inboxes = [\"inbox\"]\n\n\
             [immich]\nurl = {:?}\napi_key_file = \"immich.key\"\n\n\
             [stages.immich]\nmode = \"external-library\"\nlibrary_id = {library_id:?}\nscan_seconds = 1\n",
            usb.display().to_string(),
            archive.display().to_string(),
            fake.url()
        ),
    );
    sandbox.add("IMG_1.jpg", &corpus_media().join("exiftool_Canon.jpg"));
    let (_, report) = sandbox.ingest();
    assert_eq!(report["after_placed"]["done"], 1, "{report}");
    let (job, (media, old_id)) = placed_assets(&sandbox).into_iter().next().unwrap();
    fake.add_to_album_as_user("Summer", &old_id);
    fake.edit_asset(&old_id, Some(true), None, None);
    pull(&sandbox, &[]);
    assert_eq!(keepsake_xmp::albums(&sidecar_text(&media)), ["Summer"]);

    // The year goes to the archive: a new path, so a new asset in Immich.
    let year: String = sandbox
        .ledger()
        .query_row("SELECT substr(capture_time, 1, 4) FROM assets", [], |r| {
            r.get(0)
        })
        .unwrap();
    let (code, text) = sandbox.run_text(&["archive", "run", "--year", &year]);
    assert_eq!(code, 0, "{text}");
    assert!(!media.exists(), "{text}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, text) = sandbox.run_text(&["immich", "sync"]);
    assert_eq!(code, 0, "{text}");
    let (_, facts) = &calls(&sandbox)[&job];
    let new_id = facts["immich.asset_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id, "{facts}");
    let moved = fake.asset(&new_id).unwrap();
    assert!(
        moved
            .original_path
            .starts_with(&archive.display().to_string()),
        "{}",
        moved.original_path
    );
    assert!(moved.is_favorite, "the favorite came back from the sidecar");
    let summer = fake
        .albums()
        .into_iter()
        .find(|a| a.name == "Summer")
        .unwrap();
    assert!(summer.asset_ids.contains(&new_id), "{:?}", summer.asset_ids);
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}

#[test]
fn album_additions_wait_in_the_ledger_through_an_outage_and_go_in_one_request() {
    let fake = FakeImmich::start();
    let sandbox = immich_sandbox(&fake, None, "albums = \"Family\"");
    add_corpus(
        &sandbox,
        &[
            "exiftool_Canon.jpg",
            "exiftool_Nikon.jpg",
            "orient_Landscape_0.jpg",
        ],
    );
    // The uploads go; the album write meets a 500.
    fake.fail_matching("PUT", "/api/albums/", 1);
    let (_, report) = sandbox.ingest();
    assert_eq!(report["after_placed"]["done"], 3, "{report}");
    assert_eq!(fake.assets().len(), 3);
    let family = |fake: &FakeImmich| {
        fake.albums()
            .into_iter()
            .find(|a| a.name == "Family")
            .map_or(0, |a| a.asset_ids.len())
    };
    assert_eq!(family(&fake), 0);
    // `sync` sends what waits, in one request, and says so in its exit.
    let (code, text) = sandbox.run_text(&["immich", "sync"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(family(&fake), 3);
    assert_eq!(
        fake.request_count("PUT", "/api/albums/"),
        2,
        "one failed, one whole"
    );
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}

#[test]
fn kei_albums_and_favourites_reach_immich_and_the_sidecars_without_replacing_the_familys() {
    use crate::proof::{KeiRow, MAY_2019, SYNCED, kei_db};
    let fake = FakeImmich::start();
    let sandbox = immich_sandbox(&fake, None, "");
    let kei = sandbox.path().join("kei.db");
    let config = std::fs::read_to_string(sandbox.config_path()).unwrap();
    std::fs::write(
        sandbox.config_path(),
        format!(
            "{config}\n[archive]\nicloud_inboxes = [\"inbox\"]\nkei_state = {:?}\n",
            kei.display().to_string()
        ),
    )
    .unwrap();
    sandbox.add("IMG_0001.JPG", &corpus_media().join("exiftool_Canon.jpg"));
    sandbox.add(
        "IMG_0002.JPG",
        &corpus_media().join("immich_tanners_ridge.jpg"),
    );
    // The family rated the second one 2 and put it in "Family" already.
    std::fs::write(
        sandbox.inbox().join("IMG_0002.JPG.xmp"),
        "<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>\
         <rdf:Description rdf:about='' xmlns:xmp='http://ns.adobe.com/xap/1.0/' xmlns:lr='http://ns.adobe.com/lightroom/1.0/' xmp:Rating='2'>\
         <lr:hierarchicalSubject><rdf:Bag><rdf:li>Albums|Family</rdf:li></rdf:Bag></lr:hierarchicalSubject>\
         </rdf:Description></rdf:RDF></x:xmpmeta>",
    )
    .unwrap();
    let row = |id, name: &'static str| KeiRow {
        id,
        version: "original",
        media_type: "",
        filename: name,
        created_at: MAY_2019,
        status: "downloaded",
        local_path: Some(sandbox.inbox().join(name)),
        last_seen_at: SYNCED + 10,
    };
    kei_db(
        &kei,
        7,
        &[row("AX1", "IMG_0001.JPG"), row("AX2", "IMG_0002.JPG")],
        &[(SYNCED, Some(SYNCED + 60), "complete")],
    );
    let db = rusqlite::Connection::open(&kei).unwrap();
    db.execute_batch(
        "INSERT INTO asset_albums VALUES ('AX1', 'Summer', 'icloud'), ('AX1', 'Beach', 'icloud'), ('AX2', 'Summer', 'icloud');
         UPDATE assets SET is_favorite = 1;",
    )
    .unwrap();
    drop(db);
    let (_, report) = sandbox.ingest();
    assert_eq!(report["after_placed"]["failed"], 0, "{report}");

    let jobs = sandbox.jobs();
    let placed = |name: &str| {
        let job = keepsake_tests::job_named(&jobs, name);
        assert!(job["facts"]["icloud.id"].as_str().is_some(), "{job}");
        std::path::PathBuf::from(job["destination"].as_str().unwrap())
    };
    let first = sidecar_text(&placed("IMG_0001.JPG"));
    assert!(
        first.contains("Albums|Summer") && first.contains("Albums|Beach"),
        "{first}"
    );
    let rated = |text: &str, n: &str| {
        [
            format!("Rating=\"{n}\""),
            format!("Rating='{n}'"),
            format!("<xmp:Rating>{n}<"),
        ]
        .iter()
        .any(|form| text.contains(form.as_str()))
    };
    assert!(rated(&first, "5"), "{first}");
    let second = sidecar_text(&placed("IMG_0002.JPG"));
    assert!(
        second.contains("Albums|Family") && second.contains("Albums|Summer"),
        "{second}"
    );
    assert!(
        rated(&second, "2") && !rated(&second, "5"),
        "the family's rating stays: {second}"
    );

    let calls = calls(&sandbox);
    let asset_of = |name: &str| {
        let id = keepsake_tests::job_named(&jobs, name)["id"]
            .as_u64()
            .unwrap();
        calls[&id].1["immich.asset_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (one, two) = (asset_of("IMG_0001.JPG"), asset_of("IMG_0002.JPG"));
    let albums: BTreeMap<String, BTreeSet<String>> = fake
        .albums()
        .into_iter()
        .map(|a| (a.name, a.asset_ids.into_iter().collect()))
        .collect();
    assert_eq!(
        albums["Summer"],
        BTreeSet::from([one.clone(), two.clone()]),
        "{albums:?}"
    );
    assert_eq!(albums["Beach"], BTreeSet::from([one.clone()]));
    assert_eq!(albums["Family"], BTreeSet::from([two.clone()]));
    let favorite = |id: &str| {
        fake.assets()
            .into_iter()
            .find(|a| a.id == id)
            .unwrap()
            .is_favorite
    };
    assert!(favorite(&one), "kei's favourite is an Immich favourite");
    assert!(!favorite(&two), "the family's rating 2 stands");
    assert_eq!(fake.schema_violations(), Vec::<String>::new());
}
