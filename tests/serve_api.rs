//! `mlcli serve` end to end: the real binary serving SmolLM2 on a free loopback port, driven
//! over HTTP — OpenAI chat (whole and streamed, with usage), completions, models, Anthropic
//! messages (whole and streamed), errors as error objects (malformed body, unsupported
//! parameter, too large, no key) with the server healthy after them, prefix reuse across
//! resent conversations, concurrent clients, a client leaving mid-stream, and SIGTERM. The
//! reasoning formats' tests are in `serve_reasoning.rs`, the timed scheduling tests
//! (streams decoded together, long prompts fed in chunks) in `serve_scheduling.rs`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use mlcli::models::testing::{real_model, SMOLLM2};
use serde_json::{json, Value};
use support::serve::{chat, events, http, post, post_text, weather_tool, Served};

#[test]
fn openai_chat_whole_and_streamed_completions_and_models() {
    let s = Served::start(&[]);
    let (status, v, text) = post(
        &s.addr,
        "/v1/chat/completions",
        &chat("What is the capital of France?", json!({})),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(v["object"], "chat.completion");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!answer.is_empty(), "{text}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(["stop", "length"].contains(&v["choices"][0]["finish_reason"].as_str().unwrap()));
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    // The same request streamed gives the same text (greedy), then usage, then [DONE].
    let body = chat(
        "What is the capital of France?",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let (status, text) = post_text(&s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{text}");
    let evs = events(&text);
    assert_eq!(evs.last().unwrap().1, "[DONE]", "{text}");
    let chunks: Vec<Value> = evs[..evs.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, answer);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"]["completion_tokens"],
        v["usage"]["completion_tokens"]
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"].is_string()));
    // Raw completion and the model list.
    let (status, v, text) = post(
        &s.addr,
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());
    let (status, text) = http(&s.addr, "GET", "/v1/models", &[], b"");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
}

#[test]
fn anthropic_messages_whole_and_streamed_as_anthropic_sends_them() {
    let s = Served::start(&[]);
    let body = json!({"model": "m", "max_tokens": 8, "temperature": 0, "system": "Be brief.",
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]});
    let (status, v, text) = post(&s.addr, "/v1/messages", &body);
    assert_eq!(status, 200, "{text}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    assert!(
        ["end_turn", "max_tokens"].contains(&v["stop_reason"].as_str().unwrap()),
        "{text}"
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, text) = post_text(&s.addr, "/v1/messages", &streamed);
    assert_eq!(status, 200, "{text}");
    let names: Vec<String> = events(&text).into_iter().filter_map(|(n, _)| n).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    let deltas = names.iter().filter(|n| *n == "content_block_delta").count();
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected, "{text}");
    let text_of = |t: &str| -> String {
        events(t)
            .into_iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(&d).ok())
            .filter_map(|d| d["delta"]["text"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(text_of(&text), v["content"][0]["text"].as_str().unwrap());
    // Anthropic's error shape.
    let (status, v, _) = post(
        &s.addr,
        "/v1/messages",
        &json!({"max_tokens": 8, "messages": [], "tools": [{"name": "x"}]}),
    );
    assert_eq!(status, 400);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[test]
fn bad_requests_get_error_objects_and_the_server_stays_healthy() {
    let s = Served::start(&["--max-body", "4096"]);
    let (status, text) = http(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        b"{\"messages\": [",
    );
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let cases = [
        (
            chat(
                "x",
                json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            ),
            "tools",
        ),
        (chat("x", json!({"n": 2})), "n"),
        (chat("x", json!({"temperature": -1})), "temperature"),
        (chat("x", json!({"max_tokens": 100000})), "max_tokens"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}),
            "messages[0].content[0]",
        ),
    ];
    for (body, param) in cases {
        let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
        assert_eq!(status, 400, "{text}");
        assert_eq!(v["error"]["param"], param, "{text}");
    }
    let big = chat(&"x".repeat(8000), json!({}));
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &big);
    assert_eq!(status, 413, "{text}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--max-body"));
    let (status, _, text) = post(&s.addr, "/v1/nope", &json!({}));
    assert_eq!(status, 404, "{text}");
    let (status, text) = http(&s.addr, "GET", "/health", &[], b"");
    assert_eq!((status, text.as_str()), (200, "{\"status\":\"ok\"}"));
    let (status, _, text) = post(
        &s.addr,
        "/v1/chat/completions",
        &chat("Hi", json!({"max_tokens": 2})),
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn a_key_is_required_when_set_and_open_addresses_need_one() {
    let s = Served::start(&["--api-key", "sesame"]);
    let body = chat("Hi", json!({"max_tokens": 2})).to_string();
    let (status, text) = http(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        body.as_bytes(),
    );
    assert_eq!(status, 401, "{text}");
    let (status, _) = http(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", "Bearer wrong")],
        body.as_bytes(),
    );
    assert_eq!(status, 401);
    let (status, text) = http(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", "Bearer sesame")],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let (status, _) = http(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-api-key", "sesame")],
        body.as_bytes(),
    );
    assert_eq!(status, 200);
    let (status, _) = http(&s.addr, "GET", "/health", &[], b"");
    assert_eq!(status, 200);
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .arg("serve")
        .arg(real_model(SMOLLM2))
        .args(["--host", "0.0.0.0", "--port", "0"])
        .env_remove("MLCLI_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without --api-key"), "{err}");
}

