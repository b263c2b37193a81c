//! Fixtures shared by the end-to-end tests and the benchmark: a sandbox with
//! an inbox, a library and a config; the real `keepsake` binary; and checks
//! of what a user would check (bytes in the library, ledger against disk).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use keepsake;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `../shared/corpus`, read in place, never copied into the repo.
pub fn corpus_dir() -> PathBuf {
    let dir = workspace_root().join("../shared/corpus");
    assert!(
        dir.join("media").is_dir(),
        "the test corpus is missing at {}",
        dir.display()
    );
    dir
}

pub fn corpus_media() -> PathBuf {
    corpus_dir().join("media")
}

/// The `keepsake` binary, built once per test process so it is never stale
/// (`cargo build -p keepsake` resolves the same dependency features as the
/// workspace, so it rebuilds no dependency). `KEEPSAKE_BIN` names one built
/// already: the test command sets it and spares each test binary the call.
pub fn keepsake_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("KEEPSAKE_BIN") {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "KEEPSAKE_BIN={} is not a file",
                bin.display()
            );
            return bin;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "keepsake", "--bin", "keepsake"])
            .status()
            .expect("run cargo build for the keepsake binary");
        assert!(status.success(), "building the keepsake binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug").join("keepsake")
    })
}

/// A guest component the build produced (see runner/build.rs).
pub fn guest(stem: &str) -> PathBuf {
    let path = Path::new(keepsake::builtin::GUEST_DIR).join(format!("{stem}.wasm"));
    assert!(path.exists(), "missing guest {}", path.display());
    path
}

/// A temp folder with `inbox/`, `library/` and `keepsake.toml`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("keepsake-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("inbox")).unwrap();
        let sandbox = Sandbox { dir };
        sandbox.write_config("");
        sandbox
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn inbox(&self) -> PathBuf {
        self.path().join("inbox")
    }

    pub fn library(&self) -> PathBuf {
        self.path().join("library")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("keepsake.toml")
    }

    /// A config with one copy-mode inbox; `extra` is appended (stages, or a
    /// whole `[[inbox]]` when `pipeline` needs changing: see `with_pipeline`).
    pub fn write_config(&self, extra: &str) {
        self.write_config_with("[\"dedup\", \"exif\", \"library\"]", "copy", extra);
    }

    pub fn write_config_with(&self, pipeline: &str, mode: &str, extra: &str) {
        let text = format!(
            "library = \"library\"\n\n[[inbox]]\nname = \"inbox\"\npath = \"inbox\"\nmode = \"{mode}\"\npipeline = {pipeline}\n\n{extra}\n"
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Copy `from` into the inbox as `name` (creating folders).
    pub fn add(&self, name: &str, from: &Path) {
        let dest = self.inbox().join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, std::fs::read(from).unwrap()).unwrap();
    }

    pub fn config(&self) -> keepsake::config::Config {
        keepsake::config::Config::load(&self.config_path()).unwrap()
    }

    /// Run the binary with this sandbox's config.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run the binary: (exit code, stdout followed by stderr).
    pub fn run_text(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(keepsake_bin());
        cmd.current_dir(self.path())
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("KEEPSAKE_FAULT_AFTER");
        cmd
    }

    /// `keepsake ingest --json`, parsed; panics with the output on a crash.
    pub fn ingest(&self) -> (i32, serde_json::Value) {
        let out = self.run(&["ingest", "--json"]);
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("ingest died: {}", String::from_utf8_lossy(&out.stderr)));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "ingest printed no JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, report)
    }

    pub fn jobs(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["jobs", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn ledger(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.library().join(".keepsake/ledger.sqlite")).unwrap()
    }
}

/// The job for an inbox file, from `Sandbox::jobs`.
pub fn job_named<'a>(jobs: &'a [serde_json::Value], relative_path: &str) -> &'a serde_json::Value {
    jobs.iter()
        .find(|j| j["relative_path"] == relative_path)
        .unwrap_or_else(|| panic!("no job for {relative_path}: {jobs:?}"))
}

