//! `keepsake-bench`: ingest throughput beside the floor measured in the same
//! run on the same files (`cp -r` + `b3sum`), stage-call overhead, start-up
//! with and without the component cache, a rescan of an unchanged inbox, the
//! service (`service.rs`) and offsite push against rclone (`offsite.rs`).
//!
//! cargo run -p keepsake-tests --bin keepsake-bench -- [--quick | --smoke]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keepsake_tests::{corpus_media, fake_jpeg, keepsake_bin, workspace_root};

mod archive;
mod immich;
mod offsite;
mod service;

/// case, keepsake, floor, floor / keepsake, target.
type Row = [String; 5];

struct Sizes {
    small_files: usize,
    large_bytes: u64,
    unchanged_files: usize,
}

fn main() {
    // `--smoke`: tiny sizes, so CI proves every case still runs (the
    // figures mean little); `--quick`: small sizes for a session's check.
    let smoke = std::env::args().any(|a| a == "--smoke");
    let quick = smoke || std::env::args().any(|a| a == "--quick");
    let sizes = if smoke {
        Sizes {
            small_files: 50,
            large_bytes: 8 << 20,
            unchanged_files: 200,
        }
    } else if quick {
        Sizes {
            small_files: 300,
            large_bytes: 64 << 20,
            unchanged_files: 1_000,
        }
    } else {
        Sizes {
            small_files: 3_000,
            large_bytes: 2 << 30,
            unchanged_files: 10_000,
        }
    };
    // `--only archive`: one section alone, while working on it.
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .windows(2)
        .find(|w| w[0] == "--only")
        .map(|w| w[1].as_str());
    // The corpus section compares with exiftool and needs no b3sum.
    let b3sum = if only == Some("corpus") {
        PathBuf::from("b3sum")
    } else {
        find_b3sum()
    };
    // Build (or check) the binary now, outside every timed region.
    keepsake_bin();
    let root = workspace_root().join("target/keepsake-bench");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mut rows: Vec<Row> = Vec::new();
    if let Some(only) = only {
        match only {
            "archive" => rows.extend(archive::rows(
                &root,
                &archive::ArchiveSizes {
                    files: if quick { 500 } else { 3_000 },
                    large_bytes: if quick { 64 << 20 } else { 1 << 30 },
                },
                &b3sum,
            )),
            "immich" => {
                rows.extend(immich::rows(&root, if quick { 200 } else { 2_000 }));
                rows.extend(immich::sweep_rows(
                    &root,
                    if quick { 1_000 } else { 10_000 },
                ));
            }
            "corpus" => {
                let (corpus, per_format) = corpus_rows(&root);
                print_rows(&corpus);
                print_per_format(&per_format);
                let _ = std::fs::remove_dir_all(&root);
                return;
            }
            other => {
                eprintln!(
                    "--only {other}: the sections that run alone are: archive, corpus, immich"
                );
                std::process::exit(2);
            }
        }
        print_rows(&rows);
        let _ = std::fs::remove_dir_all(&root);
        return;
    }

    // 1. Small photos.
    let small = root.join("small-inbox");
    let mut total = 0u64;
    for i in 0..sizes.small_files {
        let len = 40_000 + (i * 7919) % 240_000;
        total += len as u64;
        fake_jpeg(
            &small.join(format!("{:02}/IMG_{i:05}.jpg", i % 30)),
            i as u64 + 1,
            len,
        );
    }
    let floor = measure_floor(&small, &root.join("small-cp"), &b3sum);
    let (took, report, _) = ingest_fresh(&root.join("small-run"), &small);
    let cells = floor.cells(sizes.small_files as f64, "files/s", took);
    rows.push([
        format!(
            "{} small photos ({:.0} MB)",
            sizes.small_files,
            total as f64 / 1e6
        ),
        cells[0].clone(),
        cells[1].clone(),
        cells[2].clone(),
        "≥ 50 %".into(),
    ]);
    // The same with an fsync per file and folder, as on FUSE, SMB and NFS
    // (where one syncfs does not reach the storage).
    PER_FILE_SYNC.store(true, std::sync::atomic::Ordering::Relaxed);
    let (took_per_file, _, _) = ingest_fresh(&root.join("small-run"), &small);
    PER_FILE_SYNC.store(false, std::sync::atomic::Ordering::Relaxed);
    let cells = floor.cells(sizes.small_files as f64, "files/s", took_per_file);
    rows.push([
        format!(
            "{} small photos, fsync per file (FUSE/SMB/NFS)",
            sizes.small_files
        ),
        cells[0].clone(),
        cells[1].clone(),
        cells[2].clone(),
        "-".into(),
    ]);
    let calls = report["stage_calls"].as_f64().unwrap_or(1.0).max(1.0);
    rows.push([
        "wasm stage call (instantiate + run)".into(),
        format!(
            "{:.0} µs/call",
            report["stage_micros"].as_f64().unwrap_or(0.0) / calls
        ),
        "-".into(),
        "-".into(),
        "< 100 µs".into(),
    ]);

    // 2. One large file.
    let large = root.join("large-inbox");
    write_large(&large.join("VID_0001.MOV"), sizes.large_bytes);
    let floor = measure_floor(&large, &root.join("large-cp"), &b3sum);
    let (took, _, rss) = ingest_fresh(&root.join("large-run"), &large);
    let cells = floor.cells(sizes.large_bytes as f64 / 1e6, "MB/s", took);
    rows.push([
        format!(
            "one {:.1} GiB file",
            sizes.large_bytes as f64 / (1u64 << 30) as f64
        ),
        cells[0].clone(),
        cells[1].clone(),
        cells[2].clone(),
        "≥ 70 %".into(),
    ]);
    rows.push([
        "peak RSS, large file".into(),
        format!("{:.1} MiB", rss as f64 / 1024.0),
        "-".into(),
        "-".into(),
        "< 100 MiB".into(),
    ]);

    // 3. Start-up: empty inbox, with and without the component cache.
    let start = root.join("startup");
    std::fs::create_dir_all(start.join("inbox")).unwrap();
    let cache = start.join("library/.keepsake/cache");
    let uncached = median(3, || {
        let _ = std::fs::remove_dir_all(&cache);
        ingest(&start, &start.join("inbox")).0
    });
    let cached = median(7, || ingest(&start, &start.join("inbox")).0);
    rows.push([
        "start-up, components cached".into(),
        format!("{:.0} ms", cached.as_secs_f64() * 1e3),
        "-".into(),
        format!("(compiling: {:.0} ms)", uncached.as_secs_f64() * 1e3),
        "< 200 ms".into(),
    ]);

    let (corpus, per_format) = corpus_rows(&root);
    rows.extend(corpus);

    // 4. Rescan of an unchanged inbox.
    let many = root.join("many-inbox");
    for i in 0..sizes.unchanged_files {
        fake_jpeg(
            &many.join(format!("{:03}/IMG_{i:06}.jpg", i % 100)),
            i as u64 + 1,
            600,
        );
    }
    let run = root.join("many-run");
    ingest(&run, &many);
    let (took, report, _) = ingest(&run, &many);
    assert_eq!(
        report["unchanged"].as_u64(),
        Some(sizes.unchanged_files as u64),
        "{report}"
    );
    rows.push([
        format!("second ingest, {} unchanged files", sizes.unchanged_files),
        format!("{:.0} ms", took.as_secs_f64() * 1e3),
        "-".into(),
        "-".into(),
        "< 1 s".into(),
    ]);

    // 5. The service.
    let service_sizes = if smoke {
        service::ServiceSizes {
            latency_files: 3,
            storm_files: 100,
            idle_secs: 2,
            ledger_jobs: 1_000,
        }
    } else if quick {
        service::ServiceSizes {
            latency_files: 10,
            storm_files: 1_000,
            idle_secs: 10,
            ledger_jobs: 10_000,
        }
    } else {
        service::ServiceSizes {
            latency_files: 30,
            storm_files: 5_000,
            idle_secs: 60,
            ledger_jobs: 100_000,
        }
    };
    rows.extend(service::rows(&root, &service_sizes));

    // 6. Offsite push, against rclone.
    let offsite_sizes = if smoke {
        offsite::OffsiteSizes {
            small_files: 20,
            large_bytes: 16 << 20,
        }
    } else if quick {
        offsite::OffsiteSizes {
            small_files: 200,
            large_bytes: 256 << 20,
        }
    } else {
        offsite::OffsiteSizes {
            small_files: 2_000,
            large_bytes: 2 << 30,
        }
    };
    rows.extend(offsite::rows(&root, &offsite_sizes));

    // 7. Verify and archive.
    let archive_sizes = if smoke {
        archive::ArchiveSizes {
            files: 50,
            large_bytes: 8 << 20,
        }
    } else if quick {
        archive::ArchiveSizes {
            files: 500,
            large_bytes: 64 << 20,
        }
    } else {
        archive::ArchiveSizes {
            files: 3_000,
            large_bytes: 1 << 30,
        }
    };
    rows.extend(archive::rows(&root, &archive_sizes, &b3sum));
    let (uploads, sweeps) = match (smoke, quick) {
        (true, _) => (30, 200),
        (false, true) => (200, 1_000),
        (false, false) => (2_000, 10_000),
    };
    rows.extend(immich::rows(&root, uploads));
    rows.extend(immich::sweep_rows(&root, sweeps));

    print_rows(&rows);
    print_per_format(&per_format);
    let _ = std::fs::remove_dir_all(&root);
}

