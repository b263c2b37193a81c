//! Configuration: raw TOML (serde, unknown keys rejected) validated into a
//! typed [`Config`] whose errors name the file and the key.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod archive;
mod immich;
mod offsite;
mod service;
pub use archive::ArchiveConfig;
pub use immich::{ImmichConfig, KeySource};
pub use offsite::{Credentials, OffsiteTarget, TargetKind};
pub use service::ServiceConfig;

/// The commented default config, written by `keepsake init` and used when
/// no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Stages that ship inside the binary.
pub const BUILTIN_STAGES: &[&str] = &["dedup", "exif", "library", "offsite", "immich"];
/// An inbox's pipeline when the config names none (and `immich` after it
/// when `[immich]` is set).
const DEFAULT_PIPELINE: &[&str] = &["dedup", "exif", "library", "offsite"];

const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_MEMORY_MIB: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin}: `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    library: PathBuf,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    inbox: Vec<RawInbox>,
    #[serde(default)]
    stages: BTreeMap<String, RawStage>,
    #[serde(default)]
    service: service::RawService,
    #[serde(default)]
    offsite: BTreeMap<String, offsite::RawTarget>,
    #[serde(default)]
    archive: archive::RawArchive,
    #[serde(default)]
    immich: immich::RawImmich,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbox {
    name: String,
    path: PathBuf,
    #[serde(default)]
    mode: InboxMode,
    pipeline: Option<Vec<String>>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default = "yes")]
    watch: bool,
}

fn yes() -> bool {
    true
}

fn default_pipeline() -> Vec<String> {
    DEFAULT_PIPELINE.iter().map(|s| s.to_string()).collect()
}

/// A stage table: a few keys keepsake reads, everything else is an option
/// handed to the stage (and checked against the options it declares).
#[derive(Debug, Deserialize)]
struct RawStage {
    wasm: Option<PathBuf>,
    timeout_ms: Option<u64>,
    memory_mib: Option<u64>,
    /// The stage's key-value quota.
    kv_max_keys: Option<u64>,
    kv_max_mib: Option<u64>,
    /// Origins (`https://host:port`) a `placed`-phase stage may send HTTP
    /// requests to.
    #[serde(default)]
    http: Vec<String>,
    #[serde(flatten)]
    options: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InboxMode {
    /// Never modify the inbox; remember what was taken.
    #[default]
    Copy,
    /// Remove the inbox file once the library copy is verified and committed.
    Move,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from, for messages.
    pub origin: String,
    pub library_root: PathBuf,
    pub state_dir: PathBuf,
    pub inboxes: Vec<Inbox>,
    pub stages: BTreeMap<String, StageConfig>,
    pub service: ServiceConfig,
    pub offsite: BTreeMap<String, OffsiteTarget>,
    pub archive: ArchiveConfig,
    pub immich: Option<ImmichConfig>,
}

#[derive(Debug, Clone)]
pub struct Inbox {
    pub name: String,
    pub path: PathBuf,
    pub mode: InboxMode,
    pub pipeline: Vec<String>,
    pub ignore: Vec<String>,
    /// Watch for changes (inotify); false: only the periodic rescan finds
    /// files (for network shares where events never arrive).
    pub watch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageSource {
    Builtin,
    File(PathBuf),
}

/// A header the host adds to a stage's requests to one origin.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretHeader {
    /// `scheme://host:port`, as in `http_origins`.
    pub origin: String,
    pub name: &'static str,
    pub value: KeySource,
}

#[derive(Debug, Clone)]
pub struct StageConfig {
    pub name: String,
    pub source: StageSource,
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// What it may keep in its key-value store.
    pub kv_quota: crate::host::KvQuota,
    /// Origins it may reach over HTTP (`scheme://host:port`).
    pub http_origins: Vec<String>,
    /// Headers the host adds to its requests to one origin, read when the
    /// stage loads: the built-in `immich` stage's API key, which the stage
    /// itself never sees. No config table sets these for a family plugin.
    pub http_secrets: Vec<SecretHeader>,
    /// Options as text: strings as they are, other values as JSON.
    pub options: BTreeMap<String, String>,
}

