//! The HTTP side: routing, authentication, Immich-style errors, and a
//! contract check of every request and response body.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha1::Digest as _;

use crate::render::{self, AlbumMode, View};
use crate::state::{NewUpload, Shared, USER_ID, Uploaded};
use crate::{Album, Library, library, schema, search, util};

const VISIBILITIES: [&str; 4] = ["archive", "timeline", "hidden", "locked"];

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// An error answer: Immich's `{message, error, statusCode, correlationId}`.
struct ApiError {
    status: StatusCode,
    message: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<Value>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<Value>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

type ApiResult = Result<Response, ApiError>;

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}

fn error_response(shared: &Shared, error: ApiError) -> Response {
    let mut body = Map::new();
    body.insert("message".to_owned(), error.message);
    // Nest's HttpExceptions name the status; an unexpected error does not.
    if error.status != StatusCode::INTERNAL_SERVER_ERROR
        && let Some(reason) = error.status.canonical_reason()
    {
        body.insert("error".to_owned(), Value::from(reason));
    }
    body.insert("statusCode".to_owned(), Value::from(error.status.as_u16()));
    body.insert(
        "correlationId".to_owned(),
        Value::from(shared.correlation_id()),
    );
    json_response(error.status, &Value::Object(body))
}

/// A success answer, checked against the spec first.
fn ok(
    shared: &Shared,
    method: &str,
    template: &str,
    status: StatusCode,
    body: &Value,
) -> ApiResult {
    if let Err(violation) = schema::validate_response(method, template, status.as_u16(), body) {
        shared.violation(violation);
    }
    Ok(json_response(status, body))
}

fn no_content(shared: &Shared, method: &str, template: &str) -> ApiResult {
    if let Err(violation) = schema::validate_response(method, template, 204, &Value::Null) {
        shared.violation(violation);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

enum Route {
    Me,
    Upload,
    BulkCheck,
    GetAsset(String),
    UpdateAsset(String),
    Albums,
    CreateAlbum,
    GetAlbum(String),
    AddToAlbum(String),
    Search,
    Libraries,
    GetLibrary(String),
    Scan(String),
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let (down, latency) = {
        let mut state = shared.lock();
        state.requests.push((method.clone(), path.clone()));
        (state.down, state.latency)
    };
    let Some(rest) = path
        .strip_prefix("/api")
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    else {
        // Immich serves its web app outside /api; the fake has none.
        return StatusCode::NOT_FOUND.into_response();
    };
    if down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fail = shared.lock().take_failure(&method, &path);
    if fail {
        let error = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
        return error_response(&shared, error);
    }
    match dispatch(&shared, &method, rest, request).await {
        Ok(response) => response,
        Err(error) => error_response(&shared, error),
    }
}

async fn dispatch(shared: &Arc<Shared>, method: &str, rest: &str, request: Request) -> ApiResult {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let route = match (method, segments.as_slice()) {
        ("GET", ["server", "ping"]) => {
            return ok(
                shared,
                "GET",
                "/server/ping",
                StatusCode::OK,
                &json!({ "res": "pong" }),
            );
        }
        ("GET", ["server", "version"]) => {
            let version = json!({ "major": 2, "minor": 4, "patch": 1 });
            return ok(shared, "GET", "/server/version", StatusCode::OK, &version);
        }
        ("GET", ["users", "me"]) => Route::Me,
        ("POST", ["assets"]) => Route::Upload,
        ("POST", ["assets", "bulk-upload-check"]) => Route::BulkCheck,
        ("GET", ["assets", id]) => Route::GetAsset((*id).to_owned()),
        ("PUT", ["assets", id]) => Route::UpdateAsset((*id).to_owned()),
        ("GET", ["albums"]) => Route::Albums,
        ("POST", ["albums"]) => Route::CreateAlbum,
        ("GET", ["albums", id]) => Route::GetAlbum((*id).to_owned()),
        ("PUT", ["albums", id, "assets"]) => Route::AddToAlbum((*id).to_owned()),
        ("POST", ["search", "metadata"]) => Route::Search,
        ("GET", ["libraries"]) => Route::Libraries,
        ("GET", ["libraries", id]) => Route::GetLibrary((*id).to_owned()),
        ("POST", ["libraries", id, "scan"]) => Route::Scan((*id).to_owned()),
        _ => {
            let path = format!("/api{rest}");
            eprintln!("fake-immich: {method} {path} is not implemented by the fake; answering 404");
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Cannot {method} {path}"),
            ));
        }
    };
    let query = query_map(request.uri());
    authenticate(shared, request.headers(), &query)?;
    match route {
        Route::Me => {
            let user = render::user_admin(&shared.lock());
            ok(shared, "GET", "/users/me", StatusCode::OK, &user)
        }
        Route::Upload => upload(shared, request).await,
        Route::BulkCheck => {
            let body = read_json(shared, request, "POST", "/assets/bulk-upload-check").await?;
            bulk_upload_check(shared, &body)
        }
        Route::GetAsset(id) => get_asset(shared, &id),
        Route::UpdateAsset(id) => {
            check_uuid("id", &id)?;
            let body = read_json(shared, request, "PUT", "/assets/{id}").await?;
            update_asset(shared, &id, &body)
        }
        Route::Albums => list_albums(shared, &query),
        Route::CreateAlbum => {
            let body = read_json(shared, request, "POST", "/albums").await?;
            create_album(shared, &body)
        }
        Route::GetAlbum(id) => get_album(shared, &id, &query),
        Route::AddToAlbum(id) => {
            check_uuid("id", &id)?;
            let body = read_json(shared, request, "PUT", "/albums/{id}/assets").await?;
            add_to_album(shared, &id, &body)
        }
        Route::Search => {
            let body = read_json(shared, request, "POST", "/search/metadata").await?;
            search_metadata(shared, &body)
        }
        Route::Libraries => list_libraries(shared),
        Route::GetLibrary(id) => get_library(shared, &id),
        Route::Scan(id) => scan(shared, &id).await,
    }
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|Query(query)| query)
        .unwrap_or_default()
}