#[test]
fn a_resent_conversation_prefills_only_its_new_suffix_and_clients_queue() {
    let s = Served::start(&[]);
    let mut messages = vec![json!({"role": "user", "content": "Name a color."})];
    let mut reused = Vec::new();
    for turn in 0..3 {
        let body = json!({"messages": messages, "temperature": 0, "max_tokens": 6});
        let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
        assert_eq!(status, 200, "{text}");
        let u = &v["usage"];
        reused.push((
            u["prompt_tokens"].as_u64().unwrap(),
            u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        ));
        messages
            .push(json!({"role": "assistant", "content": v["choices"][0]["message"]["content"]}));
        messages.push(json!({"role": "user", "content": format!("And another, number {turn}?")}));
    }
    // Every later turn reuses at least the whole previous prompt.
    for w in reused.windows(2) {
        assert!(w[1].1 >= w[0].0, "{reused:?}");
    }
    // Four clients at once: all answered.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                post(
                    &addr,
                    "/v1/chat/completions",
                    &chat(&format!("Count to {i}."), json!({"max_tokens": 4})),
                )
            })
        })
        .collect();
    for h in handles {
        let (status, _, text) = h.join().unwrap();
        assert_eq!(status, 200, "{text}");
    }
}

/// Starts a long streamed reply and returns the open connection after its first chunks.
fn open_stream(addr: &str) -> TcpStream {
    let body = chat(
        "Write a very long story about a dragon.",
        json!({"stream": true, "max_tokens": 600, "temperature": 0.8, "seed": 1}),
    )
    .to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("data: ").count() < 4 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    s
}

#[test]
fn a_client_that_leaves_mid_stream_stops_the_generation() {
    let s = Served::start(&[]);
    let stream = open_stream(&s.addr);
    drop(stream);
    let log = s.wait_for_log("the client left");
    let line = log.lines().find(|l| l.contains("the client left")).unwrap();
    let generated: usize = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" generated"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(generated < 600, "{line}");
    // The server goes on serving.
    let (status, _, text) = post(
        &s.addr,
        "/v1/chat/completions",
        &chat("Hi", json!({"max_tokens": 2})),
    );
    assert_eq!(status, 200, "{text}");
}

#[cfg(unix)]
#[test]
fn sigterm_during_a_stream_ends_it_and_exits_zero() {
    let mut s = Served::start(&[]);
    let mut stream = open_stream(&s.addr);
    let pid = s.child.id().to_string();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    assert!(rest.contains("data: [DONE]"), "{rest}");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running: {}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", s.log());
    assert!(s.log().contains("shutting down"));
}

