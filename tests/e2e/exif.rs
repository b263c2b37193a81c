//! The `exif` stage against exiftool's reading of every corpus file
//! (`../shared/corpus/expected.json`), under keepsake's precedence.

use std::collections::BTreeMap;

use keepsake_tests::*;

/// exiftool's `YYYY:MM:DD HH:MM:SS[.ss][±HH:MM|Z]` as keepsake writes it:
/// ISO 8601, fraction without trailing zeros, `Z` as `+00:00`.
fn iso(exiftool: &str, subsec: Option<&str>, offset: Option<&str>) -> String {
    let text = exiftool.trim().trim_end_matches(" DST");
    let (date, rest) = text.split_at(10);
    let mut out = format!("{}T", date.replace(':', "-"));
    let time = &rest[1..9];
    out.push_str(time);
    let mut tail = &rest[9..];
    let mut fraction = String::new();
    if let Some(after) = tail.strip_prefix('.') {
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        tail = &after[digits.len()..];
        fraction = digits;
    }
    if let Some(sub) = subsec {
        fraction = sub.to_string();
    }
    let fraction = fraction.trim_end_matches('0');
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    let offset = offset
        .map(str::to_string)
        .or_else(|| (!tail.is_empty()).then(|| tail.to_string()));
    match offset.as_deref() {
        Some("Z") => out.push_str("+00:00"),
        Some(o) => out.push_str(o),
        None => {}
    }
    out
}

/// What keepsake should decide for a corpus file, from exiftool's fields,
/// following keepsake's precedence; `None` when no metadata dates it (the
/// stage then falls back to the name, the folder or the mtime).
fn expected(file: &serde_json::Value) -> Option<(String, &'static str)> {
    // exiftool's JSON prints "054" as a string and 813 as a number.
    let owned: BTreeMap<&str, String> = [
        "DateTimeOriginal",
        "DateTimeOriginalGroup",
        "SubSecTimeOriginal",
        "OffsetTimeOriginal",
        "CreateDate",
        "CreateDateGroup",
        "CreationDate",
        "CreationDateGroup",
        "GPSDateTime",
    ]
    .into_iter()
    .filter_map(|k| {
        let v = file.get(k)?;
        Some((
            k,
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
        ))
    })
    .collect();
    let s = |k: &str| owned.get(k).map(String::as_str);
    match (s("DateTimeOriginal"), s("DateTimeOriginalGroup")) {
        (Some(dto), Some("ExifIFD")) => {
            return Some((
                iso(dto, s("SubSecTimeOriginal"), s("OffsetTimeOriginal")),
                "exif:DateTimeOriginal",
            ));
        }
        // exiftool's composite from IPTC DateCreated + TimeCreated.
        (Some(dto), Some("Composite")) => return Some((iso(dto, None, None), "iptc:DateCreated")),
        (Some(dto), Some("UserData")) => return Some((iso(dto, None, None), "quicktime:©day")),
        _ => {}
    }
    match (s("CreateDate"), s("CreateDateGroup")) {
        (Some(cd), Some("ExifIFD")) => return Some((iso(cd, None, None), "exif:CreateDate")),
        (Some(cd), Some("XMP-xmp")) => return Some((iso(cd, None, None), "xmp:xmp:CreateDate")),
        _ => {}
    }
    if let (Some(cd), Some("Keys")) = (s("CreationDate"), s("CreationDateGroup")) {
        return Some((iso(cd, None, None), "quicktime:CreationDate"));
    }
    if let (Some(cd), Some("QuickTime")) = (s("CreateDate"), s("CreateDateGroup")) {
        return Some((iso(cd, None, Some("+00:00")), "quicktime:CreateDate(UTC)"));
    }
    if let Some(gps) = s("GPSDateTime") {
        return Some((iso(gps, None, None), "xmp:exif:GPSTimeStamp(UTC)"));
    }
    None
}

/// Files where keepsake knowingly differs from exiftool, and why.
const INTENTIONAL: &[(&str, &str)] = &[
    // AVCHD keeps its date in H.264 SEI messages inside the video stream;
    // keepsake does not parse video streams, so these fall back to the mtime.
    ("exiftool_M2TS.mts", "file:mtime"),
    ("mde_Sony ILCE-7M3 (A7M3).mts", "file:mtime"),
    // A fuzzed JPEG (ImageTestSuite) whose first segment claims 452 bytes
    // of its 357: cut short, so quarantined before any stage dates it.
    ("mde_754664a12e36abff7950e796c906ae39.jpg", ""),
];