/// `x-api-key` (or `?apiKey=`), as Immich's auth guard reads it.
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let key = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .or_else(|| query.get("apiKey").map(String::as_str));
    match key {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Authentication required",
        )),
        Some(key) if key == shared.key => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key")),
    }
}

fn check_uuid(name: &str, value: &str) -> Result<(), ApiError> {
    if util::is_uuid_v4(value) {
        Ok(())
    } else {
        Err(ApiError::bad_request(json!([format!(
            "{name} must be a UUID"
        )])))
    }
}

fn query_bool(query: &HashMap<String, String>, name: &str) -> Result<Option<bool>, ApiError> {
    match query.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(json!([format!(
            "{name} must be a boolean value"
        )]))),
    }
}

/// A JSON body as Nest's body parser and `ValidationPipe` see it: no JSON
/// content type means an empty object; the request schema gives the 400s.
async fn read_json(
    shared: &Shared,
    request: Request,
    method: &str,
    template: &str,
) -> Result<Value, ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("json"));
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let body = if is_json && !bytes.is_empty() {
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| ApiError::bad_request(format!("Unexpected token in JSON: {e}")))?
    } else {
        Value::Object(Map::new())
    };
    if !body.is_object() {
        return Err(ApiError::bad_request(json!([
            "an unknown value was passed to the validate function"
        ])));
    }
    if let Err(violation) = schema::validate_request_body(method, template, &body) {
        // Logged, not recorded: sending bad requests is the client's
        // mistake, which the 400 below reports.
        eprintln!("fake-immich: invalid request body: {violation}");
    }
    match schema::request_messages(method, template, &body) {
        Ok(messages) if messages.is_empty() => Ok(body),
        Ok(messages) => Err(ApiError::bad_request(messages)),
        Err(problem) => {
            shared.violation(format!(
                "cannot check the request {method} {template}: {problem}"
            ));
            Ok(body)
        }
    }
}

/// The `assetData` part as it streamed by.
struct Received {
    file_name: String,
    raw: [u8; 20],
    len: u64,
}

fn multipart_error(error: &axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::bad_request(error.body_text())
}

