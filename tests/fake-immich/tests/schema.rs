//! The fake Immich driven by a real HTTP client: every endpoint, the
//! behaviours keepsake relies on, and the contract checks themselves. Each
//! test ends by asserting that no response broke the OpenAPI contract.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_immich::{FakeImmich, Timestamp, schema};
use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};
use sha1::Digest as _;

/// A well-formed id that names nothing.
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-00000fffffff";

const XMP: &str = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" xmp:Rating="4"><dc:description><rdf:Alt><rdf:li xml:lang="x-default">Beach &amp; sun</rdf:li></rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>"#;

struct Api {
    fake: FakeImmich,
    client: Client,
}

impl Api {
    fn start() -> Api {
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Api {
            fake: FakeImmich::start(),
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.url())
    }

    fn send(request: RequestBuilder) -> (u16, Value) {
        let response = request.send().expect("the fake answers");
        let status = response.status().as_u16();
        let text = response.text().expect("a readable body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("a JSON body")
        };
        (status, body)
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        request.header("x-api-key", self.fake.api_key())
    }

    fn get(&self, path: &str) -> (u16, Value) {
        Self::send(self.authed(self.client.get(self.url(path))))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::send(self.authed(self.client.post(self.url(path))).json(body))
    }

    fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::send(self.authed(self.client.put(self.url(path))).json(body))
    }

    fn search(&self, query: &Value) -> Vec<Value> {
        let (status, body) = self.post("/api/search/metadata", query);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["assets"]["count"],
            body["assets"]["items"].as_array().map_or(0, Vec::len)
        );
        body["assets"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn upload_parts(
        &self,
        fields: &[(&'static str, String)],
        parts: Vec<(&'static str, String, Vec<u8>)>,
    ) -> (u16, Value) {
        let mut form = Form::new();
        for (name, value) in fields {
            form = form.text(*name, value.clone());
        }
        for (name, file_name, bytes) in parts {
            form = form.part(name, Part::bytes(bytes).file_name(file_name));
        }
        Self::send(
            self.authed(self.client.post(self.url("/api/assets")))
                .multipart(form),
        )
    }

    fn upload_with(
        &self,
        name: &str,
        bytes: &[u8],
        extra: &[(&'static str, &str)],
    ) -> (u16, Value) {
        let mut fields = default_fields(name);
        for (key, value) in extra {
            fields.retain(|(existing, _)| existing != key);
            fields.push((*key, (*value).to_owned()));
        }
        self.upload_parts(
            &fields,
            vec![("assetData", name.to_owned(), bytes.to_vec())],
        )
    }

    fn upload(&self, name: &str, bytes: &[u8]) -> (u16, Value) {
        self.upload_with(name, bytes, &[])
    }

    fn upload_ok(&self, name: &str, bytes: &[u8]) -> String {
        let (status, body) = self.upload(name, bytes);
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "created");
        id_of(&body)
    }

    fn finish(self) {
        let violations = self.fake.schema_violations();
        assert!(
            violations.is_empty(),
            "contract violations: {violations:#?}"
        );
    }
}

fn default_fields(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("deviceAssetId", format!("{name}-device-asset-id")),
        ("deviceId", "keepsake-test".to_owned()),
        ("fileCreatedAt", "2024-05-01T10:00:00.000Z".to_owned()),
        ("fileModifiedAt", "2024-05-01T10:00:00.000Z".to_owned()),
    ]
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("an id").to_owned()
}

fn ids(items: &[Value]) -> BTreeSet<String> {
    items.iter().map(id_of).collect()
}

fn names(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|item| {
            item["originalFileName"]
                .as_str()
                .expect("a file name")
                .to_owned()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// The `message` of an error body, whether a string or a list.
fn message(body: &Value) -> String {
    body["message"].to_string()
}

fn sha1_of(bytes: &[u8]) -> [u8; 20] {
    sha1::Sha1::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for byte in bytes {
        write!(out, "{byte:02x}").expect("writing to a String");
    }
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("a folder");
    std::fs::write(path, bytes).expect("a written file");
}

#[allow(
    clippy::disallowed_methods,
    reason = "the test plays a user who moves a photo"
)]
fn move_file(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("a parent folder")).expect("a folder");
    std::fs::rename(from, to).expect("a moved file");
}

/// Whether a search with `updatedAfter: mark` finds the asset.
fn updated_since(api: &Api, mark: &str, id: &str) -> bool {
    ids(&api.search(&json!({ "updatedAfter": mark }))).contains(id)
}

fn now_mark() -> String {
    std::thread::sleep(Duration::from_millis(20));
    let mark = format!("{:.3}", Timestamp::now());
    std::thread::sleep(Duration::from_millis(20));
    mark
}

#[test]
fn ping_version_and_authentication() {
    let api = Api::start();
    let (status, body) = Api::send(api.client.get(api.url("/api/server/ping")));
    assert_eq!((status, body), (200, json!({ "res": "pong" })));
    let (status, body) = Api::send(api.client.get(api.url("/api/server/version")));
    assert_eq!(
        (status, body),
        (200, json!({ "major": 2, "minor": 4, "patch": 1 }))
    );

    let (status, body) = Api::send(api.client.get(api.url("/api/users/me")));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["message"], "Authentication required");
    assert_eq!(body["error"], "Unauthorized");
    assert_eq!(body["statusCode"], 401);
    assert!(body["correlationId"].is_string(), "{body}");

    let wrong_key = api
        .client
        .get(api.url("/api/users/me"))
        .header("x-api-key", "wrong");
    let (status, body) = Api::send(wrong_key);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["message"], "Invalid API key");

    let (status, me) = api.get("/api/users/me");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["isAdmin"].as_bool(), Some(true));
    assert!(me["id"].is_string());
    assert!(api.fake.api_key().starts_with("fake-key-"));

    let (status, body) = api.get("/api/nope");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["message"], "Cannot GET /api/nope");
    assert_eq!(body["error"], "Not Found");
    api.finish();
}