/// Per media kind: files, median exif stage µs, mean KiB read.
type PerFormat = Vec<(String, usize, u64, f64)>;

fn print_per_format(per_format: &PerFormat) {
    println!(
        "\n| exif stage, per format | files | median µs per call (in the sandbox) | mean KiB read | target |"
    );
    println!("|---|---|---|---|---|");
    for (kind, files, median_us, mean_kib) in per_format {
        println!(
            "| {kind} | {files} | {median_us} | {mean_kib:.1} | < 1 ms; < 64 KiB for JPEG/HEIC |"
        );
    }
}

fn print_rows(rows: &[Row]) {
    println!(
        "\n| case | keepsake | floor: cp -r + b3sum (+ sync) | floor time / keepsake time | target |"
    );
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

fn find_b3sum() -> PathBuf {
    let local = workspace_root().join("tools/bin/b3sum");
    if local.exists() {
        return local;
    }
    if Command::new("b3sum")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("b3sum");
    }
    eprintln!("b3sum not found; install it with `cargo install b3sum --locked --root tools`");
    std::process::exit(2);
}

/// `cp -r` then `b3sum` of every file: the floor keepsake is measured
/// against; and the same with a `sync` after the copy, since keepsake makes
/// every copy durable before it counts it.
fn measure_floor(inbox: &Path, copy_to: &Path, b3sum: &Path) -> Floor {
    Floor {
        plain: median(3, || floor_once(inbox, copy_to, b3sum, false)),
        durable: median(3, || floor_once(inbox, copy_to, b3sum, true)),
    }
}

