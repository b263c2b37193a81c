//! The safe-to-delete proof, attacked from iCloud's side: each way a 2019
//! photo can fail to be kept (a partial download, a file not taken yet, a
//! manifest or same-disk "copy", a year boundary, a duplicate, a sidecar, a
//! flipped byte, a stale verdict) makes `archive plan --year 2019` say NOT
//! safe and name the item; each safe counterpart says safe, so the fix is
//! not "never safe".
// The tests play icloudpd and the family: they write into the inbox.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keepsake_tests::*;

use crate::edges::{Mount, is_root};

const PIPELINE: &str = "[\"dedup\", \"exif\", \"library\", \"offsite\"]";

/// An iCloud inbox (`inbox`, copy mode, as icloudpd's download folder is)
/// with a folder target `usb`; `target` replaces the `[offsite.usb]` table
/// body, `extra` goes at the end.
struct Proof {
    scratch: tempfile::TempDir,
    sandbox: Sandbox,
}

impl Proof {
    fn new(target: Option<&str>, extra: &str) -> Proof {
        Proof::with_pipeline(PIPELINE, target, extra)
    }

    /// The same, with another pipeline for the iCloud inbox.
    fn with_pipeline(pipeline: &str, target: Option<&str>, extra: &str) -> Proof {
        Proof::build(pipeline, target, extra, tempfile::tempdir().unwrap())
    }

    /// The same, with an archive root ([`Proof::archive`]) and these
    /// `[archive]` lines.
    fn with_archive(more: &str) -> Proof {
        let scratch = tempfile::tempdir().unwrap();
        let archive = scratch.path().join("archive");
        std::fs::create_dir_all(&archive).unwrap();
        let extra = format!("root = {:?}\n{more}", archive.display().to_string());
        Proof::build(PIPELINE, None, &extra, scratch)
    }

    fn build(
        pipeline: &str,
        target: Option<&str>,
        extra: &str,
        scratch: tempfile::TempDir,
    ) -> Proof {
        let sandbox = Sandbox::new();
        let usb = scratch.path().join("usb");
        std::fs::create_dir_all(&usb).unwrap();
        let target = target.map(str::to_string).unwrap_or_else(|| {
            format!(
                "[offsite.usb]\ntype = \"dir\"\nsame_disk = true\npath = {:?}\n",
                usb.display().to_string()
            )
        });
        sandbox.write_config_with(
            pipeline,
            "copy",
            &format!(
                "[stages.offsite]\ntargets = \"usb\"\n\n{target}\n[archive]\nicloud_inboxes = [\"inbox\"]\n{extra}"
            ),
        );
        Proof { scratch, sandbox }
    }

    /// `archive plan --year Y` as a user sees it, printed (for the notes:
    /// `cargo test -- --nocapture`).
    fn show_plan(&self, year: i32) {
        let (_, text) = self
            .sandbox
            .run_text(&["archive", "plan", "--year", &year.to_string()]);
        println!("$ keepsake archive plan --year {year}\n{text}");
    }

    /// Rewrite the config text.
    fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let config = std::fs::read_to_string(self.sandbox.config_path()).unwrap();
        std::fs::write(self.sandbox.config_path(), edit(config)).unwrap();
    }

    fn archive(&self) -> PathBuf {
        self.scratch.path().join("archive")
    }

    /// `keepsake ARGS`, started and paused at the pause point `label` (its
    /// output piped); [`Proof::release`] lets it go on.
    fn paused(&self, args: &[&str], label: &str) -> std::process::Child {
        let gate = self.scratch.path().join("gate");
        let child = self
            .sandbox
            .command(args)
            .env("KEEPSAKE_PAUSE_AT", label)
            .env("KEEPSAKE_PAUSE_FILE", &gate)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(60), label, || {
            self.scratch.path().join("gate.reached").exists()
        });
        child
    }

    fn release(&self) {
        std::fs::write(self.scratch.path().join("gate"), b"go").unwrap();
    }

    fn usb(&self) -> PathBuf {
        self.scratch.path().join("usb")
    }

    fn ingest(&self) {
        let (code, report) = self.sandbox.ingest();
        assert_eq!(code, 0, "{report}");
    }

    /// `archive plan --year Y --json`: (exit code, the plan).
    fn plan(&self, year: i32, more: &[&str]) -> (i32, serde_json::Value) {
        let year = year.to_string();
        let mut args = vec!["archive", "plan", "--year", year.as_str(), "--json"];
        args.extend_from_slice(more);
        let out = self.sandbox.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let plan = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "no plan ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), plan)
    }

    /// The plan is safe, and lists these iCloud names.
    fn assert_safe(&self, year: i32, names: &[&str]) -> serde_json::Value {
        let (code, plan) = self.plan(year, &[]);
        assert_eq!(code, 0, "{year} should be safe: {plan:#}");
        assert_eq!(plan["safe"], true, "{plan:#}");
        for name in names {
            assert!(item(&plan, name).is_some(), "{name} is not in {plan:#}");
        }
        assert!(self.safe_list(year).exists());
        plan
    }

    /// The plan is NOT safe, and `name` is blocked for a reason containing
    /// every word of `why`.
    fn assert_blocked(&self, year: i32, name: &str, why: &[&str]) -> serde_json::Value {
        let (code, plan) = self.plan(year, &[]);
        assert_eq!(code, 1, "{year} should NOT be safe: {plan:#}");
        assert_eq!(plan["safe"], false, "{plan:#}");
        // The item of that name whose blockers say why (a name may stand
        // for a file and for an iCloud item keepsake has not got).
        let named: Vec<String> = plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["icloud_name"] == name)
            .map(|i| i["blockers"].to_string())
            .collect();
        assert!(!named.is_empty(), "{name} is not in {plan:#}");
        assert!(
            named
                .iter()
                .any(|blockers| why.iter().all(|word| blockers.contains(word))),
            "{name}: {why:?} not all in any of {named:?}"
        );
        assert!(
            !self.safe_list(year).exists(),
            "no safe-to-delete list for a year that is not safe"
        );
        plan
    }

    fn safe_list(&self, year: i32) -> PathBuf {
        self.sandbox
            .config()
            .state_dir
            .join(format!("archive/safe-to-delete-{year}.txt"))
    }

    fn plan_file(&self, year: i32) -> PathBuf {
        self.sandbox
            .config()
            .state_dir
            .join(format!("archive/plan-{year}.json"))
    }

    /// The library file of a job, by its relative path in the inbox.
    fn placed(&self, rel: &str) -> PathBuf {
        let jobs = self.sandbox.jobs();
        let job = job_named(&jobs, rel);
        PathBuf::from(job["destination"].as_str().unwrap())
    }

    /// The folder target's copy of a library file.
    fn usb_copy(&self, library_file: &Path) -> PathBuf {
        self.usb()
            .join(library_file.strip_prefix(self.sandbox.library()).unwrap())
    }
}

fn item<'a>(plan: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    plan["items"]
        .as_array()?
        .iter()
        .find(|i| i["icloud_name"] == name)
}