impl Config {
    /// Load a config file; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, &path.display().to_string(), &base)
    }

    /// The built-in default, relative to `cwd`.
    pub fn default_in(cwd: &Path) -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, "(built-in default)", cwd)
    }

    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |key: String, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            message,
        };
        let base = absolute(base);
        let library_root = resolve(&base, &raw.library);
        if raw.library.as_os_str().is_empty() {
            return Err(invalid("library".into(), "must name a folder".into()));
        }
        let state_dir = raw
            .state_dir
            .as_ref()
            .map(|p| resolve(&base, p))
            .unwrap_or_else(|| library_root.join(".keepsake"));

        let mut stages = BTreeMap::new();
        for (name, stage) in &raw.stages {
            let config = stage_config(name, stage, &base, &invalid)?;
            stages.insert(name.clone(), config);
        }

        let inboxes = validate_inboxes(&raw, &base, &mut stages, &invalid)?;
        check_inbox_overlaps(&inboxes, &library_root, &state_dir, &invalid)?;

        let service = raw
            .service
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        let offsite = offsite_targets(
            &raw.offsite,
            &base,
            &library_root,
            &state_dir,
            &inboxes,
            &invalid,
        )?;

        let archive = raw
            .archive
            .validate(
                &base,
                &library_root,
                &state_dir,
                &inboxes,
                &offsite
                    .values()
                    .filter_map(|t: &OffsiteTarget| match &t.kind {
                        TargetKind::Dir { path } => Some((t.name.clone(), path.clone())),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )
            .map_err(|(key, message)| invalid(key, message))?;

        let immich = raw
            .immich
            .validate(&base)
            .map_err(|(key, message)| invalid(key, message))?;
        wire_immich_stage(
            &mut stages,
            immich.as_ref(),
            &library_root,
            &archive,
            &invalid,
        )?;

        Ok(Config {
            origin: origin.to_string(),
            library_root,
            state_dir,
            inboxes,
            stages,
            service,
            offsite,
            archive,
            immich,
        })
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.state_dir.join("ledger.sqlite")
    }

    pub fn quarantine_dir(&self) -> PathBuf {
        self.state_dir.join("quarantine")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }

    /// The pipeline for paths outside every inbox: the first inbox's, or the
    /// built-in stages when there is no inbox.
    pub fn default_pipeline(&self) -> Vec<String> {
        self.inboxes
            .first()
            .map(|i| i.pipeline.clone())
            .unwrap_or_else(default_pipeline)
    }

    pub fn inbox(&self, name: &str) -> Option<&Inbox> {
        self.inboxes.iter().find(|i| i.name == name)
    }
}

