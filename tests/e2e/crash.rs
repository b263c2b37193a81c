//! Crash safety: kill keepsake at every step of a run (fault injection) and
//! at random instants of a larger one (SIGKILL); after a restart the library
//! holds every unique file exactly once, no temp file remains, the inbox is
//! intact and the ledger agrees with the disk.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use keepsake_tests::*;

/// A small inbox exercising every kind of write: placements, a duplicate,
/// sidecars, a quarantine, across two batches' worth of folders.
fn small_inbox(sandbox: &Sandbox) {
    let inbox = sandbox.inbox();
    fake_jpeg(&inbox.join("2024/IMG_1.jpg"), 1, 4000);
    fake_jpeg(&inbox.join("2024/IMG_2.jpg"), 2, 70_000);
    std::fs::write(
        inbox.join("2024/IMG_2.jpg.xmp"),
        b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
    )
    .unwrap();
    std::fs::write(inbox.join("2024/IMG_2.AAE"), b"<plist/>").unwrap();
    fake_jpeg(&inbox.join("2025/copy-of-1.jpg"), 1, 4000);
    fake_jpeg(&inbox.join("2025/IMG_3.jpg"), 3, 9000);
    std::fs::write(inbox.join("2025/broken.jpg"), b"").unwrap();
}

fn run_with_fault(sandbox: &Sandbox, k: u64) -> std::process::ExitStatus {
    sandbox
        .command(&["ingest"])
        .env("KEEPSAKE_FAULT_AFTER", k.to_string())
        .output()
        .unwrap()
        .status
}

#[test]
fn a_crash_at_any_journal_step_loses_and_duplicates_nothing() {
    let mut k = 1;
    loop {
        let sandbox = Sandbox::new();
        small_inbox(&sandbox);
        let before = hash_tree(&sandbox.inbox());
        let status = run_with_fault(&sandbox, k);
        if status.signal().is_none() {
            // The run finished before reaching step k: every step was swept.
            assert!(k > 8, "expected a run of more than 8 steps, got {k}");
            break;
        }
        // A crash during recovery itself, on every other step.
        if k % 2 == 0 {
            let _ = run_with_fault(&sandbox, 1);
        }
        let (code, report) = sandbox.ingest();
        assert_eq!(code, 0, "after a crash at step {k}: {report}");
        assert_consistent(&sandbox, &before);
        let library = hash_tree(&sandbox.library());
        // IMG_1, IMG_2 (+ .xmp and .AAE), IMG_3: the duplicate is not placed.
        assert_eq!(library.len(), 5, "after a crash at step {k}: {library:?}");
        k += 1;
    }
}

#[test]
fn random_sigkills_of_a_larger_run_lose_and_duplicate_nothing() {
    let sandbox = Sandbox::new();
    let mut unique = 0;
    for i in 0..400u64 {
        let folder = format!("d{:02}", i % 13);
        // Every seventh file repeats an earlier one's bytes.
        let seed = if i % 7 == 6 { i - 3 } else { i };
        if seed == i {
            unique += 1;
        }
        let size = 2_000 + (i as usize * 7919) % 200_000;
        let size = if seed == i {
            size
        } else {
            2_000 + (seed as usize * 7919) % 200_000
        };
        fake_jpeg(
            &sandbox.inbox().join(folder).join(format!("IMG_{i:04}.jpg")),
            seed,
            size,
        );
    }
    let before = hash_tree(&sandbox.inbox());
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut interrupted = 0;
    for _ in 0..8 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(20 + rng % 150);
        let mut child = sandbox
            .command(&["ingest"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} runs were killed mid-way; the test proves little"
    );
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_consistent(&sandbox, &before);
    assert_eq!(hash_tree(&sandbox.library()).len(), unique);
}

#[test]
fn in_move_mode_a_crash_at_any_step_loses_nothing_and_the_inbox_empties() {
    let mut k = 1;
    loop {
        let sandbox = Sandbox::new();
        sandbox.write_config_with("[\"dedup\", \"library\"]", "move", "");
        small_inbox(&sandbox);
        let before = hash_tree(&sandbox.inbox());
        let status = run_with_fault(&sandbox, k);
        let finished = status.signal().is_none();
        // Whatever the crash left, every original byte is somewhere safe.
        let mut safe: std::collections::BTreeSet<String> =
            hash_tree(&sandbox.library()).into_values().collect();
        safe.extend(hash_tree(&sandbox.library().join(".keepsake/quarantine")).into_values());
        safe.extend(hash_tree(&sandbox.inbox()).into_values());
        for (path, hash) in &before {
            assert!(
                safe.contains(hash),
                "after a crash at step {k}, {} is nowhere",
                path.display()
            );
        }
        let (code, report) = sandbox.ingest();
        assert_eq!(code, 0, "after a crash at step {k}: {report}");
        // Everything safe left the inbox; only the orphan-free empty folders remain.
        let left = hash_tree(&sandbox.inbox());
        assert!(
            left.is_empty(),
            "after a crash at step {k}, still in the inbox: {left:?}"
        );
        let library = hash_tree(&sandbox.library());
        assert_eq!(library.len(), 5, "after a crash at step {k}: {library:?}");
        assert!(temp_files(&sandbox.library()).is_empty());
        if finished {
            assert!(k > 8, "expected a run of more than 8 steps, got {k}");
            break;
        }
        k += 1;
    }
}

#[test]
fn a_large_file_is_copied_while_hashed_and_survives_a_crash_at_any_step() {
    let big = 33 << 20;
    let mut k = 1;
    loop {
        let sandbox = Sandbox::new();
        fake_jpeg(&sandbox.inbox().join("VID_big.jpg"), 7, big);
        fake_jpeg(&sandbox.inbox().join("copy/VID_big.jpg"), 7, big);
        fake_jpeg(&sandbox.inbox().join("small.jpg"), 8, 5000);
        let before = hash_tree(&sandbox.inbox());
        let status = run_with_fault(&sandbox, k);
        let finished = status.signal().is_none();
        let (code, report) = sandbox.ingest();
        assert_eq!(code, 0, "after a crash at step {k}: {report}");
        assert_consistent(&sandbox, &before);
        assert_eq!(
            hash_tree(&sandbox.library()).len(),
            2,
            "after a crash at step {k}"
        );
        let staging = sandbox.library().join(".keepsake/staging");
        let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "staging copies left after a crash at step {k}");
        if finished {
            assert!(k > 5, "expected more than 5 steps, got {k}");
            break;
        }
        k += 1;
    }
}