/// A real JPEG at `inbox/rel` with this DateTimeOriginal (unique bytes).
fn photo(sandbox: &Sandbox, rel: &str, date: &str, more: &[&str]) {
    let dest = sandbox.inbox().join(rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(corpus_media().join("exiftool_Canon.jpg"), &dest).unwrap();
    exiftool(
        &dest,
        &[
            "-all=",
            &format!("-ImageDescription={rel}"),
            &format!("-DateTimeOriginal={date}"),
        ],
        more,
    );
}

fn exiftool(path: &Path, tags: &[&str], more: &[&str]) {
    let out = std::process::Command::new("exiftool")
        .args(["-q", "-overwrite_original"])
        .args(tags)
        .args(more)
        .arg(path)
        .output()
        .expect("exiftool (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "exiftool {tags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mtime(path: &Path, unix: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
        .unwrap();
}

/// Two 2019 photos of icloudpd's `YYYY/MM/DD` tree, taken and pushed.
fn two_of_2019(proof: &Proof) {
    photo(
        &proof.sandbox,
        "2019/05/01/IMG_0001.JPG",
        "2019:05:01 10:00:00",
        &[],
    );
    photo(
        &proof.sandbox,
        "2019/05/01/IMG_0002.JPG",
        "2019:05:01 11:00:00",
        &[],
    );
    proof.ingest();
}

#[test]
fn a_partial_download_blocks_its_year_until_it_is_taken() {
    let proof = Proof::new(None, "");
    two_of_2019(&proof);
    let plan = proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
    assert!(
        plan["made_at"].as_str().unwrap().starts_with("20"),
        "{plan}"
    );

    // icloudpd is still downloading a 2019 photo.
    let part = proof.sandbox.inbox().join("2019/05/01/IMG_0003.HEIC.part");
    std::fs::write(&part, b"the first half of a HEIC").unwrap();
    proof.assert_blocked(2019, "IMG_0003.HEIC.part", &["still downloading"]);
    // Another year's partial download does not block 2019.
    std::fs::remove_file(&part).unwrap();
    let later = proof.sandbox.inbox().join("2021/06/01/IMG_0009.HEIC.part");
    std::fs::create_dir_all(later.parent().unwrap()).unwrap();
    std::fs::write(&later, b"half").unwrap();
    proof.assert_safe(2019, &[]);
    let (code, plan) = proof.plan(2021, &[]);
    assert_eq!(code, 1, "{plan:#}");
    assert!(item(&plan, "IMG_0009.HEIC.part").is_some(), "{plan:#}");
}

#[test]
fn a_photo_not_taken_yet_or_ignored_blocks_its_year() {
    let proof = Proof::new(None, "");
    two_of_2019(&proof);
    proof.assert_safe(2019, &[]);

    // Copied in after the last ingest: the plan looks at the folder itself.
    photo(
        &proof.sandbox,
        "2019/06/01/IMG_0004.JPG",
        "2019:06:01 10:00:00",
        &[],
    );
    proof.assert_blocked(2019, "IMG_0004.JPG", &["not taken yet", "keepsake ingest"]);
    proof.ingest();
    let plan = proof.assert_safe(2019, &["IMG_0004.JPG"]);
    let copy = proof.placed("2019/06/01/IMG_0004.JPG");
    assert_eq!(
        blake3_of(&proof.usb_copy(&copy)),
        blake3_of(&copy),
        "its offsite copy is its bytes: {plan:#}"
    );

    // A photo the inbox's globs ignore is never taken, so it blocks.
    proof.edit_config(|config| {
        config.replacen(
            "mode = \"copy\"",
            "mode = \"copy\"\nignore = [\"*.png\"]",
            1,
        )
    });
    let png = proof.sandbox.inbox().join("2019/06/02/IMG_0005.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    std::fs::copy(corpus_media().join("exiftool_PNG.png"), &png).unwrap();
    proof.ingest();
    proof.assert_blocked(2019, "IMG_0005.png", &["ignore"]);
    // A photo reached through a link is never taken, so it blocks too.
    std::fs::remove_file(&png).unwrap();
    let outside = proof.scratch.path().join("IMG_0006.JPG");
    std::fs::copy(corpus_media().join("exiftool_Canon.jpg"), &outside).unwrap();
    let link = proof.sandbox.inbox().join("2019/06/02/IMG_0006.JPG");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    proof.assert_blocked(2019, "IMG_0006.JPG", &["link"]);
    std::fs::remove_file(&link).unwrap();
    // Folder litter is no photo.
    std::fs::write(proof.sandbox.inbox().join("2019/.DS_Store"), b"litter").unwrap();
    std::fs::write(proof.sandbox.inbox().join("2019/06/Thumbs.db"), b"litter").unwrap();
    proof.assert_safe(2019, &[]);
}

#[test]
fn a_file_a_plugin_left_out_blocks_its_year() {
    let proof = Proof::with_pipeline(
        "[\"screens\", \"dedup\", \"exif\", \"library\", \"offsite\"]",
        None,
        &format!(
            "\n[stages.screens]\nwasm = {:?}\nmode = \"skip\"\nonly = \"Screenshot\"\n",
            guest("keepsake_test_hostile").display().to_string()
        ),
    );
    two_of_2019(&proof);
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
    // A family plugin leaves screenshots out, before anything dated them:
    // the file is in iCloud and nowhere else.
    let shot = proof
        .sandbox
        .inbox()
        .join("2019/06/01/Screenshot_20190601.PNG");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    std::fs::copy(corpus_media().join("exiftool_PNG.png"), &shot).unwrap();
    proof.ingest();
    let jobs = proof.sandbox.jobs();
    let job = job_named(&jobs, "2019/06/01/Screenshot_20190601.PNG");
    assert_eq!(job["state"], "skipped", "{job}");
    assert!(
        job["capture_time"].is_null(),
        "skipped before dating: {job}"
    );
    proof.assert_blocked(
        2019,
        "Screenshot_20190601.PNG",
        &["not in the library", "skipped", "hostile leaves out"],
    );
    proof.show_plan(2019);
    // Another year stays as it was.
    let (_, plan) = proof.plan(2018, &[]);
    assert!(item(&plan, "Screenshot_20190601.PNG").is_none(), "{plan:#}");
}

#[test]
fn a_manifest_target_is_no_copy_and_never_makes_a_year_safe() {
    let scratch = tempfile::tempdir().unwrap();
    let manifest = scratch.path().join("restic-files.txt");
    let restic = format!(
        "[offsite.restic]\ntype = \"manifest\"\npath = {:?}\n",
        manifest.display().to_string()
    );
    let only = Proof::new(Some(&restic), "");
    only.edit_config(|config| config.replace("targets = \"usb\"", "targets = \"restic\""));
    two_of_2019(&only);
    assert!(
        std::fs::read_to_string(&manifest)
            .unwrap()
            .contains("IMG_0001")
    );
    let (code, plan) = only.plan(2019, &["--deep"]);
    assert_eq!(code, 1, "{plan:#}");
    assert!(
        plan["general"]
            .to_string()
            .contains("no offsite target that is a real copy"),
        "{plan:#}"
    );
    assert!(
        plan["basis"]["targets"]["restic"]
            .as_str()
            .unwrap()
            .starts_with("not a copy"),
        "{plan:#}"
    );
    assert!(!only.safe_list(2019).exists());

    // With a real copy beside it, the year is safe; the manifest still
    // counts for nothing.
    let both = Proof::new(
        None,
        &restic.replace("[offsite.restic]", "\n[offsite.restic]"),
    );
    both.edit_config(|config| config.replace("targets = \"usb\"", "targets = \"usb,restic\""));
    two_of_2019(&both);
    let plan = both.assert_safe(2019, &["IMG_0001.JPG"]);
    let offsite = &item(&plan, "IMG_0001.JPG").unwrap()["offsite"];
    assert_eq!(offsite["usb"], "verified", "{plan:#}");
    assert!(offsite.get("restic").is_none(), "{plan:#}");
}

#[test]
fn a_live_photo_video_across_new_year_is_planned_with_its_still() {
    let proof = Proof::new(None, "");
    live_pair_across_new_year(&proof);
    let still = proof.placed("2019/12/31/IMG_0100.JPG");
    let clip = proof.placed("2019/12/31/IMG_0100.MOV");
    assert_eq!(
        clip.with_extension(""),
        still.with_extension(""),
        "the video sits beside its still"
    );
    let plan = proof.assert_safe(2019, &["IMG_0100.JPG", "IMG_0100.MOV"]);
    let years = item(&plan, "IMG_0100.MOV").unwrap()["years"].clone();
    assert_eq!(years, serde_json::json!([2019, 2020]), "{plan:#}");
    proof.assert_safe(2020, &["IMG_0100.JPG", "IMG_0100.MOV"]);

    // The video damaged and its offsite copy gone: 2019 is not safe.
    let mut bytes = std::fs::read(&clip).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&clip, &bytes).unwrap();
    std::fs::remove_file(proof.usb_copy(&clip)).unwrap();
    proof.assert_blocked(
        2019,
        "IMG_0100.MOV",
        &["bytes changed", "offsite usb: missing"],
    );
}

#[test]
fn archive_run_moves_a_live_photo_pair_across_new_year_together() {
    let proof = Proof::with_archive("");
    let archive = proof.archive();
    live_pair_across_new_year(&proof);
    let still = proof.placed("2019/12/31/IMG_0100.JPG");
    let clip = proof.placed("2019/12/31/IMG_0100.MOV");
    let (still_hash, clip_hash) = (blake3_of(&still), blake3_of(&clip));
    // The still is of 2019, its video of 2020 (UTC): moving 2019 moves both.
    let (code, out) = proof
        .sandbox
        .run_text(&["archive", "run", "--year", "2019"]);
    assert_eq!(code, 0, "{out}");
    for (placed, hash) in [(&still, &still_hash), (&clip, &clip_hash)] {
        let rel = placed.strip_prefix(proof.sandbox.library()).unwrap();
        assert!(
            !placed.exists(),
            "{} was left in the library: {out}",
            rel.display()
        );
        assert_eq!(&blake3_of(&archive.join(rel)), hash, "{out}");
    }
}

/// A Live Photo whose still is 2019 in local time and whose video has only
/// a UTC date in 2020, in one icloudpd folder, taken.
fn live_pair_across_new_year(proof: &Proof) {
    // The still: 2019-12-31 23:59:59 at −05:00, which is 2020 in UTC.
    photo(
        &proof.sandbox,
        "2019/12/31/IMG_0100.JPG",
        "2019:12:31 23:59:59",
        &["-OffsetTimeOriginal=-05:00"],
    );
    // Its video: only a QuickTime date, in UTC, one second later.
    let video = proof.sandbox.inbox().join("2019/12/31/IMG_0100.MOV");
    std::fs::copy(corpus_media().join("mde_with-gps.mov"), &video).unwrap();
    exiftool(
        &video,
        &[
            "-all=",
            "-QuickTime:CreateDate=2020:01:01 05:00:00",
            "-QuickTime:Title=IMG_0100",
        ],
        &[],
    );
    proof.ingest();
}

#[test]
fn an_undated_png_in_a_december_folder_is_planned_in_that_year() {
    let proof = Proof::new(None, "");
    let png = proof.sandbox.inbox().join("2019/12/IMG_0001.PNG");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    std::fs::copy(corpus_media().join("exiftool_PNG.png"), &png).unwrap();
    exiftool(&png, &["-all="], &[]);
    // icloudpd set its mtime to iCloud's date, which fell into 2020 here.
    set_mtime(&png, 1_579_000_000); // 2020-01-14
    proof.ingest();
    let jobs = proof.sandbox.jobs();
    let job = job_named(&jobs, "2019/12/IMG_0001.PNG");
    assert!(
        job["capture_time"].as_str().unwrap().starts_with("2020"),
        "{job}"
    );
    let plan = proof.assert_safe(2019, &["IMG_0001.PNG"]);
    assert_eq!(
        item(&plan, "IMG_0001.PNG").unwrap()["years"],
        serde_json::json!([2019, 2020])
    );

    // Its library and offsite copies gone: 2019 is not safe.
    let copy = proof.placed("2019/12/IMG_0001.PNG");
    std::fs::remove_file(proof.usb_copy(&copy)).unwrap();
    std::fs::remove_file(&copy).unwrap();
    proof.assert_blocked(2019, "IMG_0001.PNG", &["missing"]);
}

/// A `phone` inbox without offsite, declared just before the config's
/// first `before` table, holding `shot.png` (a PNG without metadata, mtime
/// 2022-06-23).
fn phone_shot(proof: &Proof, before: &str) -> PathBuf {
    let phone = proof.sandbox.path().join("phone");
    std::fs::create_dir_all(&phone).unwrap();
    let phone_inbox = format!(
        "[[inbox]]\nname = \"phone\"\npath = \"phone\"\nmode = \"copy\"\npipeline = [\"dedup\", \"exif\", \"library\"]\n\n{before}"
    );
    proof.edit_config(|config| config.replacen(before, &phone_inbox, 1));
    let shot = phone.join("shot.png");
    std::fs::copy(corpus_media().join("exiftool_PNG.png"), &shot).unwrap();
    exiftool(&shot, &["-all="], &[]);
    set_mtime(&shot, 1_656_000_000); // 2022-06-23
    shot
}

/// The same bytes as `shot` from iCloud, as icloudpd names and dates them:
/// `2019/06/01/IMG_0003.PNG`, mtime 2019-06-01.
fn icloud_copy_of(proof: &Proof, shot: &Path) {
    let again = proof.sandbox.inbox().join("2019/06/01/IMG_0003.PNG");
    std::fs::create_dir_all(again.parent().unwrap()).unwrap();
    std::fs::copy(shot, &again).unwrap();
    set_mtime(&again, 1_559_390_400); // 2019-06-01
}

#[test]
fn an_icloud_duplicate_is_proven_on_its_own_and_pushed_for_the_icloud_targets() {
    let proof = Proof::new(None, "");
    // A phone inbox without offsite took the bytes first, dated 2022.
    let shot = phone_shot(&proof, "[stages.offsite]");
    proof.ingest();
    let original = PathBuf::from(
        job_named(&proof.sandbox.jobs(), "shot.png")["destination"]
            .as_str()
            .unwrap(),
    );
    assert!(
        !proof.usb_copy(&original).exists(),
        "the phone inbox pushes nothing"
    );

    // A verdict on 2022, made before iCloud brings the same bytes.
    let (_, before) = proof.plan(2022, &[]);
    assert!(item(&before, "IMG_0003.PNG").is_none(), "{before:#}");
    assert!(proof.plan_file(2022).exists());

    // The same bytes arrive from iCloud, dated 2019 by icloudpd.
    icloud_copy_of(&proof, &shot);
    proof.ingest();
    let jobs = proof.sandbox.jobs();
    let dup = job_named(&jobs, "2019/06/01/IMG_0003.PNG");
    assert_eq!(dup["state"], "duplicate", "{dup}");
    // The plan dates a duplicate by its original too: 2022's verdict,
    // which did not know it, is void.
    assert!(
        !proof.plan_file(2022).exists(),
        "the duplicate is planned in its original's year, whose verdict stood"
    );
    let (_, after) = proof.plan(2022, &[]);
    assert!(item(&after, "IMG_0003.PNG").is_some(), "{after:#}");
    assert!(
        dup["capture_time"]
            .as_str()
            .unwrap_or("")
            .starts_with("2019"),
        "the duplicate has its own date: {dup}"
    );
    assert_eq!(
        blake3_of(&proof.usb_copy(&original)),
        blake3_of(&original),
        "pushed to the iCloud pipeline's target on the duplicate's behalf"
    );
    let plan = proof.assert_safe(2019, &["IMG_0003.PNG"]);
    assert!(
        item(&plan, "IMG_0003.PNG").unwrap()["held_at"]
            .as_str()
            .unwrap()
            .contains("2022"),
        "{plan:#}"
    );
    // Without that copy, 2019 is not safe.
    std::fs::remove_file(proof.usb_copy(&original)).unwrap();
    proof.assert_blocked(2019, "IMG_0003.PNG", &["offsite usb: missing"]);
}

#[test]
fn an_icloud_duplicate_of_an_archived_original_is_pushed_for_the_icloud_targets() {
    let proof = Proof::with_archive("");
    let archive = proof.archive();
    // The phone's 2022 shot, from an inbox without offsite, is archived:
    // its one copy is in the archive root.
    let shot = phone_shot(&proof, "[stages.offsite]");
    proof.ingest();
    let (code, out) = proof
        .sandbox
        .run_text(&["archive", "run", "--year", "2022"]);
    assert_eq!(code, 0, "{out}");
    let archived: Vec<PathBuf> = hash_tree(&archive)
        .into_keys()
        .filter(|p| !p.to_string_lossy().contains(".keepsake"))
        .collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_eq!(blake3_of(&archive.join(&archived[0])), blake3_of(&shot));

    // The same bytes arrive from iCloud, dated 2019.
    icloud_copy_of(&proof, &shot);
    proof.ingest();
    let jobs = proof.sandbox.jobs();
    let dup = job_named(&jobs, "2019/06/01/IMG_0003.PNG");
    assert_eq!(dup["state"], "duplicate", "{dup}");
    // Pushed on its behalf, under the key the archived file has.
    let pushed = proof.usb().join(&archived[0]);
    assert_eq!(
        blake3_of(&pushed),
        blake3_of(&shot),
        "the archived original is pushed for the iCloud pipeline's target"
    );
    proof.assert_safe(2019, &["IMG_0003.PNG"]);
    std::fs::remove_file(&pushed).unwrap();
    proof.assert_blocked(2019, "IMG_0003.PNG", &["offsite usb: missing"]);
}

#[test]
fn an_icloud_duplicate_of_a_file_placed_in_the_same_ingest_is_pushed_for_the_icloud_targets() {
    let proof = Proof::new(None, "");
    // A phone inbox without offsite, scanned first, and iCloud bring the
    // same bytes in one ingest: the iCloud file is a duplicate of a file
    // not yet committed when it is decided.
    let shot = phone_shot(&proof, "[[inbox]]");
    icloud_copy_of(&proof, &shot);
    proof.ingest();
    let jobs = proof.sandbox.jobs();
    let first = job_named(&jobs, "shot.png");
    let dup = job_named(&jobs, "2019/06/01/IMG_0003.PNG");
    assert_eq!(first["state"], "done", "{first}");
    assert_eq!(dup["state"], "duplicate", "{dup}");
    assert_eq!(dup["duplicate_of"], first["id"], "{dup}");
    let original = PathBuf::from(first["destination"].as_str().unwrap());
    assert_eq!(
        blake3_of(&proof.usb_copy(&original)),
        blake3_of(&original),
        "pushed to the iCloud pipeline's target on the duplicate's behalf"
    );
    proof.assert_safe(2019, &["IMG_0003.PNG"]);
    std::fs::remove_file(proof.usb_copy(&original)).unwrap();
    proof.assert_blocked(2019, "IMG_0003.PNG", &["offsite usb: missing"]);
}

#[test]
fn an_icloud_sidecar_is_part_of_the_proof() {
    let proof = Proof::new(None, "");
    photo(
        &proof.sandbox,
        "2019/07/01/IMG_0005.JPG",
        "2019:07:01 10:00:00",
        &[],
    );
    std::fs::write(
        proof.sandbox.inbox().join("2019/07/01/IMG_0005.JPG.xmp"),
        "<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>\
         <rdf:Description rdf:about='' xmlns:xmp='http://ns.adobe.com/xap/1.0/' xmlns:dc='http://purl.org/dc/elements/1.1/' xmp:Rating='4'>\
         <dc:description><rdf:Alt><rdf:li xml:lang='x-default'>Grandma at the lake</rdf:li></rdf:Alt></dc:description>\
         </rdf:Description></rdf:RDF></x:xmpmeta>",
    )
    .unwrap();
    proof.ingest();
    let plan = proof.assert_safe(2019, &["IMG_0005.JPG"]);
    let sidecars = item(&plan, "IMG_0005.JPG").unwrap()["sidecars"].clone();
    let sidecar = sidecars[0]
        .as_str()
        .unwrap_or_else(|| panic!("no sidecar: {plan:#}"));
    let rel = sidecar.strip_prefix("library:").unwrap();
    let in_library = proof.sandbox.library().join(rel);
    assert!(
        std::fs::read_to_string(&in_library)
            .unwrap()
            .contains("Grandma at the lake"),
        "the library's sidecar keeps the description"
    );
    assert_eq!(blake3_of(&proof.usb().join(rel)), blake3_of(&in_library));

    // The library's sidecar damaged (one byte, same size): its offsite copy
    // is whole, but the library's is not the version that was kept.
    let good = std::fs::read(&in_library).unwrap();
    let mut bad = good.clone();
    let at = good.len() / 2;
    bad[at] ^= 0x01;
    std::fs::write(&in_library, &bad).unwrap();
    proof.assert_blocked(2019, "IMG_0005.JPG", &["sidecar", "only another version"]);
    std::fs::write(&in_library, &good).unwrap();
    proof.assert_safe(2019, &["IMG_0005.JPG"]);

    // The sidecar rewritten with a new description after its push: the
    // offsite copy lacks it, so not safe until the new version is offsite.
    let newer = String::from_utf8(good.clone())
        .unwrap()
        .replace("Grandma at the lake", "Grandma and Ida at the lake");
    std::fs::write(&in_library, newer).unwrap();
    proof.assert_blocked(2019, "IMG_0005.JPG", &["sidecar", "only another version"]);
    std::fs::write(&in_library, &good).unwrap();

    // The library's sidecar and its offsite copy deleted: not safe.
    std::fs::remove_file(&in_library).unwrap();
    std::fs::remove_file(proof.usb().join(rel)).unwrap();
    proof.assert_blocked(2019, "IMG_0005.JPG", &["sidecar", "missing"]);
}

#[test]
fn a_flipped_byte_in_a_folder_copy_blocks_the_year_without_deep() {
    let proof = Proof::new(None, "");
    two_of_2019(&proof);
    let plan = proof.assert_safe(2019, &[]);
    assert!(
        plan["basis"]["targets"]["usb"]
            .as_str()
            .unwrap()
            .contains("rehashed"),
        "{plan:#}"
    );
    let copy = proof.usb_copy(&proof.placed("2019/05/01/IMG_0002.JPG"));
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[100] ^= 0x80;
    std::fs::write(&copy, &bytes).unwrap();
    proof.assert_blocked(2019, "IMG_0002.JPG", &["offsite usb", "content differs"]);
}

#[test]
fn the_service_sweep_checks_content_too_and_moves_nothing_on_a_flipped_byte() {
    let proof = Proof::with_archive(
        "keep_years = 2\nsweep_hours = 0.0005\nauto_run = true\nremove_icloud_copies = true\n",
    );
    let archive = proof.archive();
    two_of_2019(&proof);
    let copy = proof.usb_copy(&proof.placed("2019/05/01/IMG_0002.JPG"));
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[100] ^= 0x80;
    std::fs::write(&copy, &bytes).unwrap();
    let inbox_before = hash_tree(&proof.sandbox.inbox());
    let library_before = hash_tree(&proof.sandbox.library().join("2019"));
    let mut service = proof.sandbox.start();
    service.wait_for(Duration::from_secs(60), "the sweep to plan 2019", || {
        proof.plan_file(2019).exists()
    });
    let (status, _) = service.stop(Duration::from_secs(30));
    let log = service.log_text();
    assert!(status.success(), "{log}");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(proof.plan_file(2019)).unwrap()).unwrap();
    assert_eq!(
        plan["safe"], false,
        "the sweep's plan passed a flipped byte: {plan:#}"
    );
    assert!(
        item(&plan, "IMG_0002.JPG").unwrap()["blockers"]
            .to_string()
            .contains("content differs"),
        "{plan:#}"
    );
    assert!(!proof.safe_list(2019).exists());
    // Nothing moved, nothing removed: every byte where it was.
    assert_eq!(hash_tree(&proof.sandbox.inbox()), inbox_before);
    assert_eq!(
        hash_tree(&proof.sandbox.library().join("2019")),
        library_before
    );
    assert!(!archive.join("2019").exists(), "{log}");
}

#[test]
fn a_folder_target_on_the_library_disk_is_not_off_this_machine() {
    let scratch = tempfile::tempdir().unwrap();
    let usb = scratch.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let same = format!(
        "[offsite.usb]\ntype = \"dir\"\npath = {:?}\n",
        usb.display().to_string()
    );
    let proof = Proof::new(Some(&same), "");
    two_of_2019(&proof);
    let (code, plan) = proof.plan(2019, &[]);
    assert_eq!(code, 1, "{plan:#}");
    assert!(
        plan["basis"]["targets"]["usb"]
            .as_str()
            .unwrap()
            .starts_with("not off this machine"),
        "{plan:#}"
    );
    assert!(
        plan["general"].to_string().contains("real copy"),
        "{plan:#}"
    );

    // Said to be another disk: it counts.
    let marked = Proof::new(None, "");
    two_of_2019(&marked);
    marked.assert_safe(2019, &[]);

    // Really another disk (a tmpfs): it counts without being told.
    if !is_root() {
        println!("skipped the other-disk half: needs root to mount a tmpfs");
        return;
    }
    let disk = scratch.path().join("disk");
    let _mount = match Mount::tmpfs(&disk, "16m") {
        Ok(mount) => mount,
        Err(why) => {
            println!("skipped the other-disk half: {why}");
            return;
        }
    };
    let other = format!(
        "[offsite.usb]\ntype = \"dir\"\npath = {:?}\n",
        disk.display().to_string()
    );
    let elsewhere = Proof::new(Some(&other), "");
    two_of_2019(&elsewhere);
    let plan = elsewhere.assert_safe(2019, &[]);
    assert!(
        plan["basis"]["targets"]["usb"]
            .as_str()
            .unwrap()
            .starts_with("copy"),
        "{plan:#}"
    );
}

#[test]
fn a_verdict_carries_its_time_and_is_voided_by_any_change_to_its_year() {
    let proof = Proof::new(None, "");
    two_of_2019(&proof);
    photo(
        &proof.sandbox,
        "2018/03/01/IMG_0050.JPG",
        "2018:03:01 10:00:00",
        &[],
    );
    proof.ingest();
    proof.assert_safe(2019, &[]);
    proof.assert_safe(2018, &[]);
    let list = std::fs::read_to_string(proof.safe_list(2019)).unwrap();
    assert!(list.contains("# made 20"), "{list}");
    assert!(list.contains("offsite usb: copy"), "{list}");

    // A new 2019 photo taken: 2019's verdict goes, 2018's stays.
    photo(
        &proof.sandbox,
        "2019/08/01/IMG_0007.JPG",
        "2019:08:01 10:00:00",
        &[],
    );
    proof.ingest();
    assert!(
        !proof.safe_list(2019).exists(),
        "a new photo voids the verdict"
    );
    assert!(!proof.plan_file(2019).exists());
    assert!(
        proof.safe_list(2018).exists(),
        "another year's verdict stands"
    );

    // A library file that no longer verifies voids the verdicts.
    proof.assert_safe(2019, &["IMG_0007.JPG"]);
    let copy = proof.placed("2019/08/01/IMG_0007.JPG");
    let good = std::fs::read(&copy).unwrap();
    let mut bad = good.clone();
    bad[200] ^= 0x01;
    std::fs::write(&copy, &bad).unwrap();
    let (code, out) = proof.sandbox.run_text(&["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(!proof.safe_list(2019).exists(), "a failed verify voids it");
    std::fs::write(&copy, &good).unwrap();

    // Another set of targets: verdicts made on the old one are void.
    proof.assert_safe(2019, &[]);
    let config = std::fs::read_to_string(proof.sandbox.config_path()).unwrap();
    let more = proof.scratch.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::write(
        proof.sandbox.config_path(),
        format!(
            "{config}\n[offsite.more]\ntype = \"dir\"\nsame_disk = true\npath = {:?}\n",
            more.display().to_string()
        ),
    )
    .unwrap();
    let (code, plan) = proof.plan(2018, &[]);
    assert_eq!(code, 1, "nothing is on `more` yet: {plan:#}");
    assert!(
        !proof.safe_list(2019).exists(),
        "2019's verdict rested on other targets"
    );

    // The same target name pointing elsewhere voids it too.
    std::fs::write(proof.sandbox.config_path(), &config).unwrap();
    proof.assert_safe(2019, &[]);
    let moved = proof.scratch.path().join("usb-moved");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::write(
        proof.sandbox.config_path(),
        config.replace(
            &format!("{:?}", proof.usb().display().to_string()),
            &format!("{:?}", moved.display().to_string()),
        ),
    )
    .unwrap();
    let _ = proof.plan(2018, &[]);
    assert!(
        !proof.safe_list(2019).exists(),
        "its target's folder changed under the same name"
    );
}

#[test]
fn a_photo_taken_by_another_process_while_the_year_is_planned_is_in_the_verdict_kept() {
    let proof = Proof::new(None, "");
    two_of_2019(&proof);
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
    // `archive plan` takes no lock: it pauses once its plan is made and
    // before it is written, while another process (an ingest, as a running
    // service's cycle would) takes a new 2019 photo.
    let planning = proof.paused(
        &["archive", "plan", "--year", "2019", "--json"],
        "archive-plan-made",
    );
    photo(
        &proof.sandbox,
        "2019/08/01/IMG_0007.JPG",
        "2019:08:01 10:00:00",
        &[],
    );
    proof.ingest();
    proof.release();
    let out = planning.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let plan: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no plan ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // The plan that paused read 2019 before the new photo: it is not the
    // one kept. The plan kept knows the photo, and so does the list.
    assert!(
        item(&plan, "IMG_0007.JPG").is_some(),
        "a verdict made before IMG_0007 was taken was kept: {plan:#}"
    );
    if proof.safe_list(2019).exists() {
        let list = std::fs::read_to_string(proof.safe_list(2019)).unwrap();
        assert!(list.contains("IMG_0007.JPG"), "{list}");
    }
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(proof.plan_file(2019)).unwrap()).unwrap();
    assert!(item(&kept, "IMG_0007.JPG").is_some(), "{kept:#}");
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0007.JPG"]);
}

#[test]
fn an_unmounted_inbox_disk_blocks_the_year_instead_of_looking_empty() {
    if !is_root() {
        println!("skipped: needs root to mount a tmpfs as the iCloud inbox's disk");
        return;
    }
    let proof = Proof::new(None, "");
    let disk = match Mount::tmpfs(&proof.sandbox.inbox(), "16m") {
        Ok(mount) => mount,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    two_of_2019(&proof);
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
    // A 2019 photo not taken yet is on that disk, which then goes away
    // (unplugged, or not mounted after a reboot): the inbox is the empty
    // mount point on the disk above.
    photo(
        &proof.sandbox,
        "2019/07/01/IMG_0004.JPG",
        "2019:07:01 10:00:00",
        &[],
    );
    drop(disk);
    assert!(
        std::fs::read_dir(proof.sandbox.inbox())
            .unwrap()
            .next()
            .is_none(),
        "the mount point is empty"
    );
    let (code, plan) = proof.plan(2019, &[]);
    assert_eq!(
        code, 1,
        "an unmounted inbox looked like one with nothing new: {plan:#}"
    );
    assert!(
        plan["general"].to_string().contains("is that disk mounted"),
        "{plan:#}"
    );
    proof.show_plan(2019);
    assert!(!proof.safe_list(2019).exists());
    // The iCloud copies are where they were: a plan of another inbox
    // state never removes them, and the library still holds both.
    for rel in ["2019/05/01/IMG_0001.JPG", "2019/05/01/IMG_0002.JPG"] {
        assert!(proof.placed(rel).exists(), "{rel}");
    }
}

#[test]
fn a_download_rewritten_in_place_after_the_plan_stays_in_the_inbox() {
    use std::os::unix::fs::FileExt;
    let proof = Proof::with_archive("remove_icloud_copies = true\n");
    let archive = proof.archive();
    two_of_2019(&proof);
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
    let first = proof.sandbox.inbox().join("2019/05/01/IMG_0001.JPG");
    let second = proof.sandbox.inbox().join("2019/05/01/IMG_0002.JPG");
    let taken = blake3_of(&first);
    // `archive run` moves 2019, plans it again and pauses before it
    // removes the iCloud downloads its plan proved kept.
    let running = proof.paused(
        &["archive", "run", "--year", "2019", "--json"],
        "icloud-copies-planned",
    );
    // The downloader rewrites one download in place, as kei's XMP embedding
    // does: the same inode, size and mtime, other bytes.
    let before = std::fs::metadata(&first).unwrap();
    let file = std::fs::File::options().write(true).open(&first).unwrap();
    let middle = before.len() / 2;
    let mut byte = [0u8; 1];
    std::fs::File::open(&first)
        .unwrap()
        .read_exact_at(&mut byte, middle)
        .unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], middle).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let rewritten = blake3_of(&first);
    assert_ne!(rewritten, taken);
    proof.release();
    let out = running.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The rewritten download stays, with its new bytes; the other, whose
    // archived copy verifies, is removed; the archive holds what was taken.
    assert_eq!(
        blake3_of(&first),
        rewritten,
        "a download that changed after the plan was removed: {text}"
    );
    assert!(text.contains("stays"), "{text}");
    assert!(!second.exists(), "the unchanged download goes: {text}");
    let archived: Vec<String> = hash_tree(&archive)
        .into_iter()
        .filter(|(path, _)| path.to_string_lossy().ends_with("IMG_0001.JPG"))
        .map(|(_, hash)| hash)
        .collect();
    assert_eq!(archived, [taken], "{text}");
}

#[test]
fn a_verdict_outlives_no_change_a_kill_9_left_unvoided() {
    let proof = Proof::new(None, "");
    two_of_2019(&proof);
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
    // An ingest takes a new 2019 photo and is killed once its batch is
    // committed, before it voids any verdict.
    photo(
        &proof.sandbox,
        "2019/08/01/IMG_0007.JPG",
        "2019:08:01 10:00:00",
        &[],
    );
    let mut ingest = proof.paused(&["ingest"], "ingest-committed");
    ingest.kill().unwrap();
    ingest.wait().unwrap();
    let jobs = proof.sandbox.jobs();
    assert_eq!(
        job_named(&jobs, "2019/08/01/IMG_0007.JPG")["state"],
        "done",
        "committed before the kill"
    );
    assert!(
        proof.safe_list(2019).exists(),
        "the kill came before the voiding"
    );
    // The next start voids what the kill left standing.
    proof.ingest();
    assert!(
        !proof.safe_list(2019).exists(),
        "a verdict made before IMG_0007 was taken outlived the restart"
    );
    assert!(!proof.plan_file(2019).exists());
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0007.JPG"]);
}

#[test]
fn s3_copies_are_checked_by_the_sha256_the_server_stored() {
    let scratch = tempfile::tempdir().unwrap();
    let server = S3Server::start(&scratch.path().join("s3"));
    let s3 = server.target("usb", scratch.path());
    let proof = Proof::new(Some(&s3), "");
    two_of_2019(&proof);
    // A file large enough to go up in parts: the server keeps no checksum
    // for those, so the plan checks its size and says so.
    let large = proof.sandbox.inbox().join("2019/09/01/VID_0001.MOV");
    std::fs::create_dir_all(large.parent().unwrap()).unwrap();
    fake_jpeg(&large, 7, 20 << 20);
    set_mtime(&large, 1_567_339_200); // 2019-09-01
    proof.ingest();
    let plan = proof.assert_safe(2019, &["IMG_0001.JPG", "VID_0001.MOV"]);
    assert!(
        plan["basis"]["targets"]["usb"]
            .as_str()
            .unwrap()
            .contains("SHA-256"),
        "{plan:#}"
    );
    assert_eq!(
        item(&plan, "IMG_0001.JPG").unwrap()["offsite"]["usb"],
        "verified",
        "checked by content: {plan:#}"
    );
    let size_only = plan["size_only"].to_string();
    assert!(size_only.contains("VID_0001"), "{plan:#}");
    assert!(!size_only.contains("IMG_0001"), "{plan:#}");
    // s3s-fs vouches with the checksum it checked at upload and never
    // rereads the file (AWS keeps its own integrity); `--deep` downloads.
    let (code, deep) = proof.plan(2019, &["--deep"]);
    assert_eq!(code, 0, "{deep:#}");
    assert_eq!(deep["size_only"], serde_json::json!([]), "{deep:#}");
}

#[test]
fn an_rclone_remote_is_checked_by_its_sha256_without_a_download() {
    let scratch = tempfile::tempdir().unwrap();
    let conf = scratch.path().join("rclone.conf");
    std::fs::write(&conf, "[nas]\ntype = local\n").unwrap();
    let remote = scratch.path().join("nas");
    std::fs::create_dir_all(&remote).unwrap();
    let target = format!(
        "[offsite.usb]\ntype = \"rclone\"\nremote = \"nas:{}\"\nrclone_config = {:?}\n",
        remote.display(),
        conf.display().to_string()
    );
    let proof = Proof::new(Some(&target), "");
    two_of_2019(&proof);
    let plan = proof.assert_safe(2019, &[]);
    assert_eq!(
        item(&plan, "IMG_0001.JPG").unwrap()["offsite"]["usb"],
        "verified",
        "{plan:#}"
    );
    let copy = proof.placed("2019/05/01/IMG_0001.JPG");
    let on_nas = remote.join(copy.strip_prefix(proof.sandbox.library()).unwrap());
    let mut bytes = std::fs::read(&on_nas).unwrap();
    bytes[100] ^= 0x80;
    std::fs::write(&on_nas, &bytes).unwrap();
    proof.assert_blocked(2019, "IMG_0001.JPG", &["content differs (SHA-256)"]);
}

#[test]
fn an_rclone_remote_that_keeps_only_md5_or_sha1_is_checked_by_it() {
    // rclone's chunker keeps one digest of each object in its metadata
    // (as a cloud drive keeps only MD5 or SHA-1): no SHA-256.
    for (kind, label) in [("md5", "MD5"), ("sha1", "SHA-1")] {
        let scratch = tempfile::tempdir().unwrap();
        let remote = scratch.path().join("nas");
        std::fs::create_dir_all(&remote).unwrap();
        let conf = scratch.path().join("rclone.conf");
        std::fs::write(
            &conf,
            format!(
                "[disk]\ntype = local\n\n[nas]\ntype = chunker\nremote = disk:{}\nhash_type = {kind}all\n",
                remote.display()
            ),
        )
        .unwrap();
        let target = format!(
            "[offsite.usb]\ntype = \"rclone\"\nremote = \"nas:\"\nrclone_config = {:?}\n",
            conf.display().to_string()
        );
        let proof = Proof::new(Some(&target), "");
        two_of_2019(&proof);
        let plan = proof.assert_safe(2019, &[]);
        assert_eq!(
            item(&plan, "IMG_0001.JPG").unwrap()["offsite"]["usb"],
            "verified",
            "{kind}: {plan:#}"
        );
        // The remote's digest of the object is not the library file's.
        let copy = proof.placed("2019/05/01/IMG_0001.JPG");
        let meta = remote.join(copy.strip_prefix(proof.sandbox.library()).unwrap());
        let text = std::fs::read_to_string(&meta).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        let digest = stored[kind].as_str().unwrap().to_string();
        let other: String = digest
            .chars()
            .map(|c| if c == '0' { '1' } else { '0' })
            .collect();
        std::fs::write(&meta, text.replace(&digest, &other)).unwrap();
        proof.assert_blocked(
            2019,
            "IMG_0001.JPG",
            &[&format!("content differs ({label})")],
        );
    }
}

/// One row of kei's `assets` table.
pub(crate) struct KeiRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) version: &'a str,
    /// Empty: `photo`, or `live_photo_video` for a `live_*` version.
    pub(crate) media_type: &'a str,
    pub(crate) filename: &'a str,
    pub(crate) created_at: i64,
    pub(crate) status: &'a str,
    pub(crate) local_path: Option<PathBuf>,
    pub(crate) last_seen_at: i64,
}

/// A kei state database of schema `version`, written from kei's published
/// schema (the columns the proof reads and their neighbours), with these
/// assets and sync runs (started, completed, status).
pub(crate) fn kei_db(
    path: &Path,
    version: i64,
    rows: &[KeiRow],
    runs: &[(i64, Option<i64>, &str)],
) {
    let conn = rusqlite::Connection::open(path).unwrap();
    // Version 8 puts the library zone first in each asset's key.
    let (zone, key) = if version >= 8 {
        (
            "library TEXT NOT NULL DEFAULT 'PrimarySync', ",
            "library, id, version_size",
        )
    } else {
        ("", "id, version_size")
    };
    conn.execute_batch(&format!(
        "CREATE TABLE assets ({zone}
            id TEXT NOT NULL, version_size TEXT NOT NULL, checksum TEXT NOT NULL,
            filename TEXT NOT NULL, created_at INTEGER NOT NULL, added_at INTEGER,
            size_bytes INTEGER NOT NULL, media_type TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', downloaded_at INTEGER, local_path TEXT,
            last_seen_at INTEGER NOT NULL, download_attempts INTEGER DEFAULT 0, last_error TEXT,
            local_checksum TEXT, download_checksum TEXT,
            source TEXT NOT NULL DEFAULT 'icloud', is_favorite INTEGER NOT NULL DEFAULT 0,
            is_deleted INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY ({key}));
         CREATE TABLE sync_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT, started_at INTEGER NOT NULL,
            completed_at INTEGER, assets_seen INTEGER DEFAULT 0, assets_downloaded INTEGER DEFAULT 0,
            assets_failed INTEGER DEFAULT 0, interrupted INTEGER DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'running');
         CREATE TABLE metadata (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
         CREATE TABLE asset_albums (asset_id TEXT NOT NULL, album_name TEXT NOT NULL,
            source TEXT NOT NULL, PRIMARY KEY (asset_id, album_name, source));
         CREATE TABLE asset_people (asset_id TEXT NOT NULL, person_name TEXT NOT NULL,
            PRIMARY KEY (asset_id, person_name));"
    ))
    .unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
    for row in rows {
        let media = if !row.media_type.is_empty() {
            row.media_type
        } else if row.version.starts_with("live") {
            "live_photo_video"
        } else {
            "photo"
        };
        conn.execute(
            "INSERT INTO assets (id, version_size, checksum, filename, created_at, size_bytes, \
             media_type, status, local_path, last_seen_at, last_error) \
             VALUES (?1, ?2, 'AQID', ?3, ?4, 1000, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                row.id,
                row.version,
                row.filename,
                row.created_at,
                media,
                row.status,
                row.local_path.as_ref().map(|p| p.display().to_string()),
                row.last_seen_at,
                (row.status == "failed").then_some("HTTP 503 from iCloud"),
            ],
        )
        .unwrap();
    }
    for (started, completed, status) in runs {
        conn.execute(
            "INSERT INTO sync_runs (started_at, completed_at, status, interrupted) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![started, completed, status, i64::from(*status != "complete")],
        )
        .unwrap();
    }
}

