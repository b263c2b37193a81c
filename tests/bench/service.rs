//! `keepsake run` measured as a process: landing-to-done latency of single
//! files, a storm against `keepsake ingest` of the same files, idle CPU,
//! memory with a large ledger, and the rescan of an unchanged inbox.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keepsake_tests::{Service, fake_jpeg, keepsake_bin, wait_for};

use super::{Row, ingest};

pub struct ServiceSizes {
    pub latency_files: usize,
    pub storm_files: usize,
    pub idle_secs: u64,
    pub ledger_jobs: usize,
}

const WINDOW_SECS: f64 = 1.0;

fn write_config(dir: &Path, inbox: &Path, service: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::create_dir_all(inbox).unwrap();
    let config = dir.join("keepsake.toml");
    std::fs::write(
        &config,
        format!(
            "library = \"library\"\n[[inbox]]\nname = \"bench\"\npath = {:?}\n\n[service]\n{service}\n",
            inbox.display().to_string()
        ),
    )
    .unwrap();
    config
}

fn start(dir: &Path, config: &Path) -> Service {
    let log = dir.join("run.log");
    let child = std::process::Command::new(keepsake_bin())
        .current_dir(dir)
        .arg("--config")
        .arg(config)
        .arg("run")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let service = Service { child, log };
    wait_for(Duration::from_secs(60), "the service to start", || {
        service.log_text().contains("keepsake is running")
    });
    service
}

fn ledger(dir: &Path) -> Option<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(dir.join("library/.keepsake/ledger.sqlite")).ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    Some(conn)
}

fn count_done(dir: &Path) -> i64 {
    ledger(dir)
        .and_then(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('done', 'duplicate')",
                [],
                |r| r.get(0),
            )
            .ok()
        })
        .unwrap_or(0)
}

