//! One generation under way, one step at a time: sampling (through the output constraint),
//! end-of-generation, stop strings, streamed text and timings of one sequence. The engine's
//! single-stream loop and the server's batch both drive it, so every stream ends and streams
//! text the same way whichever of them fed its sequence.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::grammar::Grammar;
use super::sampler::Sampler;
use super::stop::StopMatcher;
use super::{GenerateParams, Stats, StopReason};
use crate::formats::tokenizer::{StreamDecoder, Tokenizer};
use crate::Result;

/// What a forward pass hands the sampler.
#[derive(Clone, Debug)]
pub enum Next {
    /// The last position's logits over the vocabulary.
    Logits(Vec<f32>),
    /// The greedy choice, made on the device.
    Token(u32),
}

/// What the sequence needs after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Feed this token and bring its logits back to [`Generation::advance`].
    Feed(u32),
    /// Generation ended; call [`Generation::finish`].
    Done(StopReason),
}

/// One token with its log-probability under the model (the logits before any constraint or
/// sampling setting changed them).
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The token id.
    pub id: u32,
    /// Its bytes as the tokenizer renders it (special tokens as their text).
    pub bytes: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
}

/// A generated token's log-probability and the most likely alternatives at its position.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The token generated.
    pub chosen: Candidate,
    /// The most likely tokens, most likely first (as many as asked).
    pub top: Vec<Candidate>,
}

/// The log-probabilities of `chosen` and of the `top` most likely tokens in `logits`.
pub fn logprobs(tokenizer: &Tokenizer, logits: &[f32], chosen: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|&x| (x - max).exp()).sum::<f32>().ln() + max;
    let candidate = |id: u32| Candidate {
        id,
        bytes: tokenizer.token_bytes(id),
        logprob: logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |&x| x - log_sum),
    };
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let top = top.min(ids.len());
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    if top > 0 && top < ids.len() {
        ids.select_nth_unstable_by(top - 1, by_logit);
    }
    ids.truncate(top);
    ids.sort_by(by_logit);
    TokenLogprob {
        chosen: candidate(chosen),
        top: ids.into_iter().map(candidate).collect(),
    }
}

/// The sampling and output state of one sequence's generation.
pub struct Generation {
    start: Instant,
    params: GenerateParams,
    sampler: Sampler,
    grammar: Option<Grammar>,
    stops: StopMatcher,
    stream: StreamDecoder<Arc<Tokenizer>>,
    eog: Vec<u32>,
    history: Vec<u32>,
    generated: Vec<u32>,
    prompt_tokens: usize,
    reused_tokens: usize,
    prompt_time: Duration,
    first_token_at: Option<Instant>,
    token_times: Vec<Duration>,
    decode_forward_time: Duration,
    sampling_time: Duration,
    stop_string: Option<String>,
    /// Log-probabilities of the tokens generated since [`Generation::take_logprobs`].
    logprobs: Vec<TokenLogprob>,
}

impl Generation {
    /// A generation of a reply to `prompt`, started at `start` (its prompt is being fed).
    pub(super) fn new(
        start: Instant,
        tokenizer: Arc<Tokenizer>,
        prompt: &[u32],
        params: GenerateParams,
        sampler: Sampler,
        grammar: Option<Grammar>,
    ) -> Self {
        Self {
            start,
            stops: StopMatcher::new(&params.stop),
            eog: tokenizer.end_of_generation_ids().to_vec(),
            stream: StreamDecoder::new(tokenizer),
            params,
            sampler,
            grammar,
            history: prompt.to_vec(),
            generated: Vec::new(),
            prompt_tokens: prompt.len(),
            reused_tokens: 0,
            prompt_time: Duration::ZERO,
            first_token_at: None,
            token_times: Vec::new(),
            decode_forward_time: Duration::ZERO,
            sampling_time: Duration::ZERO,
            stop_string: None,
            logprobs: Vec::new(),
        }
    }

    /// Records that the prompt is in the cache, `reused` of its tokens from before.
    pub(super) fn prompt_fed(&mut self, reused: usize) {
        self.reused_tokens = reused;
        self.prompt_time = self.start.elapsed();
    }