#[test]
fn capture_times_agree_with_exiftool_on_the_whole_corpus() {
    let expected_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus_dir().join("expected.json")).unwrap())
            .unwrap();
    let files = expected_json["files"].as_object().unwrap();
    let sandbox = Sandbox::new();
    sandbox.write_config_with("[\"dedup\", \"exif\", \"library\"]", "copy", "");
    copy_tree(&corpus_media(), &sandbox.inbox());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");

    let jobs: BTreeMap<String, serde_json::Value> = sandbox
        .jobs()
        .into_iter()
        .map(|j| (j["relative_path"].as_str().unwrap().to_string(), j))
        .collect();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (name, file) in files {
        let job = &jobs[name];
        let (time, source) = (
            job["capture_time"].as_str().unwrap_or(""),
            job["capture_source"].as_str().unwrap_or(""),
        );
        if let Some((_, why)) = INTENTIONAL.iter().find(|(n, _)| n == name) {
            assert_eq!(source, *why, "{name}");
            continue;
        }
        match expected(file) {
            Some((want_time, want_source)) => {
                if time != want_time || source != want_source {
                    mismatches.push(format!("{name}: got {time} from {source}, exiftool says {want_time} ({want_source})"));
                }
            }
            None => {
                // No metadata date: the name (phockup's date_20170101_010101),
                // else the modification time.
                let want = if name.starts_with("phockup_date_") {
                    "filename:compact"
                } else {
                    "file:mtime"
                };
                if source != want && file.get("Error").is_none() {
                    mismatches.push(format!(
                        "{name}: got {time} from {source}, expected a date from {want}"
                    ));
                }
            }
        }
        checked += 1;
    }
    assert!(
        mismatches.is_empty(),
        "{} of {checked} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(checked + INTENTIONAL.len(), 70);
}

