//! Starting a generation in two parts, so that a server can feed a long prompt in chunks
//! between the batched decode steps of the replies under way: [`Engine::begin`] reuses the
//! cached common prefix and sets up the generation; [`Engine::prefill`] feeds the rest of the
//! prompt, at most a chunk per call, and returns the first step's output once all of it is in.
//! [`Engine::start`] is the two at once.

use std::time::Instant;

use super::generation::{Generation, Next};
use super::{grammar, sampler, Engine, GenerateParams};
use crate::{Error, Result};

/// A prompt being fed to a sequence ([`Engine::begin`]).
#[derive(Debug)]
pub struct Prefill {
    seq: usize,
    /// The prompt's tokens after the reused prefix.
    todo: Vec<u32>,
    /// How many of them are fed.
    fed: usize,
    /// Where layers keep recurrent state, the cache is snapshotted once `todo[..body]` is fed
    /// (before the last prompt token), so that the next turn can go back to that point; 0
    /// otherwise.
    body: usize,
    reused: usize,
    /// The fused decoder picks the first token itself (greedy, unconstrained, sequence 0).
    on_device: bool,
}

impl Prefill {
    /// Prompt tokens still to feed.
    pub fn left(&self) -> usize {
        self.todo.len() - self.fed
    }

    /// The sequence being fed.
    pub fn seq(&self) -> usize {
        self.seq
    }
}

impl Engine {
    /// Begins a reply to `prompt` in sequence `seq`: checks the settings, reuses the cached
    /// common prefix (always recomputing at least the last prompt token) and returns the
    /// generation with what is left to feed ([`Engine::prefill`]).
    pub fn begin(
        &mut self,
        seq: usize,
        prompt: &[u32],
        params: &GenerateParams,
        grammar: Option<grammar::Grammar>,
    ) -> Result<(Generation, Prefill)> {
        let start = Instant::now();
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        params
            .sampling
            .validate()
            .map_err(|setting| Error::InvalidSampling {
                setting,
                origin: None,
            })?;
        let cache = self.seq_cache(seq)?;
        // The cache may go back further than asked (a state that cannot be truncated).
        let common = cache.shared_prefix(prompt);
        let reused = cache.rewind(common.min(prompt.len() - 1));
        cache.ensure_fits(prompt.len() - reused + params.min_room)?;
        let (recurrent, max_len) = (cache.has_recurrent(), cache.max_len());
        let sampler = sampler::Sampler::new(
            params.sampling.clone(),
            self.breakers_for(&params.sampling.dry)?,
            max_len,
        );
        let gen = Generation::new(
            start,
            std::sync::Arc::clone(&self.tokenizer),
            prompt,
            params.clone(),
            sampler,
            grammar,
        );
        let todo = prompt[reused..].to_vec();
        let prefill = Prefill {
            seq,
            body: if recurrent { todo.len() - 1 } else { 0 },
            todo,
            fed: 0,
            reused,
            on_device: self.on_device(seq, &gen),
        };
        Ok((gen, prefill))
    }

    /// Feeds the next part of `p`'s prompt, at most `chunk` tokens (a recurrent model's
    /// last prompt token always on its own, after the snapshot): `None` while some is left,
    /// else the last prompt token's output for the generation's first step. Greedy decoding
    /// on a fused decoder takes the argmax on the device and reads back one id instead of the
    /// logits.
    pub fn prefill(
        &mut self,
        p: &mut Prefill,
        gen: &mut Generation,
        chunk: usize,
    ) -> Result<Option<Next>> {
        let chunk = chunk.max(1);
        if p.fed >= p.body && p.left() <= chunk {
            let next = self.next(p.seq, &p.todo[p.fed..], p.on_device)?;
            p.fed = p.todo.len();
            gen.prompt_fed(p.reused);
            return Ok(Some(next));
        }
        let end = match p.fed < p.body {
            true => p.body.min(p.fed + chunk),
            false => p.fed + chunk,
        };
        self.feed_with(p.seq, &p.todo[p.fed..end], None)?;
        p.fed = end;
        if p.body > 0 && p.fed == p.body {
            self.seq_cache(p.seq)?.snapshot()?;
        }
        Ok(None)
    }
}
