//! Any rclone remote as an offsite target, driven through one long-lived
//! `rclone rcd` per target on 127.0.0.1 with credentials of its own (random,
//! passed through the environment, never on the command line), so keepsake
//! never starts a process per file. Its remote-control API copies files
//! (`operations/copyfile`), looks keys up (`operations/stat`), lists them
//! (`operations/list`), and `--rc-serve` streams objects back for `verify
//! --deep` and `restore`.
//!
//! The daemon lives as long as keepsake: it is started on first use, started
//! again if it dies, and gets SIGTERM when keepsake exits, however it exits
//! (the parent-death signal; the thread that starts it waits on it).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::store::StoreError;

/// One running `rclone rcd`.
pub struct Rcd {
    base: String,
    password: String,
    client: reqwest::Client,
    alive: Arc<AtomicBool>,
    /// Its last words on stderr, for errors.
    said: Arc<Mutex<String>>,
    pid: u32,
}

/// What an API call can end in.
pub enum RcError {
    /// rclone answered with an error (its text).
    Failed(String),
    /// rclone itself could not be reached.
    Down(String),
}

const USER: &str = "keepsake";

static DAEMONS: LazyLock<Mutex<HashMap<String, Arc<Rcd>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The daemon for a target, started when there is none (or it died).
pub async fn daemon(
    target: &str,
    program: &Path,
    config: Option<&Path>,
    bwlimit: Option<u64>,
) -> Result<Arc<Rcd>, StoreError> {
    let fingerprint = format!("{target}\0{program:?}\0{config:?}\0{bwlimit:?}");
    let running = lock(&DAEMONS).get(&fingerprint).cloned();
    if let Some(rcd) = running
        && rcd.alive.load(Ordering::SeqCst)
    {
        return Ok(rcd);
    }
    let rcd = Arc::new(start(target, program, config, bwlimit)?);
    if let Err(e) = rcd.ready(target, program).await {
        // Never leave one behind that did not come up in time.
        if let Some(pid) = rustix::process::Pid::from_raw(rcd.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        return Err(e);
    }
    lock(&DAEMONS).insert(fingerprint, Arc::clone(&rcd));
    Ok(rcd)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_password() -> Result<String, std::io::Error> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(crate::hashing::hex(&bytes))
}

fn start(
    target: &str,
    program: &Path,
    config: Option<&Path>,
    bwlimit: Option<u64>,
) -> Result<Rcd, StoreError> {
    let refused = |what: String| StoreError::Refused(format!("offsite target {target}: {what}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| refused(format!("no free port on 127.0.0.1 for rclone: {e}")))?
        .port();
    let password = random_password().map_err(|e| refused(format!("/dev/urandom: {e}")))?;
    let mut command = std::process::Command::new(program);
    command
        .arg("rcd")
        .arg(format!("--rc-addr=127.0.0.1:{port}"))
        .arg("--rc-serve")
        .arg("--log-level=NOTICE")
        .env("RCLONE_RC_USER", USER)
        .env("RCLONE_RC_PASS", &password)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    if let Some(rate) = bwlimit {
        command.arg(format!("--bwlimit={rate}B"));
    }
    die_with_parent(&mut command);
    let alive = Arc::new(AtomicBool::new(true));
    let said = Arc::new(Mutex::new(String::new()));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (keeper_alive, keeper_said) = (Arc::clone(&alive), Arc::clone(&said));
    let name = target.to_string();
    // The thread that starts rclone stays until it exits: the parent-death
    // signal follows the thread, not the process.
    std::thread::Builder::new()
        .name(format!("rclone-{target}"))
        .spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => {
                    let _ = started_tx.send(Ok(child.id()));
                    child
                }
                Err(e) => {
                    keeper_alive.store(false, Ordering::SeqCst);
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            if let Some(stderr) = child.stderr.take() {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    tracing::warn!("offsite target {name}: rclone: {line}");
                    *lock(&keeper_said) = line;
                }
            }
            let _ = child.wait();
            keeper_alive.store(false, Ordering::SeqCst);
        })
        .map_err(|e| refused(format!("cannot start a thread for rclone: {e}")))?;
    let pid = match started_rx.recv() {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) => {
            return Err(refused(format!(
                "cannot start {} ({e}): install rclone or set `rclone = \"/path/to/rclone\"` in [offsite.{target}]",
                program.display()
            )));
        }
        Err(_) => return Err(refused("rclone did not start".into())),
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(|e| refused(format!("HTTP client: {e}")))?;
    Ok(Rcd {
        base: format!("http://127.0.0.1:{port}"),
        password,
        client,
        alive,
        said,
        pid,
    })
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes one async-signal-safe system call (prctl).
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .map_err(std::io::Error::from)
        });
    }
}

/// Percent-encode all but unreserved characters and `/`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Rcd {
    async fn ready(&self, target: &str, program: &Path) -> Result<(), StoreError> {
        for _ in 0..200 {
            if !self.alive.load(Ordering::SeqCst) {
                break;
            }
            if self.call("rc/noopauth", json!({}), None).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StoreError::Refused(format!(
            "offsite target {target}: {} rcd did not start: {}",
            program.display(),
            lock(&self.said)
        )))
    }

    /// POST an rc call; `timeout` None waits as long as rclone works (a
    /// large upload; rclone has its own network timeouts).
    pub async fn call(
        &self,
        path: &str,
        body: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, RcError> {
        let mut request = self
            .client
            .post(format!("{}/{path}", self.base))
            .basic_auth(USER, Some(&self.password))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| self.down(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.down(e))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| format!("HTTP {status}"), str::to_string);
            Err(RcError::Failed(message))
        }
    }

    fn down(&self, e: reqwest::Error) -> RcError {
        if !self.alive.load(Ordering::SeqCst) {
            RcError::Down(format!("rclone rcd exited: {}", lock(&self.said)))
        } else {
            RcError::Down(format!("rclone rcd: {e}"))
        }
    }

    /// Stream the object `remote`/`key` (through `--rc-serve`).
    pub async fn get(
        &self,
        remote: &str,
        key: &str,
    ) -> Result<
        Option<impl futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + use<>>,
        RcError,
    > {
        let url = format!("{}/%5B{}%5D/{}", self.base, encode(remote), encode(key));
        let response = self
            .client
            .get(url)
            .basic_auth(USER, Some(&self.password))
            .send()
            .await
            .map_err(|e| self.down(e))?;
        match response.status() {
            s if s.is_success() => Ok(Some(response.bytes_stream())),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => Err(RcError::Failed(format!("HTTP {s} for {key}"))),
        }
    }

    /// BLAKE3 of an object, or None when it is missing.
    pub async fn hash(&self, remote: &str, key: &str) -> Result<Option<String>, RcError> {
        let Some(mut stream) = self.get(remote, key).await? else {
            return Ok(None);
        };
        let mut hasher = blake3::Hasher::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(|e| self.down(e))?);
        }
        Ok(Some(hasher.finalize().to_hex().to_string()))
    }
}

/// Where rclone finds a local file: the filesystem root and the path below.
pub fn local_source(path: &Path) -> (String, String) {
    let relative: PathBuf = path.components().skip(1).collect();
    ("/".into(), relative.to_string_lossy().into_owned())
}
