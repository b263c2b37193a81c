//! The wasm host: one shared wasmtime `Engine`, each stage compiled once (and
//! cached on disk) and pre-instantiated, a fresh `Store` for every call with a
//! CPU deadline (epoch interruption), a memory cap, and no ambient authority:
//! no preopened folders, no environment, no network. A stage reaches the job's
//! file only through the bounded `read` import.

mod bindings;
pub mod cache;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use bindings::keepsake::stage::types::{
    AssetRef, CaptureTime, Confidence, Datetime, DeferUntil, Effect, Fact, Job, Location, LogLevel,
    MediaKind as WitMediaKind, Placement, PushRequest, RemoteAlbum, RemoteAsset, RemoteChange,
    StageError, SweepRequest, XmpTarget, XmpWrite,
};
use bindings::{Stage, StagePre};
pub use cache::CacheOutcome;

/// The version of the stage contract (`sdk/wit/stage.wit`) this host
/// speaks; components of any 0.5 version load.
pub const WIT_VERSION: &str = "0.5.1";

/// How often the epoch advances: the granularity of CPU deadlines.
const TICK: Duration = Duration::from_millis(5);
/// The most one `read` call returns.
pub const MAX_READ: u32 = 1 << 20;
/// What a stage may print to stderr (a panic message) before it is cut.
const STDERR_CAP: usize = 16 << 10;
/// Resources (wasi:http handles, streams) a call may hold at once.
const MAX_RESOURCES: usize = 10_000;
/// HTTP requests one call may send (a sweep of a large Immich pages
/// through a few hundred).
const MAX_REQUESTS: u64 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum StageCallError {
    #[error("stage `{stage}` ran past its {limit:?} CPU deadline and was stopped")]
    Timeout { stage: String, limit: Duration },
    #[error("stage `{stage}` tried to use more than its {limit_mib} MiB of memory and was stopped")]
    Memory { stage: String, limit_mib: usize },
    #[error("stage `{stage}` crashed: {message}")]
    Trap { stage: String, message: String },
    #[error(
        "stage `{stage}` went past its key-value quota: {message}; what it wrote past it was not kept"
    )]
    Quota { stage: String, message: String },
    #[error("stage `{stage}`: {}", describe_stage_error(.error))]
    Stage { stage: String, error: StageError },
}

fn describe_stage_error(error: &StageError) -> String {
    match error {
        StageError::InvalidInput(m) => format!("invalid input: {m}"),
        StageError::Transient(m) => format!("temporary failure: {m}"),
        StageError::Internal(m) => format!("internal error: {m}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("stage `{stage}`: cannot read plugin {path}: {source}")]
    Read {
        stage: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "stage `{stage}`: {origin} is not a keepsake stage component (keepsake:stage@{WIT_VERSION} for wasm32-wasip2, or an earlier 0.5): {message:#}"
    )]
    Invalid {
        stage: String,
        origin: String,
        message: wasmtime::Error,
    },
    #[error(
        "config: `stages.{stage}.{option}`: stage `{stage}` has no option `{option}` (it accepts: {accepted})"
    )]
    UnknownOption {
        stage: String,
        option: String,
        accepted: String,
    },
    #[error("stage `{stage}`: describe() failed: {source}")]
    Describe {
        stage: String,
        source: StageCallError,
    },
    #[error("wasm engine: {0:#}")]
    Engine(wasmtime::Error),
}

/// What the host answers a stage's questions with: the ledger, seen through
/// the pipeline (which also knows the assets being placed in this batch).
pub trait Services: Send + Sync {
    fn find_by_hash(&self, blake3: &str) -> Option<AssetRef>;
    /// Where bytes decided but not committed yet are to go (library-relative).
    fn planned_path(&self, _blake3: &str) -> Option<String> {
        None
    }
    fn kv_get(&self, stage: &str, key: &str) -> Option<Vec<u8>>;
    /// Store a pair, unless that would take the stage past `quota`
    /// (`Err` says how far).
    fn kv_set(&self, stage: &str, key: &str, value: &[u8], quota: KvQuota) -> Result<(), String>;
}

/// How much a stage may keep in its key-value store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    pub max_keys: u64,
    pub max_bytes: u64,
}