pub(crate) const MAY_2019: i64 = 1_556_704_800; // 2019-05-01T10:00:00Z
pub(crate) const SYNCED: i64 = 1_764_000_000; // 2025-11-24

/// Two 2019 photos taken from the iCloud inbox, with kei's state configured
/// at `kei.db` (written by each test).
fn kei_proof() -> (Proof, PathBuf) {
    let proof = Proof::new(None, "");
    two_of_2019(&proof);
    let kei = proof.scratch.path().join("kei.db");
    proof.edit_config(|config| {
        config.replacen(
            "[archive]\n",
            &format!("[archive]\nkei_state = {:?}\n", kei.display().to_string()),
            1,
        )
    });
    (proof, kei)
}

/// kei's row of an original it downloaded into the inbox's `2019/05/01/`.
fn downloaded(proof: &Proof, id: &'static str, name: &'static str) -> KeiRow<'static> {
    KeiRow {
        id,
        version: "original",
        media_type: "",
        filename: name,
        created_at: MAY_2019,
        status: "downloaded",
        local_path: Some(proof.sandbox.inbox().join(format!("2019/05/01/{name}"))),
        last_seen_at: SYNCED + 10,
    }
}

const COMPLETE: [(i64, Option<i64>, &str); 1] = [(SYNCED, Some(SYNCED + 60), "complete")];

