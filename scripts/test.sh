#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test, and a quick run of the
# benchmark so it cannot rot. Installs what it needs on a fresh machine with
# only rustup (the pinned toolchain and the wasm32-wasip2 target come from
# rust-toolchain.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# A clean build gains nothing from incremental compilation's caches.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

# Tools the tests and the benchmark use, installed inside the clone.
# b3sum is the benchmark's floor, which CI does not run in full.
if [ "${CI:-}" != true ] && [ ! -x tools/bin/b3sum ]; then
  cargo install --locked --quiet b3sum --root tools
fi
# A real S3 server on 127.0.0.1 for the offsite tests (a folder per bucket).
# A test server needs no LTO nor opt-level 3: built in half the time.
if [ ! -x tools/bin/s3s-fs ]; then
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install --locked --quiet s3s-fs@0.14.1 --features binary --root tools
fi
# exiftool generates and reads back test files; setpriv runs a test as an
# unprivileged user. From Debian's packages, as is rclone below.
missing=()
command -v exiftool >/dev/null 2>&1 || missing+=(libimage-exiftool-perl)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
# rclone: the benchmark compares keepsake's offsite push with `rclone copy`.
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
# bindfs (FUSE) and strace: a library on a real FUSE mount gets an fsync
# per file and folder before a source goes (the test skips without /dev/fuse).
command -v bindfs >/dev/null 2>&1 || missing+=(bindfs)
command -v fusermount >/dev/null 2>&1 || missing+=(fuse)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step() { printf '\n== %s (%s, %ss since the start)\n' "$1" "$(date +%T)" "$SECONDS"; }

step "cargo fmt"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# One build of everything, the keepsake binary and the benchmark included.
# runner/Cargo.toml declares the features the rest of the workspace turns
# on, so `cargo build -p keepsake` (and `cargo run -- run` afterwards)
# rebuilds no dependency; KEEPSAKE_BIN only spares each test binary a
# cargo call.
step "cargo build"
cargo build --workspace --all-targets
export KEEPSAKE_BIN="$PWD/target/debug/keepsake"
step "cargo test"
cargo test --workspace
# The benchmark: at small sizes here; on CI, whose 30 minutes the build
# mostly takes, only its corpus section (the figures live in the notes, and
# `keepsake-bench --smoke` runs every case in two minutes).
if [ "${CI:-}" = true ]; then
  step "benchmark (--smoke --only corpus)"
  (cd tests && ../target/debug/keepsake-bench --smoke --only corpus)
else
  step "benchmark (--quick)"
  (cd tests && ../target/debug/keepsake-bench --quick)
fi
step "done"

