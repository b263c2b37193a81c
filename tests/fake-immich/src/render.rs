//! Response DTOs, shaped like Immich 2.4.1's `map*` functions shape them.

use serde_json::{Map, Value, json};

use crate::state::{AssetRec, State, USER_EMAIL, USER_ID, USER_NAME};
use crate::util::{self, fmt_day, fmt_ts};
use crate::{Album, Library};

fn put(map: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    map.insert(key.to_owned(), value.into());
}

/// Which optional parts of an `AssetResponseDto` a given endpoint loads.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct View {
    owner: bool,
    exif: bool,
    tags: bool,
    unassigned_faces: bool,
    stack: bool,
    /// `isFavorite` is only true when the request's user owns the asset;
    /// `mapAsset` without auth (album creation) always says false.
    auth: bool,
}

impl View {
    /// `GET /assets/{id}`: owner, exif, tags, faces and stack loaded.
    pub(crate) const DETAIL: View = View {
        owner: true,
        exif: true,
        tags: true,
        unassigned_faces: true,
        stack: true,
        auth: true,
    };

    /// `PUT /assets/{id}`: the updated row with exif and faces.
    pub(crate) const UPDATED: View = View {
        owner: false,
        exif: true,
        tags: false,
        unassigned_faces: true,
        stack: false,
        auth: true,
    };

    /// `POST /search/metadata`: the bare row, exif if `withExif`.
    pub(crate) const fn search(with_exif: bool) -> View {
        View {
            owner: false,
            exif: with_exif,
            tags: false,
            unassigned_faces: false,
            stack: false,
            auth: true,
        }
    }

    /// Album assets: the row with its exif.
    pub(crate) const fn album(auth: bool) -> View {
        View {
            owner: false,
            exif: true,
            tags: false,
            unassigned_faces: false,
            stack: false,
            auth,
        }
    }
}

fn user_fields(state: &State) -> Map<String, Value> {
    let mut m = Map::new();
    put(&mut m, "id", USER_ID);
    put(&mut m, "email", USER_EMAIL);
    put(&mut m, "name", USER_NAME);
    put(&mut m, "profileImagePath", "");
    put(&mut m, "avatarColor", "primary");
    put(&mut m, "profileChangedAt", fmt_ts(state.user_created_at));
    m
}

/// `UserResponseDto`.
pub(crate) fn user(state: &State) -> Value {
    Value::Object(user_fields(state))
}

/// `UserAdminResponseDto` (`GET /users/me`).
pub(crate) fn user_admin(state: &State) -> Value {
    let mut m = user_fields(state);
    put(&mut m, "storageLabel", "admin");
    put(&mut m, "shouldChangePassword", false);
    put(&mut m, "isAdmin", true);
    put(&mut m, "createdAt", fmt_ts(state.user_created_at));
    put(&mut m, "deletedAt", Value::Null);
    put(&mut m, "updatedAt", fmt_ts(state.user_created_at));
    put(&mut m, "oauthId", "");
    put(&mut m, "quotaSizeInBytes", Value::Null);
    put(&mut m, "quotaUsageInBytes", state.quota_usage);
    put(&mut m, "status", "active");
    put(&mut m, "license", Value::Null);
    Value::Object(m)
}

/// `ExifResponseDto`: what metadata extraction of the fake's files gives.
fn exif(record: &AssetRec) -> Value {
    let asset = &record.asset;
    let mut m = Map::new();
    for key in [
        "make",
        "model",
        "exifImageWidth",
        "exifImageHeight",
        "orientation",
        "timeZone",
        "lensModel",
        "fNumber",
        "focalLength",
        "iso",
        "exposureTime",
        "city",
        "state",
        "country",
        "projectionType",
    ] {
        put(&mut m, key, Value::Null);
    }
    let size = if asset.bytes_len > 0 {
        Value::from(asset.bytes_len)
    } else {
        Value::Null
    };
    put(&mut m, "fileSizeInByte", size);
    put(&mut m, "dateTimeOriginal", fmt_ts(asset.file_created_at));
    put(&mut m, "modifyDate", fmt_ts(asset.file_modified_at));
    put(&mut m, "description", asset.description.clone());
    put(&mut m, "rating", asset.rating);
    put(&mut m, "latitude", asset.location.map(|(lat, _)| lat));
    put(&mut m, "longitude", asset.location.map(|(_, lon)| lon));
    Value::Object(m)
}

/// `AssetResponseDto` (`mapAsset`).
pub(crate) fn asset(state: &State, record: &AssetRec, view: View) -> Value {
    let a = &record.asset;
    let mut m = Map::new();
    put(&mut m, "id", a.id.clone());
    put(&mut m, "createdAt", fmt_ts(a.created_at));
    put(&mut m, "deviceAssetId", a.device_asset_id.clone());
    put(&mut m, "ownerId", a.owner_id.clone());
    put(&mut m, "deviceId", a.device_id.clone());
    put(&mut m, "libraryId", a.library_id.clone());
    put(&mut m, "type", a.asset_type.clone());
    put(&mut m, "originalPath", a.original_path.clone());
    put(&mut m, "originalFileName", a.original_file_name.clone());
    put(
        &mut m,
        "originalMimeType",
        util::mime_type(&a.original_file_name),
    );
    put(&mut m, "thumbhash", Value::Null);
    put(&mut m, "fileCreatedAt", fmt_ts(a.file_created_at));
    put(&mut m, "fileModifiedAt", fmt_ts(a.file_modified_at));
    put(&mut m, "localDateTime", fmt_ts(a.file_created_at));
    put(&mut m, "updatedAt", fmt_ts(a.updated_at));
    put(&mut m, "isFavorite", view.auth && a.is_favorite);
    put(&mut m, "isArchived", a.visibility == "archive");
    put(&mut m, "isTrashed", a.deleted_at.is_some());
    put(&mut m, "visibility", a.visibility.clone());
    let duration = a
        .duration
        .clone()
        .unwrap_or_else(|| "0:00:00.00000".to_owned());
    put(&mut m, "duration", duration);
    put(&mut m, "livePhotoVideoId", a.live_photo_video_id.clone());
    put(&mut m, "people", json!([]));
    put(&mut m, "checksum", a.checksum.clone());
    put(&mut m, "isOffline", a.is_offline);
    put(&mut m, "hasMetadata", true);
    put(&mut m, "duplicateId", Value::Null);
    put(&mut m, "resized", true);
    if view.owner {
        put(&mut m, "owner", user(state));
    }
    if view.exif {
        put(&mut m, "exifInfo", exif(record));
    }
    if view.tags {
        put(&mut m, "tags", json!([]));
    }
    if view.unassigned_faces {
        put(&mut m, "unassignedFaces", json!([]));
    }
    if view.stack {
        put(&mut m, "stack", Value::Null);
    }
    Value::Object(m)
}