impl Default for KvQuota {
    /// Room for a handful of keys per photo of a very large library (the
    /// immich stage keeps three to five per asset: 500 000 photos take
    /// about 2.5 million).
    fn default() -> KvQuota {
        KvQuota {
            max_keys: 10_000_000,
            max_bytes: 1 << 30,
        }
    }
}

impl KvQuota {
    /// Whether a stage holding `keys` keys and `bytes` bytes may hold them.
    pub fn check(&self, keys: u64, bytes: u64) -> Result<(), String> {
        if keys > self.max_keys {
            return Err(format!(
                "it would hold more than {} keys (raise `kv_max_keys` in its [stages] table if it needs them)",
                self.max_keys
            ));
        }
        if bytes > self.max_bytes {
            return Err(format!(
                "it would hold more than {} MiB (raise `kv_max_mib` in its [stages] table if it needs them)",
                self.max_bytes >> 20
            ));
        }
        Ok(())
    }
}

/// A stage's self-description, checked against its config at load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageInfo {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub options: Vec<(String, String, Option<String>)>,
    /// Runs once the file is placed (`phase: placed`), not while deciding.
    pub placed: bool,
    /// A service stage: it exports `sweep` (and every component built
    /// against contract 0.5.0 does).
    pub sweeps: bool,
}

pub struct LoadedStage {
    pub name: String,
    pub info: StageInfo,
    pub cache: CacheOutcome,
    pub origin: String,
    pre: Pre,
    timeout: Duration,
    memory_bytes: usize,
    options: Arc<BTreeMap<String, String>>,
    grant: Arc<HttpGrant>,
    kv_quota: KvQuota,
}

/// A stage pre-instantiated in the world it was built for: a plain stage
/// (`describe`, `run`) or a service stage, which also sweeps.
enum Pre {
    Plain(StagePre<StageState>),
    Service(bindings::service::ServiceStagePre<StageState>),
}

/// An instance of either world.
enum Instance {
    Plain(Stage),
    Service(bindings::service::ServiceStage),
}

impl Pre {
    fn new(instance_pre: wasmtime::component::InstancePre<StageState>) -> wasmtime::Result<Pre> {
        // A component that exports `sweep` (every one built against 0.5.0,
        // and every service stage) is a service stage.
        match bindings::service::ServiceStagePre::new(instance_pre.clone()) {
            Ok(pre) => Ok(Pre::Service(pre)),
            Err(_) => Ok(Pre::Plain(StagePre::new(instance_pre)?)),
        }
    }

    fn instantiate(&self, store: &mut Store<StageState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::Plain(pre) => Instance::Plain(pre.instantiate(store)?),
            Pre::Service(pre) => Instance::Service(pre.instantiate(store)?),
        })
    }
}

impl Instance {
    fn call_describe(
        &self,
        store: &mut Store<StageState>,
    ) -> wasmtime::Result<bindings::keepsake::stage::types::Description> {
        match self {
            Instance::Plain(i) => i.call_describe(store),
            Instance::Service(i) => i.call_describe(store),
        }
    }

    fn call_run(
        &self,
        store: &mut Store<StageState>,
        job: &Job,
    ) -> wasmtime::Result<Result<Vec<Effect>, StageError>> {
        match self {
            Instance::Plain(i) => i.call_run(store, job),
            Instance::Service(i) => i.call_run(store, job),
        }
    }

    /// A plain stage talks to no service: it has nothing to send or read.
    fn call_sweep(
        &self,
        store: &mut Store<StageState>,
        request: SweepRequest,
    ) -> wasmtime::Result<Result<Vec<RemoteChange>, StageError>> {
        match self {
            Instance::Plain(_) => Ok(Ok(Vec::new())),
            Instance::Service(i) => i.call_sweep(store, request),
        }
    }
}

/// How a stage runs: its limits, options and grants from the config.
pub struct StageSetup {
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub kv_quota: KvQuota,
    pub options: BTreeMap<String, String>,
    pub grant: HttpGrant,
}

/// What a stage may reach over HTTP: nothing unless its config grants origins.
#[derive(Debug, Clone, Default)]
pub struct HttpGrant {
    /// `scheme://host:port`, lower case, the port always written.
    pub origins: Vec<String>,
    /// Added by the host to requests to one origin (an API key to its
    /// server, never elsewhere): the stage can neither read nor set them.
    pub headers: Vec<(String, http::HeaderName, http::HeaderValue)>,
}