    /// Whether the device may pick tokens itself (greedy, unconstrained).
    pub(super) fn greedy_unconstrained(&self) -> bool {
        self.sampler.is_greedy() && self.grammar.is_none() && self.params.logprobs.is_none()
    }

    /// The log-probabilities of the tokens generated since the last call (when the
    /// parameters asked for them), in order.
    pub fn take_logprobs(&mut self) -> Vec<TokenLogprob> {
        std::mem::take(&mut self.logprobs)
    }

    /// Adds time spent in a forward pass for this sequence after its prompt.
    pub fn add_forward_time(&mut self, d: Duration) {
        self.decode_forward_time += d;
    }

    /// Tokens generated so far.
    pub fn generated_len(&self) -> usize {
        self.generated.len()
    }

    /// Samples from `next`, streams the text it completes to `on_text` (`Break` cancels), and
    /// says whether to go on. `room` is how many positions the sequence's cache has left.
    pub fn advance(
        &mut self,
        next: &Next,
        room: usize,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Step> {
        if self.params.max_tokens == Some(0) {
            return Ok(Step::Done(StopReason::MaxTokens));
        }
        let sampling_start = Instant::now();
        let token = match (next, self.grammar.as_mut()) {
            (Next::Logits(logits), Some(g)) => {
                let mut allowed = logits.clone();
                g.mask(&mut allowed)?;
                self.sampler.sample(&allowed, &self.history)
            }
            (Next::Logits(logits), None) => self.sampler.sample(logits, &self.history),
            (Next::Token(t), _) => *t,
        };
        if let (Some(top), Next::Logits(logits)) = (self.params.logprobs, next) {
            let tokenizer = self.stream.tokenizer();
            self.logprobs.push(logprobs(tokenizer, logits, token, top));
        }
        let sampled_at = Instant::now();
        self.sampling_time += sampled_at - sampling_start;
        self.token_times.push(sampled_at - self.start);
        self.first_token_at.get_or_insert(sampled_at);
        self.generated.push(token);
        self.history.push(token);
        if !self.params.ignore_eos && self.eog.contains(&token) {
            return Ok(Step::Done(StopReason::EndOfGeneration));
        }
        if let Some(g) = self.grammar.as_mut() {
            g.accept(token)?;
        }
        let text = match self.params.render_special {
            true => self.stream.push_rendered(token),
            false => self.stream.push(token),
        };
        let step = self.stops.push(&text);
        if on_text(&step.emit).is_break() {
            return Ok(Step::Done(StopReason::Cancelled));
        }
        if step.stopped {
            self.stop_string = step.matched;
            return Ok(Step::Done(StopReason::StopString));
        }
        if self.grammar.as_ref().is_some_and(Grammar::is_done) {
            return Ok(Step::Done(StopReason::EndOfGeneration));
        }
        if self
            .params
            .max_tokens
            .is_some_and(|m| self.generated.len() >= m)
        {
            return Ok(Step::Done(StopReason::MaxTokens));
        }
        if room == 0 {
            return Ok(Step::Done(StopReason::ContextFull));
        }
        Ok(Step::Feed(token))
    }

    /// Ends the generation for `reason`: streams what was held back (unless a stop string or
    /// the caller ended it) and returns the counters and timings.
    pub fn finish(
        mut self,
        reason: StopReason,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Stats {
        if !matches!(reason, StopReason::StopString | StopReason::Cancelled) {
            let rest = self.stops.push(&self.stream.flush());
            let tail = rest.emit + &self.stops.flush();
            if !tail.is_empty() {
                let _ = on_text(&tail);
            }
        }
        let first = self.first_token_at.unwrap_or_else(Instant::now);
        Stats {
            prompt_tokens: self.prompt_tokens,
            reused_tokens: self.reused_tokens,
            prompt_time: self.prompt_time,
            generated_tokens: self.generated.len(),
            generation_time: first.elapsed(),
            time_to_first_token: first - self.start,
            tokens: self.generated,
            stop_reason: reason,
            stop_string: self.stop_string,
            token_times: self.token_times,
            decode_forward_time: self.decode_forward_time,
            sampling_time: self.sampling_time,
        }
    }
}