#[test]
fn upload_bulk_check_and_duplicates() {
    let api = Api::start();
    let bytes = b"first photo bytes".to_vec();
    let raw = sha1_of(&bytes);
    let check = |checksum: String| {
        let body = json!({ "assets": [{ "id": "client-1", "checksum": checksum }] });
        api.post("/api/assets/bulk-upload-check", &body)
    };

    let (status, body) = check(hex(&raw));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "results": [{ "id": "client-1", "action": "accept" }] })
    );

    let (status, created) = api.upload("IMG_0001.jpg", &bytes);
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "created");
    let id = id_of(&created);

    // Same bytes, another name: 200 and the existing id.
    let (status, again) = api.upload("copy.jpg", &bytes);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, json!({ "id": id, "status": "duplicate" }));

    for checksum in [hex(&raw), b64(&raw)] {
        let (status, body) = check(checksum);
        assert_eq!(status, 200, "{body}");
        let expected = json!({ "results": [{
            "id": "client-1",
            "action": "reject",
            "reason": "duplicate",
            "assetId": id,
            "isTrashed": false,
        }] });
        assert_eq!(body, expected);
    }

    // A known x-immich-checksum header answers before the body is read.
    let request = api
        .authed(api.client.post(api.url("/api/assets")))
        .header("x-immich-checksum", hex(&raw))
        .multipart(Form::new().text("deviceAssetId", "ignored"));
    let (status, body) = Api::send(request);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "id": id, "status": "duplicate" }));

    let (status, asset) = api.get(&format!("/api/assets/{id}"));
    assert_eq!(status, 200, "{asset}");
    assert_eq!(asset["checksum"], b64(&raw));
    assert_eq!(asset["originalFileName"], "IMG_0001.jpg");
    assert_eq!(asset["deviceAssetId"], "IMG_0001.jpg-device-asset-id");
    assert_eq!(asset["type"], "IMAGE");
    assert_eq!(asset["originalMimeType"], "image/jpeg");
    assert_eq!(asset["fileCreatedAt"], "2024-05-01T10:00:00.000Z");
    assert_eq!(asset["exifInfo"]["fileSizeInByte"], bytes.len());
    assert_eq!(asset["owner"]["id"], asset["ownerId"]);
    assert_eq!(asset["libraryId"], Value::Null);
    let path = asset["originalPath"].as_str().expect("a path");
    assert!(
        path.starts_with("/data/upload/") && path.ends_with(".jpg"),
        "{path}"
    );

    let (status, body) = api.get(&format!("/api/assets/{UNKNOWN_ID}"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Not found or no asset.read access");
    let (status, body) = api.get("/api/assets/not-a-uuid");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], json!(["id must be a UUID"]));

    let assets = api.fake.assets();
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].checksum, b64(&raw));
    assert_eq!(assets[0].bytes_len, 17);
    api.finish();
}