pub fn blake3_of(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

/// Every regular file under `root`, not following symlinks; `.keepsake`
/// folders are skipped unless `state` is true.
fn files_under(root: &Path, state: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !state && entry.file_name() == OsStr::new(".keepsake") {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// Every regular file under `root` (keepsake's `.keepsake` state excluded),
/// relative path → BLAKE3. Symlinks are not followed.
pub fn hash_tree(root: &Path) -> BTreeMap<PathBuf, String> {
    files_under(root, false)
        .into_iter()
        .map(|path| {
            (
                path.strip_prefix(root).unwrap().to_path_buf(),
                blake3_of(&path),
            )
        })
        .collect()
}

/// Files under `root` whose name marks them as keepsake temps.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    files_under(root, true)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b".keepsake-"))
        })
        .collect()
}

/// The checks a user would make after any run, crash or not:
/// every unique inbox file is in the library exactly once with identical
/// bytes (or quarantined), no temp file is left, the inbox is unchanged, and
/// the ledger's assets agree with the files on disk.
pub fn assert_consistent(sandbox: &Sandbox, inbox_before: &BTreeMap<PathBuf, String>) {
    let inbox_now = hash_tree(&sandbox.inbox());
    assert_eq!(&inbox_now, inbox_before, "the copy-mode inbox changed");
    let library = hash_tree(&sandbox.library());
    let temps = temp_files(&sandbox.library());
    assert!(temps.is_empty(), "temp files left behind: {temps:?}");

    let conn = sandbox.ledger();
    let pending: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0, "jobs still pending after a clean run");
    let open: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM journal WHERE state = 'intent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0, "journal intents left open");

    // Ledger → disk: every asset is there with its bytes.
    let mut stmt = conn
        .prepare("SELECT library_path, blake3 FROM assets")
        .unwrap();
    let assets: BTreeMap<PathBuf, String> = stmt
        .query_map([], |r| {
            Ok((
                PathBuf::from(r.get::<_, String>(0)?),
                r.get::<_, String>(1)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (path, hash) in &assets {
        assert_eq!(
            library.get(path),
            Some(hash),
            "asset {} missing or different on disk",
            path.display()
        );
    }
    // Disk → ledger: every media file in the library is an asset (sidecars
    // travel with theirs), and no bytes are in the library twice.
    let sidecar = |p: &Path| {
        matches!(
            p.extension()
                .and_then(OsStr::to_str)
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("xmp" | "json" | "aae")
        )
    };
    let mut seen = BTreeMap::new();
    for (path, hash) in &library {
        if sidecar(path) {
            continue;
        }
        assert!(
            assets.contains_key(path),
            "{} is in the library but not in the ledger",
            path.display()
        );
        if let Some(other) = seen.insert(hash.clone(), path.clone()) {
            panic!(
                "the same bytes are in the library twice: {} and {}",
                other.display(),
                path.display()
            );
        }
    }
    // Every unique inbox file (by bytes) is placed or quarantined or was
    // left with a recorded reason.
    let ignored = |p: &Path| {
        p.iter()
            .any(|part| keepsake::discover::is_ignored(part.as_bytes(), &[]))
    };
    let unique_inbox: std::collections::BTreeSet<&String> = inbox_before
        .iter()
        .filter(|(p, _)| !sidecar(p) && !ignored(p))
        .map(|(_, h)| h)
        .collect();
    let quarantined: std::collections::BTreeSet<String> = conn
        .prepare("SELECT blake3 FROM jobs WHERE state IN ('quarantined', 'skipped', 'failed') AND blake3 IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for hash in unique_inbox {
        assert!(
            seen.contains_key(hash) || quarantined.contains(hash),
            "inbox content {hash} is neither in the library nor accounted for"
        );
    }
}

/// Write `len` bytes of a fake JPEG: a whole one as keepsake checks it (an
/// APP0 and a scan header, a pseudo-random scan body without markers, and
/// the end-of-image marker), which no stage can read a date from.
pub fn fake_jpeg(path: &Path, seed: u64, len: usize) {
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10]);
    bytes.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    bytes.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while bytes.len() < len.saturating_sub(2) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // No 0xFF in the scan: it would start a marker.
        bytes.extend(state.to_le_bytes().map(|b| b.min(0xFE)));
    }
    bytes.truncate(len.saturating_sub(2));
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// A QuickTime-looking file of `mib` MiB, every 4 KiB block numbered, so
/// no two blocks are alike (large enough for multipart uploads).
pub fn write_large(path: &Path, mib: usize) {
    let mut bytes = vec![0u8; mib << 20];
    bytes[..12].copy_from_slice(b"\0\0\0\x14ftypqt  ");
    for (i, chunk) in bytes.chunks_mut(4096).enumerate().skip(1) {
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// Copy a folder tree (test setup only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            #[allow(clippy::disallowed_methods)]
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A running `keepsake run` (killed when dropped).
pub struct Service {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Sandbox {
    /// Start `keepsake run -v` in the background; its log goes to `run.log`
    /// (appended, so restarts keep the whole story).
    pub fn start(&self) -> Service {
        let log = self.path().join("run.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = self
            .command(&["-v", "run"])
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Service { child, log }
    }

    /// A count from the ledger (`SELECT COUNT(*) FROM jobs WHERE …`), 0
    /// while the ledger does not exist yet.
    pub fn count_jobs(&self, condition: &str) -> i64 {
        let path = self.library().join(".keepsake/ledger.sqlite");
        if !path.exists() {
            return 0;
        }
        let Ok(conn) = rusqlite::Connection::open(path) else {
            return 0;
        };
        conn.busy_timeout(std::time::Duration::from_secs(5)).ok();
        conn.query_row(
            &format!("SELECT COUNT(*) FROM jobs WHERE {condition}"),
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
    }
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (at most `limit`): the exit status and how long
    /// the service took to stop.
    pub fn stop(
        &mut self,
        limit: std::time::Duration,
    ) -> (std::process::ExitStatus, std::time::Duration) {
        let started = std::time::Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "keepsake run did not stop within {limit:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash at whatever the service was doing.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The peak resident memory so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib / 1024.0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// [`wait_for`], with the service's log in the message when it times out.
    pub fn wait_for(
        &self,
        limit: std::time::Duration,
        what: &str,
        mut ready: impl FnMut() -> bool,
    ) {
        let started = std::time::Instant::now();
        while !ready() {
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; the service's log:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `ready` every 50 ms until it holds; panics after `limit` with `what`.
pub fn wait_for(limit: std::time::Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A real S3 server on 127.0.0.1 (`s3s-fs`, installed into `tools/` by
/// `scripts/test.sh`): one folder per bucket under `root`, objects stored as
/// plain files at `root/<bucket>/<key>`. Stopped when dropped.
pub struct S3Server {
    child: Option<std::process::Child>,
    pub root: PathBuf,
    pub port: u16,
}

pub const S3_BUCKET: &str = "photos";
pub const S3_ACCESS: &str = "keepsake-test";
pub const S3_SECRET: &str = "keepsake-test-secret";

impl S3Server {
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(S3_BUCKET)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = S3Server {
            child: None,
            root: root.to_path_buf(),
            port,
        };
        server.restart();
        server
    }

    /// Start again on the same port and folder (after [`S3Server::stop`]).
    pub fn restart(&mut self) {
        let bin = workspace_root().join("tools/bin/s3s-fs");
        assert!(
            bin.exists(),
            "{} is missing: `bash scripts/test.sh` installs it (cargo install s3s-fs@0.14.1 --features binary --locked --root tools)",
            bin.display()
        );
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS, "--secret-key", S3_SECRET])
            .arg(&self.root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for(
            std::time::Duration::from_secs(30),
            "s3s-fs to listen",
            || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        );
    }

    /// An outage: the server is gone until [`S3Server::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An `[offsite.NAME]` table for this server; the keys go in a file in `dir`.
    pub fn target(&self, name: &str, dir: &Path) -> String {
        let credentials = dir.join(format!("{name}.env"));
        std::fs::write(
            &credentials,
            format!("AWS_ACCESS_KEY_ID={S3_ACCESS}\nAWS_SECRET_ACCESS_KEY={S3_SECRET}\n"),
        )
        .unwrap();
        format!(
            "[offsite.{name}]\ntype = \"s3\"\nendpoint = \"http://127.0.0.1:{}\"\nbucket = \"{S3_BUCKET}\"\nprefix = \"family\"\ncredentials_file = {:?}\n",
            self.port,
            credentials.display().to_string()
        )
    }

    /// Where the server keeps the object `key` (under the target's prefix).
    pub fn object(&self, key: &str) -> PathBuf {
        self.root.join(S3_BUCKET).join("family").join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
