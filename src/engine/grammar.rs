//! Constrained decoding through llguidance: a JSON schema, any JSON object, or a Lark grammar
//! becomes a token mask applied before sampling, so the output always parses. The vocabulary
//! is turned into llguidance's token trie once per model (control tokens marked special).
//! Each mask is computed on a thread of its own as soon as the token before it is accepted,
//! so it is ready (or nearly) when the forward pass that runs meanwhile brings the logits.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::formats::json_layout;
use crate::formats::tokenizer::{EncodeOptions, Tokenizer};
use crate::{Error, Result};

/// What the output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// JSON valid against this JSON schema.
    JsonSchema(serde_json::Value),
    /// Any JSON object.
    JsonObject,
    /// Text matching a Lark grammar (llguidance's dialect).
    Lark(String),
}

/// The model's vocabulary as llguidance sees it (built once; cheap to clone).
#[derive(Clone)]
pub struct Vocabulary {
    factory: Arc<ParserFactory>,
}

struct Env {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let text = String::from_utf8_lossy(s);
        self.tokenizer
            .encode(
                &text,
                EncodeOptions {
                    add_bos: false,
                    parse_special: false,
                },
            )
            .unwrap_or_default()
    }
}

impl Vocabulary {
    /// The trie of `tokenizer`'s tokens: each token's bytes, control tokens as llguidance's
    /// special-token marker and their text.
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                if tokenizer.is_control(id) {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tokenizer.piece(id).unwrap_or_default().as_bytes());
                    w
                } else {
                    tokenizer.token_bytes(id)
                }
            })
            .collect();
        let eog = tokenizer.end_of_generation_ids();
        let eos = tokenizer
            .eos_id()
            .or_else(|| eog.first().copied())
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "constrained output needs an end-of-generation token, and this model's \
                     tokenizer has none"
                        .into(),
                )
            })?;
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tokenizer.bos_id();
        info.tok_end_of_turn = eog.iter().copied().find(|&t| t != eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Env { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Internal(format!("grammar engine: {e}")))?;
        factory.set_stderr_log_level(0);
        Ok(Self {
            factory: Arc::new(factory),
        })
    }

    /// A fresh matcher for `constraint` (refused with the grammar engine's reason when the
    /// schema or grammar is invalid or unsupported).
    pub fn matcher(&self, constraint: &Constraint) -> Result<Grammar> {
        let grammar = match constraint {
            Constraint::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(json_layout::bounded(schema.clone()))
            }
            Constraint::JsonObject => TopLevelGrammar::from_json_schema(json_layout::bounded(
                serde_json::json!({"type": "object"}),
            )),
            Constraint::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| Error::InvalidArgument(format!("the output constraint: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::InvalidArgument(format!(
                "the output constraint: {e}"
            )));
        }
        Grammar::new(matcher)
    }
}

/// One generation's constraint state. The matcher is shared with a mask thread: after each
/// accepted token (and at the start) that thread computes the next mask while the engine
/// thread runs the forward pass; [`Grammar::mask`] joins it before sampling. The two never
/// hold the matcher at once: a token is accepted only after its mask was taken.
pub struct Grammar {
    matcher: Arc<Mutex<Matcher>>,
    /// Asks the mask thread for the mask of the current state (dropped: the thread ends).
    ask: Sender<()>,
    /// The masks it computed, one per request.
    masks: Receiver<MaskResult>,
    /// A mask was asked for and not yet taken.
    pending: bool,
    /// The matcher stopped (nothing may follow), as of the last accepted token.
    stopped: bool,
}

type MaskResult = std::result::Result<SimpleVob, String>;

impl Grammar {
    /// Starts the mask thread for `matcher` and asks it for the first mask at once (it is
    /// computed while the prompt is fed).
    fn new(matcher: Matcher) -> Result<Self> {
        let stopped = matcher.is_stopped();
        let matcher = Arc::new(Mutex::new(matcher));
        let (ask, asked) = mpsc::channel::<()>();
        let (answer, masks) = mpsc::channel();
        let shared = Arc::clone(&matcher);
        std::thread::Builder::new()
            .name("grammar-mask".into())
            .spawn(move || {
                for () in asked {
                    let mask = match lock(&shared) {
                        Ok(mut m) => m.compute_mask_or_eos().map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if answer.send(mask).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("grammar: cannot start its mask thread: {e}")))?;
        let mut g = Self {
            matcher,
            ask,
            masks,
            pending: false,
            stopped,
        };
        g.prefetch();
        Ok(g)
    }

    /// Asks the mask thread for the mask of the current state (unless one is pending or the
    /// output is complete).
    fn prefetch(&mut self) {
        if !self.pending && !self.stopped {
            self.pending = self.ask.send(()).is_ok();
        }
    }

    /// Sets every logit the grammar forbids now to minus infinity (logits past the
    /// tokenizer's vocabulary too).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed = match std::mem::take(&mut self.pending) {
            true => self
                .masks
                .recv()
                .map_err(|_| Error::Internal("grammar: its mask thread has ended".into()))?,
            // Nothing in flight (the output is complete): computed here.
            false => lock(&self.matcher)?
                .compute_mask_or_eos()
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| Error::Internal(format!("grammar: {e}")))?;
        for (id, l) in logits.iter_mut().enumerate() {
            if id >= allowed.len() || !allowed.is_allowed(id as TokenId) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past `token` and starts computing the next mask.
    pub fn accept(&mut self, token: u32) -> Result<()> {
        if self.pending {
            // A token not sampled through [`Grammar::mask`]: wait for the mask in flight, so
            // the matcher is not changed under it.
            let _ = self.masks.recv();
            self.pending = false;
        }
        {
            let mut m = lock(&self.matcher)?;
            m.consume_token(token)
                .map_err(|e| Error::Internal(format!("grammar: {e}")))?;
            self.stopped = m.is_stopped();
        }
        self.prefetch();
        Ok(())
    }

    /// Whether the output is complete (nothing more may follow).
    pub fn is_done(&self) -> bool {
        self.stopped
    }
}

fn lock(m: &Mutex<Matcher>) -> Result<MutexGuard<'_, Matcher>> {
    m.lock()
        .map_err(|_| Error::Internal("grammar: its mask thread failed".into()))
}

#[cfg(test)]
mod tests;