#[test]
fn invalid_requests_get_immich_400s() {
    let api = Api::start();
    let upload = |fields: &[(&'static str, String)]| {
        api.upload_parts(
            fields,
            vec![("assetData", "IMG_1.jpg".to_owned(), b"x".to_vec())],
        )
    };

    let mut fields = default_fields("IMG_1.jpg");
    fields.retain(|(key, _)| *key != "deviceAssetId");
    let (status, body) = upload(&fields);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "Bad Request");
    assert!(
        message(&body).contains("deviceAssetId should not be empty"),
        "{body}"
    );

    let mut fields = default_fields("IMG_1.jpg");
    fields.push(("isFavorite", "maybe".to_owned()));
    let (status, body) = upload(&fields);
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).contains("isFavorite must be a boolean value"),
        "{body}"
    );

    let (status, body) = api.upload_with("IMG_1.jpg", b"x", &[("fileCreatedAt", "yesterday")]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "fileCreatedAt must be a date string");

    let (status, body) = api.upload("notes.txt", b"x");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Unsupported file type notes.txt");

    let (status, body) = api.upload_parts(&default_fields("IMG_1.jpg"), Vec::new());
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "File is required");

    let (status, body) = api.post(
        "/api/assets/bulk-upload-check",
        &json!({ "assets": [{ "id": "a" }] }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).contains("assets.0.checksum should not be empty"),
        "{body}"
    );

    let (status, body) = api.post(
        "/api/assets/bulk-upload-check",
        &json!({ "assets": [{ "id": "a", "checksum": "" }] }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).contains("assets.0.checksum should not be empty"),
        "{body}"
    );

    let (status, body) = api.post("/api/albums", &json!({ "description": "no name" }));
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).contains("albumName must be a string"),
        "{body}"
    );

    for (query, expected) in [
        (json!({ "size": 0 }), "size must not be less than 1"),
        (
            json!({ "size": 1001 }),
            "size must not be greater than 1000",
        ),
        (
            json!({ "visibility": "bogus" }),
            "visibility must be one of the following values",
        ),
        (
            json!({ "withExif": "yes" }),
            "withExif must be a boolean value",
        ),
        (json!({ "libraryId": "nope" }), "libraryId must be a UUID"),
        (
            json!({ "originalPath": "" }),
            "originalPath should not be empty",
        ),
    ] {
        let (status, body) = api.post("/api/search/metadata", &query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(message(&body).contains(expected), "{query}: {body}");
    }

    let (status, body) = api.put(
        &format!("/api/albums/{UNKNOWN_ID}/assets"),
        &json!({ "ids": ["nope"] }),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], json!(["each value in ids must be a UUID"]));

    assert!(api.fake.assets().is_empty());
    api.finish();
}

