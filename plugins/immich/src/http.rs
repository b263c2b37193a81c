//! A small blocking HTTP client over wasi:http. The host grants one origin
//! (the Immich server) and adds the API key to every request itself: this
//! code never sees it.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// The largest response body this stage reads (Immich's answers are JSON).
const MAX_RESPONSE: usize = 32 << 20;

/// Where requests go: scheme, host:port and the path prefix (`/api`).
pub struct Server {
    scheme: Scheme,
    authority: String,
    prefix: String,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "answer {} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }

    /// Immich's error message (`message` is a string or a list).
    pub fn message(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(500)]).into_owned();
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) => match &v["message"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => text,
            },
            Err(_) => text,
        }
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum Failure {
    /// The host refused the origin: a config error, never retried.
    Denied,
    /// Reading the file to send failed: this file's problem, not the
    /// server's.
    Local(String),
    /// Connection refused, timeout, reset: the server may come back.
    Unreachable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Denied => write!(f, "the host refused the request (origin not granted)"),
            Failure::Local(m) => write!(f, "{m}"),
            Failure::Unreachable(m) => write!(f, "{m}"),
        }
    }
}

/// One part of a streamed request body.
pub enum Part<'a> {
    Bytes(Vec<u8>),
    /// `len` bytes read through `read(offset, len)`, 1 MiB at a time.
    Stream {
        len: u64,
        read: &'a dyn Fn(u64, u32) -> Result<Vec<u8>, String>,
    },
}

impl Part<'_> {
    fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::Stream { len, .. } => *len,
        }
    }
}

impl Server {
    /// `url`: `http(s)://host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Server, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(format!(
                "{url:?}: the Immich url starts with http:// or https://"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("{url:?} names no server"));
        }
        Ok(Server {
            scheme,
            authority: authority.to_string(),
            prefix: format!("{path}/api"),
        })
    }

    pub fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, Failure> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let headers = vec![("accept", "application/json".to_string())];
        let mut headers = headers;
        let parts: Vec<Part<'_>> = match bytes {
            Some(bytes) => {
                headers.push(("content-type", "application/json".into()));
                vec![Part::Bytes(bytes)]
            }
            None => Vec::new(),
        };
        self.send(method, path, &headers, &parts)
    }

    pub fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        parts: &[Part<'_>],
    ) -> Result<Response, Failure> {
        let len: u64 = parts.iter().map(Part::len).sum();
        let fields = Fields::new();
        for (name, value) in headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| Failure::Unreachable(format!("header {name}: {e:?}")))?;
        }
        if !parts.is_empty() || matches!(method, Method::Post | Method::Put) {
            let _ = fields.append("content-length", len.to_string().as_bytes());
        }
        let request = OutgoingRequest::new(fields);
        let _ = request.set_method(&method);
        let _ = request.set_scheme(Some(&self.scheme));
        let _ = request.set_authority(Some(&self.authority));
        let _ = request.set_path_with_query(Some(&format!("{}{path}", self.prefix)));
        let body = request
            .body()
            .map_err(|()| Failure::Unreachable("request body taken twice".into()))?;
        let options = RequestOptions::new();
        let _ = options.set_connect_timeout(Some(10_000_000_000));
        let pending = outgoing_handler::handle(request, Some(options)).map_err(failure)?;
        // A server may answer before it has read everything (a refused key,
        // a file too large): then writing stops, and its answer is what
        // counts. Once the last byte is written the connection may also
        // take the body and close the stream: that is not an error.
        let written = (|| -> Result<(), Failure> {
            let stream = body
                .write()
                .map_err(|()| Failure::Unreachable("request body stream taken twice".into()))?;
            for part in parts {
                match part {
                    Part::Bytes(bytes) => write_all(&stream, bytes)?,
                    Part::Stream { len, read } => {
                        let mut offset = 0u64;
                        while offset < *len {
                            let want = (*len - offset).min(1 << 20) as u32;
                            let chunk = read(offset, want).map_err(Failure::Local)?;
                            if chunk.is_empty() {
                                return Err(Failure::Local(format!(
                                    "the file ended at {offset} of {len} bytes while it was sent"
                                )));
                            }
                            write_all(&stream, &chunk)?;
                            offset += chunk.len() as u64;
                        }
                    }
                }
            }
            match stream.blocking_flush() {
                Ok(()) | Err(StreamError::Closed) => Ok(()),
                Err(e) => Err(Failure::Unreachable(stream_error(e))),
            }
        })();
        let finished = OutgoingBody::finish(body, None).map_err(failure);
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => {
                written?;
                finished?;
                return Err(failure(code));
            }
            Some(Err(())) | None => {
                written?;
                finished?;
                return Err(Failure::Unreachable("no response".into()));
            }
        };
        let status = response.status();
        let incoming = response
            .consume()
            .map_err(|()| Failure::Unreachable("response body taken twice".into()))?;
        let body = read_body(&incoming)?;
        Ok(Response { status, body })
    }
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, Failure> {
    let stream: InputStream = incoming
        .stream()
        .map_err(|()| Failure::Unreachable("response stream taken twice".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => {
                if body.len() + chunk.len() > MAX_RESPONSE {
                    return Err(Failure::Unreachable(format!(
                        "the answer is larger than {} MiB",
                        MAX_RESPONSE >> 20
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(e) => return Err(Failure::Unreachable(stream_error(e))),
        }
    }
    drop(stream);
    Ok(body)
}

fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), Failure> {
    while !bytes.is_empty() {
        let permitted = match stream.check_write() {
            Ok(0) => {
                stream.subscribe().block();
                continue;
            }
            Ok(n) => n,
            Err(e) => return Err(Failure::Unreachable(stream_error(e))),
        };
        let n = (permitted as usize).min(bytes.len());
        stream
            .write(&bytes[..n])
            .map_err(|e| Failure::Unreachable(stream_error(e)))?;
        bytes = &bytes[n..];
    }
    Ok(())
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the connection closed".into(),
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
    }
}

fn failure(code: ErrorCode) -> Failure {
    match code {
        ErrorCode::HttpRequestDenied => Failure::Denied,
        ErrorCode::ConnectionRefused => Failure::Unreachable("connection refused".into()),
        ErrorCode::ConnectionTimeout => Failure::Unreachable("connection timed out".into()),
        ErrorCode::DnsError(e) => Failure::Unreachable(format!(
            "cannot resolve the server name ({})",
            e.rcode.unwrap_or_default()
        )),
        other => Failure::Unreachable(format!("{other:?}")),
    }
}
