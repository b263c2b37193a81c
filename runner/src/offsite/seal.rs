//! Client-side encryption for targets you do not trust, with age
//! (X25519 recipients, the format of the `age` and `rage` tools, so a copy
//! can be opened without keepsake: `age -d -i key.txt photo.jpg.age`).
//!
//! Pushing needs only the public recipients. The secret identity stays off
//! the machine's config: `keepsake offsite keygen FILE` writes one, and
//! `keepsake offsite restore --identity FILE` or `age -d` uses it.

use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

/// Parse `age1…` public keys.
pub fn recipients(keys: &[String]) -> Result<Vec<age::x25519::Recipient>, String> {
    keys.iter()
        .map(|key| {
            age::x25519::Recipient::from_str(key)
                .map_err(|e| format!("{key:?} is not an age public key: {e}"))
        })
        .collect()
}

/// Encrypt `local` (which must have BLAKE3 `blake3`) into the new file
/// `sealed`. Returns the ciphertext's BLAKE3 and size.
pub fn seal(
    local: &Path,
    blake3: &str,
    sealed: &Path,
    to: &[age::x25519::Recipient],
) -> io::Result<(String, u64)> {
    let mut input = crate::effects::fsops::open_nofollow(local)?;
    let output = crate::effects::fsops::create_staging(sealed)?;
    let hashing = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, output),
        hasher: blake3::Hasher::new(),
        written: 0,
    };
    let encryptor = age::Encryptor::with_recipients(to.iter().map(|r| r as &dyn age::Recipient))
        .map_err(io::Error::other)?;
    let mut writer = encryptor.wrap_output(hashing)?;
    let mut plain = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        plain.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
    }
    let mut hashing = writer.finish()?;
    hashing.inner.flush()?;
    if plain.finalize().to_hex().as_str() != blake3 {
        return Err(io::Error::other(format!(
            "{} no longer has the bytes keepsake placed; restore it from another copy",
            local.display()
        )));
    }
    Ok((
        hashing.hasher.finalize().to_hex().to_string(),
        hashing.written,
    ))
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The identities in an age identity file (as `age-keygen` and `keepsake
/// offsite keygen` write them).
pub fn identities(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, String> {
    let file = age::IdentityFile::from_file(path.to_string_lossy().into_owned())
        .map_err(|e| format!("cannot read identity file {}: {e}", path.display()))?;
    file.into_identities()
        .map_err(|e| format!("identity file {}: {e}", path.display()))
}

/// Decrypt `sealed` into the new file `plain`; returns the plaintext's
/// BLAKE3. A damaged or foreign ciphertext is an error (age authenticates
/// every 64 KiB chunk), and `plain` is removed.
pub fn open(
    sealed: &Path,
    plain: &Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> io::Result<String> {
    let result = (|| {
        let input = io::BufReader::new(std::fs::File::open(sealed)?);
        let decryptor = age::Decryptor::new(input).map_err(io::Error::other)?;
        let mut reader = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(io::Error::other)?;
        let mut output = io::BufWriter::new(crate::effects::fsops::create_staging(plain)?);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            output.write_all(&buf[..n])?;
        }
        output.flush()?;
        Ok(hasher.finalize().to_hex().to_string())
    })();
    if result.is_err() {
        let _ = crate::effects::fsops::remove_temp(plain);
    }
    result
}

/// Write a new identity to `path` (never replacing a file; readable by its
/// owner only) and return its public recipient.
pub fn keygen(path: &Path) -> io::Result<String> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let text = format!(
        "# created by keepsake {}\n# public key: {recipient}\n{}\n",
        env!("CARGO_PKG_VERSION"),
        identity.to_string().expose_secret()
    );
    crate::effects::fsops::write_secret(path, text.as_bytes())?;
    Ok(recipient)
}