/// Whether python3 can import both official clients.
fn python_has_clients() -> bool {
    Command::new("python3")
        .args(["-c", "import openai, anthropic, jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_official_python_clients_work_unmodified() {
    if !python_has_clients() {
        assert!(
            std::env::var_os("MLCLI_REQUIRE_SERVE_CLIENTS").is_none(),
            "MLCLI_REQUIRE_SERVE_CLIENTS is set but python3 cannot import openai, anthropic and jsonschema: \
             python3 -m pip install openai anthropic jsonschema"
        );
        eprintln!("skipped: python3 cannot import openai, anthropic and jsonschema");
        return;
    }
    let s = Served::start(&["--chat-template", "chatml"]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/serve_clients.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("http://{}", s.addr))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    for line in [
        "anthropic stream: same text",
        "anthropic streamed tool use: valid",
        "openai logprobs:",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
}

#[test]
fn json_schema_and_json_object_answers_always_parse() {
    let s = Served::start(&[]);
    let schema = json!({"type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30},
                       "population": {"type": "integer", "minimum": 0, "maximum": 99999999},
                       "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["city", "population", "tags"], "additionalProperties": false});
    for seed in 0..3 {
        let body = chat(
            "Describe Paris.",
            json!({"max_tokens": 200, "temperature": 1.0, "seed": seed,
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": true, "schema": schema}}}),
        );
        let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
        assert_eq!(status, 200, "{text}");
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        let answer: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(
            answer["city"].is_string() && answer["population"].is_i64(),
            "{answer}"
        );
        let tags = answer["tags"].as_array().unwrap();
        assert!(
            tags.len() <= 3 && tags.iter().all(Value::is_string),
            "{answer}"
        );
        assert_eq!(answer.as_object().unwrap().len(), 3, "{answer}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{text}");
    }
    let body = chat(
        "Give the capital of France as a JSON object with key capital.",
        json!({"max_tokens": 100, "response_format": {"type": "json_object"}}),
    );
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{text}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let answer: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(answer.is_object());
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{text}");
    let bad = chat(
        "x",
        json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}}),
    );
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &bad);
    assert_eq!(status, 400, "{text}");
    assert_eq!(v["error"]["param"], "response_format");
}

#[test]
fn forced_tool_calls_come_back_as_tool_calls_and_results_feed_the_next_turn() {
    let s = Served::start(&["--chat-template", "chatml"]);
    let ask = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    // Sampled (a seed for a reproducible failure): the call is forced whatever is drawn.
    let body = json!({"messages": ask, "max_tokens": 100, "tools": weather_tool(), "seed": 11,
                      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{text}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{text}");
    assert!(choice["message"]["content"].is_null(), "{text}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        args["city"].is_string() && ["c", "f"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    assert_eq!(args.as_object().unwrap().len(), 2, "{args}");
    // Streamed with "required": tool-call deltas, nothing of the call in content.
    let mut streamed = body.clone();
    streamed["tool_choice"] = json!("required");
    streamed["stream"] = json!(true);
    let (status, text) = post_text(&s.addr, "/v1/chat/completions", &streamed);
    assert_eq!(status, 200, "{text}");
    let chunks: Vec<Value> = events(&text)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!content.contains("tool_call"), "{content}");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"),
        "{text}"
    );
    // The result goes back as a tool message; the model answers from it.
    let follow = json!({"messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temperature\": 21, \"sky\": \"clear\"}"}],
        "tools": weather_tool(), "max_tokens": 20, "temperature": 0});
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &follow);
    assert_eq!(status, 200, "{text}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{text}");
}

#[test]
fn tools_for_a_template_without_tools_are_refused_by_name() {
    let s = Served::start(&[]);
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "tools": weather_tool()});
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 400, "{text}");
    assert_eq!(v["error"]["param"], "tools");
    let named = json!({"messages": [{"role": "user", "content": "Hi"}], "tools": weather_tool(),
                       "tool_choice": {"type": "function", "function": {"name": "nope"}}});
    let (status, _, text) = post(&s.addr, "/v1/chat/completions", &named);
    assert_eq!(status, 400, "{text}");
}

