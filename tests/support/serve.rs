//! The `mlcli serve` tests' harness: the real binary serving SmolLM2 on a free loopback port,
//! a small HTTP/1.1 client (chunked bodies, SSE events) and the requests the tests share.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlcli::models::testing::{real_model, SMOLLM2};
use serde_json::{json, Value};

/// A running server and what it has printed on stderr so far.
pub struct Served {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<String>>,
}

impl Served {
    pub fn start(extra: &[&str]) -> Served {
        let model = real_model(SMOLLM2);
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlcli"))
            .arg("serve")
            .arg(&model)
            .args(["--port", "0", "-c", "1024"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mlcli starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("http://") {
                    let addr = line[at + 7..].trim_end_matches("/v1").to_string();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no address printed: {}", log.lock().unwrap()));
        Served { child, addr, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle` (the engine logs a request when it ends).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "'{needle}' never logged: {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange: the status and the whole body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text[9..12].parse().expect("status");
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// POSTs `body` as JSON: the status and the raw body (an event stream, say).
pub fn post_text(addr: &str, path: &str, body: &Value) -> (u16, String) {
    http(addr, "POST", path, &[], body.to_string().as_bytes())
}

/// POSTs `body` as JSON: the status, the body parsed (`Null` when it is not JSON) and raw.
pub fn post(addr: &str, path: &str, body: &Value) -> (u16, Value, String) {
    let (status, text) = post_text(addr, path, body);
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, v, text)
}

/// The `data:` payloads of an event stream (with their `event:` names).
pub fn events(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut name = None;
    for line in body.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = Some(n.to_string());
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((name.take(), d.to_string()));
        }
    }
    out
}

pub fn chat(content: &str, extra: Value) -> Value {
    let mut b = json!({"model": "smollm2", "messages": [{"role": "user", "content": content}],
                       "temperature": 0, "max_tokens": 12});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

pub fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40},
                           "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"], "additionalProperties": false}}}])
}
