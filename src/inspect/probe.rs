//! Probes that run the model's own machinery: the tokenizer (`--tokenize`), the chat template
//! on a sample conversation (`--template`), and forward passes for porting — the top next-token
//! logits (`--logits`) and per-block hidden-state statistics through the tracer every family
//! reports to (`--layer-trace`).

use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::stats::Stats;
use super::{hf, Model};
use crate::engine::{Engine, LoadOptions};
use crate::formats::chat_template::{ChatTemplate, Message, Origin, RenderOptions};
use crate::formats::gguf_header::Value;
use crate::formats::tokenizer::{EncodeOptions, Tokenizer};
use crate::models::Tracer;
use crate::{Error, Result};

/// One token: id, vocabulary string and the text it decodes to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Token {
    /// Token id.
    pub id: u32,
    /// The vocabulary string (`Ġthe`, `▁the`, `<|im_start|>`).
    pub piece: String,
    /// The text it decodes to on its own (empty for control tokens).
    pub text: String,
}

/// The `--tokenize` view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tokenized {
    /// The input text.
    pub input: String,
    /// The tokens, with BOS as the model's metadata asks and special-token text parsed (as
    /// `run --raw` tokenizes).
    pub tokens: Vec<Token>,
}

/// Tokenizes `text` as `run --raw` would.
pub fn tokenize(model: &Model, text: &str) -> Result<Tokenized> {
    let tokens = match model {
        Model::Gguf { header, .. } => {
            let t = Tokenizer::from_gguf(&header.to_candle_content())?;
            let ids = t.encode(
                text,
                EncodeOptions {
                    add_bos: true,
                    parse_special: true,
                },
            )?;
            ids.iter().map(|&id| gguf_token(&t, id)).collect()
        }
        Model::Safetensors { dir, .. } => {
            let file = dir
                .as_deref()
                .unwrap_or(Path::new("."))
                .join("tokenizer.json");
            let bad = |e: Box<dyn std::error::Error + Send + Sync>| Error::HfTokenizer {
                path: file.clone(),
                reason: e.to_string(),
            };
            let t = tokenizers::Tokenizer::from_file(&file).map_err(bad)?;
            let enc = t.encode(text, true).map_err(bad)?;
            enc.get_ids()
                .iter()
                .zip(enc.get_tokens())
                .map(|(&id, piece)| {
                    Ok(Token {
                        id,
                        piece: piece.clone(),
                        text: t.decode(&[id], false).map_err(bad)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    Ok(Tokenized {
        input: text.to_string(),
        tokens,
    })
}

fn gguf_token(t: &Tokenizer, id: u32) -> Token {
    Token {
        id,
        piece: t.piece(id).unwrap_or_default().to_string(),
        text: t.decode(&[id]),
    }
}

/// The `--template` view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rendered {
    /// Where the template comes from (null when the model has none).
    pub source: Option<String>,
    /// The sample conversation.
    pub messages: Vec<Message>,
    /// The rendering ends with the opening of an assistant turn.
    pub add_generation_prompt: bool,
    /// The rendered prompt (null when the model has no template).
    pub rendered: Option<String>,
}

/// A system message, two user turns and one assistant turn.
pub fn sample_conversation() -> Vec<Message> {
    vec![
        Message::new("system", "You are a helpful assistant."),
        Message::new("user", "Hello! Who are you?"),
        Message::new("assistant", "I am an assistant. How can I help?"),
        Message::new("user", "What is the capital of France?"),
    ]
}

/// Renders the model's chat template on [`sample_conversation`].
pub fn template(model: &Model) -> Result<Rendered> {
    let (source, text, bos, eos) = match model {
        Model::Gguf { header, .. } => {
            let text = header
                .get("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(str::to_string);
            let t = Tokenizer::from_gguf(&header.to_candle_content()).ok();
            let piece = |id: Option<u32>| {
                let t = t.as_ref()?;
                t.piece(id?).map(str::to_string)
            };
            let (bos, eos) = (
                piece(t.as_ref().and_then(Tokenizer::bos_id)),
                piece(t.as_ref().and_then(Tokenizer::eos_id)),
            );
            let source = text.as_ref().map(|_| "tokenizer.chat_template".to_string());
            (source, text, bos, eos)
        }
        Model::Safetensors { dir, .. } => {
            let found = dir.as_deref().and_then(hf::chat_template);
            let facts = dir.as_deref().map(hf::tokenizer).unwrap_or_default();
            let special = |role: &str| {
                facts
                    .special
                    .iter()
                    .find(|s| s.0 == role)
                    .map(|s| s.2.clone())
            };
            let (source, text) = found.unzip();
            (source, text, special("bos"), special("eos"))
        }
    };
    let messages = sample_conversation();
    let rendered = match &text {
        Some(src) => Some(ChatTemplate::with_origin(src, Origin::Model)?.render(
            &messages,
            &RenderOptions {
                add_generation_prompt: true,
                bos_token: bos.as_deref().unwrap_or(""),
                eos_token: eos.as_deref().unwrap_or(""),
                tools: None,
                reasoning_effort: None,
                enable_thinking: None,
            },
        )?),
        None => None,
    };
    Ok(Rendered {
        source,
        messages,
        add_generation_prompt: true,
        rendered,
    })
}

/// A candidate next token.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Vocabulary string.
    pub piece: String,
    /// Decoded text.
    pub text: String,
    /// Raw logit.
    pub logit: f32,
    /// Softmax probability over the whole vocabulary.
    pub prob: f64,
}

/// The `--logits` view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Logits {
    /// The prompt text.
    pub prompt: String,
    /// The prompt tokens fed (as `run --raw` tokenizes).
    pub tokens: Vec<Token>,
    /// Vocabulary size (length of the logit vector).
    pub vocab_size: usize,
    /// The most likely next tokens, best first.
    pub top: Vec<Candidate>,
}

fn load(path: &Path, prompt: &str, opts: &LoadOptions) -> Result<(Engine, Vec<u32>)> {
    let engine = Engine::load(path, opts)?;
    let ids = engine.raw_tokens(prompt, true)?;
    Ok((engine, ids))
}

/// Feeds `prompt` (tokenized as `run --raw` does) and returns the `top` next-token logits.
pub fn logits(path: &Path, prompt: &str, top: usize, opts: &LoadOptions) -> Result<Logits> {
    let (mut engine, ids) = load(path, prompt, opts)?;
    let logits = engine.feed(&ids)?;
    let t = engine.tokenizer();
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let z: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    let top = order
        .iter()
        .take(top)
        .map(|&id| {
            let logit = logits[id as usize];
            let tok = gguf_token(t, id);
            Candidate {
                id,
                piece: tok.piece,
                text: tok.text,
                logit,
                prob: f64::from(logit - max).exp() / z,
            }
        })
        .collect();
    Ok(Logits {
        prompt: prompt.to_string(),
        tokens: ids.iter().map(|&id| gguf_token(t, id)).collect(),
        vocab_size: logits.len(),
        top,
    })
}

/// Statistics of one traced value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TracePoint {
    /// Block index.
    pub layer: usize,
    /// Where in the block (`block_out`).
    pub point: String,
    /// Statistics over every position and channel of the prompt.
    pub stats: Stats,
}

/// The `--layer-trace` view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerTrace {
    /// The prompt text.
    pub prompt: String,
    /// The prompt tokens fed.
    pub tokens: Vec<Token>,
    /// One entry per traced point, in forward order.
    pub points: Vec<TracePoint>,
    /// Statistics of the last position's logits.
    pub logits: Stats,
}

/// Collects statistics of traced values; chunks of a long prompt merge into one entry.
#[derive(Default)]
struct Recorder {
    points: Vec<TracePoint>,
    error: Option<candle_core::Error>,
}

impl Tracer for Recorder {
    fn record(&mut self, layer: usize, point: &str, value: &Tensor) {
        let values = value
            .to_dtype(DType::F32)
            .and_then(|v| v.flatten_all())
            .and_then(|v| v.to_vec1::<f32>());
        let stats = match values {
            Ok(v) => Stats::of(&v),
            Err(e) => {
                self.error.get_or_insert(e);
                return;
            }
        };
        match self
            .points
            .iter_mut()
            .find(|p| p.layer == layer && p.point == point)
        {
            Some(p) => p.stats.merge(&stats),
            None => self.points.push(TracePoint {
                layer,
                point: point.to_string(),
                stats,
            }),
        }
    }
}

/// Feeds `prompt` with a tracer and returns per-block statistics; fails when the family did
/// not report every block.
pub fn layer_trace(path: &Path, prompt: &str, opts: &LoadOptions) -> Result<LayerTrace> {
    let (mut engine, ids) = load(path, prompt, opts)?;
    let mut recorder = Recorder::default();
    let logits = engine.feed_traced(&ids, &mut recorder)?;
    if let Some(e) = recorder.error {
        return Err(e.into());
    }
    let info = engine.info();
    check_every_block(&recorder.points, info.family, info.n_layers)?;
    let t = engine.tokenizer();
    Ok(LayerTrace {
        prompt: prompt.to_string(),
        tokens: ids.iter().map(|&id| gguf_token(t, id)).collect(),
        points: recorder.points,
        logits: Stats::of(&logits),
    })
}

/// Checks that `points` hold one `block_out` per block, in forward order: a family whose
/// `forward` skips `ctx.trace` for some block fails here instead of printing a short table.
fn check_every_block(points: &[TracePoint], family: &'static str, n_layers: usize) -> Result<()> {
    let reported: Vec<usize> = points
        .iter()
        .filter(|p| p.point == "block_out")
        .map(|p| p.layer)
        .collect();
    if reported == (0..n_layers).collect::<Vec<_>>() {
        return Ok(());
    }
    Err(Error::TraceIncomplete {
        family,
        reported: reported
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        expected: n_layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(layer: usize) -> TracePoint {
        TracePoint {
            layer,
            point: "block_out".into(),
            stats: Stats::of(&[1.0]),
        }
    }

    #[test]
    fn a_family_that_skips_a_block_fails_the_trace() {
        let all: Vec<TracePoint> = (0..4).map(point).collect();
        assert!(check_every_block(&all, "llama", 4).is_ok());
        let skipped = [point(0), point(1), point(3)];
        let err = check_every_block(&skipped, "llama", 4)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'llama'") && err.contains("[0, 1, 3]"),
            "{err}"
        );
        assert!(
            check_every_block(&all[..3], "llama", 4).is_err(),
            "a missing last block"
        );
    }
}
