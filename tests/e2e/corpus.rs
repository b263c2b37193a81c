//! The whole shared corpus through the default pipeline.

use std::path::Path;

use keepsake_tests::*;

#[test]
fn every_corpus_file_is_placed_or_accounted_for_with_identical_bytes() {
    let sandbox = Sandbox::new();
    copy_tree(&corpus_media(), &sandbox.inbox());
    let before = hash_tree(&sandbox.inbox());
    assert_eq!(before.len(), 70, "the corpus has 70 media files");

    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["discovered"], 70);
    assert_eq!(report["processed"], 70);
    assert_eq!(report["failed"], 0);

    let jobs = sandbox.jobs();
    assert_eq!(jobs.len(), 70);
    for job in &jobs {
        let state = job["state"].as_str().unwrap();
        let source = Path::new(job["source_path"].as_str().unwrap());
        match state {
            "done" => {
                let dest = Path::new(job["destination"].as_str().unwrap());
                assert_eq!(blake3_of(dest), blake3_of(source), "{}", source.display());
                assert_eq!(job["blake3"].as_str().unwrap(), blake3_of(source));
                assert_eq!(job["sha1"].as_str().unwrap().len(), 40);
                assert!(
                    job["capture_time"].as_str().is_some_and(|t| t.len() >= 19),
                    "{job}"
                );
                assert!(job["capture_source"].is_string());
            }
            "duplicate" => assert!(job["duplicate_of"].is_u64(), "{job}"),
            "quarantined" => {
                assert!(
                    job["reason"].as_str().is_some_and(|r| !r.is_empty()),
                    "{job}"
                );
                let dest = Path::new(job["destination"].as_str().unwrap());
                assert_eq!(
                    blake3_of(dest),
                    blake3_of(source),
                    "quarantine is byte-identical"
                );
            }
            other => panic!("job in state {other}: {job}"),
        }
    }
    // The one empty file is quarantined, with a reason a person understands.
    let empty = job_named(&jobs, "elodie_invalid.jpg");
    assert_eq!(empty["state"], "quarantined");
    assert!(empty["reason"].as_str().unwrap().contains("empty file"));
    // So is the one cut short (a fuzzed JPEG whose first segment runs past
    // its end), and no other: every whole file of the corpus is placed.
    let cut = job_named(&jobs, "mde_754664a12e36abff7950e796c906ae39.jpg");
    assert_eq!(cut["state"], "quarantined", "{cut}");
    assert!(
        cut["reason"]
            .as_str()
            .unwrap()
            .contains("past the end of the file"),
        "{cut}"
    );
    let mut quarantined: Vec<&str> = jobs
        .iter()
        .filter(|j| j["state"] == "quarantined")
        .map(|j| j["relative_path"].as_str().unwrap())
        .collect();
    quarantined.sort();
    assert_eq!(
        quarantined,
        [
            "elodie_invalid.jpg",
            "mde_754664a12e36abff7950e796c906ae39.jpg"
        ],
        "a whole corpus file was taken for a cut one"
    );
    // Media kinds come from the bytes.
    let kind = |name: &str| job_named(&jobs, name)["media_kind"].clone();
    assert_eq!(kind("exifsamples_IMG_5195.HEIC"), "heic");
    assert_eq!(kind("exiftool_CanonRaw.cr3"), "raw");
    assert_eq!(kind("exiftool_Nikon.nef"), "raw");
    assert_eq!(kind("mde_Sony ILCE-7M3 (A7M3).mts"), "video");
    assert_eq!(kind("immich_denali.webp"), "webp");
    assert_consistent(&sandbox, &before);

    // A second ingest changes nothing and reads no file: every file is
    // skipped by its fingerprint before a byte is read.
    let library_before = hash_tree(&sandbox.library());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0);
    assert_eq!(report["unchanged"], 70);
    assert_eq!(report["processed"], 0);
    assert_eq!(report["bytes_hashed"], 0);
    assert_eq!(report["stage_calls"], 0);
    assert_eq!(hash_tree(&sandbox.library()), library_before);
    assert_eq!(hash_tree(&sandbox.inbox()), before);
}

