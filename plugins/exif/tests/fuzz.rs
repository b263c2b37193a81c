//! Mutated corpus files through the parsers: no panic, no read past the
//! budget, and still a decision (the fallbacks always answer). 10 000
//! inputs, deterministic, well under a minute.

use std::path::Path;
use std::time::Instant;

use keepsake_stage_exif::capture::{Inputs, examine};
use keepsake_stage_exif::source::Bytes;
use keepsake_stage_exif::time::Stamp;

const ITERATIONS: usize = 10_000;
const BUDGET: u64 = 8 << 20;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One of the mutations that break parsers: flipped bits, lengths and
/// counts made huge or zero, truncation, spliced or repeated blocks.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if data.is_empty() {
            data.push(rng.next() as u8);
        }
        // Most metadata sits in the first 64 KiB: aim there most of the time.
        let window = if rng.below(4) == 0 {
            data.len()
        } else {
            data.len().min(64 << 10)
        };
        let at = rng.below(window);
        match rng.below(7) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)],
            2 => {
                // A 32-bit length or count made huge, zero or pointing back.
                let value: u32 = [u32::MAX, 0, 0x7FFF_FFFF, 8, rng.next() as u32][rng.below(5)];
                for (i, b) in value.to_be_bytes().iter().enumerate() {
                    if let Some(slot) = data.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            3 => data.truncate(at),
            4 => {
                let len = rng.below(256).min(data.len() - at);
                let block: Vec<u8> = data[at..at + len].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, block);
            }
            5 => {
                let noise: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, noise);
            }
            _ => {
                let len = rng.below(64).min(data.len() - at);
                data.drain(at..at + len);
            }
        }
    }
    data
}

/// Counts reads, to prove the budget holds.
struct Counting<'a> {
    data: &'a [u8],
    read: std::cell::Cell<u64>,
}

impl Bytes for Counting<'_> {
    fn read_at(&self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        assert!(
            len <= 1 << 20,
            "a read of {len} bytes: more than the host allows"
        );
        let out = self.data.read_at(offset, len)?;
        self.read.set(self.read.get() + out.len() as u64);
        Ok(out)
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

#[test]
fn ten_thousand_mutated_corpus_files_never_panic_or_overread() {
    let media = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/media");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&media)
        .expect("the corpus at ../shared/corpus")
        .flatten()
        .map(|e| {
            let mut bytes = std::fs::read(e.path()).expect("read corpus file");
            // The parsers read prefixes; mutating 25 MB RAWs whole only costs time.
            bytes.truncate(2 << 20);
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    seeds.sort();
    assert_eq!(seeds.len(), 70);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let mut dated_by_metadata = 0;
    for i in 0..ITERATIONS {
        let (name, seed) = &seeds[i % seeds.len()];
        let data = mutate(&mut rng, seed);
        let file = Counting {
            data: &data,
            read: std::cell::Cell::new(0),
        };
        let inputs = Inputs {
            relative_path: name,
            sidecars: Vec::new(),
            mtime: Some((Stamp::new(2024, 5, 12, 10, 0, 0), 0)),
            now: Stamp::new(2026, 1, 1, 0, 0, 0).unix(0),
        };
        let found = examine(&file, BUDGET, &inputs);
        assert!(
            file.read.get() <= BUDGET,
            "{name}: read {} bytes",
            file.read.get()
        );
        let capture = found.capture.expect("the mtime fallback always answers");
        assert!(
            capture
                .stamp
                .invalid_reason(capture.offset_minutes, inputs.now)
                .is_none()
        );
        if capture.source != "file:mtime" {
            dated_by_metadata += 1;
        }
    }
    let took = started.elapsed();
    eprintln!(
        "{ITERATIONS} mutated inputs in {took:?}; {dated_by_metadata} still dated by their metadata"
    );
    assert!(
        dated_by_metadata > ITERATIONS / 4,
        "the mutations should leave many files parseable"
    );
}