#[test]
fn kei_state_with_every_asset_downloaded_and_taken_is_safe_and_names_icloud_ids() {
    let (proof, kei) = kei_proof();
    kei_db(
        &kei,
        7,
        &[
            downloaded(&proof, "AX1", "IMG_0001.JPG"),
            downloaded(&proof, "AX2", "IMG_0002.JPG"),
        ],
        &COMPLETE,
    );
    let plan = proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
    assert!(
        plan["basis"]["items_from"]
            .as_str()
            .unwrap()
            .contains("kei"),
        "{plan:#}"
    );
    assert_eq!(item(&plan, "IMG_0001.JPG").unwrap()["icloud_id"], "AX1");
    let list = std::fs::read_to_string(proof.safe_list(2019)).unwrap();
    assert!(
        list.contains("IMG_0002.JPG\t2019-05-01") && list.contains("\tAX2\n"),
        "{list}"
    );

    // kei runs in another container and wrote under its own mount point:
    // its files are found by their `YYYY/MM/DD/NAME`.
    std::fs::remove_file(&kei).unwrap();
    let elsewhere = |id, name: &'static str| KeiRow {
        local_path: Some(PathBuf::from(format!("/data/icloud/2019/05/01/{name}"))),
        ..downloaded(&proof, id, name)
    };
    kei_db(
        &kei,
        7,
        &[
            elsewhere("AX1", "IMG_0001.JPG"),
            elsewhere("AX2", "IMG_0002.JPG"),
        ],
        &COMPLETE,
    );
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
}