/// `POST /api/assets` (`AssetMediaController.createAsset`).
async fn upload(shared: &Shared, request: Request) -> ApiResult {
    // AssetUploadInterceptor: a known checksum header answers before the body is read.
    let header_checksum = request
        .headers()
        .get("x-immich-checksum")
        .and_then(|value| value.to_str().ok())
        .and_then(util::decode_checksum);
    if let Some(raw) = header_checksum {
        let duplicate = shared.lock().upload_duplicate(&raw);
        if let Some(id) = duplicate {
            let body = json!({ "id": id, "status": "duplicate" });
            return ok(shared, "POST", "/assets", StatusCode::OK, &body);
        }
    }
    let mut multipart = <Multipart as FromRequest<()>>::from_request(request, &())
        .await
        .map_err(|_| ApiError::bad_request("File is required"))?;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut file: Option<Received> = None;
    let mut sidecar: Option<Vec<u8>> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&e))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let Some(file_name) = field.file_name().map(str::to_owned) else {
            let text = field.text().await.map_err(|e| multipart_error(&e))?;
            fields.insert(name, text);
            continue;
        };
        match name.as_str() {
            "assetData" => {
                let checked = fields
                    .get("filename")
                    .filter(|given| !given.is_empty())
                    .cloned()
                    .unwrap_or_else(|| file_name.clone());
                if !util::is_asset_file(&checked) {
                    return Err(ApiError::bad_request(format!(
                        "Unsupported file type {checked}"
                    )));
                }
                // Hashed as it streams: the bytes themselves are not kept.
                let mut hasher = sha1::Sha1::new();
                let mut len = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e))? {
                    hasher.update(&chunk[..]);
                    len += chunk.len() as u64;
                }
                file = Some(Received {
                    file_name,
                    raw: hasher.finalize().into(),
                    len,
                });
            }
            "sidecarData" => {
                if !util::is_sidecar_file(&file_name) {
                    return Err(ApiError::bad_request(format!(
                        "Unsupported file type {file_name}"
                    )));
                }
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e))? {
                    bytes.extend_from_slice(&chunk);
                }
                sidecar = Some(bytes);
            }
            _ => return Err(ApiError::bad_request("Unexpected field")),
        }
    }
    let Some(file) = file else {
        let message = if sidecar.is_some() {
            "Field(s) assetData should not be empty"
        } else {
            "File is required"
        };
        return Err(ApiError::bad_request(message));
    };

    // CreateAssetMediaDto, as class-transformer and class-validator see it.
    let created = upload_date(&fields, "fileCreatedAt")?;
    let modified = upload_date(&fields, "fileModifiedAt")?;
    let mut errors: Vec<String> = Vec::new();
    for key in ["deviceAssetId", "deviceId"] {
        match fields.get(key) {
            None => {
                errors.push(format!("{key} must be a string"));
                errors.push(format!("{key} should not be empty"));
            }
            Some(value) if value.is_empty() => errors.push(format!("{key} should not be empty")),
            Some(_) => {}
        }
    }
    for (key, value) in [("fileCreatedAt", created), ("fileModifiedAt", modified)] {
        if value.is_none() {
            errors.push(format!("{key} should not be empty"));
            errors.push(format!("{key} must be a Date instance"));
        }
    }
    if let Some(value) = fields.get("isFavorite")
        && !matches!(value.as_str(), "true" | "false")
    {
        errors.push("isFavorite must be a boolean value".to_owned());
    }
    if let Some(value) = fields.get("visibility")
        && !VISIBILITIES.contains(&value.as_str())
    {
        errors.push(format!(
            "visibility must be one of the following values: {}",
            VISIBILITIES.join(", ")
        ));
    }
    if let Some(value) = fields.get("livePhotoVideoId")
        && !util::is_uuid_v4(value)
    {
        errors.push("livePhotoVideoId must be a UUID".to_owned());
    }
    if let Some(value) = fields.get("metadata")
        && serde_json::from_str::<Value>(value).is_err()
    {
        return Err(ApiError::bad_request(json!([
            "metadata must be valid JSON"
        ])));
    }
    let (Some(file_created_at), Some(file_modified_at)) = (created, modified) else {
        return Err(ApiError::bad_request(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::bad_request(errors));
    }

    let file_name = fields
        .remove("filename")
        .filter(|given| !given.is_empty())
        .unwrap_or(file.file_name);
    let upload = NewUpload {
        raw: file.raw,
        len: file.len,
        file_name,
        device_asset_id: fields.remove("deviceAssetId").unwrap_or_default(),
        device_id: fields.remove("deviceId").unwrap_or_default(),
        file_created_at,
        file_modified_at,
        is_favorite: fields
            .get("isFavorite")
            .is_some_and(|value| value == "true"),
        duration: fields.remove("duration").filter(|value| !value.is_empty()),
        visibility: fields
            .remove("visibility")
            .unwrap_or_else(|| "timeline".to_owned()),
        live_photo_video_id: fields.remove("livePhotoVideoId"),
        sidecar,
    };
    let outcome = shared.lock().create_upload(upload);
    match outcome {
        Ok(Uploaded::Created(id)) => {
            let body = json!({ "id": id, "status": "created" });
            ok(shared, "POST", "/assets", StatusCode::CREATED, &body)
        }
        Ok(Uploaded::Duplicate(id)) => {
            let body = json!({ "id": id, "status": "duplicate" });
            ok(shared, "POST", "/assets", StatusCode::OK, &body)
        }
        Err(message) => Err(ApiError::bad_request(message)),
    }
}

