//! The `immich` stage against the fake Immich on 127.0.0.1: assets/s of
//! upload mode (check, streamed upload, album add per asset) beside a plain
//! sequential upload of the same files (one multipart POST per file over a
//! fresh connection, as a `curl -F` loop does), and requests per asset.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_immich::FakeImmich;
use keepsake_tests::fake_jpeg;

use super::Row;
use super::archive::keepsake;

pub fn rows(root: &Path, files: usize) -> Vec<Row> {
    let dir = root.join("immich");
    let inbox = dir.join("inbox");
    let mut paths = Vec::new();
    let mut bytes = 0u64;
    for i in 0..files {
        let len = 20_000 + (i * 7919) % 180_000;
        bytes += len as u64;
        let path = inbox.join(format!("{:02}/IMG_{i:05}.jpg", i % 20));
        fake_jpeg(&path, 0x1111 + i as u64, len);
        paths.push(path);
    }
    let (fake, config) = immich_config(&dir, "albums = \"Bench\"");
    // Placed with Immich down, so the uploads are measured alone.
    fake.set_down(true);
    let out = keepsake(&config, &["ingest"]);
    assert!(out.status.success() || out.status.code() == Some(1));
    fake.set_down(false);
    let before = fake.requests().len();
    let started = Instant::now();
    let out = keepsake(&config, &["immich", "sync"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fake.assets().len(), files);
    let requests = fake.requests().len() - before;
    let album_writes = fake.request_count("PUT", "/api/albums");

    // The floor: the same files, one plain upload each, in a row.
    fake.reset();
    let floor = sequential_upload(&fake, &paths);
    assert_eq!(fake.assets().len(), files);
    let violations = fake.schema_violations();
    assert!(violations.is_empty(), "{violations:?}");

    let rate = |d: Duration| files as f64 / d.as_secs_f64();
    vec![
        [
            format!(
                "{files} photos ({:.0} MB) to Immich: check + upload + album",
                bytes as f64 / 1e6
            ),
            format!("{:.0} assets/s", rate(took)),
            format!("{:.0} assets/s (plain sequential POST)", rate(floor)),
            format!("{:.0} %", 100.0 * floor.as_secs_f64() / took.as_secs_f64()),
            "-".into(),
        ],
        [
            "requests per asset to Immich (all / album writes)".into(),
            format!(
                "{:.2} / {:.2}",
                requests as f64 / files as f64,
                album_writes as f64 / files as f64
            ),
            "1 (upload only)".into(),
            "-".into(),
            "album writes ≤ 2".into(),
        ],
    ]
}

/// The write-back sweep over `files` assets keepsake uploaded: a sweep of
/// what changed when nothing did (the service's, every few minutes), a
/// full one (`keepsake immich pull`), and one after the family changed 1 %.
pub fn sweep_rows(root: &Path, files: usize) -> Vec<Row> {
    let dir = root.join("immich-sweep");
    for i in 0..files {
        let path = dir.join(format!("inbox/{:02}/IMG_{i:05}.jpg", i % 50));
        fake_jpeg(&path, 0x5_0000 + i as u64, 2_000 + i % 1000);
    }
    let (fake, config) = immich_config(&dir, "album_from_folder = true");
    let out = keepsake(&config, &["ingest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fake.assets().len(),
        files,
        "{} {} {}",
        fake.url(),
        fake.requests().len(),
        String::from_utf8_lossy(&out.stdout)
    );
    let pull = |args: &[&str]| -> (Duration, serde_json::Value) {
        let mut all = vec!["immich", "pull", "--json"];
        all.extend_from_slice(args);
        let started = Instant::now();
        let out = keepsake(&config, &all);
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
        (took, report)
    };
    // The first sweep writes every file's albums (its folder's).
    let (first, report) = pull(&[]);
    assert_eq!(report["sidecars_written"], files, "{report}");
    let before = fake.requests().len();
    let (unchanged, report) = pull(&["--changes"]);
    assert_eq!(report["sidecars_written"], 0, "{report}");
    let unchanged_requests = fake.requests().len() - before;
    let (full, report) = pull(&[]);
    assert_eq!(report["sidecars_written"], 0, "{report}");
    // The family favorites 1 % and puts them in an album.
    let assets = fake.assets();
    let edited = (files / 100).max(1);
    for asset in assets.iter().take(edited) {
        fake.edit_asset(&asset.id, Some(true), None, None);
        fake.add_to_album_as_user("Best of", &asset.id);
    }
    let (changed, report) = pull(&["--changes"]);
    assert_eq!(report["sidecars_written"], edited, "{report}");
    let violations = fake.schema_violations();
    assert!(violations.is_empty(), "{violations:?}");
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    vec![
        [
            format!("write-back sweep, {files} unchanged assets (`pull --changes`)"),
            format!("{} ({unchanged_requests} requests)", secs(unchanged)),
            "-".into(),
            "-".into(),
            "< 5 s".into(),
        ],
        [
            format!("write-back sweep, {files} assets, full (`pull`): unchanged / first"),
            format!("{} / {}", secs(full), secs(first)),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
        [
            format!("write-back sweep, {edited} of {files} assets changed (`pull --changes`)"),
            secs(changed),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
    ]
}

/// One multipart POST per file on a fresh connection, waiting for each
/// answer: what `for f in *; do curl -F assetData=@$f …; done` does,
/// without curl's own start-up.
fn sequential_upload(fake: &FakeImmich, paths: &[PathBuf]) -> Duration {
    let address = fake.url().trim_start_matches("http://").to_string();
    let started = Instant::now();
    for (i, path) in paths.iter().enumerate() {
        let data = std::fs::read(path).unwrap();
        let boundary = "floor-boundary-7d9f";
        let name = path.file_name().unwrap().to_string_lossy();
        let mut body = Vec::with_capacity(data.len() + 1024);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"assetData\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
        for (field, value) in [
            ("deviceAssetId", format!("floor-{i}")),
            ("deviceId", "floor".into()),
            ("fileCreatedAt", "2024-01-01T00:00:00.000Z".into()),
            ("fileModifiedAt", "2024-01-01T00:00:00.000Z".into()),
        ] {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let head = format!(
            "POST /api/assets HTTP/1.1\r\nHost: {address}\r\nx-api-key: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            fake.api_key(),
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 201"),
            "{}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    started.elapsed()
}

/// A fake Immich, and a config in `dir` whose one inbox ends with the
/// `immich` stage (its `[stages.immich]` lines: `stage`).
fn immich_config(dir: &Path, stage: &str) -> (FakeImmich, PathBuf) {
    let fake = FakeImmich::start();
    std::fs::write(dir.join("immich.key"), fake.api_key()).unwrap();
    let config = dir.join("keepsake.toml");
    std::fs::write(
        &config,
        format!(
            "library = \"library\"\n[[inbox]]\nname = \"bench\"\npath = \"inbox\"\npipeline = [\"dedup\", \"exif\", \"library\", \"immich\"]\n\n[immich]\nurl = {:?}\napi_key_file = \"immich.key\"\n\n[stages.immich]\n{stage}\n",
            fake.url()
        ),
    )
    .unwrap();
    (fake, config)
}