#[test]
fn kei_state_with_one_failed_download_is_not_safe_and_names_it() {
    let (proof, kei) = kei_proof();
    let mut failed = downloaded(&proof, "AX3", "IMG_0003.HEIC");
    failed.status = "failed";
    failed.local_path = None;
    kei_db(
        &kei,
        7,
        &[
            downloaded(&proof, "AX1", "IMG_0001.JPG"),
            downloaded(&proof, "AX2", "IMG_0002.JPG"),
            failed,
        ],
        &COMPLETE,
    );
    proof.assert_blocked(2019, "IMG_0003.HEIC", &["failed", "kei sync"]);
}

#[test]
fn kei_state_with_one_asset_seen_but_not_downloaded_is_not_safe() {
    let (proof, kei) = kei_proof();
    // A Live Photo's video kei has seen and not fetched yet.
    let mut pending = downloaded(&proof, "AX1", "IMG_0001.MOV");
    pending.version = "live_original";
    pending.status = "pending";
    pending.local_path = None;
    kei_db(
        &kei,
        7,
        &[
            downloaded(&proof, "AX1", "IMG_0001.JPG"),
            downloaded(&proof, "AX2", "IMG_0002.JPG"),
            pending,
        ],
        &COMPLETE,
    );
    proof.assert_blocked(2019, "IMG_0001.MOV (its Live Photo video)", &["pending"]);
}

