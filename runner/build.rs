//! Compiles the guest crates (the built-in stages, the example plugin and the
//! test guests) to wasm32-wasip2 components with a nested cargo in its own
//! target folder, as wasmtime's test-programs do, and embeds the built-ins.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (stage name, package, artifact stem)
const BUILTIN: &[(&str, &str, &str)] = &[
    ("dedup", "keepsake-stage-dedup", "keepsake_stage_dedup"),
    ("exif", "keepsake-stage-exif", "keepsake_stage_exif"),
    (
        "library",
        "keepsake-stage-library",
        "keepsake_stage_library",
    ),
    (
        "offsite",
        "keepsake-stage-offsite",
        "keepsake_stage_offsite",
    ),
    ("immich", "keepsake-stage-immich", "keepsake_stage_immich"),
];
/// Built too, for the tests and the README's plugin example; not embedded.
const EXTRA: &[&str] = &[
    "screenshots-plugin",
    "keepsake-test-hostile",
    "keepsake-test-snoop-http",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("runner/ lives in the workspace")
        .to_path_buf();
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace.join(p)
            }
        })
        .unwrap_or_else(|| workspace.join("target"))
        .join("wasm-guests");

    for dir in [
        "sdk",
        "plugins",
        "examples/screenshots-plugin",
        "tests/guests",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );

    ensure_wasm_target();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "guest"])
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package, _) in BUILTIN {
        cmd.args(["--package", package]);
    }
    for package in EXTRA {
        cmd.args(["--package", package]);
    }
    // The outer build's settings are not the guests': clippy's wrapper,
    // host RUSTFLAGS and feature/cfg variables would leak into the nested build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_ENCODED_")
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_WRAPPER"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .expect("run cargo for the wasm32-wasip2 guests");
    assert!(
        status.success(),
        "building the wasm stages failed; is the wasm32-wasip2 target installed? (`rustup target add wasm32-wasip2`; rust-toolchain.toml lists it)"
    );

    let out_dir = target_dir.join("wasm32-wasip2").join("guest");
    let mut generated = String::from(
        "/// Built-in stages: (name, component bytes).\npub const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, _, stem) in BUILTIN {
        let path = out_dir.join(format!("{stem}.wasm"));
        assert!(path.exists(), "missing {}", path.display());
        writeln!(
            generated,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write to String");
    }
    generated.push_str("];\n");
    writeln!(
        generated,
        "/// The folder holding every guest component the build produced (built-ins,\n/// the example plugin, the test guests), for tests and benchmarks.\npub const GUEST_DIR: &str = {:?};",
        out_dir.display().to_string()
    )
    .expect("write to String");
    let dest =
        Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin_stages.rs");
    std::fs::write(dest, generated).expect("write builtin_stages.rs");
}

/// rust-toolchain.toml lists the target, but rustup adds listed targets only
/// when it installs the toolchain: add it to an existing one too, so a fresh
/// clone builds with no manual step.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot.is_some_and(|root| root.join("lib/rustlib/wasm32-wasip2").is_dir());
    if installed {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", "wasm32-wasip2"]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    match rustup.status() {
        Ok(status) if status.success() => {}
        _ => println!(
            "cargo:warning=could not add the wasm32-wasip2 target; run `rustup target add wasm32-wasip2`"
        ),
    }
}
