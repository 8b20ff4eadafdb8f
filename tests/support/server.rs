//! A tiny HTTP/1.1 server on 127.0.0.1 for the store's tests: one thread per connection,
//! `Connection: close`, a handler that maps a request to a reply, byte ranges, and faults on
//! demand (a connection cut after N body bytes, or stalled there), with a log of every request
//! and the body bytes actually sent.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A parsed request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path with query.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The start of a `Range: bytes=N-` header.
    pub fn range_start(&self) -> Option<usize> {
        let r = self.header("range")?.strip_prefix("bytes=")?;
        r.split('-').next()?.parse().ok()
    }
}

/// What to answer.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send only this many body bytes (after announcing them all), then close.
    pub cut_after: Option<usize>,
    /// After `cut_after` bytes, keep the connection open this long before closing.
    pub stall: Option<Duration>,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }

    pub fn json(v: &serde_json::Value) -> Self {
        Self::new(200)
            .header("Content-Type", "application/json")
            .body(v.to_string())
    }

    /// 200 with `content`, or 206 from the request's range start.
    pub fn ranged(req: &Request, content: &[u8]) -> Self {
        match req.range_start() {
            Some(start) if start > 0 && start < content.len() => Self::new(206)
                .header(
                    "Content-Range",
                    format!("bytes {start}-{}/{}", content.len() - 1, content.len()),
                )
                .body(content[start..].to_vec()),
            Some(start) if start >= content.len() && start > 0 => {
                Self::new(416).header("Content-Range", format!("bytes */{}", content.len()))
            }
            _ => Self::new(200).body(content.to_vec()),
        }
    }
}

/// One served request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// Body bytes written to the socket.
    pub sent: usize,
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running server; it lives until the test process exits.
pub struct Server {
    pub base: String,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (handler, log) = (handler.clone(), log2.clone());
                std::thread::spawn(move || serve(stream, &*handler, &log));
            }
        });
        Server { base, log }
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests(&self, prefix: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.path.starts_with(prefix))
            .collect()
    }
}

/// A base URL where nothing listens (a port bound and released).
pub fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Logged>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let req = Request {
        method,
        path,
        headers,
    };
    let reply = handler(&req);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let n = if req.method == "HEAD" {
        0
    } else {
        reply
            .cut_after
            .unwrap_or(reply.body.len())
            .min(reply.body.len())
    };
    // Logged before answering, so that a client that has finished finds its requests logged;
    // corrected if the write fails.
    let entry = {
        let mut log = log.lock().unwrap();
        log.push(Logged {
            method: req.method.clone(),
            path: req.path.clone(),
            range: req.header("range").map(str::to_string),
            authorization: req.header("authorization").map(str::to_string),
            status: reply.status,
            sent: n,
        });
        log.len() - 1
    };
    let written = out
        .write_all(head.as_bytes())
        .and_then(|_| out.write_all(&reply.body[..n]))
        .and_then(|_| out.flush());
    if written.is_err() {
        log.lock().unwrap()[entry].sent = 0;
    }
    if let Some(d) = reply.stall {
        std::thread::sleep(d);
    }
    let _ = out.shutdown(std::net::Shutdown::Both);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    }
}
