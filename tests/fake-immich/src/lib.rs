//! A fake Immich server for tests, following the Immich v2.4.1 API contract.
//!
//! [`FakeImmich::start`] serves `/api` on `127.0.0.1` from its own thread
//! and tokio runtime, with one user (an admin) and one API key. It answers
//! the endpoints keepsake uses the way Immich 2.4.1 does (status codes,
//! error bodies, duplicate detection, album and search semantics, external
//! library scans), and checks every JSON body against the OpenAPI spec
//! (see [`schema`]): a response that breaks the contract is recorded in
//! [`FakeImmich::schema_violations`], which tests assert is empty, and a
//! request the real server would refuse gets Immich's 400.
//!
//! Endpoints, all under `/api` and all but the first two needing the
//! `x-api-key` header:
//!
//! - `GET /server/ping`, `GET /server/version`
//! - `GET /users/me`
//! - `POST /assets/bulk-upload-check`, `POST /assets` (multipart),
//!   `GET /assets/{id}`, `PUT /assets/{id}`
//! - `GET /albums`, `POST /albums`, `GET /albums/{id}`,
//!   `PUT /albums/{id}/assets`
//! - `POST /search/metadata`
//! - `GET /libraries`, `GET /libraries/{id}`, `POST /libraries/{id}/scan`
//!
//! Anything else under `/api` answers 404 `Cannot <METHOD> <path>`.

mod library;
mod render;
pub mod schema;
mod search;
mod server;
mod state;
mod util;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use jiff::Timestamp;
use tokio::sync::oneshot;

use crate::state::Shared;

/// An asset as the fake stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub id: String,
    pub owner_id: String,
    pub device_asset_id: String,
    pub device_id: String,
    /// `IMAGE`, `VIDEO` or `OTHER`, from the file name's extension.
    pub asset_type: String,
    /// For an upload, where Immich would store it
    /// (`/data/upload/<user>/<xx>/<yy>/<uuid>.<ext>`); for a library asset,
    /// its absolute path on disk.
    pub original_path: String,
    pub original_file_name: String,
    /// Base64 of the SHA-1, as the API shows it: of the bytes for an
    /// upload, of `path:<absolute path>` for a library asset.
    pub checksum: String,
    pub file_created_at: Timestamp,
    pub file_modified_at: Timestamp,
    pub created_at: Timestamp,
    /// Moves when the asset row changes (favorite, visibility, live photo
    /// link, going offline or online); not for album changes, nor for
    /// description or rating, which Immich keeps in the exif row.
    pub updated_at: Timestamp,
    /// Set while the asset is in the trash (an offline library asset is).
    pub deleted_at: Option<Timestamp>,
    pub is_favorite: bool,
    /// `timeline`, `archive`, `hidden` or `locked`.
    pub visibility: String,
    /// The exif description (from a sidecar, or an edit).
    pub description: String,
    /// The exif rating (from a sidecar, or an edit).
    pub rating: Option<i32>,
    /// The exif latitude and longitude (an edit; the fake reads none from files).
    pub location: Option<(f64, f64)>,
    pub library_id: Option<String>,
    pub is_offline: bool,
    pub live_photo_video_id: Option<String>,
    pub duration: Option<String>,
    /// The uploaded `sidecarData`, or the sidecar found beside a library file.
    pub sidecar: Option<Vec<u8>>,
    pub bytes_len: u64,
}

/// An album as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Album {
    pub id: String,
    pub name: String,
    pub description: String,
    /// In the order they were added.
    pub asset_ids: Vec<String>,
    pub thumbnail_asset_id: Option<String>,
    pub created_at: Timestamp,
    /// Moves when assets are added.
    pub updated_at: Timestamp,
}

/// An external library as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub import_paths: Vec<String>,
    pub exclusion_patterns: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When a scan last ran.
    pub refreshed_at: Option<Timestamp>,
}