/// Empty a library but keep its compiled-component cache, as a running
/// installation has it.
fn clear_keeping_cache(library: &Path) {
    let Ok(entries) = std::fs::read_dir(library) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == ".keepsake" {
            for inner in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                if inner.file_name() != "cache" {
                    let _ = std::fs::remove_dir_all(inner.path());
                    #[allow(clippy::disallowed_methods)]
                    let _ = std::fs::remove_file(inner.path());
                }
            }
        } else if path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            #[allow(clippy::disallowed_methods)]
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// keepsake into a fresh library (components cached), three times; the median run.
fn ingest_fresh(dir: &Path, inbox: &Path) -> (Duration, serde_json::Value, u64) {
    ingest_median(dir, inbox, 3)
}

/// The median of `runs` ingests into an emptied library (compiled
/// components kept).
fn ingest_median(dir: &Path, inbox: &Path, runs: usize) -> (Duration, serde_json::Value, u64) {
    let mut runs: Vec<(Duration, serde_json::Value, u64)> = (0..runs)
        .map(|_| {
            clear_keeping_cache(&dir.join("library"));
            settle();
            ingest(dir, inbox)
        })
        .collect();
    runs.sort_by_key(|run| run.0);
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// The whole corpus through dedup + exif + library, against exiftool reading
/// it. Each round runs exiftool, then keepsake into an emptied library
/// (synced, components kept compiled), so both meet the same machine: warm
/// page cache, awake cores. Medians of 7 rounds, as one run of either is
/// under a second and a busy moment would decide the ratio.
fn corpus_rows(root: &Path) -> (Vec<Row>, PerFormat) {
    let mut rows: Vec<Row> = Vec::new();
    let corpus = corpus_media();
    let corpus_run = root.join("corpus-run");
    // Compiles the components once, outside the rounds.
    ingest(&corpus_run, &corpus);
    let have_exiftool = Command::new("exiftool")
        .arg("-ver")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut keepsake = Vec::new();
    let mut exiftool = Vec::new();
    // Each round's library is moved aside, not deleted, until the end: on
    // ext4 without a journal, inodes freed in the last minute are skipped
    // one by one when new files are made, which would bill keepsake for
    // the benchmark's own clean-up.
    let aside = root.join("corpus-aside");
    for round in 0..7 {
        set_aside(&corpus_run.join("library"), &aside.join(round.to_string()));
        let _ = Command::new("sync").status();
        warm(&corpus);
        if have_exiftool {
            exiftool.push(exiftool_once(&corpus));
        }
        keepsake.push(ingest_with(&corpus_run, &corpus, false).0);
    }
    let _ = std::fs::remove_dir_all(&aside);
    let took = middle(keepsake);
    let per_format = exif_per_format(&corpus_run.join("library/.keepsake/ledger.sqlite"));
    match have_exiftool.then(|| middle(exiftool)) {
        Some(exiftool) => rows.push([
            "corpus (70 files) through dedup + exif + library".into(),
            format!("{:.0} ms", took.as_secs_f64() * 1e3),
            format!("exiftool -r -json: {:.0} ms", exiftool.as_secs_f64() * 1e3),
            format!("{:.1}× faster", exiftool.as_secs_f64() / took.as_secs_f64()),
            "≥ 10×".into(),
        ]),
        None => eprintln!("exiftool not found: the corpus comparison is skipped"),
    }
    let stage_total: u64 = per_format
        .iter()
        .map(|(_, files, median, _)| *files as u64 * median)
        .sum();
    rows.push([
        "the exif stage alone over the corpus (≈ files × median)".into(),
        format!("{:.1} ms", stage_total as f64 / 1e3),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    (rows, per_format)
}

struct Floor {
    plain: Duration,
    durable: Duration,
}

impl Floor {
    /// Rate of the floor (plain and durable) and how keepsake compares.
    fn cells(&self, work: f64, unit: &str, keepsake: Duration) -> [String; 3] {
        let rate = |d: Duration| work / d.as_secs_f64();
        [
            format!("{:.0} {unit}", rate(keepsake)),
            format!(
                "{:.0} {unit} ({:.0} with sync)",
                rate(self.plain),
                rate(self.durable)
            ),
            format!(
                "{:.0} % ({:.0} % of the synced floor)",
                100.0 * self.plain.as_secs_f64() / keepsake.as_secs_f64(),
                100.0 * self.durable.as_secs_f64() / keepsake.as_secs_f64()
            ),
        ]
    }
}

fn floor_once(inbox: &Path, copy_to: &Path, b3sum: &Path, durable: bool) -> Duration {
    settle();
    // Warm the page cache the same way for both sides.
    warm(inbox);
    let started = Instant::now();
    let status = Command::new("cp")
        .arg("-r")
        .arg(inbox)
        .arg(copy_to)
        .status()
        .unwrap();
    assert!(status.success());
    if durable {
        assert!(Command::new("sync").status().unwrap().success());
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find {:?} -type f -print0 | xargs -0 {:?} > /dev/null",
            inbox, b3sum
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(copy_to);
    settle();
    took
}

fn warm(dir: &Path) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find {dir:?} -type f -print0 | xargs -0 cat > /dev/null"
        ))
        .status();
}

/// Run `keepsake ingest --json` with a config in `dir` taking `inbox`;
/// returns wall time, the report and the peak RSS in KiB.
/// Runs keepsake with `KEEPSAKE_SYNC=per-file` (every file fsynced on its
/// own, as keepsake does on filesystems `syncfs` does not reach).
static PER_FILE_SYNC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn ingest(dir: &Path, inbox: &Path) -> (Duration, serde_json::Value, u64) {
    ingest_with(dir, inbox, true)
}

/// `watch_memory`: sample the peak RSS while it runs (which costs the
/// machine a little: timings of runs under 200 ms leave it off).
fn ingest_with(dir: &Path, inbox: &Path, watch_memory: bool) -> (Duration, serde_json::Value, u64) {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("keepsake.toml");
    std::fs::write(
        &config,
        format!(
            "library = \"library\"\n[[inbox]]\nname = \"bench\"\npath = {:?}\n",
            inbox.display().to_string()
        ),
    )
    .unwrap();
    warm(inbox);
    let started = Instant::now();
    let mut child = Command::new(keepsake_bin())
        .current_dir(dir)
        .arg("--config")
        .arg(&config)
        .args(["ingest", "--json"])
        .env(
            "KEEPSAKE_SYNC",
            if PER_FILE_SYNC.load(std::sync::atomic::Ordering::Relaxed) {
                "per-file"
            } else {
                "auto"
            },
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let peak = if watch_memory {
        wait_watching_memory(&mut child, "keepsake ingest")
    } else {
        assert!(child.wait().unwrap().success(), "keepsake ingest failed");
        0
    };
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (took, report, peak)
}

/// Wait for `child` to exit successfully; its peak resident memory in KiB,
/// sampled every 2 ms (VmHWM).
fn wait_watching_memory(child: &mut std::process::Child, what: &str) -> u64 {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} failed");
            return peak;
        }
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kib) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn write_large(path: &Path, len: u64) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    // `ftyp`, then one `mdat` to the end of the file (its size 0): whole.
    block[..28].copy_from_slice(b"\0\0\0\x14ftypqt  \0\0\0\0qt  \0\0\0\0mdat");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut written = 0;
    while written < len {
        for chunk in block[28..].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = (len - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        written += n as u64;
        block[..28].fill(0);
    }
    file.flush().unwrap();
}

fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..runs).map(|_| f()).collect();
    times.sort();
    times[runs / 2]
}

/// Move everything in `library` but the component cache into `aside`.
#[allow(
    clippy::disallowed_methods,
    reason = "the benchmark's own scratch library, not a user's files"
)]
fn set_aside(library: &Path, aside: &Path) {
    std::fs::create_dir_all(aside.join(".keepsake")).unwrap();
    for entry in std::fs::read_dir(library).into_iter().flatten().flatten() {
        if entry.file_name() == ".keepsake" {
            for inner in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if inner.file_name() != "cache" {
                    std::fs::rename(
                        inner.path(),
                        aside.join(".keepsake").join(inner.file_name()),
                    )
                    .unwrap();
                }
            }
        } else {
            std::fs::rename(entry.path(), aside.join(entry.file_name())).unwrap();
        }
    }
}

/// One `exiftool -r -json` over `dir`.
fn exiftool_once(dir: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("exiftool")
        .args(["-r", "-json", "-q", "-q"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.code().is_some());
    started.elapsed()
}

fn middle(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Per media kind: files, median exif stage µs, mean KiB read.
fn exif_per_format(ledger: &Path) -> PerFormat {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT j.media_kind, s.micros, s.bytes_read FROM steps s JOIN jobs j ON j.id = s.job_id \
             WHERE s.stage = 'exif' ORDER BY j.media_kind",
        )
        .unwrap();
    let rows: Vec<(String, u64, u64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    let mut kinds: Vec<&String> = rows.iter().map(|r| &r.0).collect();
    kinds.dedup();
    for kind in kinds {
        let mut micros: Vec<u64> = rows.iter().filter(|r| &r.0 == kind).map(|r| r.1).collect();
        let bytes: Vec<u64> = rows.iter().filter(|r| &r.0 == kind).map(|r| r.2).collect();
        micros.sort_unstable();
        let mean = bytes.iter().sum::<u64>() as f64 / bytes.len() as f64 / 1024.0;
        out.push((kind.clone(), micros.len(), micros[micros.len() / 2], mean));
    }
    out
}

/// Flush what earlier measurements wrote and let the disk go quiet, so no
/// measurement pays for another's writeback (the same for keepsake and the
/// floor).
fn settle() {
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(2));
}
