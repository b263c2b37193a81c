//! The edges of "a source goes only when its bytes are kept": a plugin's
//! `duplicate-of`, symlinks in and beside an inbox, fsync on FUSE, names at
//! the length limit, a file that grows under an old mtime, a plugin that
//! floods its key-value store, and verify and rebuild after embed mode.
// The tests play the phone and the sync tool: they rename files into the inbox.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use keepsake_tests::*;

const START: Duration = Duration::from_secs(60);

/// The library's files, `.keepsake` excluded: relative path → BLAKE3.
fn library(sandbox: &Sandbox) -> BTreeMap<PathBuf, String> {
    hash_tree(&sandbox.library())
}

/// How many library files hold bytes with this BLAKE3.
fn copies_of(sandbox: &Sandbox, hash: &str) -> usize {
    library(sandbox).values().filter(|h| *h == hash).count()
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every folder and file under `root`, `.keepsake` included; links are
/// listed, never followed.
fn every_entry(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((entry.path(), meta));
        }
    }
    out
}

/// One run of the binary that prints one JSON object.
struct Ran {
    code: i32,
    report: serde_json::Value,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn run_json(sandbox: &Sandbox, args: &[&str]) -> Ran {
    let out = sandbox.run(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("keepsake {args:?} died: {stderr}"));
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("keepsake {args:?} printed no JSON ({e}): {stdout}\n{stderr}"));
    Ran {
        code,
        report,
        stdout,
        stderr,
    }
}

fn ingest(sandbox: &Sandbox) -> Ran {
    run_json(sandbox, &["ingest", "--json"])
}

/// Root reads and writes anything: the permission tests need root to play
/// another user (`nobody`). /proc/self belongs to the effective user.
pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

const NOBODY: u32 = 65534;

/// The binary run as `nobody` (with setpriv), with this sandbox's config.
fn as_nobody(sandbox: &Sandbox, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(keepsake_bin())
        .arg("--config")
        .arg(sandbox.config_path())
        .args(args)
        .current_dir(sandbox.path())
        .env_remove("KEEPSAKE_FAULT_AFTER")
        .output()
        .unwrap()
}

/// `root` and everything under it to `uid` (links themselves, never their
/// targets), except `keep` and what is inside it.
fn chown_tree(root: &Path, uid: u32, keep: Option<&Path>) {
    std::os::unix::fs::lchown(root, Some(uid), Some(uid)).unwrap();
    for (path, _) in every_entry(root) {
        if !keep.is_some_and(|k| path.starts_with(k)) {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid)).unwrap();
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A library file's path below the library, from a job's `destination`.
fn placed_rel(sandbox: &Sandbox, name: &str) -> PathBuf {
    let jobs = sandbox.jobs();
    let job = job_named(&jobs, name);
    assert_eq!(job["state"], "done", "{job}");
    Path::new(job["destination"].as_str().unwrap())
        .strip_prefix(sandbox.library())
        .unwrap()
        .to_path_buf()
}

/// The key a push of the library file `rel` is recorded done under.
fn pushed_key(sandbox: &Sandbox, rel: &Path) -> Option<String> {
    sandbox
        .ledger()
        .query_row(
            "SELECT key FROM pushes WHERE state = 'done' AND file = ?1",
            [rel.to_string_lossy()],
            |r| r.get(0),
        )
        .ok()
}

/// The compiled-plugin cache files of a library.
fn cached_plugins(sandbox: &Sandbox) -> Vec<PathBuf> {
    let dir = sandbox.library().join(".keepsake/cache");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("cwasm")))
        .collect();
    assert!(!files.is_empty(), "no compiled plugin in {}", dir.display());
    files
}

/// The pipeline dedup → hostile → library, the hostile stage misbehaving
/// only on files named `bad*`; `options` go into `[stages.hostile]`.
fn with_hostile(sandbox: &Sandbox, inbox_mode: &str, options: &str) {
    sandbox.write_config_with(
        "[\"dedup\", \"hostile\", \"library\"]",
        inbox_mode,
        &format!(
            "[stages.hostile]\nwasm = {:?}\nonly = \"bad\"\n{options}\n",
            guest("keepsake_test_hostile").display().to_string()
        ),
    );
}

fn started(service: &Service) -> bool {
    service.log_text().contains("keepsake is running")
}

/// A move-mode inbox with `a_good.jpg` (job 1) and `bad.jpg`, whose plugin
/// calls it a duplicate of job `of`: the BLAKE3 of both.
fn claimed_duplicate(of: &str) -> (Sandbox, String, String) {
    let sandbox = Sandbox::new();
    with_hostile(
        &sandbox,
        "move",
        &format!("mode = \"duplicate-of\"\nof = {of:?}"),
    );
    fake_jpeg(&sandbox.inbox().join("a_good.jpg"), 1, 3000);
    fake_jpeg(&sandbox.inbox().join("bad.jpg"), 2, 3000);
    let good = blake3_of(&sandbox.inbox().join("a_good.jpg"));
    let bad = blake3_of(&sandbox.inbox().join("bad.jpg"));
    (sandbox, good, bad)
}

/// bad.jpg's job failed naming `expect`, and its bytes are still only in
/// the inbox.
fn assert_refused(sandbox: &Sandbox, bad: &str, expect: &[&str]) {
    let jobs = sandbox.jobs();
    let job = job_named(&jobs, "bad.jpg");
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    for word in expect {
        assert!(error.contains(word), "expected {word:?} in {error:?}");
    }
    assert_eq!(
        blake3_of(&sandbox.inbox().join("bad.jpg")),
        bad,
        "bad.jpg stays in the inbox, whole"
    );
    assert_eq!(copies_of(sandbox, bad), 0, "bad.jpg was never placed");
    assert!(temp_files(&sandbox.library()).is_empty());
}

