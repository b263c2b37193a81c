//! Bounded access to a file's bytes. In the sandbox the bytes come from the
//! host's `read`; in tests from memory. A budget caps how much one file may
//! cost, so a hostile file cannot make the stage read (or allocate) without
//! limit.

use std::cell::Cell;
use std::io::{self, BufRead, Read, Seek, SeekFrom};

/// Random access to a file's bytes.
pub trait Bytes {
    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    fn read_at(&self, offset: u64, len: u32) -> io::Result<Vec<u8>>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Bytes for [u8] {
    fn read_at(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let start = (offset.min(self.len() as u64)) as usize;
        let end = start.saturating_add(len as usize).min(<[u8]>::len(self));
        Ok(self[start..end].to_vec())
    }
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
}

/// Counts what was read, and refuses to read past a budget.
pub struct Budgeted<'a> {
    inner: &'a dyn Bytes,
    budget: u64,
    used: Cell<u64>,
}

impl<'a> Budgeted<'a> {
    pub fn new(inner: &'a dyn Bytes, budget: u64) -> Budgeted<'a> {
        Budgeted {
            inner,
            budget,
            used: Cell::new(0),
        }
    }

    pub fn used(&self) -> u64 {
        self.used.get()
    }

    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Read `len` bytes at `offset`; fewer at the end of the file. Fails
    /// once the budget is spent.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let size = self.inner.len();
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let len = (len as u64).min(size - offset);
        if self.used.get().saturating_add(len) > self.budget {
            return Err(io::Error::other("read budget spent"));
        }
        let mut out = Vec::with_capacity(len as usize);
        while (out.len() as u64) < len {
            let want = (len - out.len() as u64).min(1 << 20) as u32;
            let chunk = self.inner.read_at(offset + out.len() as u64, want)?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        self.used.set(self.used.get() + out.len() as u64);
        Ok(out)
    }

    /// A `Read + Seek + BufRead` view for parsers that want a stream.
    pub fn stream(&'a self) -> Stream<'a> {
        Stream {
            bytes: self,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }
}

/// A buffered stream over [`Budgeted`], reading 16 KiB at a time.
pub struct Stream<'a> {
    bytes: &'a Budgeted<'a>,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

const STREAM_CHUNK: usize = 16 << 10;

impl Read for Stream<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Stream<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let in_buf =
            self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            self.buf = self.bytes.read_at(self.pos, STREAM_CHUNK)?;
            self.buf_start = self.pos;
        }
        let skip = (self.pos - self.buf_start) as usize;
        Ok(self.buf.get(skip..).unwrap_or_default())
    }

    fn consume(&mut self, n: usize) {
        self.pos += n as u64;
    }
}

impl Seek for Stream<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.bytes.len().checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}
