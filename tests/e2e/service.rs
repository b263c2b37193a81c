//! `keepsake run` as a real process: files dropped while it runs, storms,
//! kill -9 at random moments, lost events, SIGTERM mid-copy, a second
//! instance, config errors, retries with backoff and deferred jobs.
// The tests play the phone, the sync tool and icloudpd: they rename and
// delete inbox files as those do.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keepsake_tests::{
    Sandbox, assert_consistent, blake3_of, fake_jpeg, guest, hash_tree, temp_files,
};

const START: Duration = Duration::from_secs(60);

fn started(service: &keepsake_tests::Service) -> bool {
    service.log_text().contains("keepsake is running")
}

/// The library file of a done job, by its inbox-relative path.
fn placed(sandbox: &Sandbox, relative_path: &str) -> PathBuf {
    let jobs = sandbox.jobs();
    let job = keepsake_tests::job_named(&jobs, relative_path);
    assert_eq!(job["state"], "done", "{job}");
    PathBuf::from(job["destination"].as_str().unwrap())
}

#[test]
fn files_dropped_while_it_runs_are_taken_once_and_whole() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[service]\nstability_secs = 2\nrescan_secs = 0\n");
    let mut service = sandbox.start();
    service.wait_for(START, "the service to start", || started(&service));
    let inbox = sandbox.inbox();
    let scratch = sandbox.path().join("scratch");

    // A plain copy.
    fake_jpeg(&inbox.join("copied.jpg"), 1, 50_000);
    // An atomic rename from a hidden temp name (Syncthing, rsync).
    fake_jpeg(&inbox.join(".renamed.jpg.tmp"), 2, 60_000);
    std::fs::rename(inbox.join(".renamed.jpg.tmp"), inbox.join("renamed.jpg")).unwrap();
    // icloudpd: `.part` while downloading, then renamed.
    fake_jpeg(&inbox.join("2024/05/12/IMG_0001.JPG.part"), 3, 70_000);
    std::fs::rename(
        inbox.join("2024/05/12/IMG_0001.JPG.part"),
        inbox.join("2024/05/12/IMG_0001.JPG"),
    )
    .unwrap();
    // Deleted before it was stable.
    fake_jpeg(&inbox.join("deleted.jpg"), 4, 10_000);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(inbox.join("deleted.jpg")).unwrap();

    // A slow append over 10 s: never taken while it grows.
    fake_jpeg(&scratch.join("slow.jpg"), 5, 250_000);
    let whole = std::fs::read(scratch.join("slow.jpg")).unwrap();
    {
        use std::io::Write;
        let mut file = std::fs::File::create(inbox.join("slow.jpg")).unwrap();
        for chunk in whole.chunks(whole.len() / 25 + 1) {
            file.write_all(chunk).unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(400));
            assert_eq!(
                sandbox.count_jobs("rel_path = CAST('slow.jpg' AS BLOB)"),
                0,
                "slow.jpg was taken while it was still being written"
            );
        }
    }
    service.wait_for(Duration::from_secs(180), "four files done", || {
        sandbox.count_jobs("state = 'done'") == 4
    });
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success(), "{}", service.log_text());

    let jobs = sandbox.jobs();
    assert_eq!(
        jobs.len(),
        4,
        "one job per file, none for the deleted one: {jobs:?}"
    );
    for (rel, source) in [
        ("copied.jpg", inbox.join("copied.jpg")),
        ("renamed.jpg", inbox.join("renamed.jpg")),
        (
            "2024/05/12/IMG_0001.JPG",
            inbox.join("2024/05/12/IMG_0001.JPG"),
        ),
        ("slow.jpg", scratch.join("slow.jpg")),
    ] {
        let library_copy = placed(&sandbox, rel);
        assert_eq!(
            blake3_of(&library_copy),
            blake3_of(&source),
            "{rel}: the library copy is not the whole file"
        );
    }
    assert!(
        sandbox
            .jobs()
            .iter()
            .all(|j| j["relative_path"] != "deleted.jpg")
    );
}

#[test]
fn a_storm_of_5000_files_is_taken_in_bounded_memory() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[service]\nstability_secs = 1\nrescan_secs = 0\n");
    let service = sandbox.start();
    service.wait_for(START, "the service to start", || started(&service));
    let landed = Instant::now();
    for i in 0..5000u64 {
        fake_jpeg(
            &sandbox
                .inbox()
                .join(format!("storm/{:02}/IMG_{i:05}.jpg", i % 50)),
            i + 1,
            2_000 + (i as usize * 37) % 4_000,
        );
    }
    service.wait_for(Duration::from_secs(600), "5000 files done", || {
        sandbox.count_jobs("state = 'done'") == 5000
    });
    let rss = service.peak_rss_mib();
    eprintln!(
        "storm: 5000 files done {:.1} s after they started landing; peak RSS {rss:.1} MiB",
        landed.elapsed().as_secs_f64()
    );
    assert!(rss > 0.0 && rss < 300.0, "peak RSS {rss:.1} MiB");
    assert_eq!(sandbox.count_jobs("1 = 1"), 5000, "one job per file");
}