#[test]
fn a_plugin_cannot_make_a_unique_photo_a_duplicate_in_a_move_inbox() {
    // Job 1 exists, with other bytes.
    let (sandbox, good, bad) = claimed_duplicate("1");
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 1, "{}", ran.text());
    let jobs = sandbox.jobs();
    let first = job_named(&jobs, "a_good.jpg");
    assert_eq!(first["id"], 1, "{first}");
    assert_eq!(first["state"], "done", "{first}");
    assert_eq!(copies_of(&sandbox, &good), 1);
    assert!(
        !sandbox.inbox().join("a_good.jpg").exists(),
        "a placed file leaves the move-mode inbox"
    );
    assert_refused(&sandbox, &bad, &["hostile", "duplicate-of"]);

    // No job 999999 at all: refused like any bad effect, not a ledger error.
    let (sandbox, good, bad) = claimed_duplicate("999999");
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 1, "{}", ran.text());
    assert!(!ran.text().contains("FOREIGN KEY"), "{}", ran.text());
    assert_eq!(copies_of(&sandbox, &good), 1);
    assert_refused(&sandbox, &bad, &["hostile"]);

    // The plugin fixed and the job retried: placed, and only then gone.
    with_hostile(&sandbox, "move", "mode = \"ok\"");
    let retry = sandbox.run(&["retry", "--failed"]);
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(job_named(&sandbox.jobs(), "bad.jpg")["state"], "done");
    assert_eq!(copies_of(&sandbox, &bad), 1);
    assert!(
        hash_tree(&sandbox.inbox()).is_empty(),
        "both files left the inbox once placed"
    );
}

#[test]
fn a_symlink_to_the_library_inside_a_move_inbox_is_never_followed_by_the_service() {
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        "[\"dedup\", \"exif\", \"library\"]",
        "move",
        "[service]\nstability_secs = 0.3\nrescan_secs = 1\n",
    );
    std::fs::create_dir_all(sandbox.library()).unwrap();
    let elsewhere = sandbox.path().join("elsewhere");
    fake_jpeg(&elsewhere.join("b.jpg"), 9, 20_000);
    let b = blake3_of(&elsewhere.join("b.jpg"));
    let (view, outside) = (
        sandbox.inbox().join("view"),
        sandbox.inbox().join("outside"),
    );
    std::os::unix::fs::symlink(sandbox.library(), &view).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &outside).unwrap();

    let mut service = sandbox.start();
    service.wait_for(START, "the service to start", || started(&service));
    let scratch = sandbox.path().join("scratch/a.jpg");
    fake_jpeg(&scratch, 1, 30_000);
    let a = blake3_of(&scratch);
    std::fs::rename(&scratch, sandbox.inbox().join("a.jpg")).unwrap();
    service.wait_for(Duration::from_secs(120), "a.jpg to be placed", || {
        sandbox.count_jobs("state = 'done'") >= 1
    });
    // Several rescans and stability windows: the placed copy is visible
    // through inbox/view all along.
    std::thread::sleep(Duration::from_secs(4));
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success(), "{}", service.log_text());

    let copies: Vec<PathBuf> = library(&sandbox)
        .into_iter()
        .filter(|(_, hash)| *hash == a)
        .map(|(path, _)| path)
        .collect();
    assert_eq!(copies.len(), 1, "a.jpg is in the library once: {copies:?}");
    assert!(!sandbox.inbox().join("a.jpg").exists());
    let jobs = sandbox.jobs();
    assert_eq!(jobs.len(), 1, "only a.jpg was taken: {jobs:?}");
    for job in &jobs {
        let rel = job["relative_path"].as_str().unwrap_or_default();
        assert!(
            !rel.starts_with("view/") && !rel.starts_with("outside/"),
            "a job through a symlink: {job}"
        );
    }
    assert_eq!(blake3_of(&elsewhere.join("b.jpg")), b);
    for link in [&view, &outside] {
        assert!(std::fs::symlink_metadata(link).unwrap().is_symlink());
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Why the FUSE test cannot run here, if it cannot.
fn no_fuse_here() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    for tool in ["bindfs", "strace"] {
        if !on_path(tool) {
            return Some(format!("{tool} is not on PATH"));
        }
    }
    if !["fusermount", "fusermount3", "umount"]
        .iter()
        .any(|t| on_path(t))
    {
        return Some("neither fusermount nor umount is on PATH".into());
    }
    let traced = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .stderr(Stdio::null())
        .status();
    if !traced.is_ok_and(|s| s.success()) {
        return Some("strace cannot trace here (ptrace refused)".into());
    }
    None
}

/// A bindfs (or tmpfs) mount, unmounted when dropped.
pub(crate) struct Mount(PathBuf);

