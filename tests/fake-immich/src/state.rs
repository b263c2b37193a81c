//! What the fake server remembers, and the changes Immich would make to it.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::{Album, Asset, Library, library, util};

/// The one user of the fake: an admin, owner of everything.
pub(crate) const USER_ID: &str = "00000000-0000-4000-a000-000000000001";
pub(crate) const USER_EMAIL: &str = "admin@immich.test";
pub(crate) const USER_NAME: &str = "Fake Admin";

/// Shared between the server's tasks and the test's [`crate::FakeImmich`].
pub(crate) struct Shared {
    pub(crate) key: String,
    state: Mutex<State>,
    violations: Mutex<Vec<String>>,
    correlation: AtomicU64,
}

impl Shared {
    pub(crate) fn new(key: String) -> Self {
        Self {
            key,
            state: Mutex::new(State::empty()),
            violations: Mutex::new(Vec::new()),
            correlation: AtomicU64::new(0),
        }
    }

    /// The state; a panic elsewhere does not make it unreadable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn violation(&self, message: String) {
        eprintln!("fake-immich: contract violation: {message}");
        self.violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(message);
    }

    pub(crate) fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn correlation_id(&self) -> String {
        util::correlation_id(self.correlation.fetch_add(1, Ordering::Relaxed))
    }
}

/// An asset and its raw checksum.
pub(crate) struct AssetRec {
    pub(crate) asset: Asset,
    pub(crate) raw: [u8; 20],
}

/// A validated `POST /api/assets`.
pub(crate) struct NewUpload {
    pub(crate) raw: [u8; 20],
    pub(crate) len: u64,
    /// `filename` if given, else the `assetData` part's file name.
    pub(crate) file_name: String,
    pub(crate) device_asset_id: String,
    pub(crate) device_id: String,
    pub(crate) file_created_at: Timestamp,
    pub(crate) file_modified_at: Timestamp,
    pub(crate) is_favorite: bool,
    pub(crate) duration: Option<String>,
    pub(crate) visibility: String,
    pub(crate) live_photo_video_id: Option<String>,
    pub(crate) sidecar: Option<Vec<u8>>,
}

pub(crate) enum Uploaded {
    Created(String),
    Duplicate(String),
}