/// A tiny deterministic generator (the seed is printed so a failure replays).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// 500 files stream in (50 of them repeats) while the service is killed
/// with SIGKILL at random moments and restarted.
fn stream_with_kills(mode: &str) -> (Sandbox, BTreeSet<String>) {
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        "[\"dedup\", \"exif\", \"library\"]",
        mode,
        "[service]\nstability_secs = 0.3\nrescan_secs = 0\n",
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("{mode} mode: kill seed {seed}");
    let mut rng = Lcg(seed);
    let inbox = sandbox.inbox();
    let writer = std::thread::spawn({
        let inbox = inbox.clone();
        move || {
            let mut contents = BTreeSet::new();
            for i in 0..500u64 {
                let path = inbox.join(format!("{:02}/IMG_{i:04}.jpg", i % 20));
                fake_jpeg(&path, i % 450 + 1, 20_000 + (i as usize % 450) * 97);
                contents.insert(blake3_of(&path));
                std::thread::sleep(Duration::from_millis(8));
            }
            contents
        }
    });
    let mut service = sandbox.start();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300 + rng.next(1200)));
        service.kill9();
        service = sandbox.start();
    }
    let contents = writer.join().unwrap();
    service.wait_for(Duration::from_secs(300), "every file taken", || {
        sandbox.count_jobs("state IN ('done', 'duplicate')") == 500
            && sandbox.count_jobs("state = 'pending'") == 0
    });
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success(), "{}", service.log_text());
    (sandbox, contents)
}

#[test]
fn kill_9_while_files_stream_in_loses_and_duplicates_nothing_in_copy_mode() {
    let (sandbox, contents) = stream_with_kills("copy");
    let inbox = hash_tree(&sandbox.inbox());
    assert_eq!(inbox.len(), 500, "the copy-mode inbox is intact");
    assert_consistent(&sandbox, &inbox);
    let library: BTreeSet<String> = hash_tree(&sandbox.library()).into_values().collect();
    assert_eq!(library.len(), 450);
    assert_eq!(library, contents);
}

#[test]
fn kill_9_while_files_stream_in_loses_nothing_in_move_mode() {
    let (sandbox, contents) = stream_with_kills("move");
    let left = hash_tree(&sandbox.inbox());
    assert!(left.is_empty(), "move mode leaves nothing behind: {left:?}");
    let library = hash_tree(&sandbox.library());
    let mut seen = BTreeMap::new();
    for (path, hash) in &library {
        if let Some(other) = seen.insert(hash.clone(), path.clone()) {
            panic!(
                "{} and {} hold the same bytes",
                other.display(),
                path.display()
            );
        }
    }
    let placed: BTreeSet<String> = library.into_values().collect();
    assert_eq!(placed, contents, "every unique file is in the library");
    assert!(temp_files(&sandbox.library()).is_empty());
}

#[test]
fn files_the_events_missed_are_found_by_the_rescan() {
    let sandbox = Sandbox::new();
    let share = sandbox.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(
        sandbox.config_path(),
        "library = \"library\"\n\n\
         [[inbox]]\nname = \"inbox\"\npath = \"inbox\"\n\n\
         [[inbox]]\nname = \"share\"\npath = \"share\"\nwatch = false\n\n\
         [service]\nstability_secs = 0.5\nrescan_secs = 1\n",
    )
    .unwrap();
    // Written while keepsake is stopped.
    fake_jpeg(&sandbox.inbox().join("before.jpg"), 1, 30_000);
    let mut service = sandbox.start();
    service.wait_for(
        Duration::from_secs(180),
        "the file written while stopped",
        || sandbox.count_jobs("state = 'done'") == 1,
    );
    // Written where no event arrives (as on an NFS or SMB share).
    fake_jpeg(&share.join("nfs.jpg"), 2, 30_000);
    service.wait_for(
        Duration::from_secs(180),
        "the file on the unwatched share",
        || sandbox.count_jobs("state = 'done' AND inbox = 'share'") == 1,
    );
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success());
    // Written between two runs.
    fake_jpeg(&sandbox.inbox().join("between.jpg"), 3, 30_000);
    let mut service = sandbox.start();
    service.wait_for(
        Duration::from_secs(180),
        "the file written between runs",
        || sandbox.count_jobs("state = 'done'") == 3,
    );
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success());
    let status = sandbox.run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("rescan   last at"), "{text}");
    assert!(text.contains("share"), "{text}");
}