#[test]
fn duplicates_are_recorded_against_the_first_and_never_placed_twice() {
    let sandbox = Sandbox::new();
    let photo = corpus_media().join("exiftool_Canon.jpg");
    for name in ["a/IMG_0001.JPG", "b/IMG_0001.JPG", "c/copy of it.jpg"] {
        let dest = sandbox.inbox().join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, std::fs::read(&photo).unwrap()).unwrap();
    }
    let before = hash_tree(&sandbox.inbox());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 1);
    assert_eq!(report["duplicates"], 2);
    let jobs = sandbox.jobs();
    let first = jobs.iter().find(|j| j["state"] == "done").unwrap();
    for dup in jobs.iter().filter(|j| j["state"] == "duplicate") {
        assert_eq!(dup["duplicate_of"], first["id"]);
    }
    assert_eq!(hash_tree(&sandbox.library()).len(), 1);
    assert_consistent(&sandbox, &before);

    // The same bytes arriving later, under a new name, are a duplicate too.
    sandbox.add("later.jpg", &photo);
    let (_, report) = sandbox.ingest();
    assert_eq!(report["duplicates"], 1);
    assert_eq!(hash_tree(&sandbox.library()).len(), 1);
}

#[test]
fn sidecars_travel_with_their_file() {
    let sandbox = Sandbox::new();
    let sidecars = corpus_dir().join("sidecars");
    let photo = std::fs::read(corpus_media().join("exiftool_Apple.jpg")).unwrap();
    std::fs::write(sandbox.inbox().join("IMG_3439.jpg"), &photo).unwrap();
    sandbox.add(
        "IMG_3439.jpg.json",
        &sidecars.join("osxphotos_IMG_3439.jpg.json"),
    );
    sandbox.add("IMG_3439.xmp", &sidecars.join("exiftool_XMP.xmp"));
    sandbox.add("IMG_3439.AAE", &sidecars.join("exiftool_PLIST.aae"));
    std::fs::write(sandbox.inbox().join("lonely.xmp"), b"<x:xmpmeta/>").unwrap();
    let before = hash_tree(&sandbox.inbox());

    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 1);
    assert_eq!(
        report["skipped"], 1,
        "the orphan sidecar is left with a reason"
    );
    let jobs = sandbox.jobs();
    let placed = jobs.iter().find(|j| j["state"] == "done").unwrap();
    let dest = Path::new(placed["destination"].as_str().unwrap());
    let stem = dest.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = dest.parent().unwrap();
    let name = dest.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        blake3_of(&dir.join(format!("{name}.json"))),
        blake3_of(&sandbox.inbox().join("IMG_3439.jpg.json"))
    );
    assert_eq!(
        blake3_of(&dir.join(format!("{stem}.xmp"))),
        blake3_of(&sandbox.inbox().join("IMG_3439.xmp"))
    );
    assert_eq!(
        blake3_of(&dir.join(format!("{stem}.AAE"))),
        blake3_of(&sandbox.inbox().join("IMG_3439.AAE"))
    );
    let orphan = job_named(&jobs, "lonely.xmp");
    assert_eq!(orphan["state"], "skipped");
    assert!(orphan["reason"].as_str().unwrap().contains("sidecar"));
    assert_consistent(&sandbox, &before);
}