#[test]
fn kei_state_with_only_a_smaller_size_or_no_live_video_is_not_safe() {
    let (proof, kei) = kei_proof();
    // kei keeps only a medium-size copy of one asset: its original is not
    // kept anywhere.
    let mut medium = downloaded(&proof, "AX2", "IMG_0002.JPG");
    medium.version = "medium";
    kei_db(
        &kei,
        7,
        &[downloaded(&proof, "AX1", "IMG_0001.JPG"), medium],
        &COMPLETE,
    );
    proof.assert_blocked(2019, "IMG_0002.JPG", &["only its medium size", "original"]);

    // A Live Photo whose video kei skipped (no `live_original` row at all):
    // the still alone is not the photo.
    std::fs::remove_file(&kei).unwrap();
    let mut still = downloaded(&proof, "AX1", "IMG_0001.JPG");
    still.media_type = "live_photo_image";
    kei_db(
        &kei,
        7,
        &[still, downloaded(&proof, "AX2", "IMG_0002.JPG")],
        &COMPLETE,
    );
    proof.assert_blocked(
        2019,
        "IMG_0001.JPG (its Live Photo video)",
        &["Live Photo's video at its original size"],
    );
}

#[test]
fn kei_state_with_an_asset_not_seen_since_the_last_complete_sync_is_not_safe() {
    let (proof, kei) = kei_proof();
    let mut stale = downloaded(&proof, "AX2", "IMG_0002.JPG");
    stale.last_seen_at = SYNCED - 86_400;
    kei_db(
        &kei,
        7,
        &[downloaded(&proof, "AX1", "IMG_0001.JPG"), stale],
        &COMPLETE,
    );
    proof.assert_blocked(2019, "IMG_0002.JPG", &["not seen"]);
}

