//! `keepsake verify` against `b3sum` of the same tree, and `keepsake archive
//! run` of one year, on the same filesystem (renames) and across
//! filesystems against `cp -r` + `rm -r` of the same files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keepsake_tests::{fake_jpeg, keepsake_bin};

use super::{Row, settle, warm, write_large};

pub struct ArchiveSizes {
    pub files: usize,
    pub large_bytes: u64,
}

/// A library of `files` photos of 2019 and one large video, ingested.
fn library(dir: &Path, archive: &Path, sizes: &ArchiveSizes) -> (PathBuf, u64) {
    let inbox = dir.join("inbox");
    let mut bytes = 0u64;
    for i in 0..sizes.files {
        let len = 40_000 + (i * 7919) % 240_000;
        bytes += len as u64;
        fake_jpeg(
            &inbox.join(format!(
                "{:02}/IMG_201907{:02}_{:02}{:02}{:02}.jpg",
                i % 20,
                i % 28 + 1,
                i / 3600 % 24,
                i / 60 % 60,
                i % 60
            )),
            i as u64 + 1,
            len,
        );
    }
    write_large(&inbox.join("VID_20190704_120000.mov"), sizes.large_bytes);
    bytes += sizes.large_bytes;
    let config = dir.join("keepsake.toml");
    std::fs::write(
        &config,
        format!(
            "library = \"library\"\n[[inbox]]\nname = \"bench\"\npath = \"inbox\"\n\n[archive]\nroot = {:?}\n",
            archive.display().to_string()
        ),
    )
    .unwrap();
    let out = keepsake(&config, &["ingest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (config, bytes)
}

pub(super) fn keepsake(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(keepsake_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

pub fn rows(root: &Path, sizes: &ArchiveSizes, b3sum: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let dir = root.join("archive-bench");
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let (config, bytes) = library(&dir, &archive, sizes);
    let library_root = dir.join("library");
    let mib = bytes as f64 / (1 << 20) as f64;

    // Verify: warm cache for both, median of three.
    let median = |mut f: Box<dyn FnMut() -> Duration>| {
        let mut runs: Vec<Duration> = (0..3).map(|_| f()).collect();
        runs.sort();
        runs[1]
    };
    warm(&library_root);
    let verify = median(Box::new(|| {
        timed(|| {
            let out = keepsake(&config, &["verify"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        })
    }));
    let b3 = median(Box::new(|| {
        timed(|| {
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "find {library_root:?} -path '*/.keepsake' -prune -o -type f -print0 | xargs -0 {b3sum:?} > /dev/null"
                ))
                .status()
                .unwrap();
            assert!(status.success());
        })
    }));
    rows.push([
        format!(
            "`keepsake verify`: {} files, {mib:.0} MiB (page cache warm)",
            sizes.files + 1
        ),
        format!("{:.0} MiB/s", mib / verify.as_secs_f64()),
        format!("b3sum: {:.0} MiB/s", mib / b3.as_secs_f64()),
        format!("{:.0} %", 100.0 * b3.as_secs_f64() / verify.as_secs_f64()),
        "≥ 80 %".into(),
    ]);

    // Same filesystem: renames.
    settle();
    let same = timed(|| {
        let out = keepsake(&config, &["archive", "run", "--year", "2019"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    });
    let moved = sizes.files + 1;
    rows.push([
        format!("`archive run`, one year of {moved} files, same filesystem"),
        format!("{:.0} files/s", moved as f64 / same.as_secs_f64()),
        "-".into(),
        "-".into(),
        "thousands of files/s".into(),
    ]);

    // Across filesystems (/dev/shm is tmpfs): back to a fresh library,
    // then copy + verify + remove, against cp -r + rm -r.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let _ = std::fs::remove_dir_all(&dir);
        let other = shm.join(format!("keepsake-bench-{}", std::process::id()));
        std::fs::create_dir_all(&other).unwrap();
        let (config, _) = library(&dir, &other, sizes);
        let library_root = dir.join("library");
        settle();
        warm(&library_root);
        let across = timed(|| {
            let out = keepsake(&config, &["archive", "run", "--year", "2019"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        });
        // The floor: the same tree back, copied and removed by cp and rm.
        let _ = std::fs::remove_dir_all(&library_root);
        let floor_src = other.join("2019");
        let floor_dst = dir.join("floor");
        settle();
        let floor = timed(|| {
            assert!(
                Command::new("cp")
                    .arg("-r")
                    .arg(&floor_src)
                    .arg(&floor_dst)
                    .status()
                    .unwrap()
                    .success()
            );
            assert!(Command::new("sync").status().unwrap().success());
            assert!(
                Command::new("rm")
                    .arg("-r")
                    .arg(&floor_src)
                    .status()
                    .unwrap()
                    .success()
            );
        });
        rows.push([
            format!("`archive run` across filesystems, {moved} files, {mib:.0} MiB"),
            format!("{:.0} MiB/s", mib / across.as_secs_f64()),
            format!(
                "cp -r + sync + rm -r: {:.0} MiB/s",
                mib / floor.as_secs_f64()
            ),
            format!(
                "{:.0} %",
                100.0 * floor.as_secs_f64() / across.as_secs_f64()
            ),
            "-".into(),
        ]);
        let _ = std::fs::remove_dir_all(&other);
    }
    let _ = std::fs::remove_dir_all(&dir);
    rows
}