impl Mount {
    fn bindfs(backing: &Path, at: &Path) -> Result<Mount, String> {
        // bindfs goes to the background: its stderr goes to a file, not a
        // pipe a daemon could hold open.
        let log = backing.with_extension("bindfs.log");
        let mut errors = Vec::new();
        let attempts: [&[&str]; 2] = [&["--no-allow-other"], &[]];
        for flags in attempts {
            let status = Command::new("bindfs")
                .args(flags)
                .arg(backing)
                .arg(at)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
                .status()
                .map_err(|e| format!("cannot run bindfs: {e}"))?;
            if status.success() {
                let mount = Mount(at.to_path_buf());
                let since = std::time::Instant::now();
                while since.elapsed() < Duration::from_secs(5) {
                    if keepsake::effects::fsops::filesystem_kind(at) == "fuse" {
                        return Ok(mount);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                return Err(format!(
                    "bindfs ran, but {} is not a FUSE mount",
                    at.display()
                ));
            }
            errors.push(
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            );
        }
        Err(format!("bindfs cannot mount here: {}", errors.join("; ")))
    }

    /// A tmpfs of `size` (`3m`) at `at`, when this machine lets us mount one.
    pub(crate) fn tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let size = format!("size={size}");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", size.as_str(), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Mount(at.to_path_buf()))
        } else {
            Err(format!(
                "cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let attempts: [(&str, &[&str]); 5] = [
            ("fusermount", &["-u"]),
            ("fusermount3", &["-u"]),
            ("umount", &[]),
            ("fusermount", &["-uz"]),
            ("umount", &["-l"]),
        ];
        for (program, args) in attempts {
            let unmounted = Command::new(program)
                .args(args)
                .arg(&self.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if unmounted {
                return;
            }
        }
        eprintln!("could not unmount {}", self.0.display());
    }
}

/// A line of `strace -f -y`: a sync of the file or folder at `fd`, or the
/// removal of a path.
#[derive(Debug)]
enum Traced {
    Sync { call: String, fd: PathBuf },
    Unlink(PathBuf),
}

/// The text between the first `<` and the next `>`: the path `-y` prints
/// for a file descriptor.
fn fd_path(text: &str) -> Option<PathBuf> {
    let start = text.find('<')? + 1;
    let end = start + text[start..].find('>')?;
    Some(PathBuf::from(&text[start..end]))
}

/// Parse a trace; `cwd` resolves a relative `unlinkat(AT_FDCWD, …)`.
/// `<... resumed>` halves are skipped: the call's first half holds its
/// arguments and its place in time.
fn parse_trace(text: &str, cwd: &Path) -> Vec<Traced> {
    text.lines()
        .filter_map(|line| {
            let call = line.trim_start_matches(|c: char| c.is_ascii_digit());
            let (name, args) = call.trim_start().split_once('(')?;
            match name {
                "fsync" | "fdatasync" | "syncfs" => Some(Traced::Sync {
                    call: name.to_string(),
                    fd: fd_path(args)?,
                }),
                "unlink" | "unlinkat" => {
                    let open = args.find('"')? + 1;
                    let close = open + args[open..].find('"')?;
                    let target = Path::new(&args[open..close]);
                    if target.is_absolute() {
                        return Some(Traced::Unlink(target.to_path_buf()));
                    }
                    let dir = fd_path(&args[..open]).unwrap_or_else(|| cwd.to_path_buf());
                    Some(Traced::Unlink(dir.join(target)))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn a_bindfs_library_gets_an_fsync_for_every_file_and_folder_before_the_inbox_copy_goes() {
    if let Some(why) = no_fuse_here() {
        println!("skipped: {why}");
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.write_config_with("[\"dedup\", \"exif\", \"library\"]", "move", "");
    let backing = sandbox.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(sandbox.library()).unwrap();
    // Dropped before the sandbox: unmounted before its folder goes.
    let _mount = match Mount::bindfs(&backing, &sandbox.library()) {
        Ok(mount) => mount,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let mut originals = BTreeSet::new();
    for i in 0..10u64 {
        let path = sandbox.inbox().join(format!("IMG_{i:02}.jpg"));
        fake_jpeg(&path, 100 + i, 20_000 + i as usize * 1000);
        originals.insert(blake3_of(&path));
    }
    let trace = sandbox.path().join("strace.txt");
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-s", "4096"])
        .args(["-e", "trace=fsync,fdatasync,syncfs,unlink,unlinkat", "-o"])
        .arg(&trace)
        .arg(keepsake_bin())
        .arg("--config")
        .arg(sandbox.config_path())
        .args(["ingest", "--json"])
        .current_dir(sandbox.path())
        .env_remove("KEEPSAKE_FAULT_AFTER")
        .env_remove("KEEPSAKE_SYNC")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let placed = library(&sandbox);
    assert_eq!(placed.len(), 10, "{placed:?}");
    assert_eq!(placed.into_values().collect::<BTreeSet<_>>(), originals);
    assert!(
        hash_tree(&sandbox.inbox()).is_empty(),
        "move mode: all gone"
    );

    // strace prints the kernel's paths: the sandbox's canonical one.
    let canon = sandbox.path().canonicalize().unwrap();
    let canonical = |bytes: Vec<u8>| {
        let path = Path::new(OsStr::from_bytes(&bytes));
        path.strip_prefix(sandbox.path())
            .map_or_else(|_| path.to_path_buf(), |rel| canon.join(rel))
    };
    let placements: Vec<(PathBuf, PathBuf, PathBuf)> = sandbox
        .ledger()
        .prepare("SELECT source, dest, temp FROM journal WHERE action = 'place' AND state = 'done'")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .unwrap()
        .map(|row| {
            let (source, dest, temp) = row.unwrap();
            (canonical(source), canonical(dest), canonical(temp))
        })
        .collect();
    assert_eq!(placements.len(), 10, "{placements:?}");
    let events = parse_trace(&std::fs::read_to_string(&trace).unwrap(), &canon);
    let syncs = events
        .iter()
        .filter(|e| matches!(e, Traced::Sync { call, .. } if call != "syncfs"))
        .count();
    println!("strace saw {syncs} fsync/fdatasync calls");
    for (source, dest, temp) in &placements {
        let folder = dest.parent().unwrap();
        let removed = events
            .iter()
            .position(|e| matches!(e, Traced::Unlink(p) if p == source))
            .unwrap_or_else(|| panic!("no unlink of {} in the trace", source.display()));
        let before = &events[..removed];
        assert!(
            before.iter().any(|e| matches!(e, Traced::Sync { call, fd }
                if call != "syncfs" && (fd == dest || fd == temp))),
            "{} was removed before its library copy ({} or its temp {}) was fsynced",
            source.display(),
            dest.display(),
            temp.display()
        );
        assert!(
            before.iter().any(|e| matches!(e, Traced::Sync { call, fd }
                if call == "fsync" && fd == folder)),
            "{} was removed before the folder {} was fsynced",
            source.display(),
            folder.display()
        );
    }
    let library_root = canon.join("library");
    let syncfs: Vec<&Traced> = events
        .iter()
        .filter(|e| matches!(e, Traced::Sync { call, fd } if call == "syncfs" && fd.starts_with(&library_root)))
        .collect();
    assert!(
        syncfs.is_empty(),
        "syncfs does not reach a FUSE daemon's storage: {syncfs:?}"
    );
}

#[test]
fn a_symlinked_sidecar_is_ignored_and_its_target_never_reaches_the_library() {
    const SECRET: &[u8] = b"SECRET-IMMICH-KEY";
    // Dated by its own EXIF; and dated by its name, so keepsake writes a
    // sidecar for it, merging whatever sidecar it had.
    let photos = [
        ("IMG_1.jpg", "exiftool_Canon.jpg"),
        ("PXL_20230102_030405678.jpg", "orient_Landscape_0.jpg"),
    ];
    for single_files in [false, true] {
        let sandbox = Sandbox::new();
        let key = sandbox.path().join("immich.key");
        std::fs::write(&key, "SECRET-IMMICH-KEY-4711").unwrap();
        for (name, from) in photos {
            sandbox.add(name, &corpus_media().join(from));
            std::os::unix::fs::symlink(&key, sandbox.inbox().join(format!("{name}.xmp"))).unwrap();
        }
        let ran = if single_files {
            let paths: Vec<String> = photos
                .iter()
                .map(|(name, _)| sandbox.inbox().join(name).display().to_string())
                .collect();
            let mut args = vec!["-v", "ingest", "--json"];
            args.extend(paths.iter().map(String::as_str));
            run_json(&sandbox, &args)
        } else {
            run_json(&sandbox, &["-v", "ingest", "--json"])
        };
        let how = if single_files {
            "named files"
        } else {
            "the inbox"
        };
        assert_eq!(ran.code, 0, "{how}: {}", ran.text());
        for (name, _) in photos {
            let hash = blake3_of(&sandbox.inbox().join(name));
            assert_eq!(copies_of(&sandbox, &hash), 1, "{how}: {name} is placed");
            let link = sandbox.inbox().join(format!("{name}.xmp"));
            assert!(
                std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_symlink()),
                "{how}: the link stays in the inbox"
            );
        }
        for (path, meta) in every_entry(&sandbox.library()) {
            let ledger = path
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"ledger.sqlite"));
            if !meta.is_file() || ledger {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET),
                "{how}: the link's target leaked into {}",
                path.display()
            );
        }
        assert!(
            ran.stderr.contains("symlink"),
            "{how}: the ignored link is logged: {}",
            ran.stderr
        );
        assert_eq!(std::fs::read(&key).unwrap(), b"SECRET-IMMICH-KEY-4711");
    }
}

/// `keepsake verify --json`: nothing damaged, missing or unexpected.
fn assert_verified(sandbox: &Sandbox, when: &str) {
    let ran = run_json(sandbox, &["verify", "--json"]);
    let report = &ran.report;
    for key in ["missing", "damaged", "unexpected", "errors"] {
        assert_eq!(
            report[key].as_array().map(Vec::len),
            Some(0),
            "{when}: verify lists {key}: {report}"
        );
    }
    assert_eq!(ran.code, 0, "{when}: {}", ran.text());
    assert!(
        report["checked"].as_u64().unwrap_or(0) >= 3,
        "{when}: {report}"
    );
}

#[test]
fn verify_after_embed_mode_reports_no_damage_and_a_rebuilt_ledger_still_knows_the_originals() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[stages.exif]\nwrite = \"embed\"\n");
    // No date inside them: their names date them, so the exif stage writes
    // XMP, which embed mode puts inside each library copy.
    let originals = [
        ("PXL_20230102_030405678.jpg", "orient_Landscape_0.jpg"),
        ("IMG_20190704_101530.jpg", "orient_Portrait_2.jpg"),
        (
            "IMG-20190704-WA0007.jpg",
            "mde_Nokia 3110c (Mobile Phone).jpg",
        ),
    ];
    for (name, from) in originals {
        sandbox.add(name, &corpus_media().join(from));
    }
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(ran.report["placed"], 3, "{}", ran.report);
    let jobs = sandbox.jobs();
    for (name, _) in originals {
        let dest = PathBuf::from(job_named(&jobs, name)["destination"].as_str().unwrap());
        assert_ne!(
            blake3_of(&dest),
            blake3_of(&sandbox.inbox().join(name)),
            "{name}: the XMP went inside the library copy"
        );
        assert!(
            !PathBuf::from(format!("{}.xmp", dest.display())).exists(),
            "{name}: embedded, so no sidecar"
        );
    }
    assert_verified(&sandbox, "after an embed-mode ingest");

    let rebuilt = run_json(&sandbox, &["ledger", "rebuild", "--json"]);
    assert_eq!(rebuilt.code, 0, "{}", rebuilt.text());
    for key in ["missing", "errors"] {
        assert_eq!(
            rebuilt.report[key].as_array().map(Vec::len),
            Some(0),
            "rebuild lists {key}: {}",
            rebuilt.report
        );
    }
    assert_verified(&sandbox, "after `ledger rebuild`");

    // The ledger lost altogether: rebuilt from the library alone, each
    // copy's original is read back from the XMP keepsake embedded.
    for entry in std::fs::read_dir(sandbox.library().join(".keepsake")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("ledger.sqlite")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    let rebuilt = run_json(&sandbox, &["ledger", "rebuild", "--json"]);
    assert_eq!(rebuilt.code, 0, "{}", rebuilt.text());
    assert_eq!(rebuilt.report["added"], 3, "{}", rebuilt.report);
    assert_eq!(rebuilt.report["originals"], 3, "{}", rebuilt.report);
    assert_verified(&sandbox, "after a rebuild without a ledger");

    // The rebuilt ledger knows each copy by its original's bytes.
    let before = library(&sandbox);
    sandbox.add("again.jpg", &corpus_media().join("orient_Landscape_0.jpg"));
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    let jobs = sandbox.jobs();
    let again = job_named(&jobs, "again.jpg");
    assert_eq!(again["state"], "duplicate", "{again}");
    assert_eq!(library(&sandbox), before, "the library gains no file");
}

#[test]
fn a_name_of_250_bytes_is_placed_with_its_sidecar_and_every_name_fits_255_bytes() {
    // 4 + 100 + 71 × 2 = 246 bytes of stem: wherever keepsake cuts the
    // placed name, the cut may fall inside an `é`.
    let name = format!("IMG_{}{}.jpg", "a".repeat(100), "é".repeat(71));
    assert_eq!(name.len(), 250);
    let sandbox = Sandbox::new();
    // Both copies dated by their sidecar to the same second: the second
    // gets the numbered name.
    let put = |folder: &str, seed: u64, rating: u8| {
        let media = sandbox.inbox().join(folder).join(&name);
        fake_jpeg(&media, seed, 5000);
        let sidecar = sandbox.inbox().join(folder).join(format!("{name}.xmp"));
        std::fs::write(
            &sidecar,
            format!(
                r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" exif:DateTimeOriginal="2019-07-04T10:15:30" xmp:Rating="{rating}"/></rdf:RDF></x:xmpmeta>"#
            ),
        )
        .unwrap();
        (blake3_of(&media), blake3_of(&sidecar))
    };
    let first = put("a", 1, 1);
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    let second = put("b", 2, 2);
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(ran.report["placed"], 1, "{}", ran.report);

    let library = library(&sandbox);
    assert_eq!(library.len(), 4, "two photos, two sidecars: {library:?}");
    let find = |hash: &str, what: &str| {
        library
            .iter()
            .find(|(_, h)| *h == hash)
            .map(|(path, _)| path.clone())
            .unwrap_or_else(|| panic!("{what} is not in the library: {library:?}"))
    };
    let (media_a, media_b) = (find(&first.0, "a/ photo"), find(&second.0, "b/ photo"));
    for (media, sidecar) in [
        (&media_a, find(&first.1, "a/ sidecar")),
        (&media_b, find(&second.1, "b/ sidecar")),
    ] {
        assert!(name_of(media).ends_with(".jpg"), "{}", media.display());
        assert!(name_of(&sidecar).ends_with(".xmp"), "{}", sidecar.display());
        assert_eq!(
            sidecar.parent(),
            media.parent(),
            "the sidecar is beside its photo"
        );
        assert!(
            media.starts_with("2019/07"),
            "dated by its sidecar: {}",
            media.display()
        );
        assert!(
            name_of(media).contains(&format!("IMG_{}", "a".repeat(100))),
            "the name's start survives: {}",
            media.display()
        );
    }
    assert!(
        !name_of(&media_a).ends_with("_1.jpg") && name_of(&media_b).ends_with("_1.jpg"),
        "the second is numbered: {} and {}",
        media_a.display(),
        media_b.display()
    );
    for (path, _) in every_entry(&sandbox.library()) {
        let file_name = path.file_name().unwrap();
        assert!(
            file_name.len() <= 255,
            "{} bytes: {}",
            file_name.len(),
            path.display()
        );
        assert!(
            file_name.to_str().is_some(),
            "cut inside a character: {}",
            path.display()
        );
    }
    assert!(temp_files(&sandbox.library()).is_empty());
}

#[test]
fn a_file_still_growing_with_an_old_mtime_is_not_taken_before_it_is_quiet() {
    use std::io::Write;
    let sandbox = Sandbox::new();
    sandbox.write_config("[service]\nstability_secs = 2\nrescan_secs = 0\n");
    let mut service = sandbox.start();
    service.wait_for(START, "the service to start", || started(&service));
    let scratch = sandbox.path().join("scratch/slow.jpg");
    fake_jpeg(&scratch, 7, 12 * 4096);
    let whole = std::fs::read(&scratch).unwrap();
    let slow = sandbox.inbox().join("slow.jpg");
    // The same old mtime after every append, as a copy that keeps the
    // source's times does: only the size shows that it grows.
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    {
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&slow)
            .unwrap();
        // 12 appends, 300 ms apart: 3.6 s of growing.
        for chunk in whole.chunks(4096) {
            file.write_all(chunk).unwrap();
            file.set_modified(an_hour_ago).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                sandbox.count_jobs("rel_path = CAST('slow.jpg' AS BLOB)"),
                0,
                "slow.jpg was taken while it grew:\n{}",
                service.log_text()
            );
        }
    }
    service.wait_for(Duration::from_secs(120), "slow.jpg to be placed", || {
        sandbox.count_jobs("state = 'done'") == 1
    });
    let (status, _) = service.stop(Duration::from_secs(30));
    assert!(status.success(), "{}", service.log_text());
    let jobs = sandbox.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let dest = PathBuf::from(
        job_named(&jobs, "slow.jpg")["destination"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(blake3_of(&slow), blake3::hash(&whole).to_hex().to_string());
    assert_eq!(
        blake3_of(&dest),
        blake3_of(&slow),
        "the whole file was taken"
    );
}

#[test]
fn a_plugin_that_floods_its_key_value_store_fails_its_own_job_and_the_service_stays_healthy() {
    let sandbox = Sandbox::new();
    with_hostile(&sandbox, "copy", "mode = \"kv-flood\"\nkv_max_mib = 8");
    for (name, seed) in [("a_good.jpg", 1), ("bad.jpg", 2), ("z_good.jpg", 3)] {
        fake_jpeg(&sandbox.inbox().join(name), seed, 3000);
    }
    let hash = |name: &str| blake3_of(&sandbox.inbox().join(name));
    let inbox = hash_tree(&sandbox.inbox());
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 1, "{}", ran.text());
    assert_eq!(ran.report["placed"], 2, "{}", ran.report);
    assert_eq!(ran.report["failed"], 1, "{}", ran.report);
    let jobs = sandbox.jobs();
    let bad = job_named(&jobs, "bad.jpg");
    assert_eq!(bad["state"], "failed", "{bad}");
    let error = bad["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("hostile") && error.contains("key-value"),
        "{error}"
    );
    let held: i64 = sandbox
        .ledger()
        .query_row(
            "SELECT COALESCE(SUM(LENGTH(value)), 0) FROM kv WHERE stage = 'hostile'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        held <= 8 << 20,
        "the stage keeps {held} bytes, past its 8 MiB"
    );
    for name in ["a_good.jpg", "z_good.jpg"] {
        assert_eq!(copies_of(&sandbox, &hash(name)), 1, "{name}");
    }
    assert_eq!(copies_of(&sandbox, &hash("bad.jpg")), 0);
    assert_eq!(
        hash_tree(&sandbox.inbox()),
        inbox,
        "the copy-mode inbox is untouched"
    );
    assert!(temp_files(&sandbox.library()).is_empty());

    // Healthy after it: the next file goes through.
    fake_jpeg(&sandbox.inbox().join("c_good.jpg"), 4, 3000);
    let ran = ingest(&sandbox);
    assert_eq!(ran.report["placed"], 1, "{}", ran.text());
    assert_eq!(copies_of(&sandbox, &hash("c_good.jpg")), 1);
}

#[test]
fn retrying_a_quarantined_job_keeps_its_record_and_its_quarantine_copy() {
    for mode in ["move", "copy"] {
        let sandbox = Sandbox::new();
        sandbox.write_config_with("[\"dedup\", \"exif\", \"library\"]", mode, "");
        // Text under a photo's name: quarantined (see bad_input.rs).
        let notes = sandbox.inbox().join("notes.jpg");
        std::fs::write(&notes, b"this is not a photo at all").unwrap();
        let hash = blake3_of(&notes);
        let check = |when: &str| -> u64 {
            let jobs = sandbox.jobs();
            assert_eq!(jobs.len(), 1, "{mode}, {when}: one job: {jobs:?}");
            let job = job_named(&jobs, "notes.jpg");
            assert_eq!(job["state"], "quarantined", "{mode}, {when}: {job}");
            let error = job["error"].as_str().unwrap_or_default();
            assert!(!error.contains("appeared"), "{mode}, {when}: {job}");
            let id = job["id"].as_u64().unwrap();
            let copy = sandbox
                .library()
                .join(format!(".keepsake/quarantine/{id}/notes.jpg"));
            assert_eq!(
                blake3_of(&copy),
                hash,
                "{mode}, {when}: the quarantine copy"
            );
            assert_eq!(
                blake3_of(Path::new(job["destination"].as_str().unwrap())),
                hash,
                "{mode}, {when}: {job}"
            );
            if mode == "copy" {
                assert_eq!(blake3_of(&notes), hash, "{when}: the copy inbox keeps it");
            } else {
                assert!(
                    !notes.exists(),
                    "{when}: quarantined, it left the move inbox"
                );
            }
            assert_eq!(
                copies_of(&sandbox, &hash),
                0,
                "{mode}, {when}: never placed"
            );
            id
        };
        let ran = ingest(&sandbox);
        assert_eq!(ran.code, 0, "{mode}: {}", ran.text());
        assert_eq!(ran.report["quarantined"], 1, "{mode}: {}", ran.report);
        let id = check("after the first ingest");

        let id_arg = id.to_string();
        let (code, out) = sandbox.run_text(&["retry", id_arg.as_str()]);
        assert_eq!(code, 0, "{mode}: {out}");
        let ran = ingest(&sandbox);
        assert_eq!(ran.code, 0, "{mode}: {}", ran.text());
        for key in ["failed", "skipped"] {
            assert_eq!(ran.report[key], 0, "{mode}: {}", ran.report);
        }
        assert_eq!(check("after retry and ingest"), id);
        assert!(temp_files(&sandbox.library()).is_empty());
    }
}

#[test]
fn ledger_rebuild_keeps_the_rows_of_a_folder_it_cannot_read() {
    if !is_root() {
        println!("skipped: needs root to run keepsake as nobody");
        return;
    }
    let sandbox = Sandbox::new();
    // Dated by their names: two land in 2019/07, one in 2020/01.
    for (i, name) in [
        "a/IMG_20190704_101530.jpg",
        "b/IMG_20190705_111530.jpg",
        "c/IMG_20200101_120000.jpg",
    ]
    .into_iter()
    .enumerate()
    {
        fake_jpeg(&sandbox.inbox().join(name), 40 + i as u64, 5000);
    }
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(ran.report["placed"], 3, "{}", ran.report);
    let before = library(&sandbox);
    let count_2019 = || -> i64 {
        sandbox
            .ledger()
            .query_row(
                "SELECT COUNT(*) FROM assets WHERE library_path LIKE '2019/%'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(count_2019(), 2, "{before:?}");

    // The sandbox is nobody's, but for library/2019: root's, mode 0700.
    let hidden = sandbox.library().join("2019");
    for (path, meta) in every_entry(sandbox.path()) {
        chmod(&path, if meta.is_dir() { 0o755 } else { 0o644 });
    }
    chmod(sandbox.path(), 0o755);
    chown_tree(sandbox.path(), NOBODY, Some(&hidden));
    chmod(&hidden, 0o700);
    let out = as_nobody(&sandbox, &["ledger", "rebuild", "--json"]);
    chown_tree(sandbox.path(), 0, None);
    chmod(&hidden, 0o755);

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "an error: {stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}\n{stderr}"));
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&hidden.display().to_string()) && e.contains("kept")),
        "{report}"
    );
    assert_eq!(
        report["missing"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(count_2019(), 2, "the unreadable folder's rows stay");
    assert_eq!(library(&sandbox), before, "no file touched");
    assert_verified(&sandbox, "after a rebuild that could not read 2019");
}

#[test]
fn a_plugin_cache_file_owned_by_another_user_is_compiled_again_not_loaded() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !is_root() {
        println!("skipped: needs root to give a cache file to another user");
        return;
    }
    let sandbox = Sandbox::new();
    let add = |name: &str, seed: u64| {
        let path = sandbox.inbox().join(name);
        fake_jpeg(&path, seed, 4000);
        blake3_of(&path)
    };
    let first = add("first.jpg", 1);
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(copies_of(&sandbox, &first), 1);
    let cached = cached_plugins(&sandbox);

    // Owned by another user: not loaded, compiled and replaced.
    for path in &cached {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let second = add("second.jpg", 2);
    let ran = run_json(&sandbox, &["-v", "ingest", "--json"]);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert!(ran.stderr.contains("compiled again"), "{}", ran.stderr);
    assert_eq!(copies_of(&sandbox, &second), 1);
    for path in &cached_plugins(&sandbox) {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.uid(), 0, "{} is root's again", path.display());
    }

    // Root's but writable by anyone: the same.
    let open = cached_plugins(&sandbox).remove(0);
    chmod(&open, 0o666);
    let third = add("third.jpg", 3);
    let ran = run_json(&sandbox, &["-v", "ingest", "--json"]);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert!(ran.stderr.contains("compiled again"), "{}", ran.stderr);
    assert_eq!(copies_of(&sandbox, &third), 1);
    let mode = std::fs::metadata(&open).unwrap().permissions().mode();
    assert_eq!(mode & 0o022, 0, "{} is mode {mode:o}", open.display());
}

#[test]
fn a_folder_target_sweeps_old_push_temps_and_creates_nothing_on_a_missing_disk() {
    let scratch = tempfile::tempdir().unwrap();
    let usb = scratch.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        "[\"dedup\", \"exif\", \"library\", \"offsite\"]",
        "copy",
        &format!(
            "[stages.offsite]\ntargets = \"usb\"\n\n[offsite.usb]\ntype = \"dir\"\npath = {:?}\n",
            usb.display().to_string()
        ),
    );
    let add = |name: &str, seed: u64| {
        let path = sandbox.inbox().join(name);
        fake_jpeg(&path, seed, 4000);
        blake3_of(&path)
    };
    // The object of the inbox file `name` on the target, once pushed.
    let object = |name: &str| {
        let rel = placed_rel(&sandbox, name);
        pushed_key(&sandbox, &rel).map(|key| usb.join(key))
    };
    let a = add("a.jpg", 1);
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(
        ran.report["offsite"]["pushed"].as_u64(),
        Some(1),
        "{}",
        ran.report
    );
    assert!(
        usb.join(".keepsake-target").is_file(),
        "the first push marks the disk"
    );
    assert_eq!(blake3_of(&object("a.jpg").expect("a.jpg pushed")), a);

    // A push interrupted an hour ago, and one under way right now.
    let old = usb.join("2019/.keepsake-push-1-2-3.tmp");
    let fresh = usb.join(".keepsake-push-9-9-9.tmp");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    for temp in [&old, &fresh] {
        std::fs::write(temp, b"half a photo").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let b = add("b.jpg", 2);
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    let (code, out) = sandbox.run_text(&["offsite", "push"]);
    assert_eq!(code, 0, "{out}");
    assert!(!old.exists(), "the old temp is swept");
    assert_eq!(
        std::fs::read(&fresh).unwrap(),
        b"half a photo",
        "a fresh temp may be another push's: kept"
    );
    assert_eq!(blake3_of(&object("b.jpg").expect("b.jpg pushed")), b);
    assert_eq!(blake3_of(&object("a.jpg").unwrap()), a);

    // The disk unplugged: an empty mount point is left behind.
    let unplugged = scratch.path().join("usb-unplugged");
    std::fs::rename(&usb, &unplugged).unwrap();
    std::fs::create_dir_all(&usb).unwrap();
    let c = add("c.jpg", 3);
    let ran = ingest(&sandbox);
    assert_eq!(
        ran.code,
        0,
        "the job is done; its push waits: {}",
        ran.text()
    );
    let (code, out) = sandbox.run_text(&["offsite", "push"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("mounted"), "{out}");
    assert_eq!(
        std::fs::read_dir(&usb).unwrap().count(),
        0,
        "nothing is created on the empty mount point"
    );
    assert_eq!(copies_of(&sandbox, &c), 1, "c.jpg is in the library");
    assert_eq!(object("c.jpg"), None, "c.jpg is not recorded pushed");
    let on_disk = hash_tree(&unplugged);
    assert!(!on_disk.values().any(|h| *h == c), "{on_disk:?}");
    assert_eq!(on_disk.values().filter(|h| **h == a || **h == b).count(), 2);
}

#[test]
fn an_archive_run_lists_the_archived_files_in_a_manifest_target() {
    let scratch = tempfile::tempdir().unwrap();
    let manifest = scratch.path().join("restic-files.txt");
    let archive = scratch.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let sandbox = Sandbox::new();
    sandbox.write_config_with(
        "[\"dedup\", \"exif\", \"library\", \"offsite\"]",
        "copy",
        &format!(
            "[stages.offsite]\ntargets = \"restic\"\n\n[offsite.restic]\ntype = \"manifest\"\npath = {:?}\n\n[archive]\nroot = {:?}\n",
            manifest.display().to_string(),
            archive.display().to_string()
        ),
    );
    // Dated by their names: two of 2019, one of 2020 that stays.
    let mut originals = BTreeMap::new();
    for (i, name) in [
        "IMG_20190704_101530.jpg",
        "IMG_20190705_111530.jpg",
        "IMG_20200101_120000.jpg",
    ]
    .into_iter()
    .enumerate()
    {
        let path = sandbox.inbox().join(name);
        fake_jpeg(&path, 60 + i as u64, 5000);
        originals.insert(name, blake3_of(&path));
    }
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(ran.report["placed"], 3, "{}", ran.report);
    let rels: BTreeMap<&str, PathBuf> = originals
        .keys()
        .map(|name| (*name, placed_rel(&sandbox, name)))
        .collect();
    let listed = std::fs::read_to_string(&manifest).unwrap();
    for rel in rels.values() {
        let line = sandbox.library().join(rel).display().to_string();
        assert!(listed.lines().any(|l| l == line), "{line} in {listed}");
    }

    let ran = run_json(&sandbox, &["archive", "run", "--year", "2019", "--json"]);
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(ran.report["moved"], 2, "{}", ran.report);
    let listed = std::fs::read_to_string(&manifest).unwrap();
    for (name, rel) in &rels {
        let (here, gone) = if name.starts_with("IMG_2019") {
            (archive.join(rel), sandbox.library().join(rel))
        } else {
            (sandbox.library().join(rel), archive.join(rel))
        };
        assert_eq!(
            blake3_of(&here),
            originals[name],
            "{name} at {}",
            here.display()
        );
        assert!(!gone.exists(), "{name} is in one root only");
        let line = here.display().to_string();
        assert!(listed.lines().any(|l| l == line), "{line} in {listed}");
    }
}

#[test]
fn a_full_library_disk_stops_with_a_clear_message_and_loses_nothing() {
    if !is_root() {
        println!("skipped: needs root to mount a small disk");
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path().join("disk");
    // Dropped before the sandbox: unmounted before its folder goes.
    let _mount = match Mount::tmpfs(&disk, "3m") {
        Ok(mount) => mount,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let library_root = disk.join("library");
    sandbox.write_config_with("[\"dedup\", \"exif\", \"library\"]", "move", "");
    let config = std::fs::read_to_string(sandbox.config_path()).unwrap();
    std::fs::write(
        sandbox.config_path(),
        config.replacen(
            "library = \"library\"",
            &format!("library = {:?}", library_root.display().to_string()),
            1,
        ),
    )
    .unwrap();
    // 8 × 600 KB on a 3 MiB disk that also holds the ledger.
    let mut originals = BTreeSet::new();
    for i in 0..8u64 {
        let path = sandbox.inbox().join(format!("IMG_{i:04}.jpg"));
        fake_jpeg(&path, 200 + i, 600_000);
        originals.insert(blake3_of(&path));
    }
    let jpegs = |tree: BTreeMap<PathBuf, String>| -> Vec<String> {
        tree.into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")))
            .map(|(_, h)| h)
            .collect()
    };

    let out = sandbox.run(&["ingest"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("ingest died on the full disk: {text}"));
    assert!(matches!(code, 1 | 2), "exit {code}: {text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        text.contains("full") && text.contains("free space"),
        "{text}"
    );
    let placed = jpegs(hash_tree(&library_root));
    let waiting = jpegs(hash_tree(&sandbox.inbox()));
    assert!(placed.len() < 8, "the disk cannot hold all 8: {placed:?}");
    for hash in &placed {
        assert!(
            originals.contains(hash),
            "{hash} in the library is no original"
        );
    }
    let placed_set: BTreeSet<&String> = placed.iter().collect();
    assert_eq!(placed_set.len(), placed.len(), "no photo placed twice");
    for hash in &originals {
        assert!(
            placed_set.contains(hash) || waiting.contains(hash),
            "{hash} is lost: in neither the library nor the inbox"
        );
    }
    let (code, status) = sandbox.run_text(&["status"]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("full"), "{status}");

    // Space freed: the retried jobs all go through.
    let remount = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(remount.success());
    let (code, out) = sandbox.run_text(&["retry", "--failed"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = sandbox.run_text(&["ingest"]);
    assert_eq!(code, 0, "{out}");
    let placed = jpegs(hash_tree(&library_root));
    assert_eq!(placed.len(), 8, "{placed:?}");
    assert_eq!(placed.into_iter().collect::<BTreeSet<_>>(), originals);
    assert!(
        hash_tree(&sandbox.inbox()).is_empty(),
        "the move inbox is empty"
    );
}

/// A fake JPEG with no EXIF, its mtime (the date it is filed by) in 2003.
fn jpeg_of_2003(path: &Path, seed: u64) {
    fake_jpeg(path, seed, 40_000);
    let file = std::fs::File::options().write(true).open(path).unwrap();
    // 2003-11-28 UTC.
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_070_000_000))
        .unwrap();
}

#[test]
fn a_duplicate_of_a_file_still_being_placed_stays_until_its_original_is_committed() {
    let sandbox = Sandbox::new();
    sandbox.write_config_with("[\"dedup\", \"exif\", \"library\"]", "move", "");
    let inbox = sandbox.inbox();
    // Job 1 is the original; job 2 (same batch) and job 23 (a later
    // batch: the first holds 16 jobs) are its twins. Twenty others, filed
    // in this year, fill the batches.
    jpeg_of_2003(&inbox.join("a_original.jpg"), 7);
    let hash = blake3_of(&inbox.join("a_original.jpg"));
    for twin in ["a_twin.jpg", "z_twin.jpg"] {
        std::fs::copy(inbox.join("a_original.jpg"), inbox.join(twin)).unwrap();
        jpeg_of_2003(&inbox.join(twin), 7);
    }
    for i in 0..20u64 {
        fake_jpeg(&inbox.join(format!("m_{i:02}.jpg")), 100 + i, 20_000);
    }
    // The original cannot be placed: its year's folder is a file.
    std::fs::create_dir_all(sandbox.library()).unwrap();
    std::fs::write(sandbox.library().join("2003"), b"not a folder").unwrap();

    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 1, "{}", ran.text());
    let jobs = sandbox.jobs();
    let id = |name: &str| job_named(&jobs, name)["id"].as_u64().unwrap();
    assert_eq!(
        (id("a_original.jpg"), id("a_twin.jpg"), id("z_twin.jpg")),
        (1, 2, 23),
        "the twins are in the original's batch and in a later one"
    );
    let original = job_named(&jobs, "a_original.jpg");
    assert_eq!(original["state"], "failed", "{original}");
    for twin in ["a_twin.jpg", "z_twin.jpg"] {
        let job = job_named(&jobs, twin);
        // Held on the original (it was in flight), or tried on its own and
        // stopped by the same folder: never done, never a duplicate.
        assert_eq!(job["state"], "failed", "{job}");
        let error = job["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("same bytes as job 1") || error.contains("cannot create folder"),
            "{twin}: {error}"
        );
    }
    assert!(
        job_named(&jobs, "a_twin.jpg")["error"]
            .as_str()
            .unwrap()
            .contains("same bytes as job 1"),
        "the twin in the same batch waits on the original"
    );
    for name in ["a_original.jpg", "a_twin.jpg", "z_twin.jpg"] {
        assert_eq!(blake3_of(&inbox.join(name)), hash, "{name} stays, whole");
    }
    assert_eq!(copies_of(&sandbox, &hash), 0);
    assert_eq!(
        library(&sandbox).len(),
        21,
        "the 20 others (and the blocking file) are there"
    );

    // The folder freed: the original is placed, and only then do its twins go.
    std::fs::remove_file(sandbox.library().join("2003")).unwrap();
    let (code, out) = sandbox.run_text(&["retry", "--failed"]);
    assert_eq!(code, 0, "{out}");
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    let jobs = sandbox.jobs();
    assert_eq!(job_named(&jobs, "a_original.jpg")["state"], "done");
    for twin in ["a_twin.jpg", "z_twin.jpg"] {
        let job = job_named(&jobs, twin);
        assert_eq!(job["state"], "duplicate", "{job}");
        assert_eq!(job["duplicate_of"], 1, "{job}");
    }
    assert_eq!(copies_of(&sandbox, &hash), 1);
    let placed = placed_rel(&sandbox, "a_original.jpg");
    assert!(placed.starts_with("2003/11"), "{}", placed.display());
    assert_eq!(blake3_of(&sandbox.library().join(&placed)), hash);
    assert!(hash_tree(&inbox).is_empty(), "the move inbox is empty");
}

#[test]
fn a_duplicate_whose_original_copy_is_damaged_fails_and_stays_in_the_inbox() {
    let sandbox = Sandbox::new();
    sandbox.write_config_with("[\"dedup\", \"exif\", \"library\"]", "move", "");
    let inbox = sandbox.inbox();
    jpeg_of_2003(&inbox.join("IMG_1.jpg"), 9);
    let hash = blake3_of(&inbox.join("IMG_1.jpg"));
    let good = std::fs::read(inbox.join("IMG_1.jpg")).unwrap();
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    let placed = sandbox.library().join(placed_rel(&sandbox, "IMG_1.jpg"));
    assert_eq!(blake3_of(&placed), hash);

    // Bit rot in the library; then the phone sends the photo again.
    let mut rotten = good.clone();
    rotten[1000] ^= 0x40;
    std::fs::write(&placed, &rotten).unwrap();
    std::fs::write(inbox.join("again.jpg"), &good).unwrap();
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 1, "{}", ran.text());
    let job = job_named(&sandbox.jobs(), "again.jpg").clone();
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not verify") && error.contains("keepsake verify"),
        "{error}"
    );
    assert_eq!(
        blake3_of(&inbox.join("again.jpg")),
        hash,
        "the only good copy stays"
    );
    // Failed, so a rescan leaves it alone and `status` lists it.
    let ran = ingest(&sandbox);
    assert_eq!(job_named(&sandbox.jobs(), "again.jpg")["state"], "failed");
    assert!(inbox.join("again.jpg").exists(), "{}", ran.text());
    let (_, status) = sandbox.run_text(&["status"]);
    assert!(status.contains("again.jpg"), "{status}");

    // The copy restored: the retried duplicate goes.
    std::fs::write(&placed, &good).unwrap();
    let (code, out) = sandbox.run_text(&["retry", "--failed"]);
    assert_eq!(code, 0, "{out}");
    let ran = ingest(&sandbox);
    assert_eq!(ran.code, 0, "{}", ran.text());
    let job = job_named(&sandbox.jobs(), "again.jpg").clone();
    assert_eq!(job["state"], "duplicate", "{job}");
    assert_eq!(copies_of(&sandbox, &hash), 1);
    assert!(hash_tree(&inbox).is_empty());
}
