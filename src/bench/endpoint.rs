//! Measuring any OpenAI-compatible server (ours, llama-server, Ollama, vLLM, SGLang): N
//! clients at once each send streamed `/v1/completions` requests of a fixed prompt length and
//! reply length; the report gives time to first token, inter-token latency (p50/p95),
//! throughput per stream and in aggregate, the same columns for every server.

use std::io::BufRead;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{Error, Result};

/// What to send.
#[derive(Clone, Debug)]
pub struct Load {
    /// The server's base URL (`http://host:port`, with or without `/v1`).
    pub url: String,
    /// The `model` field (servers serving one model usually ignore it).
    pub model: String,
    /// `Authorization: Bearer` key, if the server wants one.
    pub api_key: Option<String>,
    /// Words in the prompt (about one token each).
    pub prompt_words: usize,
    /// Tokens to generate per request.
    pub max_tokens: usize,
    /// Send `ignore_eos: true` (llama-server, vLLM, mlcli) so every reply has its full length.
    pub ignore_eos: bool,
    /// Clients at once.
    pub concurrency: usize,
    /// Requests per client.
    pub requests: usize,
}

/// One request's timings.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// From sending to the first generated text.
    pub ttft: Duration,
    /// Between consecutive pieces of generated text.
    pub gaps: Vec<Duration>,
    /// Tokens generated (the server's `usage`, else the pieces counted).
    pub tokens: usize,
    /// From sending to the end of the stream.
    pub total: Duration,
}

/// The figures for one concurrency level.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Clients at once.
    pub concurrency: usize,
    /// Requests completed.
    pub requests: usize,
    /// Time to first token, median and 95th percentile (ms).
    pub ttft_ms: (f64, f64),
    /// Inter-token latency, median and 95th percentile (ms).
    pub itl_ms: (f64, f64),
    /// Median over requests of tokens per second after the first.
    pub stream_tok_s: f64,
    /// All generated tokens over the wall time of the whole run.
    pub aggregate_tok_s: f64,
}

fn endpoint(url: &str) -> String {
    let base = url.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1/completions")
}

/// A prompt of `words` words (deterministic; different per request so no server can serve
/// one request from another's cache).
fn prompt(words: usize, salt: usize) -> String {
    const POOL: &[&str] = &[
        "river", "stone", "light", "market", "garden", "winter", "signal", "paper", "engine",
        "forest", "copper", "window", "harbor", "letter", "silver", "orbit",
    ];
    (0..words)
        .map(|i| POOL[(i * 7 + (salt % 4096) * 13 + i / 5) % POOL.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends one streamed request and times it.
fn one(agent: &ureq::Agent, load: &Load, salt: usize) -> Result<Sample> {
    let mut body = json!({
        "model": load.model,
        "prompt": prompt(load.prompt_words, salt),
        "max_tokens": load.max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if load.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    let mut req = agent
        .post(&endpoint(&load.url))
        .header("content-type", "application/json");
    if let Some(key) = &load.api_key {
        req = req.header("authorization", &format!("Bearer {key}"));
    }
    let start = Instant::now();
    let mut resp = req
        .send(body.to_string().as_bytes())
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", load.url)))?;
    let status = resp.status().as_u16();
    let reader = std::io::BufReader::new(resp.body_mut().as_reader());
    if status != 200 {
        let text: String = reader.lines().map_while(|l| l.ok()).collect();
        return Err(Error::InvalidArgument(format!(
            "{} answered {status}: {}",
            endpoint(&load.url),
            crate::formats::untrusted::short(&text)
        )));
    }
    let mut sample = Sample::default();
    let (mut last, mut pieces, mut usage) = (None::<Instant>, 0usize, None);
    for line in reader.lines() {
        let line = line.map_err(|e| Error::InvalidArgument(format!("{}: {e}", load.url)))?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(n) = v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
        {
            usage = Some(n as usize);
        }
        let text = v.pointer("/choices/0/text").and_then(Value::as_str);
        if text.is_some_and(|t| !t.is_empty()) {
            let now = Instant::now();
            match last {
                None => sample.ttft = now - start,
                Some(prev) => sample.gaps.push(now - prev),
            }
            last = Some(now);
            pieces += 1;
        }
    }
    sample.total = start.elapsed();
    sample.tokens = usage.unwrap_or(pieces);
    if sample.tokens == 0 {
        return Err(Error::InvalidArgument(format!(
            "{} streamed no text",
            endpoint(&load.url)
        )));
    }
    Ok(sample)
}

/// Runs `load` and summarizes it (one warm-up request first, not counted).
pub fn measure(load: &Load) -> Result<Report> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3600)))
        .build()
        .into();
    one(&agent, load, 4095)?;
    let start = Instant::now();
    let results: Vec<Result<Vec<Sample>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..load.concurrency.max(1))
            .map(|client| {
                let agent = agent.clone();
                s.spawn(move || {
                    (0..load.requests.max(1))
                        .map(|r| one(&agent, load, client * 1000 + r))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("a client thread panicked".into())))
            })
            .collect()
    });
    let wall = start.elapsed();
    let mut samples = Vec::new();
    for r in results {
        samples.extend(r?);
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let ttft: Vec<f64> = samples.iter().map(|s| ms(&s.ttft)).collect();
    let itl: Vec<f64> = samples.iter().flat_map(|s| s.gaps.iter().map(ms)).collect();
    let stream: Vec<f64> = samples
        .iter()
        .map(|s| {
            let after = s.total.saturating_sub(s.ttft).as_secs_f64();
            if after > 0.0 {
                s.tokens.saturating_sub(1) as f64 / after
            } else {
                0.0
            }
        })
        .collect();
    // The same percentiles as `mlcli bench`'s ITL columns.
    let pct = |xs: &[f64], p: f64| super::stats::percentile(xs, p).unwrap_or(0.0);
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    Ok(Report {
        concurrency: load.concurrency,
        requests: samples.len(),
        ttft_ms: (pct(&ttft, 50.0), pct(&ttft, 95.0)),
        itl_ms: (pct(&itl, 50.0), pct(&itl, 95.0)),
        stream_tok_s: pct(&stream, 50.0),
        aggregate_tok_s: tokens as f64 / wall.as_secs_f64().max(1e-9),
    })
}

/// The reports as a Markdown table.
pub fn markdown(url: &str, load: &Load, reports: &[Report]) -> String {
    let mut out = format!(
        "{url}: prompt {} words, {} tokens generated per request, {} request(s) per client\n\n\
         | concurrency | requests | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms | t/s per stream | t/s aggregate |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        load.prompt_words, load.max_tokens, load.requests
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.concurrency,
            r.requests,
            r.ttft_ms.0,
            r.ttft_ms.1,
            r.itl_ms.0,
            r.itl_ms.1,
            r.stream_tok_s,
            r.aggregate_tok_s
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_or_without_v1_reach_the_completions_route() {
        assert_eq!(endpoint("http://h:1"), "http://h:1/v1/completions");
        assert_eq!(endpoint("http://h:1/v1/"), "http://h:1/v1/completions");
    }

    #[test]
    fn prompts_differ_per_request_and_have_their_length() {
        assert_ne!(prompt(8, 1), prompt(8, 2));
        assert_eq!(prompt(8, 1).split(' ').count(), 8);
    }
}