#[test]
fn xmp_and_takeout_sidecars_date_their_file() {
    let sandbox = Sandbox::new();
    let sidecars = corpus_dir().join("sidecars");
    let undated = std::fs::read(corpus_media().join("elodie_no-exif.jpg")).unwrap();
    let dated = std::fs::read(corpus_media().join("exiftool_Canon.jpg")).unwrap();
    let put = |name: &str, bytes: &[u8]| std::fs::write(sandbox.inbox().join(name), bytes).unwrap();
    // A sidecar overrides the embedded date (as in Immich).
    put("IMG_0001.jpg", &dated);
    sandbox.add("IMG_0001.jpg.xmp", &sidecars.join("exiftool_XMP.xmp"));
    // Takeout, in its three namings.
    fake_jpeg(&sandbox.inbox().join("IMG_3439.jpg"), 1, 3000);
    sandbox.add(
        "IMG_3439.jpg.json",
        &sidecars.join("osxphotos_IMG_3439.jpg.json"),
    );
    fake_jpeg(&sandbox.inbox().join("IMG_4179(1).jpeg"), 2, 3000);
    put(
        "IMG_4179.jpeg(1).json",
        &std::fs::read(sidecars.join("osxphotos_IMG_4179.jpeg(1).json")).unwrap(),
    );
    put("IMG_4547.jpg", &undated);
    sandbox.add(
        "IMG_4547.jpg.supplemental-metadata.json",
        &sidecars.join("osxphotos_IMG_4547.jpg.supplemental-metadata.json"),
    );
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    let jobs = sandbox.jobs();
    let time = |name: &str| {
        let job = job_named(&jobs, name);
        (
            job["capture_time"].as_str().unwrap().to_string(),
            job["capture_source"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        time("IMG_0001.jpg"),
        (
            "2005-06-09T20:09:27+02:00".into(),
            "xmp-sidecar:exif:DateTimeOriginal".into()
        )
    );
    assert_eq!(
        time("IMG_3439.jpg"),
        (
            "2018-11-28T22:14:00+00:00".into(),
            "takeout:photoTakenTime(UTC)".into()
        )
    );
    assert_eq!(
        time("IMG_4179(1).jpeg"),
        (
            "2021-04-08T23:04:55+00:00".into(),
            "takeout:photoTakenTime(UTC)".into()
        )
    );
    assert_eq!(
        time("IMG_4547.jpg"),
        (
            "2017-06-20T07:48:56+00:00".into(),
            "takeout:photoTakenTime(UTC)".into()
        )
    );
    // Placed by that date.
    let library = hash_tree(&sandbox.library());
    assert!(
        library
            .keys()
            .any(|p| p.starts_with("2005/06") && p.to_string_lossy().ends_with("_IMG_0001.jpg")),
        "{library:?}"
    );
    assert!(
        library.keys().any(|p| p.starts_with("2018/11")),
        "{library:?}"
    );
}

#[test]
fn damaged_files_in_the_sandbox_still_get_a_date_and_never_fail() {
    let sandbox = Sandbox::new();
    let mut seeds: Vec<_> = std::fs::read_dir(corpus_media())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    seeds.sort();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..200usize {
        let seed = &seeds[i % seeds.len()];
        let mut bytes = std::fs::read(seed).unwrap();
        bytes.truncate(1 << 20);
        if bytes.is_empty() {
            continue;
        }
        for _ in 0..4 {
            let at = (next() as usize) % bytes.len().min(8192);
            bytes[at] = next() as u8;
        }
        if i % 3 == 0 {
            let cut = (next() as usize) % bytes.len();
            bytes.truncate(cut.max(16));
        }
        let name = seed.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(sandbox.inbox().join(format!("{i:03}_{name}")), bytes).unwrap();
    }
    let (code, report) = sandbox.ingest();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(code, 0);
    for job in sandbox.jobs() {
        if job["state"] == "done" {
            assert!(job["capture_time"].is_string(), "{job}");
        }
    }
}

fn exiftool() -> Option<std::path::PathBuf> {
    let ok = std::process::Command::new("exiftool")
        .arg("-ver")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| std::path::PathBuf::from("exiftool"))
}

/// Write tags into a copy of a corpus file with exiftool.
pub(crate) fn generate(sandbox: &Sandbox, from: &str, name: &str, tags: &[&str]) {
    let dest = sandbox.inbox().join(name);
    std::fs::write(&dest, std::fs::read(corpus_media().join(from)).unwrap()).unwrap();
    // A description makes every generated file's bytes unique (else dedup
    // would take the undated ones for copies of each other).
    let out = std::process::Command::new("exiftool")
        .args(["-q", "-overwrite_original", "-all="])
        .arg(format!("-ImageDescription={name}"))
        .args(tags)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exiftool {tags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generated_cases_follow_the_precedence() {
    if exiftool().is_none() {
        // scripts/test.sh installs exiftool; without it this test cannot
        // generate its files, and says so instead of passing silently.
        panic!("exiftool is not installed (apt-get install libimage-exiftool-perl)");
    }
    let sandbox = Sandbox::new();
    let jpeg = "exiftool_Canon.jpg";
    // OffsetTime belongs to ModifyDate: never applied to DateTimeOriginal.
    generate(
        &sandbox,
        jpeg,
        "trap.jpg",
        &[
            "-DateTimeOriginal=2020:01:01 10:00:00",
            "-OffsetTime=+05:00",
        ],
    );
    generate(
        &sandbox,
        jpeg,
        "offset.jpg",
        &[
            "-DateTimeOriginal=2020:01:01 10:00:00",
            "-OffsetTime=+05:00",
            "-OffsetTimeOriginal=-03:00",
        ],
    );
    generate(
        &sandbox,
        jpeg,
        "subsec.jpg",
        &[
            "-DateTimeOriginal=2020:01:01 10:00:00",
            "-SubSecTimeOriginal=042",
        ],
    );
    // Invalid DateTimeOriginal values fall through to CreateDate.
    generate(
        &sandbox,
        jpeg,
        "zero.jpg",
        &[
            "-DateTimeOriginal#=0000:00:00 00:00:00",
            "-CreateDate=2021:06:01 08:00:00",
        ],
    );
    generate(
        &sandbox,
        jpeg,
        "reset.jpg",
        &[
            "-DateTimeOriginal=2000:01:01 00:00:00",
            "-CreateDate=2021:06:02 08:00:00",
        ],
    );
    // A reset clock's Unix epoch, in UTC and in Tokyo's local time: the
    // name dates these (`IMG_YYYYMMDD_HHMMSS`, and Samsung's).
    generate(
        &sandbox,
        jpeg,
        "IMG_20150704_101010.jpg",
        &["-DateTimeOriginal=1970:01:01 00:00:00"],
    );
    generate(
        &sandbox,
        jpeg,
        "20150705_111111.jpg",
        &[
            "-DateTimeOriginal=1970:01:01 09:00:00",
            "-CreateDate=1970:01:01 09:00:00",
        ],
    );
    generate(
        &sandbox,
        jpeg,
        "future.jpg",
        &[
            "-DateTimeOriginal=2099:01:01 00:00:00",
            "-CreateDate=2021:06:03 08:00:00",
        ],
    );
    generate(
        &sandbox,
        jpeg,
        "old.jpg",
        &[
            "-DateTimeOriginal=1904:01:01 00:00:00",
            "-CreateDate=2021:06:04 08:00:00",
        ],
    );
    // A video with only the UTC movie header date.
    generate(
        &sandbox,
        "exiftool_QuickTime.mov",
        "utc.mov",
        &["-QuickTime:CreateDate=2022:03:04 05:06:07"],
    );
    // Only the name dates these.
    generate(&sandbox, jpeg, "PXL_20230102_030405678.jpg", &[]);
    generate(&sandbox, jpeg, "IMG-20190704-WA0007.jpg", &[]);
    // A PNG named .jpg is read as the PNG it is.
    sandbox.add("really-a-png.jpg", &corpus_media().join("elodie_photo.png"));
    generate(&sandbox, jpeg, "Screenshot_20240512-101010.jpg", &[]);
    std::fs::create_dir_all(sandbox.inbox().join("2018-05-06 Wedding")).unwrap();
    generate(&sandbox, jpeg, "2018-05-06 Wedding/DSC_0001.jpg", &[]);

    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    let jobs = sandbox.jobs();
    let got = |name: &str| {
        let job = job_named(&jobs, name);
        let text = |key: &str| {
            job[key]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no {key}: {job}"))
                .to_string()
        };
        (text("capture_time"), text("capture_source"))
    };
    let want = |time: &str, source: &str| (time.to_string(), source.to_string());
    assert_eq!(
        got("trap.jpg"),
        want("2020-01-01T10:00:00", "exif:DateTimeOriginal")
    );
    assert_eq!(
        got("offset.jpg"),
        want("2020-01-01T10:00:00-03:00", "exif:DateTimeOriginal")
    );
    assert_eq!(
        got("subsec.jpg"),
        want("2020-01-01T10:00:00.042", "exif:DateTimeOriginal")
    );
    assert_eq!(
        got("zero.jpg"),
        want("2021-06-01T08:00:00", "exif:CreateDate")
    );
    assert_eq!(
        got("reset.jpg"),
        want("2021-06-02T08:00:00", "exif:CreateDate")
    );
    assert_eq!(
        got("IMG_20150704_101010.jpg"),
        want("2015-07-04T10:10:10", "filename:compact")
    );
    assert_eq!(
        got("20150705_111111.jpg"),
        want("2015-07-05T11:11:11", "filename:compact")
    );
    let placed = job_named(&jobs, "IMG_20150704_101010.jpg")["destination"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(placed.contains("/2015/07/"), "{placed}");
    assert_eq!(
        got("future.jpg"),
        want("2021-06-03T08:00:00", "exif:CreateDate")
    );
    assert_eq!(
        got("old.jpg"),
        want("2021-06-04T08:00:00", "exif:CreateDate")
    );
    assert_eq!(
        got("utc.mov"),
        want("2022-03-04T05:06:07+00:00", "quicktime:CreateDate(UTC)")
    );
    assert_eq!(
        got("PXL_20230102_030405678.jpg"),
        want("2023-01-02T03:04:05.678+00:00", "filename:pixel")
    );
    assert_eq!(
        got("IMG-20190704-WA0007.jpg"),
        want("2019-07-04T00:00:00", "filename:whatsapp")
    );
    assert_eq!(
        got("Screenshot_20240512-101010.jpg"),
        want("2024-05-12T10:10:10", "filename:compact")
    );
    assert_eq!(
        got("2018-05-06 Wedding/DSC_0001.jpg"),
        want("2018-05-06T00:00:00", "folder")
    );
    assert_eq!(
        got("really-a-png.jpg"),
        want("2015-01-18T12:01:01", "exif:DateTimeOriginal")
    );
    let png = job_named(&jobs, "really-a-png.jpg");
    assert_eq!(
        png["media_kind"], "png",
        "media kind comes from the bytes, not the name"
    );
    // Each was read back by exiftool itself before the run: the generator
    // wrote what the test claims.
    let out = std::process::Command::new("exiftool")
        .args(["-s3", "-DateTimeOriginal"])
        .arg(sandbox.inbox().join("offset.jpg"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2020:01:01 10:00:00"
    );
}

/// exiftool's XMP DateTimeOriginal of a sidecar, as keepsake writes times.
fn exiftool_date(path: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("exiftool")
        .args([
            "-s3",
            "-d",
            "%Y-%m-%dT%H:%M:%S",
            "-XMP-exif:DateTimeOriginal",
        ])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn sidecar_of(dest: &std::path::Path) -> std::path::PathBuf {
    dest.with_file_name(format!(
        "{}.xmp",
        dest.file_name().unwrap().to_string_lossy()
    ))
}

#[test]
fn sidecars_carry_dates_from_outside_the_file_and_merge_what_was_there() {
    assert!(
        exiftool().is_some(),
        "exiftool is not installed (apt-get install libimage-exiftool-perl)"
    );
    let sandbox = Sandbox::new();
    let sidecars = corpus_dir().join("sidecars");
    let put = |name: &str, bytes: &[u8]| std::fs::write(sandbox.inbox().join(name), bytes).unwrap();
    // Dated by Takeout: a new sidecar with the date and Takeout's GPS.
    fake_jpeg(&sandbox.inbox().join("IMG_3439.jpg"), 1, 3000);
    sandbox.add(
        "IMG_3439.jpg.json",
        &sidecars.join("osxphotos_IMG_3439.jpg.json"),
    );
    // Dated by its name, with a sidecar of its own (a rating, no date):
    // merged, nothing dropped.
    fake_jpeg(&sandbox.inbox().join("PXL_20230102_030405678.jpg"), 2, 3000);
    put(
        "PXL_20230102_030405678.jpg.xmp",
        br#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"/></rdf:RDF></x:xmpmeta>"#,
    );
    // Dated by its own EXIF: no sidecar (no churn).
    sandbox.add("IMG_0002.jpg", &corpus_media().join("exiftool_Canon.jpg"));
    // Dated by its XMP sidecar: copied as it is.
    sandbox.add("IMG_0001.jpg", &corpus_media().join("exiftool_Sony.jpg"));
    sandbox.add("IMG_0001.jpg.xmp", &sidecars.join("exiftool_XMP.xmp"));
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");

    let jobs = sandbox.jobs();
    for job in &jobs {
        let dest = std::path::PathBuf::from(job["destination"].as_str().unwrap());
        // Immich's rule: IMG.jpg.xmp wins over IMG.xmp.
        let sidecar = [sidecar_of(&dest), dest.with_extension("xmp")]
            .into_iter()
            .find(|p| p.exists());
        let decided = job["capture_time"].as_str().unwrap();
        let relative = job["relative_path"].as_str().unwrap();
        if relative == "IMG_0002.jpg" {
            assert!(
                sidecar.is_none(),
                "no churn for a file dated by its own EXIF"
            );
            continue;
        }
        let sidecar =
            sidecar.unwrap_or_else(|| panic!("{relative}: no sidecar next to {}", dest.display()));
        let read_back =
            exiftool_date(&sidecar).unwrap_or_else(|| panic!("{}: no date", sidecar.display()));
        // exiftool prints whole seconds; the decided time may add a fraction and offset.
        assert!(
            decided.starts_with(&read_back),
            "{relative}: decided {decided}, the sidecar says {read_back}"
        );
    }
    let dest_of = |relative: &str| {
        let job = job_named(&jobs, relative);
        std::path::PathBuf::from(job["destination"].as_str().unwrap())
    };
    let merged = sidecar_of(&dest_of("PXL_20230102_030405678.jpg"));
    let rating = std::process::Command::new("exiftool")
        .args(["-s3", "-XMP-xmp:Rating"])
        .arg(&merged)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rating.stdout).trim(),
        "5",
        "the existing rating survives the merge"
    );
    let gps = std::process::Command::new("exiftool")
        .args(["-n", "-s3", "-XMP-exif:GPSLatitude"])
        .arg(sidecar_of(&dest_of("IMG_3439.jpg")))
        .output()
        .unwrap();
    let latitude: f64 = String::from_utf8_lossy(&gps.stdout).trim().parse().unwrap();
    assert!((latitude - 38.8895).abs() < 1e-5, "{latitude}");
    // A sidecar that dated its file travels byte-identical.
    assert_eq!(
        std::fs::read(sidecar_of(&dest_of("IMG_0001.jpg"))).unwrap(),
        std::fs::read(sidecars.join("exiftool_XMP.xmp")).unwrap()
    );
}

#[test]
fn live_photo_videos_are_placed_beside_their_stills() {
    assert!(
        exiftool().is_some(),
        "exiftool is not installed (apt-get install libimage-exiftool-perl)"
    );
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.inbox().join("stills")).unwrap();
    std::fs::create_dir_all(sandbox.inbox().join("videos")).unwrap();
    // Paired by Apple's MediaGroupUUID ↔ the video's content identifier,
    // even under another name in another folder.
    sandbox.add(
        "stills/IMG_5195.HEIC",
        &corpus_media().join("exifsamples_IMG_5195.HEIC"),
    );
    // exiftool 12.57 cannot write Keys:ContentIdentifier, so the test builds
    // the movie's atoms itself and has exiftool read them back.
    let clip = sandbox.inbox().join("videos/clip.mov");
    std::fs::write(
        &clip,
        quicktime_with_keys(&[
            (
                "com.apple.quicktime.content.identifier",
                "570F1469-09C7-4E50-9875-05F21D5BD166",
            ),
            (
                "com.apple.quicktime.creationdate",
                "2021-04-11T15:47:54-0500",
            ),
        ]),
    )
    .unwrap();
    let read_back = std::process::Command::new("exiftool")
        .args(["-s3", "-Keys:ContentIdentifier"])
        .arg(&clip)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_back.stdout).trim(),
        "570F1469-09C7-4E50-9875-05F21D5BD166"
    );
    // Paired by name and capture times 2 s apart.
    generate(
        &sandbox,
        "exiftool_Canon.jpg",
        "IMG_0100.jpg",
        &["-DateTimeOriginal=2020:01:01 10:00:00"],
    );
    generate(
        &sandbox,
        "mde_with-gps.mov",
        "IMG_0100.MOV",
        &["-Keys:CreationDate=2020:01:01 10:00:02+00:00"],
    );
    // The same name months apart is not a pair.
    generate(
        &sandbox,
        "exiftool_Canon.jpg",
        "IMG_0200.jpg",
        &["-DateTimeOriginal=2020:01:01 10:00:00"],
    );
    generate(
        &sandbox,
        "mde_with-gps.mov",
        "IMG_0200.MOV",
        &["-Keys:CreationDate=2020:06:01 10:00:00+00:00"],
    );
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    let jobs = sandbox.jobs();
    let job = |name: &str| job_named(&jobs, name).clone();
    let dest = |name: &str| job(name)["destination"].as_str().unwrap().to_string();
    let beside = |still: &str, ext: &str| {
        let still = dest(still);
        format!("{}.{ext}", &still[..still.rfind('.').unwrap()])
    };
    assert_eq!(
        dest("videos/clip.mov"),
        beside("stills/IMG_5195.HEIC", "mov")
    );
    assert_eq!(
        job("videos/clip.mov")["facts"]["live.still_job"],
        job("stills/IMG_5195.HEIC")["id"]
    );
    assert_eq!(dest("IMG_0100.MOV"), beside("IMG_0100.jpg", "MOV"));
    assert_ne!(dest("IMG_0200.MOV"), beside("IMG_0200.jpg", "MOV"));
    assert!(
        dest("IMG_0200.MOV").contains("/2020/06/"),
        "{}",
        dest("IMG_0200.MOV")
    );
    assert!(job("IMG_0200.MOV")["facts"].get("live.still_job").is_none());
}

/// A minimal QuickTime movie: `ftyp`, and `moov` with a movie header and
/// Apple `keys`/`ilst` metadata.
fn quicktime_with_keys(items: &[(&str, &str)]) -> Vec<u8> {
    fn atom(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }
    let mut mvhd = vec![0u8; 100];
    mvhd[12..16].copy_from_slice(&600u32.to_be_bytes()); // time scale
    let mut keys = vec![0, 0, 0, 0];
    keys.extend_from_slice(&(items.len() as u32).to_be_bytes());
    let mut ilst = Vec::new();
    for (i, (key, value)) in items.iter().enumerate() {
        keys.extend_from_slice(&((key.len() + 8) as u32).to_be_bytes());
        keys.extend_from_slice(b"mdta");
        keys.extend_from_slice(key.as_bytes());
        let mut data = vec![0, 0, 0, 1, 0, 0, 0, 0]; // UTF-8, default locale
        data.extend_from_slice(value.as_bytes());
        ilst.extend(atom(&(i as u32 + 1).to_be_bytes(), &atom(b"data", &data)));
    }
    let mut hdlr = vec![0u8; 8];
    hdlr.extend_from_slice(b"mdta");
    hdlr.extend_from_slice(&[0u8; 13]);
    let meta = [
        atom(b"hdlr", &hdlr),
        atom(b"keys", &keys),
        atom(b"ilst", &ilst),
    ]
    .concat();
    let moov = [atom(b"mvhd", &mvhd), atom(b"meta", &meta)].concat();
    [
        atom(b"ftyp", b"qt  \0\0\0\0qt  "),
        atom(b"moov", &moov),
        atom(b"mdat", b""),
    ]
    .concat()
}

/// The bytes from the first start-of-scan marker on: a JPEG's image data.
fn scan_data(jpeg: &[u8]) -> &[u8] {
    let at = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    &jpeg[at..]
}

#[test]
fn embed_mode_writes_xmp_into_the_library_copy_of_a_jpeg_only() {
    assert!(
        exiftool().is_some(),
        "exiftool is not installed (apt-get install libimage-exiftool-perl)"
    );
    let sandbox = Sandbox::new();
    sandbox.write_config("[stages.exif]\nwrite = \"embed\"\n");
    generate(
        &sandbox,
        "exiftool_Canon.jpg",
        "PXL_20230102_030405678.jpg",
        &[],
    );
    generate(
        &sandbox,
        "exiftool_Sony.jpg",
        "IMG_20190704_101530.jpg",
        &["-XMP-xmp:Rating=4"],
    );
    generate(
        &sandbox,
        "exiftool_PNG.png",
        "Screenshot_20240512-101010.png",
        &[],
    );
    let before = hash_tree(&sandbox.inbox());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        hash_tree(&sandbox.inbox()),
        before,
        "the inbox is never touched"
    );
    let jobs = sandbox.jobs();
    for name in ["PXL_20230102_030405678.jpg", "IMG_20190704_101530.jpg"] {
        let job = job_named(&jobs, name);
        let dest = std::path::PathBuf::from(job["destination"].as_str().unwrap());
        let original = std::fs::read(sandbox.inbox().join(name)).unwrap();
        let copy = std::fs::read(&dest).unwrap();
        assert_ne!(original, copy, "{name}: the metadata was embedded");
        assert_eq!(
            scan_data(&original),
            scan_data(&copy),
            "{name}: the image data is byte-identical"
        );
        assert!(
            !sidecar_of(&dest).exists(),
            "{name}: embedded, so no sidecar"
        );
        let read_back =
            exiftool_date(&dest).unwrap_or_else(|| panic!("{name}: exiftool reads no date"));
        assert!(
            job["capture_time"]
                .as_str()
                .unwrap()
                .starts_with(&read_back),
            "{job} vs {read_back}"
        );
        // The asset is still known by the original's bytes: a copy of the
        // inbox file is a duplicate.
        assert_eq!(
            job["blake3"].as_str().unwrap(),
            blake3_of(&sandbox.inbox().join(name))
        );
    }
    let merged = job_named(&jobs, "IMG_20190704_101530.jpg");
    let rating = std::process::Command::new("exiftool")
        .args(["-s3", "-XMP-xmp:Rating"])
        .arg(merged["destination"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rating.stdout).trim(),
        "4",
        "the existing XMP survives the merge"
    );
    // A PNG cannot take it: a sidecar instead.
    let png = job_named(&jobs, "Screenshot_20240512-101010.png");
    assert!(sidecar_of(std::path::Path::new(png["destination"].as_str().unwrap())).exists());
    // Idempotent: nothing changes the second time.
    let library = hash_tree(&sandbox.library());
    let (_, report) = sandbox.ingest();
    assert_eq!(report["processed"], 0);
    assert_eq!(hash_tree(&sandbox.library()), library);
    sandbox.add(
        "again.jpg",
        &sandbox.inbox().join("PXL_20230102_030405678.jpg"),
    );
    let (_, report) = sandbox.ingest();
    assert_eq!(report["duplicates"], 1, "{report}");
}