/// One `[stages.NAME]` table validated into its [`StageConfig`].
fn stage_config(
    name: &str,
    stage: &RawStage,
    base: &Path,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<StageConfig, ConfigError> {
    let key = format!("stages.{name}");
    if !valid_name(name) {
        return Err(invalid(key, "stage names use a-z, 0-9, '-' and '_'".into()));
    }
    let source = match &stage.wasm {
        Some(path) => StageSource::File(resolve(base, path)),
        None if BUILTIN_STAGES.contains(&name) => StageSource::Builtin,
        None => {
            return Err(invalid(
                key,
                format!(
                    "not a built-in stage ({}); give its plugin with `wasm = \"path/to/plugin.wasm\"`",
                    BUILTIN_STAGES.join(", ")
                ),
            ));
        }
    };
    let timeout_ms = stage.timeout_ms.unwrap_or(default_timeout_ms(name));
    if timeout_ms == 0 || timeout_ms > 86_400_000 {
        return Err(invalid(
            format!("{key}.timeout_ms"),
            "must be 1..=86400000 (a day)".into(),
        ));
    }
    let memory_mib = stage.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
    if !(1..=4096).contains(&memory_mib) {
        return Err(invalid(
            format!("{key}.memory_mib"),
            "must be 1..=4096".into(),
        ));
    }
    let default_quota = crate::host::KvQuota::default();
    let kv_quota = crate::host::KvQuota {
        max_keys: stage.kv_max_keys.unwrap_or(default_quota.max_keys),
        max_bytes: stage
            .kv_max_mib
            .map_or(default_quota.max_bytes, |mib| mib.saturating_mul(1 << 20)),
    };
    if kv_quota.max_keys == 0 || stage.kv_max_mib == Some(0) {
        return Err(invalid(
            format!("{key}.kv_max_keys"),
            "kv_max_keys and kv_max_mib must be at least 1".into(),
        ));
    }
    let options: BTreeMap<String, String> = stage
        .options
        .iter()
        .map(|(k, v)| (k.clone(), option_text(v)))
        .collect();
    if name == "library" && matches!(source, StageSource::Builtin) {
        for (option, dated) in [("template", true), ("undated", false)] {
            if let Some(template) = options.get(option) {
                check_template(template, dated)
                    .map_err(|message| invalid(format!("{key}.{option}"), message))?;
            }
        }
    }
    let mut http_origins = Vec::new();
    for origin in &stage.http {
        let granted = origin
            .parse::<http::Uri>()
            .ok()
            .filter(|uri| matches!(uri.scheme_str(), Some("http" | "https")))
            .and_then(|uri| crate::host::HttpGrant::origin_of(&uri))
            .ok_or_else(|| {
                invalid(
                    format!("{key}.http"),
                    format!("{origin:?}: give an origin such as \"https://example.org\""),
                )
            })?;
        http_origins.push(granted);
    }
    Ok(StageConfig {
        name: name.to_string(),
        source,
        timeout: Duration::from_millis(timeout_ms),
        memory_bytes: (memory_mib as usize) << 20,
        kv_quota,
        http_origins,
        http_secrets: Vec::new(),
        options,
    })
}

impl StageConfig {
    /// The origins the stage may reach and the headers the host adds, with
    /// each secret read now.
    pub fn http_grant(&self) -> Result<crate::host::HttpGrant, String> {
        let mut headers = Vec::new();
        for secret in &self.http_secrets {
            let value = secret.value.read()?;
            let value = http::HeaderValue::from_str(&value).map_err(|_| {
                format!(
                    "the secret for the `{}` header of stage `{}` holds characters a header cannot",
                    secret.name, self.name
                )
            })?;
            headers.push((
                secret.origin.clone(),
                http::HeaderName::from_static(secret.name),
                value,
            ));
        }
        Ok(crate::host::HttpGrant {
            origins: self.http_origins.clone(),
            headers,
        })
    }
}

/// The `[[inbox]]` tables validated, adding the built-in stages their
/// pipelines name to `stages`.
fn validate_inboxes(
    raw: &RawConfig,
    base: &Path,
    stages: &mut BTreeMap<String, StageConfig>,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<Vec<Inbox>, ConfigError> {
    let mut inboxes = Vec::new();
    let mut names = HashSet::new();
    for (i, inbox) in raw.inbox.iter().enumerate() {
        let key = format!("inbox[{i}]");
        if !valid_name(&inbox.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("{:?}: inbox names use a-z, 0-9, '-' and '_'", inbox.name),
            ));
        }
        if !names.insert(inbox.name.clone()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("two inboxes are named {:?}", inbox.name),
            ));
        }
        let pipeline = inbox.pipeline.clone().unwrap_or_else(|| {
            let mut stages = default_pipeline();
            if raw.immich.is_set() {
                stages.push("immich".into());
            }
            stages
        });
        if pipeline.is_empty() {
            return Err(invalid(
                format!("{key}.pipeline"),
                "needs at least one stage".into(),
            ));
        }
        for stage in &pipeline {
            if !stages.contains_key(stage) {
                if BUILTIN_STAGES.contains(&stage.as_str()) {
                    stages.insert(stage.clone(), builtin_stage(stage));
                } else {
                    return Err(invalid(
                        format!("{key}.pipeline"),
                        format!(
                            "unknown stage {stage:?}: declare it under [stages.{stage}] with `wasm = \"...\"`"
                        ),
                    ));
                }
            }
        }
        inboxes.push(Inbox {
            name: inbox.name.clone(),
            path: resolve(base, &inbox.path),
            mode: inbox.mode,
            pipeline,
            ignore: inbox.ignore.clone(),
            watch: inbox.watch,
        });
    }
    Ok(inboxes)
}

/// No inbox may overlap the library, the state folder or another inbox.
fn check_inbox_overlaps(
    inboxes: &[Inbox],
    library_root: &Path,
    state_dir: &Path,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for (i, a) in inboxes.iter().enumerate() {
        if overlaps(&a.path, library_root) {
            return Err(invalid(
                format!("inbox[{i}].path"),
                format!(
                    "{} and the library {} overlap; keep them side by side",
                    a.path.display(),
                    library_root.display()
                ),
            ));
        }
        if overlaps(&a.path, state_dir) {
            return Err(invalid(
                format!("inbox[{i}].path"),
                format!(
                    "{} and keepsake's state folder {} overlap; keep them apart",
                    a.path.display(),
                    state_dir.display()
                ),
            ));
        }
        for (j, b) in inboxes.iter().enumerate().skip(i + 1) {
            if overlaps(&a.path, &b.path) {
                return Err(invalid(
                    format!("inbox[{j}].path"),
                    format!("inboxes {:?} and {:?} overlap", a.name, b.name),
                ));
            }
        }
    }
    Ok(())
}

