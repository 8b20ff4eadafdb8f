//! The memory-bandwidth bound of generation (`bench --bandwidth`): how fast this machine's
//! CPU threads can read memory, and how many bytes of weights one generated token reads.
//!
//! A decoder step reads every weight once (a mixture of experts only its routed experts'),
//! so on a CPU it cannot run faster than bandwidth ÷ bytes per token; how close a generation
//! test comes to that bound is the share of the machine a kernel leaves unused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::formats::gguf_header::{Header, Value};
use crate::kernels::cpu::huge::Pages;
use crate::kernels::cpu::pool::Pool;

/// Bytes streamed per pass: far more than any CPU's last-level cache.
const BUFFER_BYTES: usize = 1 << 30;
/// Passes timed (after one untimed pass that faults the pages in and warms the threads).
const PASSES: usize = 5;
/// Words per unit of work the pool hands out (1 MiB).
const WORDS_PER_UNIT: usize = (1 << 20) / 8;

/// Read bandwidth in GB/s (10⁹ bytes per second): the median of [`PASSES`] passes over a
/// 1 GiB buffer, each summed by all of our pool's threads (as many as the kernels use);
/// `Err` when the buffer cannot be had.
pub fn read_gbs() -> std::io::Result<f64> {
    read_gbs_over(BUFFER_BYTES)
}

/// [`read_gbs`] over a buffer of `bytes` (whole MiB).
fn read_gbs_over(bytes: usize) -> std::io::Result<f64> {
    // On 2 MiB pages, as the weights a decode step streams are (see `kernels::cpu::huge`).
    let mut pages = Pages::zeroed(bytes / 8 * 8)?;
    let words: &mut [u64] = bytemuck::cast_slice_mut(pages.bytes_mut());
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u64;
    }
    let words: &[u64] = words;
    let units = words.len() / WORDS_PER_UNIT;
    let mut rates = Vec::with_capacity(PASSES);
    for pass in 0..=PASSES {
        let total = AtomicU64::new(0);
        let start = Instant::now();
        Pool::global().run(units, |range| {
            let mut sum = 0u64;
            for unit in range {
                sum = sum.wrapping_add(sum_words(
                    &words[unit * WORDS_PER_UNIT..(unit + 1) * WORDS_PER_UNIT],
                ));
            }
            total.fetch_add(sum, Ordering::Relaxed);
        });
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(total.load(Ordering::Relaxed));
        if pass > 0 && secs > 0.0 {
            rates.push((units * WORDS_PER_UNIT * 8) as f64 / secs / 1e9);
        }
    }
    Ok(super::stats::median(&rates).unwrap_or(0.0))
}

/// The wrapping sum of `words`, by the widest loads this CPU has: the bound should be the
/// fastest rate its threads can read, not the rate of one way of reading.
fn sum_words(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { sum_words_avx2(words) };
    }
    sum_words_portable(words)
}

/// Four independent sums, so the loop is limited by loads rather than by one add chain.
fn sum_words_portable(words: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let steps = words.chunks_exact(4);
    let tail = steps.remainder();
    for c in steps {
        for (a, w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*w);
        }
    }
    acc.iter().chain(tail).fold(0, |s, a| s.wrapping_add(*a))
}

/// [`sum_words_portable`] with 32-byte loads into four vector sums (128 bytes a step).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_words_avx2(words: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let steps = words.chunks_exact(16);
    let tail = sum_words_portable(steps.remainder());
    for step in steps {
        let p = step.as_ptr() as *const __m256i;
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_epi64(*a, _mm256_loadu_si256(p.add(i)));
        }
    }
    let all = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    let mut lanes = [0u64; 4];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, all);
    lanes.iter().fold(tail, |s, a| s.wrapping_add(*a))
}

/// Bytes of weights one generated token reads: every tensor, except that the token
/// embedding table gives one row (all of it when it is also the output head, i.e. there is
/// no `output.weight`), and expert tensors (`*_exps`) the routed share
/// (`expert_used_count / expert_count`).
pub fn weights_per_token(header: &Header) -> u64 {
    let arch = header.architecture().unwrap_or_default();
    let count = |key: &str| {
        header
            .get(&format!("{arch}.{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let (experts, used) = (count("expert_count"), count("expert_used_count"));
    let tied = !header.tensors.iter().any(|t| t.name == "output.weight");
    let mut total = 0u64;
    for t in &header.tensors {
        let bytes = header.tensor_bytes(t).unwrap_or(0);
        total += if t.name == "token_embd.weight" && !tied {
            bytes / t.dims.get(1).copied().unwrap_or(1).max(1)
        } else if t.name.contains("_exps") && experts > 0 {
            bytes * used.min(experts) / experts
        } else {
            bytes
        };
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf_header::TensorEntry;

    fn entry(name: &str, dims: Vec<u64>) -> TensorEntry {
        TensorEntry {
            name: name.into(),
            dims,
            type_id: 0,
            offset: 0,
        }
    }

    fn header(tensors: Vec<TensorEntry>, metadata: Vec<(String, Value)>) -> Header {
        Header {
            version: 3,
            metadata,
            tensors,
            alignment: 32,
            data_offset: 0,
            file_size: 0,
        }
    }

    #[test]
    fn a_token_reads_one_embedding_row_unless_the_table_is_the_head_and_its_experts_share() {
        // F32 tensors: 4 bytes per element.
        let body = || vec![entry("blk.0.attn_q.weight", vec![8, 8])];
        let mut untied = body();
        untied.push(entry("token_embd.weight", vec![8, 100]));
        untied.push(entry("output.weight", vec![8, 100]));
        assert_eq!(
            weights_per_token(&header(untied, vec![])),
            4 * (64 + 8 + 800)
        );
        let mut tied = body();
        tied.push(entry("token_embd.weight", vec![8, 100]));
        assert_eq!(weights_per_token(&header(tied, vec![])), 4 * (64 + 800));
        let mut moe = body();
        moe.push(entry("blk.0.ffn_up_exps.weight", vec![8, 4, 16]));
        let meta = vec![
            ("general.architecture".into(), Value::Str("qwen3moe".into())),
            ("qwen3moe.expert_count".into(), Value::U32(16)),
            ("qwen3moe.expert_used_count".into(), Value::U32(2)),
        ];
        assert_eq!(
            weights_per_token(&header(moe, meta)),
            4 * (64 + 512 * 2 / 16)
        );
    }

    #[test]
    fn every_form_of_the_sum_agrees() {
        let words: Vec<u64> = (0..1000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for len in [0, 3, 16, 17, 1000] {
            let want = words[..len].iter().fold(0u64, |s, w| s.wrapping_add(*w));
            assert_eq!(sum_words(&words[..len]), want, "{len}");
            assert_eq!(sum_words_portable(&words[..len]), want, "{len}");
        }
    }

    #[test]
    fn the_bandwidth_is_a_positive_rate() {
        let gbs = read_gbs_over(4 << 20).unwrap();
        assert!(gbs.is_finite() && gbs > 0.0, "{gbs}");
    }
}