/// A running fake Immich server; dropping it shuts the server down.
pub struct FakeImmich {
    shared: Arc<Shared>,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeImmich {
    /// Starts a server on a free port of `127.0.0.1`.
    ///
    /// # Panics
    ///
    /// If no port can be bound or no thread started.
    #[must_use]
    pub fn start() -> FakeImmich {
        Self::start_on(0)
    }

    /// Starts a server on `127.0.0.1:port` (0: any free port).
    ///
    /// # Panics
    ///
    /// If the port cannot be bound or no thread started.
    #[must_use]
    pub fn start_on(port: u16) -> FakeImmich {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .expect("the fake Immich cannot bind its port on 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("the fake Immich cannot make its listener non-blocking");
        let port = listener
            .local_addr()
            .expect("the fake Immich listener has no address")
            .port();
        let shared = Arc::new(Shared::new(format!("fake-key-{port}")));
        let (stop, stopped) = oneshot::channel();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fake-immich-{port}"))
            .spawn(move || serve(listener, server_shared, stopped))
            .expect("the fake Immich cannot start its thread");
        FakeImmich {
            shared,
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, without `/api`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The one valid API key: `fake-key-<port>`.
    #[must_use]
    pub fn api_key(&self) -> &str {
        &self.shared.key
    }

    /// While down, every `/api` request answers 503 with no body.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    /// The next `n` `/api` requests answer 500 with Immich's error body.
    pub fn fail_next(&self, n: usize) {
        self.shared.lock().fail_next = n;
    }

    /// The next `n` requests of `method` whose path starts with `prefix`
    /// (e.g. `PUT`, `/api/albums/`) answer 500; others go through.
    pub fn fail_matching(&self, method: &str, prefix: &str, n: usize) {
        self.shared.lock().fail_matching = Some((method.to_owned(), prefix.to_owned(), n));
    }

    /// Every `/api` request waits this long before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Every request seen, in order: method and path (with `/api`, without
    /// the query string).
    #[must_use]
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().requests.clone()
    }

    /// How many requests had this method and a path starting with `path_prefix`.
    #[must_use]
    pub fn request_count(&self, method: &str, path_prefix: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|(m, p)| m.eq_ignore_ascii_case(method) && p.starts_with(path_prefix))
            .count()
    }

    /// "Rebuild Immich": forgets every asset, album and library. The key,
    /// the request log and the failure settings stay; new ids never repeat
    /// old ones.
    pub fn reset(&self) {
        self.shared.lock().reset();
    }

    /// All assets, oldest first.
    #[must_use]
    pub fn assets(&self) -> Vec<Asset> {
        self.shared
            .lock()
            .assets
            .values()
            .map(|record| record.asset.clone())
            .collect()
    }

    /// One asset.
    #[must_use]
    pub fn asset(&self, id: &str) -> Option<Asset> {
        self.shared
            .lock()
            .assets
            .get(id)
            .map(|record| record.asset.clone())
    }

    /// All albums, oldest first.
    #[must_use]
    pub fn albums(&self) -> Vec<Album> {
        self.shared.lock().albums.values().cloned().collect()
    }

    /// All external libraries, oldest first.
    #[must_use]
    pub fn libraries(&self) -> Vec<Library> {
        self.shared.lock().libraries.values().cloned().collect()
    }

    /// Creates an external library of the fake user importing `import_path`
    /// (made absolute), with Immich's default exclusion patterns; returns
    /// its id. `POST /api/libraries/{id}/scan` then imports what is there.
    pub fn create_external_library(&self, import_path: &str) -> String {
        let path = std::path::absolute(import_path)
            .map(|path| path.to_string_lossy().into_owned())
            .unwrap_or_else(|_| import_path.to_owned());
        self.shared.lock().create_library(vec![path])
    }

    /// Files found by a scan become assets only this long after the scan
    /// request (Immich runs scans as background jobs). With no delay (the
    /// default) the scan is done when `POST .../scan` answers.
    pub fn set_scan_delay(&self, delay: Duration) {
        self.shared.lock().scan_delay = delay;
    }

    /// An edit as a user makes it in the web UI. As in Immich 2.4.1, a
    /// favorite change bumps the asset's `updatedAt`; a description or
    /// rating change does not (it only touches the asset's exif row), so
    /// `updatedAfter` searches do not see it.
    ///
    /// # Panics
    ///
    /// If there is no asset `id`.
    pub fn edit_asset(
        &self,
        id: &str,
        favorite: Option<bool>,
        description: Option<String>,
        rating: Option<i32>,
    ) {
        let found = self.shared.lock().edit(id, favorite, description, rating);
        assert!(found, "fake Immich: edit_asset: no asset {id}");
    }

    /// A date or place edit as a user makes it in the web UI (`PUT
    /// /assets/{id}` with `dateTimeOriginal`, `latitude`, `longitude`). As
    /// in Immich 2.4.1 these live in the exif row: `updatedAt` does not move.
    ///
    /// # Panics
    ///
    /// If there is no asset `id`.
    pub fn edit_place(&self, id: &str, taken: Option<Timestamp>, location: Option<(f64, f64)>) {
        let mut state = self.shared.lock();
        let record = state.assets.get_mut(id);
        let record = record.unwrap_or_else(|| panic!("fake Immich: edit_place: no asset {id}"));
        if let Some(taken) = taken {
            record.asset.file_created_at = taken;
        }
        if location.is_some() {
            record.asset.location = location;
        }
    }

    /// Removes an asset from every album named `album_name`, as a user does
    /// in the web UI. As in Immich 2.4.1 (`AlbumService.removeAssets`),
    /// neither the album's `updatedAt` nor the asset's moves; only the
    /// album's `assetCount` tells.
    pub fn remove_from_album_as_user(&self, album_name: &str, asset_id: &str) {
        let mut state = self.shared.lock();
        for album in state.albums.values_mut() {
            if album.name == album_name {
                album.asset_ids.retain(|id| id != asset_id);
            }
        }
    }

    /// Deletes every album named `album_name`, as a user does in the web
    /// UI; its assets stay.
    pub fn delete_album_as_user(&self, album_name: &str) {
        self.shared
            .lock()
            .albums
            .retain(|_, album| album.name != album_name);
    }

    /// Adds an asset to the oldest album named `album_name`, creating the
    /// album if there is none, as a user does in the web UI. The album's
    /// `updatedAt` moves, the asset's does not (as in Immich).
    ///
    /// # Panics
    ///
    /// If there is no asset `asset_id`.
    pub fn add_to_album_as_user(&self, album_name: &str, asset_id: &str) {
        let mut state = self.shared.lock();
        assert!(
            state.owned_asset(asset_id).is_some(),
            "fake Immich: add_to_album_as_user: no asset {asset_id}"
        );
        state.add_to_named_album(album_name, asset_id);
    }

    /// Every contract violation seen so far: a response body that does not
    /// match the spec, or a spec that could not be read. Tests assert it is
    /// empty.
    #[must_use]
    pub fn schema_violations(&self) -> Vec<String> {
        self.shared.violations()
    }
}

impl Drop for FakeImmich {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("fake-immich: the server thread panicked");
        }
    }
}

/// The server thread: a tokio runtime serving until told to stop.
fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, stopped: oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fake-immich-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fake-immich: cannot start a tokio runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("fake-immich: cannot use the listener: {e}");
                return;
            }
        };
        let app = server::router(shared);
        tokio::select! {
            result = axum::serve(listener, app).into_future() => {
                if let Err(e) = result {
                    eprintln!("fake-immich: the server stopped: {e}");
                }
            }
            _ = stopped => {}
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}