/// `ValidateDate`: a value that is not a date string is refused before
/// validation, with a single message.
fn upload_date(
    fields: &HashMap<String, String>,
    key: &str,
) -> Result<Option<jiff::Timestamp>, ApiError> {
    match fields.get(key) {
        None => Ok(None),
        Some(value) => util::parse_date(value)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{key} must be a date string"))),
    }
}

/// `POST /api/assets/bulk-upload-check`.
fn bulk_upload_check(shared: &Shared, body: &Value) -> ApiResult {
    let items: &[Value] = body
        .get("assets")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        for key in ["id", "checksum"] {
            if item
                .get(key)
                .and_then(Value::as_str)
                .is_some_and(str::is_empty)
            {
                errors.push(format!("assets.{index}.{key} should not be empty"));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::bad_request(errors));
    }
    let results: Vec<Value> = {
        let state = shared.lock();
        items
            .iter()
            .map(|item| {
                let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                let found = item
                    .get("checksum")
                    .and_then(Value::as_str)
                    .and_then(util::decode_checksum)
                    .and_then(|raw| state.find_checksum(&raw));
                match found {
                    Some((asset_id, is_trashed)) => json!({
                        "id": id,
                        "action": "reject",
                        "reason": "duplicate",
                        "assetId": asset_id,
                        "isTrashed": is_trashed,
                    }),
                    None => json!({ "id": id, "action": "accept" }),
                }
            })
            .collect()
    };
    let body = json!({ "results": results });
    ok(
        shared,
        "POST",
        "/assets/bulk-upload-check",
        StatusCode::OK,
        &body,
    )
}

/// `GET /api/assets/{id}`.
fn get_asset(shared: &Shared, id: &str) -> ApiResult {
    check_uuid("id", id)?;
    let body = {
        let state = shared.lock();
        let record = state
            .owned_asset(id)
            .ok_or_else(|| ApiError::bad_request("Not found or no asset.read access"))?;
        render::asset(&state, record, View::DETAIL)
    };
    ok(shared, "GET", "/assets/{id}", StatusCode::OK, &body)
}

/// `PUT /api/assets/{id}`.
fn update_asset(shared: &Shared, id: &str, dto: &Value) -> ApiResult {
    let body = {
        let mut state = shared.lock();
        state.update_asset(id, dto).map_err(ApiError::bad_request)?;
        let record = state
            .owned_asset(id)
            .ok_or_else(|| ApiError::bad_request("Asset not found"))?;
        render::asset(&state, record, View::UPDATED)
    };
    ok(shared, "PUT", "/assets/{id}", StatusCode::OK, &body)
}

/// `GET /api/albums` (the user's albums, newest first).
fn list_albums(shared: &Shared, query: &HashMap<String, String>) -> ApiResult {
    let asset_id = query.get("assetId");
    if let Some(asset_id) = asset_id {
        check_uuid("assetId", asset_id)?;
    }
    let shared_only = query_bool(query, "shared")?;
    let body = {
        let state = shared.lock();
        let mut albums: Vec<&Album> = state
            .albums
            .values()
            .filter(|album| asset_id.is_none_or(|id| album.asset_ids.contains(id)))
            .collect();
        if asset_id.is_none() && shared_only == Some(true) {
            // Nothing is shared in the fake.
            albums.clear();
        }
        albums.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        let list: Vec<Value> = albums
            .iter()
            .map(|album| render::album(&state, album, AlbumMode::Listed))
            .collect();
        Value::Array(list)
    };
    ok(shared, "GET", "/albums", StatusCode::OK, &body)
}

/// `POST /api/albums`. Names are not unique: every call makes an album.
fn create_album(shared: &Shared, dto: &Value) -> ApiResult {
    let name = dto
        .get("albumName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let description = dto
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(user) = dto
        .get("albumUsers")
        .and_then(Value::as_array)
        .and_then(|users| users.first())
    {
        let message = if user.get("userId").and_then(Value::as_str) == Some(USER_ID) {
            "Cannot share album with owner"
        } else {
            "User not found"
        };
        return Err(ApiError::bad_request(message));
    }
    let asset_ids: Vec<String> = dto
        .get("assetIds")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let body = {
        let mut state = shared.lock();
        let id = state.create_album(name, description, &asset_ids);
        let album = state.albums.get(&id).ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        })?;
        render::album(&state, album, AlbumMode::Created)
    };
    ok(shared, "POST", "/albums", StatusCode::CREATED, &body)
}