fn service_value(dir: &Path, key: &str) -> Option<String> {
    ledger(dir)?
        .query_row(
            "SELECT value FROM service_state WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .ok()
}

/// CPU time (user + system) of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after ")".
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

pub fn rows(root: &Path, sizes: &ServiceSizes) -> Vec<Row> {
    let mut rows = Vec::new();

    // 1. Latency: one file at a time, from the end of its write to done.
    let dir = root.join("svc-latency");
    let inbox = root.join("svc-latency-inbox");
    let config = write_config(
        &dir,
        &inbox,
        &format!("stability_secs = {WINDOW_SECS}\nrescan_secs = 0"),
    );
    let mut service = start(&dir, &config);
    let mut latencies = Vec::new();
    for i in 0..sizes.latency_files {
        fake_jpeg(
            &inbox.join(format!("IMG_{i:04}.jpg")),
            i as u64 + 1,
            150_000,
        );
        let landed = Instant::now();
        while count_done(&dir) != i as i64 + 1 {
            assert!(landed.elapsed() < Duration::from_secs(60), "a single file");
            std::thread::sleep(Duration::from_millis(5));
        }
        latencies.push(landed.elapsed());
    }
    service.stop(Duration::from_secs(30));
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let (p50, p99) = (pick(0.5), pick(0.99));
    rows.push([
        format!(
            "`run`: one file landing to done, p50 / p99 of {}",
            sizes.latency_files
        ),
        format!(
            "{:.0} / {:.0} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ),
        format!("stability window {:.0} ms", WINDOW_SECS * 1e3),
        format!(
            "window + {:.0} / {:.0} ms",
            (p50.as_secs_f64() - WINDOW_SECS) * 1e3,
            (p99.as_secs_f64() - WINDOW_SECS) * 1e3
        ),
        "window + < 500 ms".into(),
    ]);

    // 2. A storm: a folder of files moved into the inbox at once, against
    //    `keepsake ingest` of the same files.
    let source = root.join("svc-storm-src");
    for i in 0..sizes.storm_files {
        fake_jpeg(
            &source.join(format!("{:02}/IMG_{i:05}.jpg", i % 50)),
            i as u64 + 1,
            20_000 + (i * 7919) % 80_000,
        );
    }
    let baseline_dir = root.join("svc-storm-ingest");
    let (ingest_took, _, _) = ingest(&baseline_dir, &source);
    let dir = root.join("svc-storm");
    let inbox = root.join("svc-storm-inbox");
    let config = write_config(
        &dir,
        &inbox,
        &format!("stability_secs = {WINDOW_SECS}\nrescan_secs = 0"),
    );
    let service = start(&dir, &config);
    let landed = Instant::now();
    #[allow(clippy::disallowed_methods)] // the bench plays the sync tool
    std::fs::rename(&source, inbox.join("storm")).unwrap();
    wait_for(Duration::from_secs(900), "the storm", || {
        count_done(&dir) == sizes.storm_files as i64
    });
    let storm_took = landed.elapsed();
    let storm_rss = rss_mib(service.pid(), "VmHWM:");
    let rate = |d: Duration| sizes.storm_files as f64 / d.as_secs_f64();
    rows.push([
        format!(
            "`run`: {} files moved into the inbox at once",
            sizes.storm_files
        ),
        format!(
            "{:.0} files/s ({:.1} s, peak RSS {storm_rss:.0} MiB)",
            rate(storm_took),
            storm_took.as_secs_f64()
        ),
        format!(
            "`ingest` of the same files: {:.0} files/s",
            rate(ingest_took)
        ),
        format!("{:.0} %", 100.0 * rate(storm_took) / rate(ingest_took)),
        "-".into(),
    ]);

    // 3. Idle: no files, nothing to do.
    let pid = service.pid();
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(sizes.idle_secs));
    let idle = cpu_time(pid).saturating_sub(before);
    rows.push([
        format!("`run`: CPU while idle for {} s", sizes.idle_secs),
        format!(
            "{:.0} ms ({:.3} %)",
            idle.as_secs_f64() * 1e3,
            100.0 * idle.as_secs_f64() / sizes.idle_secs as f64
        ),
        "-".into(),
        "-".into(),
        "≈ 0".into(),
    ]);
    drop(service);

    // 4. A large ledger: memory, and the rescan of an unchanged inbox.
    let dir = root.join("svc-ledger");
    let inbox = root.join("svc-ledger-inbox");
    for i in 0..sizes.ledger_jobs {
        fake_jpeg(
            &inbox.join(format!("{:03}/IMG_{i:06}.jpg", i % 200)),
            i as u64 + 1,
            600,
        );
    }
    let (_, report, _) = ingest(&dir, &inbox);
    assert_eq!(
        report["placed"].as_u64(),
        Some(sizes.ledger_jobs as u64),
        "{report}"
    );
    let config = write_config(&dir, &inbox, "rescan_secs = 0");
    let mut service = start(&dir, &config);
    wait_for(Duration::from_secs(300), "the start-up rescan", || {
        service_value(&dir, "last_rescan_files").as_deref()
            == Some(sizes.ledger_jobs.to_string().as_str())
    });
    // What it holds once settled.
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_mib(service.pid(), "VmRSS:");
    let peak = rss_mib(service.pid(), "VmHWM:");
    let rescan_ms: u64 = service_value(&dir, "last_rescan_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    service.stop(Duration::from_secs(30));
    rows.push([
        format!(
            "`run`: memory with {} jobs in the ledger",
            sizes.ledger_jobs
        ),
        format!("{rss:.0} MiB (peak {peak:.0} MiB)"),
        "-".into(),
        "-".into(),
        "< 100 MiB".into(),
    ]);
    rows.push([
        format!("`run`: rescan of {} unchanged files", sizes.ledger_jobs),
        format!("{:.2} s", rescan_ms as f64 / 1e3),
        "-".into(),
        "-".into(),
        "< 5 s".into(),
    ]);
    rows
}