/// A large video: a QuickTime header, then zeros (cheap to write).
fn write_large_video(path: &Path, mib: usize) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    block[..12].copy_from_slice(b"\0\0\0\x14ftypqt  ");
    file.write_all(&block).unwrap();
    block[..12].fill(0);
    for _ in 1..mib {
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

#[test]
fn sigterm_during_a_large_copy_exits_cleanly_and_the_job_resumes() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[service]\nstability_secs = 0.2\nrescan_secs = 0\ngrace_secs = 10\n");
    let video = sandbox.inbox().join("VID_0001.MOV");
    write_large_video(&video, 768);
    let staging = sandbox.library().join(".keepsake/staging");
    let mut service = sandbox.start();
    service.wait_for(
        Duration::from_secs(180),
        "the large file's copy to start",
        || std::fs::read_dir(&staging).is_ok_and(|mut d| d.next().is_some()),
    );
    let (status, took) = service.stop(Duration::from_secs(30));
    assert!(status.success(), "{}", service.log_text());
    assert!(
        took < Duration::from_secs(10),
        "stopped in {took:?}, beyond the grace period"
    );
    assert_eq!(
        sandbox.count_jobs("state = 'pending'"),
        1,
        "the interrupted job waits for the next start:\n{}",
        service.log_text()
    );
    assert_eq!(sandbox.count_jobs("state = 'failed'"), 0);

    let mut service = sandbox.start();
    service.wait_for(
        Duration::from_secs(300),
        "the job to resume and finish",
        || sandbox.count_jobs("state = 'done'") == 1,
    );
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(
        blake3_of(&placed(&sandbox, "VID_0001.MOV")),
        blake3_of(&video)
    );
    assert!(temp_files(&sandbox.library()).is_empty());
    assert!(std::fs::read_dir(&staging).is_ok_and(|mut d| d.next().is_none()));
}

#[test]
fn a_second_service_on_the_same_ledger_refuses_to_start() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[service]\nrescan_secs = 0\n");
    let mut first = sandbox.start();
    first.wait_for(START, "the first service", || started(&first));
    let second = sandbox.run(&["run"]);
    assert_eq!(second.status.code(), Some(2));
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("another keepsake is using"), "{message}");
    assert!(first.is_running(), "the first service must keep running");
    let ingest = sandbox.run(&["ingest"]);
    assert_eq!(ingest.status.code(), Some(2), "ingest refuses too");
    let (status, _) = first.stop(Duration::from_secs(30));
    assert!(status.success());
}

#[test]
fn config_errors_stop_it_before_it_does_anything() {
    let cases = [
        (
            "library = \"library\"\ncolour = 1\n",
            "unknown field `colour`",
        ),
        (
            "library = \"library\"\n[[inbox]]\nname = \"a\"\npath = \"missing\"\n",
            "`inbox[0].path`",
        ),
        (
            "library = \"library\"\n[[inbox]]\nname = \"a\"\npath = \"inbox\"\n[[inbox]]\nname = \"b\"\npath = \"inbox/sub\"\n",
            "overlap",
        ),
        (
            "library = \"inbox/library\"\n[[inbox]]\nname = \"a\"\npath = \"inbox\"\n",
            "overlap",
        ),
        (
            "library = \"library\"\n[[inbox]]\nname = \"a\"\npath = \"inbox\"\n[service]\nstability_secs = -1\n",
            "`service.stability_secs`",
        ),
        (
            "library = \"library\"\n[[inbox]]\nname = \"a\"\npath = \"inbox\"\n[service]\nwatch = true\n",
            "unknown field `watch`",
        ),
    ];
    for (config, expected) in cases {
        let sandbox = Sandbox::new();
        std::fs::create_dir_all(sandbox.inbox().join("sub")).unwrap();
        std::fs::write(sandbox.config_path(), config).unwrap();
        let out = sandbox.run(&["run"]);
        let message = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {message}");
        assert!(message.contains(expected), "{config}: {message}");
        assert!(
            !sandbox.library().exists() && !sandbox.inbox().join("library").exists(),
            "{config}: nothing may be created"
        );
    }
}