impl HttpGrant {
    /// `scheme://host:port` of a URL, lower case, with the default port
    /// written out; `None` when it has no scheme or host.
    pub fn origin_of(uri: &http::Uri) -> Option<String> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })?;
        Some(format!("{scheme}://{host}:{port}"))
    }
}

/// The wasi:http hooks of one call: requests go only to granted origins,
/// with the grant's secret headers added on the way out.
struct HttpHooks {
    grant: Arc<HttpGrant>,
    /// Requests sent (granted ones), for the ledger's steps and benchmarks.
    requests: u64,
}

impl wasmtime_wasi_http::WasiHttpHooks for HttpHooks {
    fn forbidden_header_filter(&mut self) -> wasmtime_wasi_http::ForbiddenHeaderFilter {
        let secret: Vec<http::HeaderName> = self
            .grant
            .headers
            .iter()
            .map(|(_, n, _)| n.clone())
            .collect();
        Arc::new(move |name| {
            wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
                || secret.contains(name)
                // Credentials are the host's to add, whatever the grant.
                || name == http::header::AUTHORIZATION
                || name == http::header::COOKIE
                || name.as_str() == "x-api-key"
        })
    }

    fn send_request(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let origin = HttpGrant::origin_of(request.uri());
        let Some(origin) = origin.filter(|o| self.grant.origins.contains(o)) else {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        };
        for (for_origin, name, value) in &self.grant.headers {
            if *for_origin == origin {
                request.headers_mut().insert(name.clone(), value.clone());
            }
        }
        if self.requests >= MAX_REQUESTS {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        self.requests += 1;
        // A server that stops answering must not hold a stage for the
        // default ten minutes per step. The first byte of the answer comes
        // after the whole body is sent, so its wait grows with the body (at
        // 1 MB/s, a slow home uplink).
        let body_bytes = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let options = Some(wasmtime_wasi_http::RequestOptions {
            connect_timeout: options
                .and_then(|o| o.connect_timeout)
                .or(Some(Duration::from_secs(10))),
            first_byte_timeout: options
                .and_then(|o| o.first_byte_timeout)
                .or(Some(Duration::from_secs(120 + body_bytes / 1_000_000))),
            between_bytes_timeout: options
                .and_then(|o| o.between_bytes_timeout)
                .or(Some(Duration::from_secs(60))),
        });
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io)
                    as Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            ))
        })
    }
}

/// What a call cost, for the ledger's steps and the benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    pub micros: u64,
    pub bytes_read: u64,
    /// HTTP requests the call sent.
    pub requests: u64,
}

/// The file a call is about: the job's bytes and its companions', readable
/// by the stage only through bounded reads.
pub struct CallFiles {
    pub file: Option<Arc<File>>,
    pub companions: Vec<(String, PathBuf)>,
}

impl CallFiles {
    /// A call without a file (`describe`, `sweep`).
    fn none() -> CallFiles {
        CallFiles {
            file: None,
            companions: Vec::new(),
        }
    }
}

struct StageState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    stage: String,
    job_id: u64,
    file: Option<Arc<File>>,
    companions: Vec<(String, PathBuf)>,
    options: Arc<BTreeMap<String, String>>,
    services: Arc<dyn Services>,
    bytes_read: u64,
    kv_quota: KvQuota,
    /// A write past the quota: the call fails with this once it returns.
    kv_refused: Option<String>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    hooks: HttpHooks,
    /// Keeps the epoch ticker running while this call's store lives.
    _ticking: Ticking,
}

impl WasiView for StageState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for StageState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