/// The `[offsite.NAME]` tables validated; a folder target must be off the
/// library, its state folder and every inbox.
fn offsite_targets(
    raw_offsite: &BTreeMap<String, offsite::RawTarget>,
    base: &Path,
    library_root: &Path,
    state_dir: &Path,
    inboxes: &[Inbox],
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<BTreeMap<String, OffsiteTarget>, ConfigError> {
    let mut offsite = BTreeMap::new();
    for (name, raw_target) in raw_offsite {
        if !valid_name(name) {
            return Err(invalid(
                format!("offsite.{name}"),
                "target names use a-z, 0-9, '-' and '_'".into(),
            ));
        }
        let target = raw_target
            .validate(name, base)
            .map_err(|(key, message)| invalid(key, message))?;
        if let TargetKind::Dir { path } = &target.kind
            && (overlaps(path, library_root)
                || overlaps(path, state_dir)
                || inboxes.iter().any(|inbox| overlaps(path, &inbox.path)))
        {
            return Err(invalid(
                format!("offsite.{name}.path"),
                "must be outside the library, its state folder and every inbox (an offsite copy on the same disk protects nothing)".into(),
            ));
        }
        offsite.insert(name.clone(), target);
    }
    Ok(offsite)
}

/// The built-in `immich` stage gets the `[immich]` server's url, origin and
/// the roots it maps paths from; it cannot run without the server.
fn wire_immich_stage(
    stages: &mut BTreeMap<String, StageConfig>,
    immich: Option<&ImmichConfig>,
    library_root: &Path,
    archive: &ArchiveConfig,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if let Some(stage) = stages.get_mut("immich")
        && matches!(stage.source, StageSource::Builtin)
    {
        let Some(immich) = immich else {
            return Err(invalid(
                "immich".into(),
                "the `immich` stage needs the server: add [immich] with url = \"http://immich.local:2283\" and api_key_file".into(),
            ));
        };
        if stage.options.contains_key("url") {
            return Err(invalid(
                "stages.immich.url".into(),
                "the server is set once, as [immich] url".into(),
            ));
        }
        stage.options.insert("url".into(), immich.url.clone());
        // Where files are, for the external-library mode's paths.
        stage
            .options
            .insert("library_root".into(), library_root.display().to_string());
        if let Some(root) = &archive.root {
            stage
                .options
                .insert("archive_root".into(), root.display().to_string());
        }
        if !stage.http_origins.contains(&immich.origin) {
            stage.http_origins.push(immich.origin.clone());
        }
        // The key goes to the host's HTTP layer, for this origin only.
        stage.http_secrets.push(SecretHeader {
            origin: immich.origin.clone(),
            name: "x-api-key",
            value: immich.key.clone(),
        });
    }
    Ok(())
}

fn builtin_stage(name: &str) -> StageConfig {
    StageConfig {
        name: name.to_string(),
        source: StageSource::Builtin,
        timeout: Duration::from_millis(default_timeout_ms(name)),
        memory_bytes: (DEFAULT_MEMORY_MIB as usize) << 20,
        kv_quota: crate::host::KvQuota::default(),
        http_origins: Vec::new(),
        http_secrets: Vec::new(),
        options: BTreeMap::new(),
    }
}

/// A stage's time per file: an upload of a large video over a home uplink
/// takes hours.
fn default_timeout_ms(name: &str) -> u64 {
    if name == "immich" {
        6 * 3_600_000
    } else {
        DEFAULT_TIMEOUT_MS
    }
}

fn option_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_else(|_| other.to_string()),
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether two folders overlap (one is, or is inside, the other): by their
/// paths, by their canonical paths (a symlink on the way), and by (device,
/// inode) of the folders on the way up (a bind mount shows one folder at two
/// paths). Folders that do not exist yet are compared by the part that does.
pub fn overlaps(a: &Path, b: &Path) -> bool {
    within(a, b) || within(b, a)
}

/// `a` is `b` or inside it.
fn within(a: &Path, b: &Path) -> bool {
    if a.starts_with(b) {
        return true;
    }
    let (a, b) = (canonical_lenient(a), canonical_lenient(b));
    if a.starts_with(&b) {
        return true;
    }
    let Some(b_id) = dev_ino(&b) else {
        return false;
    };
    a.ancestors().any(|up| dev_ino(up) == Some(b_id))
}

fn dev_ino(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The canonical path of the longest existing part of `path`, with the rest
/// appended as it is.
fn canonical_lenient(path: &Path) -> PathBuf {
    let path = absolute(path);
    for up in path.ancestors() {
        if let Ok(real) = up.canonicalize() {
            let rest = path.strip_prefix(up).unwrap_or(Path::new(""));
            return real.join(rest);
        }
    }
    path
}

/// An absolute path without `.` or `..`, resolved lexically (the folders need
/// not exist yet), so overlap checks compare like with like.
pub fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The built-in `library` stage's templates, checked when the config loads
/// rather than on the first file: known `{fields}` only, date fields only
/// where there is a date, and a relative path that stays in the library.
fn check_template(template: &str, dated: bool) -> Result<(), String> {
    const ALWAYS: &[&str] = &["name", "stem", "ext", "inbox"];
    const DATED: &[&str] = &[
        "year", "yyyy", "month", "mm", "day", "dd", "HH", "MM", "SS", "HHMMSS",
    ];
    if template.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if template.starts_with('/') || template.split('/').any(|part| part == "..") {
        return Err(format!(
            "{template:?} must be a relative path inside the library (no leading '/', no '..')"
        ));
    }
    let mut rest = template;
    let mut names_file = false;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("unclosed '{{' in {template:?}"));
        };
        let field = &after[..close];
        if DATED.contains(&field) {
            if !dated {
                return Err(format!(
                    "{{{field}}} needs a capture time, which an undated file does not have"
                ));
            }
        } else if !ALWAYS.contains(&field) {
            return Err(format!(
                "unknown field {{{field}}} in {template:?}; known: {}",
                ALWAYS
                    .iter()
                    .chain(DATED)
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        names_file |= matches!(field, "name" | "stem");
        rest = &after[close + 1..];
    }
    if !names_file {
        return Err(format!(
            "{template:?} has no {{name}} or {{stem}}: every file of a day would get the same name"
        ));
    }
    Ok(())
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    absolute(&base.join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_root_may_not_overlap_what_keepsake_reads_or_writes() {
        let dir = std::env::temp_dir().join(format!("keepsake-archive-cfg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("inbox/old")).expect("a scratch folder");
        let with = |root: &str| {
            Config::parse(
                &format!(
                    "library = \"lib\"\n[[inbox]]\nname = \"icloud\"\npath = \"inbox\"\n[offsite.usb]\ntype = \"dir\"\npath = \"usb\"\n[archive]\nroot = \"{root}\"\n"
                ),
                "test",
                &dir,
            )
        };
        assert!(with("archive").is_ok());
        for bad in ["inbox/old", "lib/old", "usb", "lib/.keepsake", "."] {
            let error = with(bad).expect_err(bad).to_string();
            assert!(error.contains("archive.root"), "{bad}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_built_in_immich_stage_gets_the_api_key_and_only_for_its_server() {
        let dir = std::env::temp_dir().join(format!("keepsake-grant-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        std::fs::write(dir.join("immich.key"), "the-key\n").expect("a key file");
        let config = Config::parse(
            "library = \"lib\"\n[[inbox]]\nname = \"phone\"\npath = \"inbox\"\npipeline = [\"dedup\", \"exif\", \"library\", \"immich\", \"notify\"]\n[immich]\nurl = \"http://immich.local:2283\"\napi_key_file = \"immich.key\"\n[stages.notify]\nwasm = \"notify.wasm\"\nhttp = [\"http://immich.local:2283\", \"https://ntfy.sh\"]\n",
            "test",
            &dir,
        )
        .expect("the config parses");
        let immich = config.stages["immich"]
            .http_grant()
            .expect("the key is read");
        assert_eq!(immich.origins, ["http://immich.local:2283"]);
        assert_eq!(immich.headers.len(), 1);
        let (origin, name, value) = &immich.headers[0];
        assert_eq!(
            (origin.as_str(), name.as_str(), value.to_str().ok()),
            ("http://immich.local:2283", "x-api-key", Some("the-key"))
        );
        // A family plugin granted the same server is not handed the key.
        let notify = config.stages["notify"]
            .http_grant()
            .expect("nothing to read");
        assert_eq!(
            notify.origins,
            ["http://immich.local:2283", "https://ntfy.sh:443"]
        );
        assert!(notify.headers.is_empty(), "{:?}", notify.headers);
        // Nor is a plugin that takes the name `immich`.
        std::fs::write(dir.join("immich.wasm"), b"").expect("a file");
        let config = Config::parse(
            "library = \"lib\"\n[[inbox]]\nname = \"phone\"\npath = \"inbox\"\npipeline = [\"immich\"]\n[immich]\nurl = \"http://immich.local:2283\"\napi_key_file = \"immich.key\"\n[stages.immich]\nwasm = \"immich.wasm\"\nhttp = [\"http://immich.local:2283\"]\n",
            "test",
            &dir,
        )
        .expect("the config parses");
        let grant = config.stages["immich"]
            .http_grant()
            .expect("nothing to read");
        assert!(grant.headers.is_empty(), "{:?}", grant.headers);
        // A key that is gone is an error naming the file, at load.
        let config = Config::parse(
            "library = \"lib\"\n[[inbox]]\nname = \"phone\"\npath = \"inbox\"\npipeline = [\"immich\"]\n[immich]\nurl = \"http://immich.local:2283\"\napi_key_file = \"gone.key\"\n",
            "test",
            &dir,
        )
        .expect("the config parses");
        let error = config.stages["immich"].http_grant().expect_err("no key");
        assert!(error.contains("gone.key"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn library_templates_are_checked_at_load() {
        let with = |option: &str| {
            Config::parse(
                &format!("library = \"lib\"\n[stages.library]\n{option}\n"),
                "test",
                Path::new("/srv"),
            )
        };
        assert!(with("template = \"{year}/{mm}/{name}\"").is_ok());
        for bad in [
            "template = \"{yaer}/{name}\"",
            "template = \"{year}/{name\"",
            "template = \"/abs/{name}\"",
            "template = \"../{name}\"",
            "template = \"{year}/photo.jpg\"",
            "undated = \"undated/{year}/{name}\"",
        ] {
            let error = with(bad).expect_err(bad).to_string();
            assert!(error.contains("stages.library"), "{bad}: {error}");
        }
    }

    #[test]
    fn default_config_is_valid() {
        let config = Config::default_in(Path::new("/srv/photos")).expect("default config parses");
        assert_eq!(config.library_root, Path::new("/srv/photos/library"));
        assert_eq!(config.state_dir, Path::new("/srv/photos/library/.keepsake"));
        assert_eq!(config.inboxes.len(), 1);
        assert_eq!(config.inboxes[0].mode, InboxMode::Copy);
        assert_eq!(config.inboxes[0].pipeline, vec!["dedup", "exif", "library"]);
        assert_eq!(
            config.stages["library"].options["template"],
            "{year}/{month}/{yyyy}{mm}{dd}_{HHMMSS}_{name}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let base = Path::new("/x");
        let err = Config::parse("library = 'l'\nlibary = 'x'", "t.toml", base).unwrap_err();
        assert!(err.to_string().contains("libary"), "{err}");

        let err = Config::parse(
            "library = 'lib'\n[[inbox]]\nname = 'a'\npath = 'lib/in'\n",
            "t.toml",
            base,
        )
        .unwrap_err();
        assert!(err.to_string().contains("inbox[0].path"), "{err}");

        let err = Config::parse(
            "library = 'lib'\n[[inbox]]\nname = 'a'\npath = 'in'\n[[inbox]]\nname = 'b'\npath = 'in/sub'\n",
            "t.toml",
            base,
        )
        .unwrap_err();
        assert!(err.to_string().contains("inbox[1].path"), "{err}");

        let err = Config::parse(
            "library = 'lib'\n[[inbox]]\nname = 'a'\npath = 'in'\npipeline = ['dedup', 'mystery']\n",
            "t.toml",
            base,
        )
        .unwrap_err();
        assert!(err.to_string().contains("mystery"), "{err}");
    }
}
