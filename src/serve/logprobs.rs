//! Log-probabilities in OpenAI's shapes: the request fields (`logprobs` and `top_logprobs`
//! for chat, an integer `logprobs` for legacy completions) and the reply's objects
//! (`logprobs.content[]` for chat, `tokens`/`token_logprobs`/`top_logprobs`/`text_offset`
//! for completions). The values are the model's own (its logits before sampling settings or
//! an output constraint changed them), as OpenAI reports them.

use serde_json::{json, Map, Value};

use super::api_error::ApiError;
use crate::engine::generation::{Candidate, TokenLogprob};

/// Most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP: u64 = 20;

/// How many alternatives a chat request asks for (`None`: no log-probabilities).
pub fn chat_request(logprobs: Option<&Value>, top: Option<u64>) -> Result<Option<usize>, ApiError> {
    let on = match logprobs {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_param("logprobs", "must be true or false")),
    };
    match (on, top) {
        (_, Some(n)) if n > MAX_TOP => Err(ApiError::invalid_param(
            "top_logprobs",
            format!("at most {MAX_TOP} (got {n})"),
        )),
        (false, Some(n)) if n > 0 => Err(ApiError::invalid_param(
            "top_logprobs",
            "needs logprobs: true",
        )),
        (false, _) => Ok(None),
        (true, n) => Ok(Some(n.unwrap_or(0) as usize)),
    }
}

/// How many alternatives a completions request asks for (its integer `logprobs`).
pub fn completion_request(logprobs: Option<&Value>) -> Result<Option<usize>, ApiError> {
    match logprobs {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_TOP => Ok(Some(n as usize)),
            _ => Err(ApiError::invalid_param(
                "logprobs",
                format!("must be an integer from 0 to {MAX_TOP}"),
            )),
        },
    }
}

fn text(c: &Candidate) -> String {
    String::from_utf8_lossy(&c.bytes).into_owned()
}

/// A chat reply's `logprobs` object for `entries`.
pub fn chat(entries: &[TokenLogprob]) -> Value {
    let one = |c: &Candidate| json!({"token": text(c), "logprob": c.logprob, "bytes": c.bytes});
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = one(&e.chosen);
            v["top_logprobs"] = e.top.iter().map(one).collect();
            v
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// A completion's `logprobs` object for `entries`, whose text starts at byte `offset` of the
/// reply.
pub fn completion(entries: &[TokenLogprob], mut offset: usize) -> Value {
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for e in entries {
        let t = text(&e.chosen);
        offsets.push(offset);
        offset += t.len();
        tokens.push(t);
        lps.push(e.chosen.logprob);
        let top: Map<String, Value> = e.top.iter().map(|c| (text(c), json!(c.logprob))).collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, lp: f32) -> TokenLogprob {
        let c = |id: u32, lp: f32| Candidate {
            id,
            bytes: format!("t{id}").into_bytes(),
            logprob: lp,
        };
        TokenLogprob {
            chosen: c(id, lp),
            top: vec![c(id, lp), c(id + 1, lp - 1.0)],
        }
    }

    #[test]
    fn requests_are_read_and_bounded() {
        assert_eq!(chat_request(None, None).unwrap(), None);
        assert_eq!(chat_request(Some(&json!(true)), None).unwrap(), Some(0));
        assert_eq!(chat_request(Some(&json!(true)), Some(3)).unwrap(), Some(3));
        assert!(chat_request(Some(&json!(false)), Some(3)).is_err());
        assert!(chat_request(Some(&json!(true)), Some(21)).is_err());
        assert_eq!(completion_request(Some(&json!(2))).unwrap(), Some(2));
        assert!(completion_request(Some(&json!(true))).is_err());
    }

    #[test]
    fn shapes_are_openais() {
        let v = chat(&[entry(5, -0.5)]);
        assert_eq!(v["content"][0]["token"], "t5");
        assert_eq!(v["content"][0]["bytes"], json!([116, 53]));
        assert_eq!(v["content"][0]["top_logprobs"][1]["token"], "t6");
        let v = completion(&[entry(5, -0.5), entry(7, -0.25)], 3);
        assert_eq!(v["tokens"], json!(["t5", "t7"]));
        assert_eq!(v["text_offset"], json!([3, 5]));
        assert_eq!(v["top_logprobs"][1]["t8"], json!(-1.25));
    }
}