#[test]
fn sidecar_and_live_photo() {
    let api = Api::start();
    let parts = vec![
        ("assetData", "IMG_2.jpg".to_owned(), b"two".to_vec()),
        (
            "sidecarData",
            "IMG_2.jpg.xmp".to_owned(),
            XMP.as_bytes().to_vec(),
        ),
    ];
    let (status, body) = api.upload_parts(&default_fields("IMG_2.jpg"), parts);
    assert_eq!(status, 201, "{body}");
    let photo = id_of(&body);
    let stored = api.fake.asset(&photo).expect("the uploaded asset");
    assert_eq!(stored.rating, Some(4));
    assert_eq!(stored.description, "Beach & sun");
    assert_eq!(stored.sidecar.as_deref(), Some(XMP.as_bytes()));
    let (status, asset) = api.get(&format!("/api/assets/{photo}"));
    assert_eq!(status, 200, "{asset}");
    assert_eq!(asset["exifInfo"]["description"], "Beach & sun");
    assert_eq!(asset["exifInfo"]["rating"], 4);

    let parts = vec![
        ("assetData", "IMG_3.jpg".to_owned(), b"three".to_vec()),
        ("sidecarData", "IMG_3.txt".to_owned(), b"not xmp".to_vec()),
    ];
    let (status, body) = api.upload_parts(&default_fields("IMG_3.jpg"), parts);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Unsupported file type IMG_3.txt");

    let video = api.upload_ok("IMG_4.MOV", b"motion part");
    let (status, asset) = api.get(&format!("/api/assets/{video}"));
    assert_eq!(status, 200, "{asset}");
    assert_eq!(asset["type"], "VIDEO");
    assert_eq!(asset["originalMimeType"], "video/quicktime");
    assert_eq!(asset["visibility"], "timeline");

    let (status, body) = api.upload_with(
        "IMG_4.HEIC",
        b"still part",
        &[("livePhotoVideoId", video.as_str())],
    );
    assert_eq!(status, 201, "{body}");
    let still = id_of(&body);
    let (_, asset) = api.get(&format!("/api/assets/{still}"));
    assert_eq!(asset["livePhotoVideoId"], video.as_str());
    assert_eq!(asset["type"], "IMAGE");
    // Linking hides the motion part from the timeline.
    let (_, asset) = api.get(&format!("/api/assets/{video}"));
    assert_eq!(asset["visibility"], "hidden");
    assert!(!ids(&api.search(&json!({}))).contains(&video));
    assert!(ids(&api.search(&json!({ "visibility": "hidden" }))).contains(&video));
    assert!(ids(&api.search(&json!({ "isMotion": true }))).contains(&still));

    let (status, body) = api.upload_with(
        "IMG_5.HEIC",
        b"five",
        &[("livePhotoVideoId", photo.as_str())],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Live photo video must be a video");
    let (status, body) = api.upload_with("IMG_6.HEIC", b"six", &[("livePhotoVideoId", UNKNOWN_ID)]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Live photo video not found");
    let (status, body) = api.upload_with("IMG_7.HEIC", b"seven", &[("livePhotoVideoId", "xyz")]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], json!(["livePhotoVideoId must be a UUID"]));
    api.finish();
}

#[test]
fn albums_create_list_get_and_add() {
    let api = Api::start();
    let a = api.upload_ok("A.jpg", b"a");
    let b = api.upload_ok("B.jpg", b"b");

    let (status, first) = api.post(
        "/api/albums",
        &json!({ "albumName": "Trip", "assetIds": [a] }),
    );
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["albumName"], "Trip");
    assert_eq!(first["assetCount"], 1);
    assert_eq!(
        ids(first["assets"].as_array().expect("assets")),
        set(&[a.as_str()])
    );
    assert_eq!(first["albumUsers"], json!([]));
    assert_eq!(first["albumThumbnailAssetId"], a.as_str());
    let album = id_of(&first);

    // Names are not unique.
    let (status, second) = api.post("/api/albums", &json!({ "albumName": "Trip" }));
    assert_eq!(status, 201, "{second}");
    assert_ne!(id_of(&second), album);
    assert_eq!(second["assetCount"], 0);

    let (status, list) = api.get("/api/albums");
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|item| item["assets"] == json!([])),
        "{list:?}"
    );
    let listed = list
        .iter()
        .find(|item| item["id"] == album.as_str())
        .expect("the first album");
    assert_eq!(listed["assetCount"], 1);
    assert_eq!(listed["startDate"], "2024-05-01T00:00:00.000Z");

    let (status, detail) = api.get(&format!("/api/albums/{album}"));
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        ids(detail["assets"].as_array().expect("assets")),
        set(&[a.as_str()])
    );
    let (status, bare) = api.get(&format!("/api/albums/{album}?withoutAssets=true"));
    assert_eq!(status, 200, "{bare}");
    assert_eq!(bare["assets"], json!([]));
    assert_eq!(bare["assetCount"], 1);

    let a_before = api.fake.asset(&a).expect("a").updated_at;
    let b_before = api.fake.asset(&b).expect("b").updated_at;
    let album_before = api.fake.albums()[0].updated_at;
    std::thread::sleep(Duration::from_millis(5));
    let (status, results) = api.put(
        &format!("/api/albums/{album}/assets"),
        &json!({ "ids": [b, a, UNKNOWN_ID] }),
    );
    assert_eq!(status, 200, "{results}");
    let expected = json!([
        { "id": b, "success": true },
        { "id": a, "success": false, "error": "duplicate" },
        { "id": UNKNOWN_ID, "success": false, "error": "no_permission" },
    ]);
    assert_eq!(results, expected);
    let albums = api.fake.albums();
    assert_eq!(albums[0].asset_ids, [a.clone(), b.clone()]);
    assert!(albums[0].updated_at > album_before);
    assert_eq!(api.fake.asset(&a).expect("a").updated_at, a_before);
    assert_eq!(api.fake.asset(&b).expect("b").updated_at, b_before);

    let (status, body) = api.put(
        &format!("/api/albums/{UNKNOWN_ID}/assets"),
        &json!({ "ids": [a] }),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Album not found");
    let (status, body) = api.get(&format!("/api/albums/{UNKNOWN_ID}"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Not found or no album.read access");

    api.fake.add_to_album_as_user("Favourites", &a);
    api.fake.add_to_album_as_user("Favourites", &a);
    let favourites: Vec<_> = api
        .fake
        .albums()
        .into_iter()
        .filter(|album| album.name == "Favourites")
        .collect();
    assert_eq!(favourites.len(), 1);
    assert_eq!(favourites[0].asset_ids, std::slice::from_ref(&a));
    assert_eq!(api.fake.asset(&a).expect("a").updated_at, a_before);

    let (status, with_a) = api.get(&format!("/api/albums?assetId={a}"));
    assert_eq!(status, 200, "{with_a}");
    let names: BTreeSet<String> = with_a
        .as_array()
        .expect("a list")
        .iter()
        .map(|album| album["albumName"].as_str().expect("a name").to_owned())
        .collect();
    assert_eq!(names, set(&["Trip", "Favourites"]));
    assert_eq!(with_a.as_array().map(Vec::len), Some(2));
    api.finish();
}

#[test]
fn search_wildcards_checksums_and_pages() {
    let api = Api::start();
    let files: [(&str, &[u8], &str); 4] = [
        ("IMG_1.jpg", b"1", "2024-01-01T00:00:00.000Z"),
        ("IMGX1.jpg", b"2", "2024-01-02T00:00:00.000Z"),
        ("img_10.JPG", b"3", "2024-01-03T00:00:00.000Z"),
        ("other.jpg", b"4", "2024-01-04T00:00:00.000Z"),
    ];
    for (name, bytes, date) in files {
        let favorite = if name == "other.jpg" { "true" } else { "false" };
        let extra = [
            ("fileCreatedAt", date),
            ("fileModifiedAt", date),
            ("isFavorite", favorite),
        ];
        let (status, body) = api.upload_with(name, bytes, &extra);
        assert_eq!(status, 201, "{body}");
    }

    // `_` is a wildcard (ILIKE '%IMG_1%'), and the match ignores case.
    let found = names(&api.search(&json!({ "originalFileName": "IMG_1" })));
    assert_eq!(found, set(&["IMG_1.jpg", "IMGX1.jpg", "img_10.JPG"]));
    let found = names(&api.search(&json!({ "originalFileName": "IMG\\_1" })));
    assert_eq!(found, set(&["IMG_1.jpg", "img_10.JPG"]));
    let found = names(&api.search(&json!({ "originalFileName": " other " })));
    assert_eq!(found, set(&["other.jpg"]));
    // Uploads are stored under a UUID name: their path does not hold the file name.
    assert_eq!(
        api.search(&json!({ "originalPath": "/data/upload/" }))
            .len(),
        4
    );
    assert!(api.search(&json!({ "originalPath": "IMGX1" })).is_empty());

    let raw = sha1_of(b"2");
    for checksum in [b64(&raw), hex(&raw)] {
        let found = names(&api.search(&json!({ "checksum": checksum })));
        assert_eq!(found, set(&["IMGX1.jpg"]));
    }
    assert!(
        api.search(&json!({ "checksum": b64(&sha1_of(b"none")) }))
            .is_empty()
    );

    let found = names(&api.search(&json!({ "isFavorite": true })));
    assert_eq!(found, set(&["other.jpg"]));
    let found = names(&api.search(&json!({ "deviceAssetId": "img_10.JPG-device-asset-id" })));
    assert_eq!(found, set(&["img_10.JPG"]));

    let newest_first = api.search(&json!({}));
    assert_eq!(newest_first[0]["originalFileName"], "other.jpg");
    assert!(newest_first[0].get("exifInfo").is_none());
    let oldest_first = api.search(&json!({ "order": "asc", "withExif": true }));
    assert_eq!(oldest_first[0]["originalFileName"], "IMG_1.jpg");
    assert!(oldest_first[0]["exifInfo"].is_object());

    let (status, page) = api.post("/api/search/metadata", &json!({ "size": 3 }));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["assets"]["count"], 3);
    assert_eq!(page["assets"]["nextPage"], "2");
    assert_eq!(page["albums"]["total"], 0);
    let (status, page) = api.post("/api/search/metadata", &json!({ "size": 3, "page": 2 }));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["assets"]["count"], 1);
    assert_eq!(page["assets"]["nextPage"], Value::Null);
    api.finish();
}