/// Why an album asset was not added (`BulkIdErrorReason`).
pub(crate) type AddResult = (String, Option<&'static str>);

pub(crate) struct State {
    counter: u64,
    last_micros: i64,
    pub(crate) user_created_at: Timestamp,
    pub(crate) assets: BTreeMap<String, AssetRec>,
    pub(crate) albums: BTreeMap<String, Album>,
    pub(crate) libraries: BTreeMap<String, Library>,
    pub(crate) quota_usage: u64,
    pub(crate) down: bool,
    pub(crate) fail_next: usize,
    /// The next `n` requests of this method whose path starts so answer 500.
    pub(crate) fail_matching: Option<(String, String, usize)>,
    pub(crate) latency: Duration,
    pub(crate) scan_delay: Duration,
    pub(crate) requests: Vec<(String, String)>,
}

impl State {
    fn empty() -> Self {
        Self {
            counter: 0,
            last_micros: 0,
            user_created_at: util::to_millis(Timestamp::now()),
            assets: BTreeMap::new(),
            albums: BTreeMap::new(),
            libraries: BTreeMap::new(),
            quota_usage: 0,
            down: false,
            fail_next: 0,
            fail_matching: None,
            latency: Duration::ZERO,
            scan_delay: Duration::ZERO,
            requests: Vec::new(),
        }
    }

    /// Now, in microseconds like Postgres, and always later than the last
    /// call: two changes never share a timestamp.
    pub(crate) fn now(&mut self) -> Timestamp {
        let micros = Timestamp::now().as_microsecond().max(self.last_micros + 1);
        self.last_micros = micros;
        Timestamp::from_microsecond(micros).expect("the clock is within jiff's range")
    }

    /// A fresh id, UUID-shaped (version 4, so Immich's validation takes it).
    pub(crate) fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.counter)
    }

    /// A random-looking UUID for upload file names.
    fn file_uuid(&mut self) -> String {
        self.counter += 1;
        util::uuid_from(format!("file:{}", self.counter).as_bytes())
    }

    /// Consumes one of the failures asked for with `fail_next`.
    pub(crate) fn take_failure(&mut self, method: &str, path: &str) -> bool {
        if let Some((m, prefix, n)) = &mut self.fail_matching
            && *n > 0
            && m == method
            && path.starts_with(prefix.as_str())
        {
            *n -= 1;
            return true;
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            true
        } else {
            false
        }
    }

    /// "Rebuild Immich": no assets, albums or libraries. Ids stay unique.
    pub(crate) fn reset(&mut self) {
        self.assets.clear();
        self.albums.clear();
        self.libraries.clear();
        self.quota_usage = 0;
    }

    /// The user's asset `id` (what Immich's access checks let through).
    pub(crate) fn owned_asset(&self, id: &str) -> Option<&AssetRec> {
        self.assets
            .get(id)
            .filter(|record| record.asset.owner_id == USER_ID)
    }

    /// An uploaded (not library) asset of the user with this checksum
    /// (`getUploadAssetIdByChecksum`).
    pub(crate) fn upload_duplicate(&self, raw: &[u8; 20]) -> Option<String> {
        self.assets
            .values()
            .find(|r| r.raw == *raw && r.asset.owner_id == USER_ID && r.asset.library_id.is_none())
            .map(|r| r.asset.id.clone())
    }

    /// Any asset of the user with this checksum, and whether it is in the
    /// trash (`getByChecksums`, as the bulk upload check uses it).
    pub(crate) fn find_checksum(&self, raw: &[u8; 20]) -> Option<(String, bool)> {
        self.assets
            .values()
            .rev()
            .find(|r| r.raw == *raw && r.asset.owner_id == USER_ID)
            .map(|r| (r.asset.id.clone(), r.asset.deleted_at.is_some()))
    }

    /// `onBeforeLink`: the motion part must be the user's video; a video on
    /// the timeline is hidden.
    fn before_link(&mut self, video_id: &str) -> Result<(), String> {
        let (is_video, owned, on_timeline) = match self.assets.get(video_id) {
            None => return Err("Live photo video not found".to_owned()),
            Some(r) => (
                r.asset.asset_type == "VIDEO",
                r.asset.owner_id == USER_ID,
                r.asset.visibility == "timeline",
            ),
        };
        if !is_video {
            return Err("Live photo video must be a video".to_owned());
        }
        if !owned {
            return Err("Live photo video does not belong to the user".to_owned());
        }
        if on_timeline {
            let now = self.now();
            if let Some(r) = self.assets.get_mut(video_id) {
                r.asset.visibility = "hidden".to_owned();
                r.asset.updated_at = now;
            }
        }
        Ok(())
    }

    /// `AssetMediaService.uploadAsset`.
    ///
    /// # Errors
    ///
    /// The message of Immich's 400 answer.
    pub(crate) fn create_upload(&mut self, upload: NewUpload) -> Result<Uploaded, String> {
        if let Some(video_id) = &upload.live_photo_video_id {
            self.before_link(video_id)?;
        }
        if let Some(id) = self.upload_duplicate(&upload.raw) {
            return Ok(Uploaded::Duplicate(id));
        }
        let id = self.next_id();
        let file_uuid = self.file_uuid();
        let now = self.now();
        // `/data` is the media location of Immich 2.x's Docker image; the
        // stored file is named after a new UUID, not after the upload.
        let original_path = format!(
            "/data/upload/{USER_ID}/{}/{}/{file_uuid}{}",
            &file_uuid[..2],
            &file_uuid[2..4],
            util::extension_with_dot(&upload.file_name)
        );
        let xmp = upload
            .sidecar
            .as_deref()
            .map(util::parse_xmp)
            .unwrap_or_default();
        let asset = Asset {
            id: id.clone(),
            owner_id: USER_ID.to_owned(),
            device_asset_id: upload.device_asset_id,
            device_id: upload.device_id,
            asset_type: util::asset_type(&upload.file_name).to_owned(),
            original_path,
            original_file_name: upload.file_name,
            checksum: util::to_base64(&upload.raw),
            file_created_at: upload.file_created_at,
            file_modified_at: upload.file_modified_at,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            is_favorite: upload.is_favorite,
            visibility: upload.visibility,
            description: xmp.description.unwrap_or_default(),
            rating: xmp.rating,
            location: None,
            library_id: None,
            is_offline: false,
            live_photo_video_id: upload.live_photo_video_id,
            duration: upload.duration,
            sidecar: upload.sidecar,
            bytes_len: upload.len,
        };
        self.quota_usage += upload.len;
        self.assets.insert(
            id.clone(),
            AssetRec {
                asset,
                raw: upload.raw,
            },
        );
        Ok(Uploaded::Created(id))
    }

    /// `PUT /api/assets/{id}` (`AssetService.update`). Description, rating,
    /// date and place live in `asset_exif`: changing only those leaves the
    /// asset's `updatedAt` alone, as in Immich 2.4.1. Favorite, visibility
    /// and the live photo link update the asset row, which bumps it.
    ///
    /// # Errors
    ///
    /// The message of Immich's 400 answer.
    pub(crate) fn update_asset(&mut self, id: &str, dto: &Value) -> Result<(), String> {
        if self.owned_asset(id).is_none() {
            return Err("Not found or no asset.update access".to_owned());
        }
        let link = dto.get("livePhotoVideoId");
        match link {
            Some(Value::String(video_id)) => self.before_link(video_id)?,
            Some(Value::Null) => self.unlink(id),
            _ => {}
        }
        let now = self.now();
        let Some(record) = self.assets.get_mut(id) else {
            return Err("Asset not found".to_owned());
        };
        let asset = &mut record.asset;
        if let Some(description) = dto.get("description").and_then(Value::as_str) {
            asset.description = description.to_owned();
        }
        if let Some(rating) = dto.get("rating").and_then(Value::as_i64) {
            asset.rating = i32::try_from(rating).ok();
        }
        let mut row_changed = link.is_some();
        match link {
            Some(Value::String(video_id)) => asset.live_photo_video_id = Some(video_id.clone()),
            Some(Value::Null) => asset.live_photo_video_id = None,
            _ => {}
        }
        if let Some(favorite) = dto.get("isFavorite").and_then(Value::as_bool) {
            asset.is_favorite = favorite;
            row_changed = true;
        }
        if let Some(visibility) = dto.get("visibility").and_then(Value::as_str) {
            visibility.clone_into(&mut asset.visibility);
            row_changed = true;
        }
        if row_changed {
            asset.updated_at = now;
        }
        Ok(())
    }

    /// `onAfterUnlink`: the motion part takes the still's visibility again.
    fn unlink(&mut self, id: &str) {
        let (video_id, visibility) = self
            .assets
            .get(id)
            .map(|r| {
                (
                    r.asset.live_photo_video_id.clone(),
                    r.asset.visibility.clone(),
                )
            })
            .unwrap_or_default();
        if let Some(video_id) = video_id {
            let now = self.now();
            if let Some(video) = self.assets.get_mut(&video_id) {
                video.asset.visibility = visibility;
                video.asset.updated_at = now;
            }
        }
    }

    /// An edit made in the web UI: favorite updates the asset row (bumping
    /// `updatedAt`); description and rating only its exif row (not bumping).
    pub(crate) fn edit(
        &mut self,
        id: &str,
        favorite: Option<bool>,
        description: Option<String>,
        rating: Option<i32>,
    ) -> bool {
        let now = self.now();
        let Some(record) = self.assets.get_mut(id) else {
            return false;
        };
        if let Some(favorite) = favorite {
            record.asset.is_favorite = favorite;
            record.asset.updated_at = now;
        }
        if let Some(description) = description {
            record.asset.description = description;
        }
        if rating.is_some() {
            record.asset.rating = rating;
        }
        true
    }

    /// `AlbumService.create`: asset ids the user may not share are dropped.
    pub(crate) fn create_album(
        &mut self,
        name: &str,
        description: &str,
        asset_ids: &[String],
    ) -> String {
        let mut seen = HashSet::new();
        let asset_ids: Vec<String> = asset_ids
            .iter()
            .filter(|id| self.owned_asset(id).is_some() && seen.insert(id.as_str()))
            .cloned()
            .collect();
        let id = self.next_id();
        let now = self.now();
        let album = Album {
            id: id.clone(),
            name: name.to_owned(),
            description: description.to_owned(),
            thumbnail_asset_id: asset_ids.first().cloned(),
            asset_ids,
            created_at: now,
            updated_at: now,
        };
        self.albums.insert(id.clone(), album);
        id
    }

    /// `PUT /api/albums/{id}/assets` (`addAssets`): per id, success, or
    /// `duplicate` (already in the album) or `no_permission` (unknown or not
    /// the user's). The album's `updatedAt` moves if anything was added;
    /// the assets' does not. `None`: no such album.
    pub(crate) fn add_to_album(
        &mut self,
        album_id: &str,
        ids: &[String],
    ) -> Option<Vec<AddResult>> {
        let mut present: HashSet<String> = self
            .albums
            .get(album_id)?
            .asset_ids
            .iter()
            .cloned()
            .collect();
        let mut results = Vec::with_capacity(ids.len());
        let mut added = Vec::new();
        for id in ids {
            if present.contains(id) {
                results.push((id.clone(), Some("duplicate")));
            } else if self.owned_asset(id).is_none() {
                results.push((id.clone(), Some("no_permission")));
            } else {
                present.insert(id.clone());
                added.push(id.clone());
                results.push((id.clone(), None));
            }
        }
        if !added.is_empty() {
            let now = self.now();
            if let Some(album) = self.albums.get_mut(album_id) {
                if album.thumbnail_asset_id.is_none() {
                    album.thumbnail_asset_id = added.first().cloned();
                }
                album.asset_ids.extend(added);
                album.updated_at = now;
            }
        }
        Some(results)
    }

    /// The web UI's "add to album" with an album name: the oldest album of
    /// that name, or a new one.
    pub(crate) fn add_to_named_album(&mut self, name: &str, asset_id: &str) {
        let existing = self
            .albums
            .values()
            .filter(|album| album.name == name)
            .min_by(|a, b| {
                a.created_at
                    .cmp(&b.created_at)
                    .then_with(|| a.id.cmp(&b.id))
            })
            .map(|album| album.id.clone());
        let album_id = existing.unwrap_or_else(|| self.create_album(name, "", &[]));
        self.add_to_album(&album_id, &[asset_id.to_owned()]);
    }

    /// `LibraryService.create` with Immich's default exclusion patterns.
    pub(crate) fn create_library(&mut self, import_paths: Vec<String>) -> String {
        let id = self.next_id();
        let now = self.now();
        let library = Library {
            id: id.clone(),
            owner_id: USER_ID.to_owned(),
            name: "New External Library".to_owned(),
            import_paths,
            exclusion_patterns: library::DEFAULT_EXCLUSIONS
                .iter()
                .map(|pattern| (*pattern).to_owned())
                .collect(),
            created_at: now,
            updated_at: now,
            refreshed_at: None,
        };
        self.libraries.insert(id.clone(), library);
        id
    }
}