/// How an album is being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlbumMode {
    /// `POST /albums` (`mapAlbumWithAssets`, without auth).
    Created,
    /// `GET /albums` (`mapAlbumWithoutAssets` plus counts and dates).
    Listed,
    /// `GET /albums/{id}`.
    Detail,
    /// `GET /albums/{id}?withoutAssets=true`.
    DetailWithoutAssets,
}

/// The album's assets as Immich lists them: not trashed, on the timeline
/// or archived, newest `fileCreatedAt` first.
fn visible_assets<'a>(state: &'a State, album: &Album) -> Vec<&'a AssetRec> {
    let mut assets: Vec<&AssetRec> = album
        .asset_ids
        .iter()
        .filter_map(|id| state.assets.get(id))
        .filter(|r| {
            r.asset.deleted_at.is_none()
                && matches!(r.asset.visibility.as_str(), "timeline" | "archive")
        })
        .collect();
    assets.sort_by(|a, b| {
        b.asset
            .file_created_at
            .cmp(&a.asset.file_created_at)
            .then_with(|| a.asset.id.cmp(&b.asset.id))
    });
    assets
}

/// `AlbumResponseDto`.
pub(crate) fn album(state: &State, album: &Album, mode: AlbumMode) -> Value {
    let mut m = Map::new();
    put(&mut m, "id", album.id.clone());
    put(&mut m, "albumName", album.name.clone());
    put(&mut m, "description", album.description.clone());
    put(
        &mut m,
        "albumThumbnailAssetId",
        album.thumbnail_asset_id.clone(),
    );
    put(&mut m, "createdAt", fmt_ts(album.created_at));
    put(&mut m, "updatedAt", fmt_ts(album.updated_at));
    put(&mut m, "ownerId", USER_ID);
    put(&mut m, "owner", user(state));
    put(&mut m, "albumUsers", json!([]));
    put(&mut m, "shared", false);
    put(&mut m, "hasSharedLink", false);
    put(&mut m, "isActivityEnabled", true);
    put(&mut m, "order", "desc");
    if mode == AlbumMode::Created {
        let members: Vec<&AssetRec> = album
            .asset_ids
            .iter()
            .filter_map(|id| state.assets.get(id))
            .collect();
        let assets: Vec<Value> = members
            .iter()
            .map(|r| asset(state, r, View::album(false)))
            .collect();
        put(&mut m, "assetCount", assets.len());
        put(&mut m, "assets", assets);
        if let (Some(first), Some(last)) = (members.first(), members.last()) {
            let (start, end) = if first.asset.file_created_at <= last.asset.file_created_at {
                (first.asset.file_created_at, last.asset.file_created_at)
            } else {
                (last.asset.file_created_at, first.asset.file_created_at)
            };
            put(&mut m, "startDate", fmt_ts(start));
            put(&mut m, "endDate", fmt_ts(end));
        }
        return Value::Object(m);
    }
    let visible = visible_assets(state, album);
    let assets: Vec<Value> = if mode == AlbumMode::Detail {
        visible
            .iter()
            .map(|r| asset(state, r, View::album(true)))
            .collect()
    } else {
        Vec::new()
    };
    put(&mut m, "assets", assets);
    put(&mut m, "assetCount", visible.len());
    let start = visible.iter().map(|r| r.asset.file_created_at).min();
    let end = visible.iter().map(|r| r.asset.file_created_at).max();
    let modified = visible.iter().map(|r| r.asset.updated_at).max();
    if let (Some(start), Some(end), Some(modified)) = (start, end, modified) {
        put(&mut m, "startDate", fmt_day(start));
        put(&mut m, "endDate", fmt_day(end));
        put(&mut m, "lastModifiedAssetTimestamp", fmt_ts(modified));
    }
    Value::Object(m)
}

/// `LibraryResponseDto`. `assetCount` is 0 as in Immich 2.4.1, whose
/// `mapLibrary` counts assets that `getAll` and `get` never load.
pub(crate) fn library(library: &Library) -> Value {
    let mut m = Map::new();
    put(&mut m, "id", library.id.clone());
    put(&mut m, "ownerId", library.owner_id.clone());
    put(&mut m, "name", library.name.clone());
    put(&mut m, "createdAt", fmt_ts(library.created_at));
    put(&mut m, "updatedAt", fmt_ts(library.updated_at));
    put(&mut m, "refreshedAt", library.refreshed_at.map(fmt_ts));
    put(&mut m, "assetCount", 0);
    put(&mut m, "importPaths", library.import_paths.clone());
    put(
        &mut m,
        "exclusionPatterns",
        library.exclusion_patterns.clone(),
    );
    Value::Object(m)
}
