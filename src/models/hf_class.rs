//! How a transformers class reads `config.json`: which keys beyond the shared ones it
//! honours (biases, the sliding window and the layers it covers) and its defaults for keys a
//! file leaves out, as `configuration_<type>.py` of transformers 5 states them. Each family
//! declares its class as data (`llama::LLAMA`, `qwen2::QWEN2`, …); `llama::Config::from_hf`
//! reads through it.

use super::values;
use crate::formats::hf_config::HfConfig;
use crate::Result;

/// How a family's transformers class reads `config.json` beyond the keys every llama-like
/// class shares, and its defaults for the keys a file may leave out
/// (`configuration_<type>.py` of transformers 5).
#[derive(Clone, Copy, Debug)]
pub struct HfClass {
    /// `attention_bias` puts biases on q, k, v and o (Llama, Qwen 3, Granite). A class
    /// without the key has fixed projections, which its family sets (Qwen 2: q/k/v biases).
    pub attention_bias: bool,
    /// `mlp_bias` puts biases on gate, up and down (Llama, Granite).
    pub mlp_bias: bool,
    /// How the class reads its sliding window.
    pub sliding: Sliding,
    /// `num_key_value_heads` when absent (`None`: as many as query heads).
    pub kv_heads: Option<usize>,
    /// `head_dim` when absent (`None`: `hidden_size / num_attention_heads`).
    pub head_dim: Option<usize>,
    /// The RoPE base when the file gives none (the class's `default_theta`).
    pub rope_theta: f64,
    /// `tie_word_embeddings` when absent.
    pub tied: bool,
}

/// How a transformers class reads its sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sliding {
    /// The class has none and does not read `sliding_window` (Llama, Granite).
    None,
    /// `sliding_window` on every layer; `default` when the key is absent (`null`: none).
    Every {
        /// The class's default.
        default: Option<usize>,
    },
    /// Only with `use_sliding_window: true` (then `sliding_window`, default 4096): on every
    /// layer (Qwen3-MoE), or with `per_layer` on those `layer_types` marks
    /// `sliding_attention`, else on the layers from `max_window_layers` on (Qwen 2, Qwen 3).
    Qwen {
        /// Whether `layer_types` / `max_window_layers` pick the layers.
        per_layer: bool,
    },
}

impl HfClass {
    /// The sliding window and the layers without it, as the class reads them from `h`.
    pub fn window(&self, h: &HfConfig, n_layers: usize) -> Result<(Option<usize>, Vec<usize>)> {
        let sliding = self.sliding;
        let window = match sliding {
            Sliding::None => None,
            Sliding::Every { default } => h.opt_usize_or("sliding_window", default)?,
            Sliding::Qwen { .. } => match h.opt_bool("use_sliding_window")? {
                Some(true) => h.opt_usize_or("sliding_window", Some(4096))?,
                _ => None,
            },
        };
        let full = match (sliding, window) {
            (Sliding::Qwen { per_layer: true }, Some(_)) => {
                match values::sliding_layers(h, n_layers)? {
                    Some(sliding) => (0..n_layers).filter(|&i| !sliding[i]).collect(),
                    None => {
                        (0..n_layers.min(h.opt_usize("max_window_layers")?.unwrap_or(28))).collect()
                    }
                }
            }
            _ => Vec::new(),
        };
        Ok((window, full))
    }
}