#[test]
fn kei_state_whose_last_sync_did_not_complete_is_not_safe() {
    let (proof, kei) = kei_proof();
    let both = || {
        [
            downloaded(&proof, "AX1", "IMG_0001.JPG"),
            downloaded(&proof, "AX2", "IMG_0002.JPG"),
        ]
    };
    // The last run was interrupted, whatever the assets say.
    kei_db(
        &kei,
        7,
        &both(),
        &[
            (SYNCED, Some(SYNCED + 60), "complete"),
            (SYNCED + 3600, None, "interrupted"),
        ],
    );
    let (code, plan) = proof.plan(2019, &[]);
    assert_eq!(code, 1, "{plan:#}");
    assert!(
        plan["general"].to_string().contains("not complete"),
        "{plan:#}"
    );

    // kei's full listing of the library began and never finished (its
    // marker is still there), though the last run row says complete.
    std::fs::remove_file(&kei).unwrap();
    kei_db(&kei, 7, &both(), &COMPLETE);
    rusqlite::Connection::open(&kei)
        .unwrap()
        .execute(
            "INSERT INTO metadata (key, value) VALUES ('enum_in_progress:PrimarySync', ?1)",
            [(SYNCED + 7200).to_string()],
        )
        .unwrap();
    let (code, plan) = proof.plan(2019, &[]);
    assert_eq!(code, 1, "{plan:#}");
    assert!(
        plan["general"].to_string().contains("PrimarySync"),
        "{plan:#}"
    );
    // The same state with a finished listing is safe.
    std::fs::remove_file(&kei).unwrap();
    kei_db(&kei, 7, &both(), &COMPLETE);
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
}