fn bounded_read(file: &File, offset: u64, len: u32) -> Result<Vec<u8>, String> {
    let len = len.min(MAX_READ) as usize;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

impl bindings::keepsake::stage::types::Host for StageState {}

impl bindings::keepsake::stage::host::Host for StageState {
    fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        let file = self.file.as_ref().ok_or("this call has no file")?;
        let bytes = bounded_read(file, offset, len)?;
        self.bytes_read += bytes.len() as u64;
        Ok(bytes)
    }

    fn read_companion(&mut self, name: String, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        let path = self
            .companions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| format!("{name:?} is not a companion of this job"))?;
        let file =
            crate::effects::fsops::open_nofollow(&path).map_err(|e| format!("{name}: {e}"))?;
        let bytes = bounded_read(&file, offset, len)?;
        self.bytes_read += bytes.len() as u64;
        Ok(bytes)
    }

    fn find_by_hash(&mut self, blake3: String) -> Option<AssetRef> {
        self.services.find_by_hash(&blake3)
    }

    fn get_option(&mut self, name: String) -> Option<String> {
        self.options.get(&name).cloned()
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.services.kv_get(&self.stage, &key)
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) {
        if self.kv_refused.is_some() {
            return;
        }
        // Bounded so a stage cannot grow the ledger without limit per call.
        if key.len() > 1024 || value.len() > 1 << 20 {
            self.kv_refused = Some(format!(
                "a key of {} bytes with a value of {} bytes (at most 1024 and 1 MiB)",
                key.len(),
                value.len()
            ));
            return;
        }
        if let Err(e) = self
            .services
            .kv_set(&self.stage, &key, &value, self.kv_quota)
        {
            self.kv_refused = Some(e);
        }
    }

    fn log(&mut self, level: LogLevel, message: String) {
        let message: String = message.chars().take(2000).collect();
        let (stage, job) = (self.stage.as_str(), self.job_id);
        match level {
            LogLevel::Debug => tracing::debug!(stage, job, "{message}"),
            LogLevel::Info => tracing::info!(stage, job, "{message}"),
            LogLevel::Warn => tracing::warn!(stage, job, "{message}"),
            LogLevel::Error => tracing::error!(stage, job, "{message}"),
        }
    }

    fn now(&mut self) -> i64 {
        crate::ledger::now()
    }
}

/// The shared engine and linker. Cheap to share; create one per process.
pub struct StageRuntime {
    engine: Engine,
    linker: Linker<StageState>,
    cache_dir: Option<PathBuf>,
    ticker: Arc<Ticker>,
}

