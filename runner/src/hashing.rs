//! One read of a file feeds BLAKE3 (keepsake's identity of an original) and
//! SHA-1 (Immich's checksum) together, in constant memory.

use std::io::{Read, Write};
use std::sync::Arc;

use sha1::Digest;

use crate::media::SNIFF_LEN;

const CHUNK: usize = 1 << 20;
/// Above this size SHA-1 runs on its own thread beside BLAKE3.
const PARALLEL_FROM: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    pub blake3: String,
    pub sha1: String,
    pub size: u64,
    /// The first bytes, for sniffing the media kind without a second read.
    pub head: Vec<u8>,
}

/// Hash everything `reader` yields. `size_hint` picks the strategy only.
pub fn hash_reader(reader: impl Read, size_hint: u64) -> std::io::Result<Hashes> {
    hash_and_copy(reader, size_hint, None)
}

/// Hash everything `reader` yields and, when `copy_to` is given, write the
/// same bytes there in the same pass (a large file's copy costs no second
/// read). For large inputs SHA-1 and the writer run on their own threads.
pub fn hash_and_copy(
    mut reader: impl Read,
    size_hint: u64,
    copy_to: Option<&mut (dyn Write + Send)>,
) -> std::io::Result<Hashes> {
    let mut blake3 = blake3::Hasher::new();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut size = 0u64;
    let sha1 = if size_hint < PARALLEL_FROM {
        let mut sha1 = sha1::Sha1::new();
        let mut copy_to = copy_to;
        with_buffer(CHUNK.min(size_hint as usize + 1).max(8192), |buf| {
            loop {
                let n = read_full(&mut reader, buf)?;
                if n == 0 {
                    return Ok(());
                }
                let chunk = &buf[..n];
                keep_head(&mut head, chunk);
                blake3.update(chunk);
                sha1.update(chunk);
                if let Some(out) = copy_to.as_mut() {
                    out.write_all(chunk)?;
                }
                size += n as u64;
            }
        })?;
        sha1.finalize()
    } else {
        std::thread::scope(|scope| -> std::io::Result<_> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(4);
            let worker = scope.spawn(move || {
                let mut sha1 = sha1::Sha1::new();
                for chunk in rx {
                    sha1.update(&chunk[..]);
                }
                sha1.finalize()
            });
            let (write_tx, write_rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(4);
            let writer = copy_to.map(|out| {
                scope.spawn(move || -> std::io::Result<()> {
                    for chunk in write_rx {
                        out.write_all(&chunk)?;
                    }
                    Ok(())
                })
            });
            let result = (|| {
                loop {
                    let mut buf = vec![0u8; 4 * CHUNK];
                    let n = read_full(&mut reader, &mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.truncate(n);
                    let chunk = Arc::new(buf);
                    keep_head(&mut head, &chunk);
                    // The workers only stop when their channel closes (or
                    // the writer on an error, reported when it is joined).
                    let _ = tx.send(Arc::clone(&chunk));
                    if writer.is_some() {
                        let _ = write_tx.send(Arc::clone(&chunk));
                    }
                    blake3.update(&chunk);
                    size += n as u64;
                }
            })();
            drop(tx);
            drop(write_tx);
            let sha1 = worker
                .join()
                .map_err(|_| std::io::Error::other("SHA-1 worker thread panicked"))?;
            if let Some(writer) = writer {
                writer
                    .join()
                    .map_err(|_| std::io::Error::other("copy thread panicked"))??;
            }
            result.map(|()| sha1)
        })?
    };
    Ok(Hashes {
        blake3: blake3.finalize().to_hex().to_string(),
        sha1: hex(&sha1),
        size,
        head,
    })
}

/// BLAKE3 of a file, for verifying what was written.
pub fn blake3_file(path: &std::path::Path) -> std::io::Result<String> {
    // Never through a link: a library file that became a symlink does not
    // hold the bytes it points at as far as keepsake is concerned.
    let mut file = crate::effects::fsops::open_nofollow(path)?;
    let mut hasher = blake3::Hasher::new();
    with_buffer(CHUNK, |buf| {
        loop {
            let n = read_full(&mut file, buf)?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
        }
    })?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn keep_head(head: &mut Vec<u8>, chunk: &[u8]) {
    if head.len() < SNIFF_LEN {
        let take = (SNIFF_LEN - head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..take]);
    }
}

/// Fill `buf` unless the reader ends first; returns how many bytes it holds.
/// A read buffer of at least `len` bytes, kept per thread: a fresh 1 MiB
/// buffer per file costs more in page faults than hashing a small photo.
fn with_buffer<R>(
    len: usize,
    f: impl FnOnce(&mut [u8]) -> std::io::Result<R>,
) -> std::io::Result<R> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on this thread: a buffer of its own.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Digests of a file that offsite targets keep for their objects, so a copy
/// can be checked without downloading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    pub sha256: Option<String>,
    pub sha1: Option<String>,
    pub md5: Option<String>,
}

impl Digests {
    /// The local digest of `kind` (`sha256`, `sha1`, `md5`).
    pub fn of(&self, kind: &str) -> Option<&str> {
        match kind {
            "sha256" => self.sha256.as_deref(),
            "sha1" => self.sha1.as_deref(),
            "md5" => self.md5.as_deref(),
            _ => None,
        }
    }
}

/// Which [`Digests`] to compute besides BLAKE3.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    pub sha256: bool,
    /// SHA-1 and MD5: rclone remotes that keep no SHA-256 keep one of these.
    pub sha1_md5: bool,
}

/// BLAKE3 and the digests asked for of a file now, in one read; None when
/// it cannot be read (gone, or a link: it is opened without following).
pub fn blake3_and_digests(path: &std::path::Path, want: Want) -> Option<(String, Digests)> {
    let mut file = crate::effects::fsops::open_nofollow(path).ok()?;
    let mut blake3 = blake3::Hasher::new();
    let mut sha256 = want.sha256.then(sha2::Sha256::new);
    let mut sha1 = want.sha1_md5.then(sha1::Sha1::new);
    let mut md5 = want.sha1_md5.then(md5::Md5::new);
    with_buffer(CHUNK, |buf| {
        loop {
            let n = read_full(&mut file, buf)?;
            if n == 0 {
                return Ok(());
            }
            blake3.update(&buf[..n]);
            if let Some(h) = sha256.as_mut() {
                h.update(&buf[..n]);
            }
            if let Some(h) = sha1.as_mut() {
                h.update(&buf[..n]);
            }
            if let Some(h) = md5.as_mut() {
                h.update(&buf[..n]);
            }
        }
    })
    .ok()?;
    Some((
        blake3.finalize().to_hex().to_string(),
        Digests {
            sha256: sha256.map(|h| hex(&h.finalize())),
            sha1: sha1.map(|h| hex(&h.finalize())),
            md5: md5.map(|h| hex(&h.finalize())),
        },
    ))
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_strategies_agree_with_reference_digests() {
        let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
        let small = hash_reader(&data[..1000], 1000).expect("hash");
        assert_eq!(
            small.blake3,
            blake3::hash(&data[..1000]).to_hex().to_string()
        );
        assert_eq!(small.sha1, hex(&sha1::Sha1::digest(&data[..1000])));
        let large = hash_reader(&data[..], data.len() as u64).expect("hash");
        let sequential = hash_reader(&data[..], 0).expect("hash");
        assert_eq!(large, sequential);
        assert_eq!(large.size, data.len() as u64);
        assert_eq!(large.head, &data[..SNIFF_LEN]);
        assert_eq!(
            hash_reader(&b"abc"[..], 3).expect("hash").sha1,
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