#[test]
fn kei_state_of_an_unknown_schema_version_is_refused_by_name() {
    let (proof, kei) = kei_proof();
    kei_db(
        &kei,
        9,
        &[downloaded(&proof, "AX1", "IMG_0001.JPG")],
        &COMPLETE,
    );
    let (code, plan) = proof.plan(2019, &[]);
    assert_eq!(code, 1, "{plan:#}");
    let general = plan["general"].to_string();
    assert!(
        general.contains("schema version 9") && general.contains("only version 7"),
        "{plan:#}"
    );
    // A known version without a column keepsake reads is refused too.
    std::fs::remove_file(&kei).unwrap();
    kei_db(
        &kei,
        7,
        &[downloaded(&proof, "AX1", "IMG_0001.JPG")],
        &COMPLETE,
    );
    rusqlite::Connection::open(&kei)
        .unwrap()
        .execute_batch("ALTER TABLE assets DROP COLUMN is_deleted")
        .unwrap();
    let (code, plan) = proof.plan(2019, &[]);
    assert_eq!(code, 1, "{plan:#}");
    assert!(
        plan["general"].to_string().contains("assets.is_deleted"),
        "{plan:#}"
    );
}

#[test]
fn kei_state_of_version_8_counts_each_library_zone_on_its_own() {
    let (proof, kei) = kei_proof();
    let both = [
        downloaded(&proof, "AX1", "IMG_0001.JPG"),
        downloaded(&proof, "AX2", "IMG_0002.JPG"),
    ];
    kei_db(&kei, 8, &both, &COMPLETE);
    proof.assert_safe(2019, &["IMG_0001.JPG", "IMG_0002.JPG"]);
    // The same iCloud id in a shared library, seen and not downloaded: it
    // is another asset, which the user's own downloaded copy does not
    // answer for.
    rusqlite::Connection::open(&kei)
        .unwrap()
        .execute(
            "INSERT INTO assets (library, id, version_size, checksum, filename, created_at, \
             size_bytes, media_type, status, last_seen_at) VALUES ('SharedSync-1', 'AX1', \
             'original', 'AQID', 'IMG_0009.JPG', ?1, 1000, 'photo', 'pending', ?2)",
            [MAY_2019, SYNCED + 10],
        )
        .unwrap();
    proof.assert_blocked(2019, "IMG_0009.JPG", &["pending"]);
    proof.show_plan(2019);
}

#[test]
fn an_inventory_names_the_items_the_downloader_never_fetched() {
    let proof = Proof::new(None, "");
    two_of_2019(&proof);
    let plan = proof.assert_safe(2019, &[]);
    assert!(
        plan["basis"]["cannot_see"]
            .to_string()
            .contains("never fetched"),
        "{plan:#}"
    );
    let inventory = proof.scratch.path().join("icloud.txt");
    std::fs::write(
        &inventory,
        "IMG_0001.JPG\t2019-05-01T10:00:00Z\nIMG_0002.JPG\t2019-05-01T11:00:00Z\n",
    )
    .unwrap();
    let inv = inventory.display().to_string();
    let (code, plan) = proof.plan(2019, &["--inventory", &inv]);
    assert_eq!(code, 0, "{plan:#}");
    std::fs::write(
        &inventory,
        "IMG_0001.JPG\t2019-05-01T10:00:00Z\nIMG_0002.JPG\t2019-05-01T11:00:00Z\nIMG_0009.HEIC\t2019-08-09T12:00:00Z\nIMG_2020.HEIC\t2020-08-09T12:00:00Z\n",
    )
    .unwrap();
    let (code, plan) = proof.plan(2019, &["--inventory", &inv]);
    assert_eq!(code, 1, "{plan:#}");
    let missing = item(&plan, "IMG_0009.HEIC").unwrap_or_else(|| panic!("{plan:#}"));
    // Two iCloud items of one name (the camera's counter wrapped) need two
    // files: one file answers for one line.
    std::fs::write(
        &inventory,
        "IMG_0001.JPG\t2019-05-01T10:00:00Z\nIMG_0002.JPG\t2019-05-01T11:00:00Z\nIMG_0001.JPG\t2019-11-02T09:00:00Z\n",
    )
    .unwrap();
    let (code, twice) = proof.plan(2019, &["--inventory", &inv]);
    assert_eq!(code, 1, "{twice:#}");
    let named: Vec<_> = twice["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["icloud_name"] == "IMG_0001.JPG")
        .collect();
    assert_eq!(named.len(), 2, "{twice:#}");
    assert!(
        missing["blockers"].to_string().contains("inventory"),
        "{missing}"
    );
    assert!(
        item(&plan, "IMG_2020.HEIC").is_none(),
        "another year's item: {plan:#}"
    );
}