#[test]
fn updated_after_sees_row_changes_only() {
    let api = Api::start();
    let id = api.upload_ok("A.jpg", b"a");
    let mark = now_mark();
    assert!(!updated_since(&api, &mark, &id));

    // Album changes do not touch the asset.
    let (status, album) = api.post("/api/albums", &json!({ "albumName": "Trip" }));
    assert_eq!(status, 201, "{album}");
    let (status, body) = api.put(
        &format!("/api/albums/{}/assets", id_of(&album)),
        &json!({ "ids": [id] }),
    );
    assert_eq!(status, 200, "{body}");
    api.fake.add_to_album_as_user("Other", &id);
    assert!(!updated_since(&api, &mark, &id));

    // Description and rating live in the exif row: no bump, in the UI or the API.
    api.fake
        .edit_asset(&id, None, Some("A caption".to_owned()), Some(3));
    let stored = api.fake.asset(&id).expect("the asset");
    assert_eq!(
        (stored.description.as_str(), stored.rating),
        ("A caption", Some(3))
    );
    let (status, body) = api.put(
        &format!("/api/assets/{id}"),
        &json!({ "description": "via the API", "rating": 2 }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exifInfo"]["description"], "via the API");
    assert_eq!(body["exifInfo"]["rating"], 2);
    assert!(!updated_since(&api, &mark, &id));

    // A favorite is an asset row change.
    api.fake.edit_asset(&id, Some(true), None, None);
    assert!(updated_since(&api, &mark, &id));
    let (_, asset) = api.get(&format!("/api/assets/{id}"));
    assert_eq!(asset["isFavorite"].as_bool(), Some(true));

    let mark = now_mark();
    assert!(!updated_since(&api, &mark, &id));
    let (status, body) = api.put(
        &format!("/api/assets/{id}"),
        &json!({ "isFavorite": false }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["isFavorite"].as_bool(), Some(false));
    assert!(updated_since(&api, &mark, &id));
    api.finish();
}

#[test]
fn external_library_scan_delay_and_moves() {
    let api = Api::start();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let root = dir.path().join("photos");
    write_file(&root.join("a/IMG_1.jpg"), b"one");
    write_file(&root.join("a/IMG_1.jpg.xmp"), XMP.as_bytes());
    write_file(&root.join("a/IMGX1.jpg"), b"two");
    write_file(&root.join("notes.txt"), b"not media");
    write_file(&root.join(".hidden.jpg"), b"hidden");
    write_file(&root.join("@eaDir/thumb.jpg"), b"synology thumbnail");
    let root_text = root.to_str().expect("a UTF-8 path").to_owned();
    let library = api.fake.create_external_library(&root_text);

    let (status, libraries) = api.get("/api/libraries");
    assert_eq!(status, 200, "{libraries}");
    assert_eq!(libraries[0]["id"], library.as_str());
    assert_eq!(libraries[0]["importPaths"], json!([root_text]));
    assert_eq!(libraries[0]["refreshedAt"], Value::Null);

    api.fake.set_scan_delay(Duration::from_millis(400));
    let (status, body) = api.post(&format!("/api/libraries/{library}/scan"), &json!({}));
    assert_eq!((status, body), (204, Value::Null));
    assert!(api.search(&json!({ "libraryId": library })).is_empty());
    wait_until("the delayed scan", || {
        api.search(&json!({ "libraryId": library })).len() == 2
    });

    let assets = api.fake.assets();
    assert_eq!(assets.len(), 2);
    for asset in &assets {
        assert!(asset.original_path.starts_with(&root_text), "{asset:?}");
        assert_eq!(asset.library_id.as_deref(), Some(library.as_str()));
        assert_eq!(asset.device_id, "Library Import");
        let expected = b64(&sha1_of(format!("path:{}", asset.original_path).as_bytes()));
        assert_eq!(asset.checksum, expected);
    }
    let old = assets
        .iter()
        .find(|asset| asset.original_file_name == "IMG_1.jpg")
        .expect("IMG_1.jpg imported")
        .clone();
    assert_eq!(old.rating, Some(4), "the sidecar beside the file is read");
    // Paths are matched with ILIKE: IMG_1 also finds IMGX1.
    let found = names(&api.search(&json!({ "originalPath": "a/IMG_1" })));
    assert_eq!(found, set(&["IMG_1.jpg", "IMGX1.jpg"]));
    let (status, scanned) = api.get(&format!("/api/libraries/{library}"));
    assert_eq!(status, 200, "{scanned}");
    assert!(scanned["refreshedAt"].is_string(), "{scanned}");

    // The user moves a favourite, album-filed photo: Immich sees a new file.
    api.fake.edit_asset(&old.id, Some(true), None, None);
    api.fake.add_to_album_as_user("Best", &old.id);
    api.fake.set_scan_delay(Duration::ZERO);
    move_file(&root.join("a/IMG_1.jpg"), &root.join("b/IMG_1.jpg"));
    let (status, body) = api.post(&format!("/api/libraries/{library}/scan"), &json!({}));
    assert_eq!((status, body), (204, Value::Null));

    let gone = api.fake.asset(&old.id).expect("the old asset stays");
    assert!(gone.is_offline);
    assert!(gone.deleted_at.is_some());
    let moved_path = root
        .join("b/IMG_1.jpg")
        .to_str()
        .expect("a UTF-8 path")
        .to_owned();
    let moved = api
        .fake
        .assets()
        .into_iter()
        .find(|asset| asset.original_path == moved_path)
        .expect("the moved file is a new asset");
    assert_ne!(moved.id, old.id);
    assert_ne!(moved.checksum, old.checksum);
    assert!(!moved.is_favorite);
    assert!(
        api.fake
            .albums()
            .iter()
            .all(|album| !album.asset_ids.contains(&moved.id))
    );

    let (status, asset) = api.get(&format!("/api/assets/{}", old.id));
    assert_eq!(status, 200, "{asset}");
    assert_eq!(asset["isOffline"].as_bool(), Some(true));
    assert_eq!(asset["isTrashed"].as_bool(), Some(true));
    let visible = ids(&api.search(&json!({ "libraryId": library })));
    assert_eq!(visible.len(), 2);
    assert!(visible.contains(&moved.id) && !visible.contains(&old.id));
    let offline = ids(&api.search(&json!({ "libraryId": library, "isOffline": true })));
    assert_eq!(offline, set(&[old.id.as_str()]));
    let (status, body) = api.post(
        "/api/assets/bulk-upload-check",
        &json!({ "assets": [{ "id": "old", "checksum": old.checksum }] }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["assetId"], old.id.as_str());
    assert_eq!(body["results"][0]["isTrashed"].as_bool(), Some(true));

    // Moving it back brings the old asset online and takes the new one offline.
    move_file(&root.join("b/IMG_1.jpg"), &root.join("a/IMG_1.jpg"));
    let (status, _) = api.post(&format!("/api/libraries/{library}/scan"), &json!({}));
    assert_eq!(status, 204);
    let back = api.fake.asset(&old.id).expect("the old asset");
    assert!(!back.is_offline && back.deleted_at.is_none());
    assert!(api.fake.asset(&moved.id).expect("the new asset").is_offline);

    let (status, body) = api.post(&format!("/api/libraries/{UNKNOWN_ID}/scan"), &json!({}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Library not found");
    api.finish();
}

#[test]
fn failures_latency_and_down() {
    let api = Api::start();
    api.fake.fail_next(2);
    for _ in 0..2 {
        let (status, body) = api.get("/api/users/me");
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["message"], "Internal server error");
        assert!(body.get("error").is_none(), "{body}");
    }
    let (status, body) = api.get("/api/users/me");
    assert_eq!(status, 200, "{body}");

    api.fake.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    let (status, _) = api.get("/api/users/me");
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    api.fake.set_latency(Duration::ZERO);

    api.fake.set_down(true);
    let (status, body) = Api::send(api.client.get(api.url("/api/server/ping")));
    assert_eq!((status, body), (503, Value::Null));
    api.fake.set_down(false);
    let (status, _) = Api::send(api.client.get(api.url("/api/server/ping")));
    assert_eq!(status, 200);

    assert_eq!(api.fake.request_count("GET", "/api/users/me"), 4);
    assert_eq!(api.fake.request_count("get", "/api/server/"), 2);
    let last = api.fake.requests().last().cloned();
    assert_eq!(
        last,
        Some(("GET".to_owned(), "/api/server/ping".to_owned()))
    );
    api.finish();
}

#[test]
fn reset_forgets_everything_but_the_key() {
    let api = Api::start();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let bytes = b"a photo uploaded twice";
    let old = api.upload_ok("A.jpg", bytes);
    let (status, _) = api.post(
        "/api/albums",
        &json!({ "albumName": "Trip", "assetIds": [old] }),
    );
    assert_eq!(status, 201);
    api.fake
        .create_external_library(dir.path().to_str().expect("a UTF-8 path"));

    api.fake.reset();
    assert!(api.fake.assets().is_empty());
    assert!(api.fake.albums().is_empty());
    assert!(api.fake.libraries().is_empty());
    let (status, albums) = api.get("/api/albums");
    assert_eq!((status, albums), (200, json!([])));
    assert!(api.search(&json!({})).is_empty());
    let (status, _) = api.get(&format!("/api/assets/{old}"));
    assert_eq!(status, 400);

    let new = api.upload_ok("A.jpg", bytes);
    assert_ne!(new, old);
    api.finish();
}

#[test]
fn validate_response_reports_contract_breaks() {
    let version = json!({ "major": 2, "minor": 4, "patch": 1 });
    schema::validate_response("GET", "/api/server/version", 200, &version)
        .expect("a valid version");
    let error = schema::validate_response("GET", "/server/version", 200, &json!({ "major": 2 }))
        .expect_err("missing fields are reported");
    assert!(error.contains("minor"), "{error}");

    let api = Api::start();
    let id = api.upload_ok("IMG_9.jpg", b"nine");
    let (status, asset) = api.get(&format!("/api/assets/{id}"));
    assert_eq!(status, 200, "{asset}");
    schema::validate_response("GET", "/api/assets/{id}", 200, &asset)
        .expect("a real answer is valid");

    let mut missing_id = asset.clone();
    missing_id.as_object_mut().expect("an object").remove("id");
    let error = schema::validate_response("GET", "/api/assets/{id}", 200, &missing_id)
        .expect_err("a missing id is reported");
    assert!(error.contains("\"id\""), "{error}");

    let mut extra = asset.clone();
    extra["notInTheSpec"] = json!(true);
    let error = schema::validate_response("GET", "/assets/{id}", 200, &extra)
        .expect_err("an undocumented property is reported");
    assert!(error.contains("notInTheSpec"), "{error}");

    let mut null_checksum = asset.clone();
    null_checksum["checksum"] = Value::Null;
    assert!(schema::validate_response("GET", "/assets/{id}", 200, &null_checksum).is_err());
    let mut null_duplicate = asset.clone();
    null_duplicate["duplicateId"] = Value::Null;
    schema::validate_response("GET", "/assets/{id}", 200, &null_duplicate)
        .expect("duplicateId is nullable");
    let mut bad_date = asset;
    bad_date["updatedAt"] = json!("yesterday");
    assert!(schema::validate_response("GET", "/assets/{id}", 200, &bad_date).is_err());

    assert!(schema::validate_response("GET", "/assets/{id}", 201, &json!({})).is_err());
    schema::validate_response("GET", "/assets/{id}", 400, &json!({ "message": "x" }))
        .expect("error bodies are not part of the contract");
    let duplicate = json!({ "id": id, "status": "duplicate" });
    schema::validate_response("POST", "/assets", 200, &duplicate).expect("200 is checked as 201");
    let weird = json!({ "id": id, "status": "weird" });
    assert!(schema::validate_response("POST", "/assets", 200, &weird).is_err());

    assert!(schema::validate_request_body("POST", "/albums", &json!({})).is_err());
    schema::validate_request_body(
        "POST",
        "/api/albums",
        &json!({ "albumName": "x", "extra": 1 }),
    )
    .expect("unknown request properties are stripped, not refused");
    let messages =
        schema::request_messages("PUT", "/albums/{id}/assets", &json!({ "ids": ["nope"] }))
            .expect("the operation exists");
    assert_eq!(messages, ["each value in ids must be a UUID"]);
    assert!(schema::validate_component("LibraryResponseDto", &json!({}), true).is_err());
    assert!(schema::has_operation("POST", "/api/search/metadata"));
    api.finish();
}
