//! `mlcli serve`'s scheduling, timed from the client: concurrent requests decoded together,
//! and a long prompt admitted mid-stream fed in chunks between the other stream's tokens.
//! These tests compare arrival times, so they sit in a binary of their own and take turns
//! ([`ALONE`]): run beside another test's server on a two-core machine, the client threads'
//! clocks measure the machine's contention as much as the scheduler.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::serve::{chat, events, Served};

/// Held by each test for its whole run, so no two servers share the machine.
static ALONE: Mutex<()> = Mutex::new(());

/// Waits for the other tests of this binary to finish (a failed one leaves no harm behind).
fn alone() -> MutexGuard<'static, ()> {
    ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends `body` to the chat endpoint on a connection the server closes after its reply, read
/// with a two-minute limit.
fn open_chat(addr: &str, body: &Value) -> TcpStream {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    s
}

/// Sends a streamed chat request and returns its text with when its first content chunk and
/// its end arrived.
fn timed_stream(addr: &str, body: &Value) -> (String, Instant, Instant) {
    let mut s = open_chat(addr, body);
    let (mut seen, mut buf, mut first) = (String::new(), [0u8; 4096], None);
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if first.is_none() && seen.contains("\"content\":\"") {
            first = Some(Instant::now());
        }
        if seen.contains("data: [DONE]") {
            break;
        }
    }
    let end = Instant::now();
    let text: String = events(&seen)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    (text, first.expect("a content chunk"), end)
}

#[test]
fn concurrent_requests_decode_together_and_answer_as_alone() {
    let _alone = alone();
    let s = Served::start(&["--parallel", "4"]);
    let body = |i: usize| {
        chat(
            &format!("Write a short poem about the number {i}."),
            json!({"max_tokens": 24, "ignore_eos": true, "stream": true}),
        )
    };
    let alone: Vec<String> = (0..4).map(|i| timed_stream(&s.addr, &body(i)).0).collect();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (addr, b) = (s.addr.clone(), body(i));
            std::thread::spawn(move || timed_stream(&addr, &b))
        })
        .collect();
    let together: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Every stream had begun before any ended: they were decoded together, not queued.
    let last_start = together.iter().map(|t| t.1).max().unwrap();
    let first_end = together.iter().map(|t| t.2).min().unwrap();
    assert!(
        last_start < first_end,
        "the four streams ran one after another"
    );
    // Greedy replies are the same as when each was alone.
    for (i, (text, _, _)) in together.iter().enumerate() {
        assert_eq!(*text, alone[i], "request {i}");
    }
}

/// Streams a chat request: each non-empty content delta with when it arrived.
fn content_arrivals(addr: &str, body: &Value) -> Vec<(Instant, String)> {
    let mut s = open_chat(addr, body);
    let (mut pending, mut buf, mut out) = (String::new(), [0u8; 4096], Vec::new());
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(at) = pending.find('\n') {
            let line: String = pending.drain(..at + 1).collect();
            let Some(data) = line.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return out;
            }
            let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                if !t.is_empty() {
                    out.push((Instant::now(), t.to_string()));
                }
            }
        }
    }
}

#[test]
fn a_long_prompt_admitted_mid_stream_does_not_freeze_the_other_stream() {
    let _alone = alone();
    let s = Served::start(&["--parallel", "2"]);
    let running = chat(
        "Count from one to one hundred.",
        json!({"max_tokens": 300, "ignore_eos": true, "stream": true}),
    );
    let addr = s.addr.clone();
    let a = std::thread::spawn(move || content_arrivals(&addr, &running));
    // Once the first stream is decoding, a prompt of about 900 tokens (4 chunks) arrives.
    std::thread::sleep(Duration::from_millis(1500));
    let long = chat(
        &"The quick brown fox jumps over the lazy dog. ".repeat(90),
        json!({"max_tokens": 4, "ignore_eos": true, "stream": true}),
    );
    let sent = Instant::now();
    let b = content_arrivals(&s.addr, &long);
    let a = a.join().unwrap();
    let b_first = b.first().expect("the long prompt's reply").0;
    let during = a.iter().filter(|(t, _)| *t > sent && *t < b_first).count();
    // Fed whole, the long prompt would let the first stream write at most the token in
    // flight and one more before its first token; in four chunks, one before each (four),
    // and the one in flight. One may still be on its way when the long reply's first token
    // is read: three is the least that tells chunks from a whole prompt.
    assert!(
        during >= 3,
        "{during} tokens of the first stream while the long prompt was fed"
    );
    let log = s.wait_for_log("request 2 ");
    let prompt: usize = log
        .split("request 2 (/v1/chat/completions): ")
        .nth(1)
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(prompt > 3 * 256, "{log}");
    assert!(
        a.iter().any(|(t, _)| *t > b_first),
        "the first stream ended before the long prompt was in"
    );
}
