//! Several sequences in one engine, for the server: each sequence has its own cache (so each
//! keeps its own conversation for prefix reuse), prompts are fed per sequence, and the decode
//! steps of every sequence under way go through the model as one batch
//! ([`crate::models::step_batch`]), which reads each weight once for all of them.

use std::time::Instant;

use super::{no_sequence, Engine, Generation, Next};
use crate::models;
use crate::{Error, Result};

impl Engine {
    /// Makes room for `n` sequences decoded together (1: only the engine's own). Each holds
    /// up to the context size; its memory grows with what it holds. The fused decoder keeps
    /// one sequence on its device, so with more than one it gives way to the layer-by-layer
    /// path.
    pub fn set_parallel(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::InvalidArgument(
                "the number of parallel sequences must be at least 1".into(),
            ));
        }
        let ctx = self.cache.max_len();
        self.slots = (1..n)
            .map(|_| models::new_cache(&*self.model, ctx))
            .collect::<Result<_>>()?;
        if n > 1 && self.fused.take().is_some() {
            self.decoder_note = format!(
                "layer by layer: {n} sequences decode together and the fused decoder holds one"
            );
        }
        Ok(())
    }

    /// Sequences that can be under way at once.
    pub fn parallel(&self) -> usize {
        1 + self.slots.len()
    }

    /// Of the sequences in `free`, the one whose cached tokens share the longest prefix with
    /// `prompt` (ties: the one holding least, so a long conversation is not evicted for a
    /// stranger), or `None` when `free` is empty.
    pub fn pick_sequence(&mut self, prompt: &[u32], free: &[usize]) -> Option<usize> {
        free.iter()
            .filter_map(|&seq| {
                let cache = self.seq_cache(seq).ok()?;
                Some((
                    cache.shared_prefix(prompt),
                    std::cmp::Reverse(cache.pos()),
                    seq,
                ))
            })
            .max()
            .map(|(_, _, seq)| seq)
    }

    /// Positions still free in sequence `seq`'s cache.
    pub fn room(&mut self, seq: usize) -> Result<usize> {
        Ok(self.seq_cache(seq)?.remaining())
    }

    /// Forgets what sequence `seq` holds (after a failed pass).
    pub fn reset_sequence(&mut self, seq: usize) -> Result<()> {
        self.seq_cache(seq)?.reset();
        Ok(())
    }

    /// Feeds `token` to each sequence `seq` of `work` in one batched pass and returns their
    /// outputs in the same order. Each generation is charged the pass's time.
    pub fn decode_batch(
        &mut self,
        work: &mut [(usize, u32, &mut Generation)],
    ) -> Result<Vec<Next>> {
        let forward_start = Instant::now();
        let nexts = match work {
            [] => Vec::new(),
            [(seq, token, gen)] => {
                let on_device = self.on_device(*seq, gen);
                vec![self.next(*seq, &[*token], on_device)?]
            }
            _ => self.batched_pass(work)?,
        };
        let spent = forward_start.elapsed();
        for (_, _, gen) in work.iter_mut() {
            gen.add_forward_time(spent);
        }
        Ok(nexts)
    }

    /// One pass over several sequences' caches.
    fn batched_pass(&mut self, work: &[(usize, u32, &mut Generation)]) -> Result<Vec<Next>> {
        let mut all: Vec<Option<&mut super::cache::Cache>> = std::iter::once(&mut self.cache)
            .chain(self.slots.iter_mut())
            .map(Some)
            .collect();
        let mut caches = Vec::with_capacity(work.len());
        for (seq, _, _) in work {
            match all.get_mut(*seq).and_then(Option::take) {
                Some(c) => caches.push(c),
                None if *seq < all.len() => {
                    return Err(Error::Internal(format!(
                        "sequence {seq} twice in one batch"
                    )))
                }
                None => return Err(no_sequence(*seq)),
            }
        }
        for cache in caches.iter() {
            cache.ensure_fits(1)?;
        }
        let tokens: Vec<u32> = work.iter().map(|(_, t, _)| *t).collect();
        let logits = models::step_batch(&*self.model, &tokens, &self.device, &mut caches)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        Ok(rows.into_iter().map(Next::Logits).collect())
    }
}