#[test]
fn bench_endpoint_measures_a_server_at_each_concurrency() {
    let s = Served::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_mlcli"))
        .args(["bench", "--endpoint", &format!("http://{}", s.addr)])
        .args([
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "1",
            "--concurrency",
            "1,2",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (r, c) in reports.iter().zip([1, 2]) {
        assert_eq!(r["concurrency"], c);
        assert_eq!(r["requests"], c);
        assert!(r["aggregate_tok_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ttft_ms"][0].as_f64().unwrap() > 0.0, "{r}");
    }
    // Each request generated its full 4 tokens (ignore_eos): a warm-up per level, then 1 + 2.
    let log = s.wait_for_log("request 5 ");
    assert_eq!(log.matches(", 4 generated").count(), 5, "{log}");
}

#[test]
fn logprobs_are_the_models_and_match_the_tokens() {
    let s = Served::start(&[]);
    let body = chat(
        "Name three fruits.",
        json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 8, "ignore_eos": true}),
    );
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{text}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 8, "{text}");
    let mut joined = String::new();
    for e in content {
        let lp = e["logprob"].as_f64().unwrap();
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the token chosen is the most likely one, alternatives in order.
        assert_eq!(top[0]["token"], e["token"], "{e}");
        assert!((top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-6);
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]) && lp <= 0.0, "{lps:?}");
        assert!(lps.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-5);
        joined.push_str(e["token"].as_str().unwrap());
    }
    assert_eq!(
        joined,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // Streamed: the same entries, spread over chunks.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, text) = post_text(&s.addr, "/v1/chat/completions", &streamed);
    assert_eq!(status, 200, "{text}");
    let entries: Vec<Value> = events(&text)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(entries, *content);
    // Legacy completions: an integer, and the offsets of each token's text.
    let (status, v, text) = post(
        &s.addr,
        "/v1/completions",
        &json!({"prompt": "One, two,", "max_tokens": 4, "temperature": 0, "logprobs": 2,
                "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{text}");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 4, "{text}");
    assert_eq!(lp["text_offset"][0], 0);
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
    // Out of range: refused by name.
    let (status, v, _) = post(
        &s.addr,
        "/v1/chat/completions",
        &chat("Hi", json!({"logprobs": true, "top_logprobs": 50})),
    );
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "top_logprobs");
}

#[test]
fn anthropic_tool_use_whole_streamed_and_results_in_the_next_turn() {
    let s = Served::start(&["--chat-template", "chatml"]);
    let f = &weather_tool()[0]["function"];
    let tools = json!([{"name": f["name"], "description": f["description"],
                        "input_schema": f["parameters"]}]);
    let ask = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let body = json!({"model": "smollm2", "max_tokens": 100, "messages": ask, "tools": tools,
                      "tool_choice": {"type": "tool", "name": "get_weather"}});
    let (status, v, text) = post(&s.addr, "/v1/messages", &body);
    assert_eq!(status, 200, "{text}");
    assert_eq!(v["stop_reason"], "tool_use", "{text}");
    let blocks = v["content"].as_array().unwrap();
    let call = blocks.iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"]["city"].is_string(), "{call}");
    assert!(
        blocks
            .iter()
            .all(|b| !b["text"].as_str().unwrap_or("").contains("tool_call")),
        "{text}"
    );
    // Streamed with "any": a tool_use block whose input arrives as JSON deltas.
    let mut streamed = body.clone();
    streamed["tool_choice"] = json!({"type": "any"});
    streamed["stream"] = json!(true);
    let (status, text) = post_text(&s.addr, "/v1/messages", &streamed);
    assert_eq!(status, 200, "{text}");
    let evs: Vec<Value> = events(&text)
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let start = evs
        .iter()
        .find(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    let index = &start["index"];
    let input: String = evs
        .iter()
        .filter(|e| e["index"] == *index && e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    let input: Value = serde_json::from_str(&input).unwrap();
    assert!(input["city"].is_string(), "{input}");
    assert!(evs
        .iter()
        .any(|e| e["type"] == "message_delta" && e["delta"]["stop_reason"] == "tool_use"));
    // The result goes back as a tool_result block; the model answers in text.
    let next = json!({"model": "smollm2", "max_tokens": 12, "tools": tools, "messages": [
        ask[0],
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                       "content": "18 degrees and sunny"}]},
    ]});
    let (status, v, text) = post(&s.addr, "/v1/messages", &next);
    assert_eq!(status, 200, "{text}");
    assert_eq!(v["content"][0]["type"], "text", "{text}");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 20, "{text}");
}