/// `GET /api/albums/{id}`.
fn get_album(shared: &Shared, id: &str, query: &HashMap<String, String>) -> ApiResult {
    check_uuid("id", id)?;
    let mode = if query_bool(query, "withoutAssets")? == Some(true) {
        AlbumMode::DetailWithoutAssets
    } else {
        AlbumMode::Detail
    };
    let body = {
        let state = shared.lock();
        let album = state
            .albums
            .get(id)
            .ok_or_else(|| ApiError::bad_request("Not found or no album.read access"))?;
        render::album(&state, album, mode)
    };
    ok(shared, "GET", "/albums/{id}", StatusCode::OK, &body)
}

/// `PUT /api/albums/{id}/assets`: per-id results, never an HTTP error for
/// an unknown asset.
fn add_to_album(shared: &Shared, id: &str, dto: &Value) -> ApiResult {
    let ids: Vec<String> = dto
        .get("ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let results = shared
        .lock()
        .add_to_album(id, &ids)
        .ok_or_else(|| ApiError::bad_request("Album not found"))?;
    let body: Vec<Value> = results
        .into_iter()
        .map(|(id, error)| match error {
            None => json!({ "id": id, "success": true }),
            Some(error) => json!({ "id": id, "success": false, "error": error }),
        })
        .collect();
    ok(
        shared,
        "PUT",
        "/albums/{id}/assets",
        StatusCode::OK,
        &Value::Array(body),
    )
}

/// `POST /api/search/metadata`.
fn search_metadata(shared: &Shared, dto: &Value) -> ApiResult {
    let mut errors = Vec::new();
    // `@IsNotEmpty()` strings, and the `@IsInt()` numbers the spec calls numbers.
    for key in [
        "checksum",
        "deviceAssetId",
        "deviceId",
        "encodedVideoPath",
        "originalPath",
        "previewPath",
        "thumbnailPath",
    ] {
        if dto
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(str::is_empty)
        {
            errors.push(format!("{key} should not be empty"));
        }
    }
    for key in ["page", "size", "rating"] {
        if let Some(value) = dto.get(key)
            && value.is_number()
            && value.as_i64().is_none()
        {
            errors.push(format!("{key} must be an integer number"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::bad_request(errors));
    }
    let body = {
        let state = shared.lock();
        let page = search::metadata(&state, dto);
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|record| render::asset(&state, record, View::search(page.with_exif)))
            .collect();
        let count = items.len();
        json!({
            "albums": { "total": 0, "count": 0, "items": [], "facets": [] },
            "assets": {
                "total": count,
                "count": count,
                "items": items,
                "facets": [],
                "nextPage": page.next_page,
            },
        })
    };
    ok(shared, "POST", "/search/metadata", StatusCode::OK, &body)
}

/// `GET /api/libraries` (oldest first).
fn list_libraries(shared: &Shared) -> ApiResult {
    let body = {
        let state = shared.lock();
        let mut libraries: Vec<&Library> = state.libraries.values().collect();
        libraries.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Value::Array(libraries.into_iter().map(render::library).collect())
    };
    ok(shared, "GET", "/libraries", StatusCode::OK, &body)
}

/// `GET /api/libraries/{id}`.
fn get_library(shared: &Shared, id: &str) -> ApiResult {
    check_uuid("id", id)?;
    let body = {
        let state = shared.lock();
        let library = state
            .libraries
            .get(id)
            .ok_or_else(|| ApiError::bad_request("Library not found"))?;
        render::library(library)
    };
    ok(shared, "GET", "/libraries/{id}", StatusCode::OK, &body)
}

/// `POST /api/libraries/{id}/scan`. Immich queues the scan as a job; the
/// fake runs it after the scan delay, or before answering if there is none.
async fn scan(shared: &Arc<Shared>, id: &str) -> ApiResult {
    check_uuid("id", id)?;
    let delay = {
        let state = shared.lock();
        if !state.libraries.contains_key(id) {
            return Err(ApiError::bad_request("Library not found"));
        }
        state.scan_delay
    };
    if delay.is_zero() {
        run_scan(Arc::clone(shared), id.to_owned()).await;
    } else {
        let shared = Arc::clone(shared);
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run_scan(shared, id).await;
        });
    }
    no_content(shared, "POST", "/libraries/{id}/scan")
}

async fn run_scan(shared: Arc<Shared>, id: String) {
    let roots = {
        let state = shared.lock();
        state.libraries.get(&id).map(|library| {
            (
                library.import_paths.clone(),
                library.exclusion_patterns.clone(),
            )
        })
    };
    let Some((import_paths, exclusions)) = roots else {
        return;
    };
    let found = tokio::task::spawn_blocking(move || library::walk(&import_paths, &exclusions))
        .await
        .unwrap_or_default();
    library::apply_scan(&mut shared.lock(), &id, &found);
}