impl StageRuntime {
    /// `max_memory_bytes`: the largest memory any stage may use (the pool's
    /// slot size; each store's own limit is enforced separately).
    pub fn new(
        cache_dir: Option<PathBuf>,
        max_memory_bytes: usize,
    ) -> Result<StageRuntime, LoadError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // A pool of pre-reserved instance slots: a stage call reuses a warm
        // slot instead of mapping fresh memory, which is most of what a call
        // costs. Slots are far more than calls that run at once.
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(64)
            .total_core_instances(512)
            .total_memories(64)
            .total_tables(512)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(32)
            .max_memory_size(max_memory_bytes.max(1 << 20))
            // Stage calls are synchronous: no fiber stacks (the default
            // reserves and guards a thousand of them at every start).
            .total_stacks(0)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            // Linux 6.7+: reset only the pages a call dirtied, instead of
            // zeroing the whole resident megabyte after every call (which
            // was most of a stage call's cost). Older kernels keep memset.
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        config.epoch_interruption(true);
        config.max_wasm_stack(1 << 20);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(LoadError::Engine)?;
        let ticker = start_epoch_ticker(&engine).map_err(|e| {
            LoadError::Engine(wasmtime::Error::msg(format!(
                "cannot start the thread that enforces CPU deadlines: {e}"
            )))
        })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(LoadError::Engine)?;
        // Every stage links wasi:http; only granted origins answer.
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(LoadError::Engine)?;
        Stage::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(LoadError::Engine)?;
        Ok(StageRuntime {
            engine,
            linker,
            cache_dir,
            ticker,
        })
    }

    /// Compile (or load from the cache) a stage, pre-instantiate it, ask it
    /// to describe itself and check its options.
    pub fn load(
        &self,
        name: &str,
        origin: &str,
        wasm: &[u8],
        setup: StageSetup,
    ) -> Result<LoadedStage, LoadError> {
        let StageSetup {
            timeout,
            memory_bytes,
            kv_quota,
            options,
            grant,
        } = setup;
        let invalid = |message| LoadError::Invalid {
            stage: name.to_string(),
            origin: origin.to_string(),
            message,
        };
        let (component, cache) =
            cache::load(&self.engine, wasm, self.cache_dir.as_deref()).map_err(invalid)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = Pre::new(instance_pre).map_err(invalid)?;
        let mut stage = LoadedStage {
            name: name.to_string(),
            info: StageInfo {
                name: name.to_string(),
                version: String::new(),
                summary: String::new(),
                options: Vec::new(),
                placed: false,
                sweeps: false,
            },
            cache,
            origin: origin.to_string(),
            pre,
            timeout,
            memory_bytes,
            options: Arc::new(options),
            grant: Arc::new(grant),
            kv_quota,
        };
        let description = self
            .describe(&stage)
            .map_err(|source| LoadError::Describe {
                stage: name.to_string(),
                source,
            })?;
        stage.info = StageInfo {
            name: description.name,
            version: description.version,
            summary: description.summary,
            options: description
                .options
                .into_iter()
                .map(|o| (o.name, o.description, o.default_value))
                .collect(),
            placed: description.phase == bindings::keepsake::stage::types::Phase::Placed,
            sweeps: matches!(stage.pre, Pre::Service(_)),
        };
        if !stage.grant.origins.is_empty() && !stage.info.placed {
            return Err(invalid(wasmtime::Error::msg(
                "it is granted HTTP origins but runs while deciding; only stages of the `placed` phase may make requests",
            )));
        }
        for option in stage.options.keys() {
            if !stage.info.options.iter().any(|(n, _, _)| n == option) {
                return Err(LoadError::UnknownOption {
                    stage: name.to_string(),
                    option: option.clone(),
                    accepted: stage
                        .info
                        .options
                        .iter()
                        .map(|(n, _, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        // An option the config leaves out has the default the stage
        // described: `get-option` answers with it, so a stage writes each
        // default once, in `describe`.
        let mut options = (*stage.options).clone();
        for (option, _, default) in &stage.info.options {
            if let Some(default) = default {
                options
                    .entry(option.clone())
                    .or_insert_with(|| default.clone());
            }
        }
        stage.options = Arc::new(options);
        Ok(stage)
    }

    fn store(
        &self,
        stage: &LoadedStage,
        job_id: u64,
        files: CallFiles,
        services: Arc<dyn Services>,
    ) -> (Store<StageState>, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(STDERR_CAP);
        // No preopens, no environment, no arguments, no network: the
        // builder's defaults grant nothing.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(stage.memory_bytes)
            .trap_on_grow_failure(true)
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        let mut store = Store::new(
            &self.engine,
            StageState {
                wasi,
                table: ResourceTable::new(),
                limits,
                stage: stage.name.clone(),
                job_id,
                file: files.file,
                companions: files.companions,
                options: Arc::clone(&stage.options),
                services,
                bytes_read: 0,
                kv_quota: stage.kv_quota,
                kv_refused: None,
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
                hooks: HttpHooks {
                    grant: Arc::clone(&stage.grant),
                    requests: 0,
                },
                _ticking: Ticking::start(&self.ticker),
            },
        );
        store.limiter(|state| &mut state.limits);
        // Handles a guest holds at once (wasi:http requests, bodies,
        // streams, futures): far above what a stage needs, low enough that
        // a guest hoarding them fails its own call, not the service.
        store.data_mut().table.set_max_capacity(MAX_RESOURCES);
        let ticks = (stage.timeout.as_millis() / TICK.as_millis()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        (store, stderr)
    }

    fn describe(
        &self,
        stage: &LoadedStage,
    ) -> Result<bindings::keepsake::stage::types::Description, StageCallError> {
        let services: Arc<dyn Services> = Arc::new(NoServices);
        let (mut store, stderr) = self.store(stage, 0, CallFiles::none(), services);
        let result = stage
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_describe(&mut store));
        result.map_err(|e| classify_trap(stage, e, &stderr))
    }

    /// Instantiate the stage in a fresh store and make one call `f` of it.
    fn with_instance<T>(
        &self,
        stage: &LoadedStage,
        job_id: u64,
        files: CallFiles,
        services: Arc<dyn Services>,
        f: impl FnOnce(&Instance, &mut Store<StageState>) -> wasmtime::Result<Result<T, StageError>>,
    ) -> (Result<T, StageCallError>, CallStats) {
        let started = Instant::now();
        let (mut store, stderr) = self.store(stage, job_id, files, services);
        let result = stage
            .pre
            .instantiate(&mut store)
            .and_then(|instance| f(&instance, &mut store));
        finish(stage, started, &store, &stderr, result)
    }

    /// Run a stage on one job.
    pub fn call(
        &self,
        stage: &LoadedStage,
        job: &Job,
        files: CallFiles,
        services: Arc<dyn Services>,
    ) -> (Result<Vec<Effect>, StageCallError>, CallStats) {
        self.with_instance(stage, job.id, files, services, |instance, store| {
            instance.call_run(store, job)
        })
    }

    /// Ask a stage to send what it batched and (unless `send_only`) what
    /// its remote service holds (the write-back sweep): no file, the
    /// stage's KV and granted origins as in [`Self::call`].
    pub fn sweep(
        &self,
        stage: &LoadedStage,
        request: SweepRequest,
        services: Arc<dyn Services>,
    ) -> (Result<Vec<RemoteChange>, StageCallError>, CallStats) {
        self.with_instance(stage, 0, CallFiles::none(), services, |instance, store| {
            instance.call_sweep(store, request)
        })
    }
}

/// A call's outcome and what it cost.
fn finish<T>(
    stage: &LoadedStage,
    started: Instant,
    store: &Store<StageState>,
    stderr: &MemoryOutputPipe,
    result: wasmtime::Result<Result<T, StageError>>,
) -> (Result<T, StageCallError>, CallStats) {
    let stats = CallStats {
        micros: started.elapsed().as_micros() as u64,
        bytes_read: store.data().bytes_read,
        requests: store.data().hooks.requests,
    };
    let result = match result {
        _ if store.data().kv_refused.is_some() => Err(StageCallError::Quota {
            stage: stage.name.clone(),
            message: store.data().kv_refused.clone().unwrap_or_default(),
        }),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StageCallError::Stage {
            stage: stage.name.clone(),
            error,
        }),
        Err(trap) => Err(classify_trap(stage, trap, stderr)),
    };
    (result, stats)
}

struct NoServices;

impl Services for NoServices {
    fn find_by_hash(&self, _: &str) -> Option<AssetRef> {
        None
    }
    fn kv_get(&self, _: &str, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn kv_set(&self, _: &str, _: &str, _: &[u8], _: KvQuota) -> Result<(), String> {
        Ok(())
    }
}

fn classify_trap(
    stage: &LoadedStage,
    error: wasmtime::Error,
    stderr: &MemoryOutputPipe,
) -> StageCallError {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>()
        && *trap == wasmtime::Trap::Interrupt
    {
        return StageCallError::Timeout {
            stage: stage.name.clone(),
            limit: stage.timeout,
        };
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory")
        || text.contains("forcing a memory growth failure")
    {
        return StageCallError::Memory {
            stage: stage.name.clone(),
            limit_mib: stage.memory_bytes >> 20,
        };
    }
    let printed = String::from_utf8_lossy(&stderr.contents())
        .trim()
        .to_string();
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) if !printed.is_empty() => format!("{trap}: {printed}"),
        Some(trap) => trap.to_string(),
        None if !printed.is_empty() => format!("{text}: {printed}"),
        None => text,
    };
    StageCallError::Trap {
        stage: stage.name.clone(),
        message: message.chars().take(2000).collect(),
    }
}

/// The epoch ticker of one engine: how many stores are alive, and its thread.
struct Ticker {
    active: std::sync::atomic::AtomicUsize,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

/// A live store: while any exists, the ticker ticks.
struct Ticking(Arc<Ticker>);

impl Ticking {
    fn start(ticker: &Arc<Ticker>) -> Ticking {
        use std::sync::atomic::Ordering;
        if ticker.active.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(thread) = ticker.thread.get()
        {
            thread.unpark();
        }
        Ticking(Arc::clone(ticker))
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One thread per engine advances the epoch every [`TICK`] while a stage
/// runs, and sleeps otherwise (an idle service wakes no CPU); it stops when
/// the engine is dropped.
fn start_epoch_ticker(engine: &Engine) -> std::io::Result<Arc<Ticker>> {
    let ticker = Arc::new(Ticker {
        active: std::sync::atomic::AtomicUsize::new(0),
        thread: std::sync::OnceLock::new(),
    });
    let weak = engine.weak();
    let state = Arc::clone(&ticker);
    let handle = std::thread::Builder::new()
        .name("keepsake-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                if state.active.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    drop(engine);
                    // Unparked by the next call; the timeout notices a
                    // dropped engine.
                    std::thread::park_timeout(std::time::Duration::from_secs(1));
                    continue;
                }
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })?;
    let _ = ticker.thread.set(handle.thread().clone());
    Ok(ticker)
}
