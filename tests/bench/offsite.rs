//! Offsite push to a local S3 server (s3s-fs) by keepsake, against
//! `rclone copy` of the same files to the same server in the same run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keepsake_tests::{S3Server, fake_jpeg, keepsake_bin};

use super::{Row, settle, wait_watching_memory, write_large};

pub struct OffsiteSizes {
    pub small_files: usize,
    pub large_bytes: u64,
}

fn rclone() -> Option<&'static str> {
    Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success()
        .then_some("rclone")
}

/// Ingest `inbox` with the offsite stage while the server is down (so the
/// pushes wait), then time `keepsake offsite push` with the server up.
/// Returns (push time, peak RSS in MiB).
fn keepsake_push(dir: &Path, inbox: &Path, server: &mut S3Server) -> (Duration, f64) {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("keepsake.toml");
    std::fs::write(
        &config,
        format!(
            "library = \"library\"\n[[inbox]]\nname = \"bench\"\npath = {:?}\npipeline = [\"dedup\", \"exif\", \"library\", \"offsite\"]\n\n[stages.offsite]\ntargets = \"s3\"\nkey = \"{}/{{path}}\"\n\n{}",
            inbox.display().to_string(),
            dir.file_name().unwrap().to_string_lossy(),
            server.target("s3", dir)
        ),
    )
    .unwrap();
    server.stop();
    let out = Command::new(keepsake_bin())
        .current_dir(dir)
        .arg("--config")
        .arg(&config)
        .args(["ingest", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.restart();
    settle();
    let started = Instant::now();
    let mut child = Command::new(keepsake_bin())
        .current_dir(dir)
        .arg("--config")
        .arg(&config)
        .args(["offsite", "push"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let peak = wait_watching_memory(&mut child, "keepsake offsite push") as f64 / 1024.0;
    (started.elapsed(), peak)
}

/// `rclone copy` of the same library to the same server, under another prefix.
fn rclone_copy(rclone: &str, from: &Path, server: &S3Server, prefix: &str) -> Duration {
    settle();
    let remote = format!(
        ":s3,provider=Other,access_key_id={},secret_access_key={},endpoint='http://127.0.0.1:{}',force_path_style=true,no_check_bucket=true:{}/family/{prefix}",
        keepsake_tests::S3_ACCESS,
        keepsake_tests::S3_SECRET,
        server.port,
        keepsake_tests::S3_BUCKET
    );
    let started = Instant::now();
    let status = Command::new(rclone)
        // rclone's S3 client refuses a custom CA bundle on a plain-http
        // endpoint (some machines set AWS_CA_BUNDLE for everything).
        .env_remove("AWS_CA_BUNDLE")
        .arg("copy")
        .arg(from)
        .arg(remote)
        .args([
            "--exclude",
            ".keepsake/**",
            "--transfers",
            "4",
            "--checkers",
            "4",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "rclone copy failed");
    started.elapsed()
}

pub fn rows(root: &Path, sizes: &OffsiteSizes) -> Vec<Row> {
    let mut rows = Vec::new();
    let Some(rclone) = rclone() else {
        eprintln!("rclone not found (apt-get install rclone): the offsite comparison is skipped");
        return rows;
    };
    let mut server = S3Server::start(&root.join("s3"));

    let small = root.join("push-small-inbox");
    let mut total = 0u64;
    for i in 0..sizes.small_files {
        let len = 40_000 + (i * 7919) % 240_000;
        total += len as u64;
        fake_jpeg(
            &small.join(format!("{:02}/IMG_{i:05}.jpg", i % 20)),
            i as u64 + 100_000,
            len,
        );
    }
    let dir = root.join("push-small");
    let (took, rss) = keepsake_push(&dir, &small, &mut server);
    let theirs = rclone_copy(rclone, &dir.join("library"), &server, "rclone-small");
    let rate = |d: Duration| sizes.small_files as f64 / d.as_secs_f64();
    rows.push([
        format!(
            "offsite push: {} small files ({:.0} MB) to local S3",
            sizes.small_files,
            total as f64 / 1e6
        ),
        format!("{:.0} files/s (peak RSS {rss:.0} MiB)", rate(took)),
        format!("rclone copy: {:.0} files/s", rate(theirs)),
        format!("{:.2}× rclone", rate(took) / rate(theirs)),
        "≥ 1×; RSS < 150 MiB".into(),
    ]);

    let large = root.join("push-large-inbox");
    write_large(&large.join("VID_0001.MOV"), sizes.large_bytes);
    let dir = root.join("push-large");
    let (took, rss) = keepsake_push(&dir, &large, &mut server);
    let theirs = rclone_copy(rclone, &dir.join("library"), &server, "rclone-large");
    let mbps = |d: Duration| sizes.large_bytes as f64 / 1e6 / d.as_secs_f64();
    rows.push([
        format!(
            "offsite push: one {:.2} GiB file to local S3",
            sizes.large_bytes as f64 / (1u64 << 30) as f64
        ),
        format!("{:.0} MB/s (peak RSS {rss:.0} MiB)", mbps(took)),
        format!("rclone copy: {:.0} MB/s", mbps(theirs)),
        format!("{:.2}× rclone", mbps(took) / mbps(theirs)),
        "≥ 0.8×; RSS < 150 MiB".into(),
    ]);
    rows
}
