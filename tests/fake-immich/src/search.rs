//! `POST /api/search/metadata`, following Immich 2.4.1's `searchAssetBuilder`.

use serde_json::Value;

use crate::state::{AssetRec, State, USER_ID};
use crate::util;

/// One page of results.
pub(crate) struct Page<'a> {
    pub(crate) items: Vec<&'a AssetRec>,
    pub(crate) next_page: Option<String>,
    pub(crate) with_exif: bool,
}

/// The exif columns the fake never fills: `null` matches them all (`IS
/// NULL`), any string none.
const EMPTY_EXIF_COLUMNS: [&str; 6] = ["city", "state", "country", "make", "model", "lensModel"];

/// Runs a (validated) `MetadataSearchDto`.
///
/// Honoured: `id`, `checksum` (base64 if 28 characters, else hex),
/// `deviceAssetId`, `deviceId`, `libraryId`, `originalPath` and
/// `originalFileName` (case-insensitive `ILIKE '%value%'`, so `%` and `_`
/// are wildcards), `description`, `type`, `visibility` (default
/// `timeline`), `isFavorite`, `isOffline`, `isMotion`, `isNotInAlbum`,
/// `albumIds`, `rating`, `createdAfter/Before`, `updatedAfter/Before`,
/// `takenAfter/Before`, `trashedAfter/Before`, `withDeleted` (trashed and
/// offline assets are left out unless asked for), `withExif`, `order`
/// (`fileCreatedAt`, default `desc`), `page` and `size` (default 250).
pub(crate) fn metadata<'a>(state: &'a State, query: &Value) -> Page<'a> {
    let text = |key: &str| {
        query
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let flag = |key: &str| query.get(key).and_then(Value::as_bool);
    let time = |key: &str| text(key).and_then(util::parse_date);

    let visibility = query
        .get("visibility")
        .and_then(Value::as_str)
        .unwrap_or("timeline");
    let with_deleted = flag("withDeleted") == Some(true)
        || text("trashedAfter").is_some()
        || text("trashedBefore").is_some()
        || flag("isOffline") == Some(true);
    let checksum = text("checksum").map(util::decode_checksum_bytes);
    let original_file_name = text("originalFileName")
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let description = text("description").map(str::trim).filter(|v| !v.is_empty());
    let album_ids: Vec<&str> = query
        .get("albumIds")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rating = query.get("rating");
    let created_after = time("createdAfter");
    let created_before = time("createdBefore");
    let updated_after = time("updatedAfter");
    let updated_before = time("updatedBefore");
    let taken_after = time("takenAfter");
    let taken_before = time("takenBefore");
    let trashed_after = time("trashedAfter");
    let trashed_before = time("trashedBefore");
    // Filters on data the fake does not have (faces, tags, OCR, encoded
    // videos) or exif columns it leaves empty match nothing.
    let impossible = query
        .get("personIds")
        .and_then(Value::as_array)
        .is_some_and(|ids| !ids.is_empty())
        || query
            .get("tagIds")
            .and_then(Value::as_array)
            .is_some_and(|ids| !ids.is_empty())
        || text("ocr").is_some()
        || text("encodedVideoPath").is_some()
        || flag("isEncoded") == Some(true)
        || EMPTY_EXIF_COLUMNS
            .iter()
            .any(|key| query.get(*key).is_some_and(Value::is_string));

    let matches = |r: &AssetRec| -> bool {
        let a = &r.asset;
        let in_albums = album_ids.iter().all(|album_id| {
            state
                .albums
                .get(*album_id)
                .is_some_and(|album| album.asset_ids.contains(&a.id))
        });
        let in_no_album = || {
            !state
                .albums
                .values()
                .any(|album| album.asset_ids.contains(&a.id))
        };
        let rating_ok = match rating {
            None => true,
            Some(Value::Null) => a.rating.is_none(),
            Some(value) => value
                .as_i64()
                .is_some_and(|wanted| a.rating.map(i64::from) == Some(wanted)),
        };
        let after = |bound: Option<jiff::Timestamp>, value: jiff::Timestamp| {
            bound.is_none_or(|b| value >= b)
        };
        let before = |bound: Option<jiff::Timestamp>, value: jiff::Timestamp| {
            bound.is_none_or(|b| value <= b)
        };
        let trashed_ok = match a.deleted_at {
            Some(deleted) => {
                with_deleted && after(trashed_after, deleted) && before(trashed_before, deleted)
            }
            None => trashed_after.is_none() && trashed_before.is_none(),
        };
        !impossible
            && a.owner_id == USER_ID
            && a.visibility == visibility
            && trashed_ok
            && checksum
                .as_ref()
                .is_none_or(|wanted| wanted.as_deref() == Some(r.raw.as_slice()))
            && text("id").is_none_or(|id| a.id == id)
            && text("deviceAssetId").is_none_or(|v| a.device_asset_id == v)
            && text("deviceId").is_none_or(|v| a.device_id == v)
            && text("libraryId").is_none_or(|v| a.library_id.as_deref() == Some(v))
            && text("originalPath").is_none_or(|v| util::ilike_contains(&a.original_path, v))
            && original_file_name.is_none_or(|v| util::ilike_contains(&a.original_file_name, v))
            && description.is_none_or(|v| util::ilike_contains(&a.description, v))
            && text("type").is_none_or(|v| a.asset_type == v)
            && flag("isFavorite").is_none_or(|v| a.is_favorite == v)
            && flag("isOffline").is_none_or(|v| a.is_offline == v)
            && flag("isMotion").is_none_or(|v| a.live_photo_video_id.is_some() == v)
            && (flag("isNotInAlbum") != Some(true) || !album_ids.is_empty() || in_no_album())
            && in_albums
            && rating_ok
            && after(created_after, a.created_at)
            && before(created_before, a.created_at)
            && after(updated_after, a.updated_at)
            && before(updated_before, a.updated_at)
            && after(taken_after, a.file_created_at)
            && before(taken_before, a.file_created_at)
    };

    let mut items: Vec<&AssetRec> = state.assets.values().filter(|r| matches(r)).collect();
    let ascending = query.get("order").and_then(Value::as_str) == Some("asc");
    items.sort_by(|a, b| {
        let order = a
            .asset
            .file_created_at
            .cmp(&b.asset.file_created_at)
            .then_with(|| a.asset.id.cmp(&b.asset.id));
        if ascending { order } else { order.reverse() }
    });

    let size = query
        .get("size")
        .and_then(Value::as_u64)
        .filter(|size| *size > 0)
        .unwrap_or(250);
    let page = query
        .get("page")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let start = usize::try_from(page - 1)
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    let has_next = items.len() > start.saturating_add(size);
    let items = items.into_iter().skip(start).take(size).collect();
    Page {
        items,
        next_page: has_next.then(|| (page + 1).to_string()),
        with_exif: flag("withExif") == Some(true),
    }
}