#[test]
fn failed_jobs_retry_with_backoff_and_deferred_jobs_wake() {
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        "[\"dedup\", \"hostile\", \"library\"]",
        "copy",
        &format!(
            "[stages.hostile]\nwasm = {:?}\nmode = \"panic\"\nonly = \"bad\"\n\n\
             [service]\nstability_secs = 0.2\nrescan_secs = 0\nmax_attempts = 3\nretry_secs = 1\n",
            guest("keepsake_test_hostile").display().to_string()
        ),
    );
    fake_jpeg(&sandbox.inbox().join("bad.jpg"), 1, 20_000);
    fake_jpeg(&sandbox.inbox().join("good.jpg"), 2, 20_000);
    let mut service = sandbox.start();
    // Attempts at 0 s, +1 s, +2 s later: then it stays failed.
    service.wait_for(Duration::from_secs(180), "three attempts", || {
        sandbox.count_jobs("state = 'failed' AND attempts = 3") == 1
    });
    assert_eq!(sandbox.count_jobs("state = 'done'"), 1);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        sandbox.count_jobs("attempts > 3"),
        0,
        "no attempt beyond max_attempts on its own"
    );
    let status = String::from_utf8_lossy(&sandbox.run(&["status"]).stdout).to_string();
    assert!(status.contains("3 attempts used"), "{status}");
    assert!(status.contains("service  running"), "{status}");
    // `keepsake retry` forces one more run while the service runs.
    let id = sandbox
        .jobs()
        .iter()
        .find(|j| j["state"] == "failed")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    assert!(sandbox.run(&["retry", &id.to_string()]).status.success());
    service.wait_for(Duration::from_secs(120), "the forced retry", || {
        sandbox.count_jobs("state = 'failed' AND attempts = 4") == 1
    });
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success());

    // A stage that defers: the job waits, then runs again on its own.
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        "[\"dedup\", \"hostile\", \"library\"]",
        "copy",
        &format!(
            "[stages.hostile]\nwasm = {:?}\nmode = \"defer\"\nseconds = 3\n\n\
             [service]\nstability_secs = 0.2\nrescan_secs = 0\n",
            guest("keepsake_test_hostile").display().to_string()
        ),
    );
    fake_jpeg(&sandbox.inbox().join("later.jpg"), 3, 20_000);
    let mut service = sandbox.start();
    service.wait_for(Duration::from_secs(180), "the deferral", || {
        sandbox.count_jobs("state = 'deferred'") == 1
    });
    let status = String::from_utf8_lossy(&sandbox.run(&["status"]).stdout).to_string();
    assert!(status.contains("waiting on purpose"), "{status}");
    service.wait_for(
        Duration::from_secs(120),
        "the deferred job to wake and finish",
        || sandbox.count_jobs("state = 'done'") == 1,
    );
    assert_eq!(
        sandbox.count_jobs("attempts = 1"),
        1,
        "a deferral is not a failed attempt"
    );
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success());
}

#[test]
fn a_live_photo_landing_in_two_steps_is_still_paired() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[service]\nstability_secs = 2\nrescan_secs = 0\n");
    let scratch = sandbox.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let make = |from: &str, name: &str, tag: &str| {
        let dest = scratch.join(name);
        std::fs::copy(keepsake_tests::corpus_media().join(from), &dest).unwrap();
        let out = std::process::Command::new("exiftool")
            .args(["-q", "-overwrite_original", tag])
            .arg(&dest)
            .output()
            .expect("exiftool is installed by scripts/test.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dest
    };
    let still = make(
        "exiftool_Canon.jpg",
        "IMG_0100.jpg",
        "-DateTimeOriginal=2020:01:01 10:00:00",
    );
    let video = make(
        "mde_with-gps.mov",
        "IMG_0100.MOV",
        "-Keys:CreationDate=2020:01:01 10:00:02+00:00",
    );
    let mut service = sandbox.start();
    service.wait_for(START, "the service to start", || started(&service));
    // The still first; the video a second later, as a phone uploads them.
    std::fs::write(
        sandbox.inbox().join("IMG_0100.jpg"),
        std::fs::read(&still).unwrap(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    std::fs::write(
        sandbox.inbox().join("IMG_0100.MOV"),
        std::fs::read(&video).unwrap(),
    )
    .unwrap();
    service.wait_for(Duration::from_secs(120), "both files", || {
        sandbox.count_jobs("state = 'done'") == 2
    });
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success());
    let still_dest = placed(&sandbox, "IMG_0100.jpg");
    let video_dest = placed(&sandbox, "IMG_0100.MOV");
    assert_eq!(
        video_dest,
        still_dest.with_extension("MOV"),
        "the video goes beside its still, under the still's name"
    );
}