#[test]
fn the_example_family_plugin_sends_screenshots_to_screens() {
    // The example as built now (a plain stage, its defaults written once,
    // in `describe`), and the same plugin built against contract 0.5.0,
    // which exports a no-op `sweep`: both load and work, with no option set.
    let fixture = workspace_root().join("tests/fixtures/screenshots-plugin-sdk-0.5.0.wasm");
    for (plugin, sweeps) in [(guest("screenshots_plugin"), false), (fixture, true)] {
        let sandbox = Sandbox::new();
        sandbox.write_config_with(
            "[\"dedup\", \"screenshots\", \"library\"]",
            "copy",
            &format!(
                "[stages.screenshots]\nwasm = {:?}\n",
                plugin.display().to_string()
            ),
        );
        let png = std::fs::read(corpus_media().join("exiftool_PNG.png")).unwrap();
        std::fs::write(
            sandbox
                .inbox()
                .join("Screenshot 2024-05-12 at 10.00.00.png"),
            &png,
        )
        .unwrap();
        sandbox.add("IMG_1.jpg", &corpus_media().join("exiftool_Canon.jpg"));
        let (code, report) = sandbox.ingest();
        assert_eq!(code, 0, "{}: {report}", plugin.display());
        assert_eq!(report["placed"], 2);
        let screenshot = sandbox
            .library()
            .join("screens/Screenshot 2024-05-12 at 10.00.00.png");
        assert_eq!(std::fs::read(&screenshot).unwrap(), png);
        let library = hash_tree(&sandbox.library());
        let other = library
            .keys()
            .find(|p| p.to_string_lossy().ends_with("_IMG_1.jpg"))
            .unwrap();
        assert!(!other.starts_with("screens"), "{}", other.display());

        let out = sandbox.run(&["plugins", "list"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("screenshots") && text.contains("option folder"),
            "{text}"
        );
        assert_eq!(text.contains("sweeps:"), sweeps, "{text}");
    }
}

#[test]
fn a_name_taken_by_other_bytes_gets_a_number_and_nothing_is_overwritten() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[stages.library]\ntemplate = \"all/{name}\"\n");
    fake_jpeg(&sandbox.inbox().join("x/IMG_1.jpg"), 1, 5000);
    fake_jpeg(&sandbox.inbox().join("y/IMG_1.jpg"), 2, 5000);
    fake_jpeg(&sandbox.inbox().join("z/IMG_1.jpg"), 3, 5000);
    // A file the user put in the library by hand is never overwritten.
    std::fs::create_dir_all(sandbox.library().join("all")).unwrap();
    std::fs::write(sandbox.library().join("all/IMG_1.jpg"), b"mine").unwrap();
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 3);
    assert_eq!(
        std::fs::read(sandbox.library().join("all/IMG_1.jpg")).unwrap(),
        b"mine"
    );
    for n in 1..=3 {
        assert!(
            sandbox
                .library()
                .join(format!("all/IMG_1_{n}.jpg"))
                .exists()
        );
    }
}

#[test]
fn a_duplicate_of_a_file_that_could_not_be_placed_is_not_called_a_duplicate() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[stages.library]\ntemplate = \"{stem}/{name}\"\n");
    fake_jpeg(&sandbox.inbox().join("a.jpg"), 1, 5000);
    fake_jpeg(&sandbox.inbox().join("b.jpg"), 1, 5000);
    // `library/a` is a file, so `a/a.jpg` cannot be created.
    std::fs::create_dir_all(sandbox.library()).unwrap();
    std::fs::write(sandbox.library().join("a"), b"in the way").unwrap();
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["failed"], 2, "{report}");
    let jobs = sandbox.jobs();
    let b = job_named(&jobs, "b.jpg");
    assert_eq!(b["state"], "failed");
    assert!(
        b["error"].as_str().unwrap().contains("could not be placed"),
        "{b}"
    );

    #[allow(clippy::disallowed_methods)]
    std::fs::remove_file(sandbox.library().join("a")).unwrap();
    assert!(sandbox.run(&["retry", "--failed"]).status.success());
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 1);
    assert_eq!(report["duplicates"], 1);
    assert_consistent(&sandbox, &hash_tree(&sandbox.inbox()));
}

#[test]
fn a_file_that_changes_after_its_job_failed_is_taken_by_a_new_job() {
    let sandbox = Sandbox::new();
    sandbox.write_config("[stages.library]\ntemplate = \"{stem}/{name}\"\n");
    fake_jpeg(&sandbox.inbox().join("a.jpg"), 1, 5000);
    std::fs::create_dir_all(sandbox.library()).unwrap();
    std::fs::write(sandbox.library().join("a"), b"in the way").unwrap();
    let (code, _) = sandbox.ingest();
    assert_eq!(code, 1);
    #[allow(clippy::disallowed_methods)]
    std::fs::remove_file(sandbox.library().join("a")).unwrap();
    // The phone uploads a new version under the same name.
    fake_jpeg(&sandbox.inbox().join("a.jpg"), 2, 6000);
    let (code, report) = sandbox.ingest();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["placed"], 1, "{report}");
    let jobs = sandbox.jobs();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["state"], "skipped", "{:?}", jobs[0]);
    assert!(jobs[0]["reason"].as_str().unwrap().contains("changed"));
    assert_eq!(jobs[1]["state"], "done");
    assert_eq!(
        blake3_of(std::path::Path::new(
            jobs[1]["destination"].as_str().unwrap()
        )),
        blake3_of(&sandbox.inbox().join("a.jpg"))
    );
}
