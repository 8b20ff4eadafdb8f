//! A family-independent description of a dense pre-norm decoder, for backends that run the
//! whole forward pass themselves (the fused CUDA decoder in `kernels::cuda`).
//!
//! A family opts in by implementing [`crate::models::CausalLm::recipe`] from the layers it
//! already holds: each block is norm → attention (optional per-head Q/K norm, RoPE, window,
//! soft-cap) → optional post-norm → residual, then norm → gated MLP → optional post-norm →
//! residual. Llama, Qwen 2/3 and Gemma 3 are all of that shape; anything else (biases, fused
//! projections, experts, dense weights) answers why not, and the model runs layer by layer.

use std::sync::Arc;

use candle_core::quantized::QTensor;

use super::layers::attention::{self, Attention};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::norm::RmsNorm;
use super::layers::qkv::Qkv;
use super::layers::rope::Rope;

/// Why a model cannot be described as a [`Recipe`].
pub type Unsupported = String;

/// A whole decoder: embedding, blocks, final norm, output layer.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// The token embedding table `(vocab, hidden)`.
    pub embed: Arc<QTensor>,
    /// Multiplies the gathered rows (Gemma: `sqrt(hidden)`), 1 for none.
    pub embed_scale: f32,
    /// The blocks in order.
    pub blocks: Vec<Block>,
    /// The final norm.
    pub norm: RmsNorm,
    /// The output layer `(vocab, hidden)`.
    pub output: Arc<QTensor>,
    /// `cap * tanh(logit / cap)` on the logits, when set.
    pub final_softcap: Option<f32>,
}

/// One block.
#[derive(Clone, Debug)]
pub struct Block {
    /// Norm before attention.
    pub attn_norm: RmsNorm,
    /// Query, key, value and output projections.
    pub q: Arc<QTensor>,
    /// Key projection.
    pub k: Arc<QTensor>,
    /// Value projection.
    pub v: Arc<QTensor>,
    /// Output projection.
    pub o: Arc<QTensor>,
    /// Per-head norms of Q and K before RoPE.
    pub q_norm: Option<RmsNorm>,
    /// See `q_norm`.
    pub k_norm: Option<RmsNorm>,
    /// Heads, scale, window, soft-cap.
    pub attn: attention::Config,
    /// This block's rotary embedding.
    pub rope: Rope,
    /// Norm of the attention output before the residual (Gemma).
    pub post_attn_norm: Option<RmsNorm>,
    /// Norm before the MLP.
    pub ffn_norm: RmsNorm,
    /// Gate projection.
    pub gate: Arc<QTensor>,
    /// Up projection.
    pub up: Arc<QTensor>,
    /// Down projection.
    pub down: Arc<QTensor>,
    /// The gate's activation.
    pub act: Activation,
    /// Norm of the MLP output before the residual (Gemma).
    pub post_ffn_norm: Option<RmsNorm>,
}

/// The layers of one block as a family holds them.
pub struct BlockParts<'a> {
    /// Norm before attention.
    pub attn_norm: &'a RmsNorm,
    /// The attention layer.
    pub attn: &'a Attention,
    /// Its rotary embedding.
    pub rope: &'a Rope,
    /// Post-attention norm, if the family has one.
    pub post_attn_norm: Option<&'a RmsNorm>,
    /// Norm before the MLP.
    pub ffn_norm: &'a RmsNorm,
    /// The MLP.
    pub mlp: &'a Mlp,
    /// Post-MLP norm, if the family has one.
    pub post_ffn_norm: Option<&'a RmsNorm>,
}

fn quantized<'a>(l: &'a Linear, what: &str) -> Result<&'a Arc<QTensor>, Unsupported> {
    l.quantized()
        .ok_or_else(|| format!("{what} has a bias or dense (not GGUF-quantized) weights"))
}

impl Block {
    /// Describes a block, or says what in it is not of the recipe's shape.
    pub fn new(p: BlockParts) -> Result<Self, Unsupported> {
        let (qkv, o, q_norm, k_norm, cfg) = p.attn.parts();
        if p.attn.options() != attention::Options::default() {
            return Err(
                "an attention layer has no RoPE, norms Q/K over whole projections, \
                 norms its values, or takes its values or keys and values from elsewhere"
                    .into(),
            );
        }
        let Qkv::Separate { q, k, v } = qkv else {
            return Err("Q/K/V are one fused matrix".into());
        };
        let Some((gate, up, down, act)) = p.mlp.separate() else {
            return Err("gate and up are one fused matrix".into());
        };
        if let Some(why) = p.rope.gpu_unsupported() {
            return Err(why);
        }
        Ok(Self {
            attn_norm: p.attn_norm.clone(),
            q: quantized(q, "the query projection")?.clone(),
            k: quantized(k, "the key projection")?.clone(),
            v: quantized(v, "the value projection")?.clone(),
            o: quantized(o, "the output projection")?.clone(),
            q_norm: q_norm.cloned(),
            k_norm: k_norm.cloned(),
            attn: cfg.clone(),
            rope: p.rope.clone(),
            post_attn_norm: p.post_attn_norm.cloned(),
            ffn_norm: p.ffn_norm.clone(),
            gate: quantized(gate, "the gate projection")?.clone(),
            up: quantized(up, "the up projection")?.clone(),
            down: quantized(down, "the down projection")?.clone(),
            act,
            post_ffn_norm: p.post_ffn_norm.cloned(),
        })
    }
}

impl Recipe {
    /// Describes a decoder from its embedding, blocks, final norm and output layer.
    pub fn new(
        embed: &Embedding,
        blocks: Vec<Block>,
        norm: &RmsNorm,
        output: &Linear,
        final_softcap: Option<f64>,
    ) -> Result<Self, Unsupported> {
        Ok(Self {
            embed: embed.table().clone(),
            embed_scale: embed.scale().map_or(1.0, |s| s as f32),
            blocks,
            norm: norm.clone(),
            output: quantized(output, "the output layer")?.clone(),
            final_softcap: final_softcap.map(|c| c as f32),
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;
    use candle_core::Device;

    use crate::formats::gguf::Gguf;
    use crate::models::{family, load_gguf, testing};

    /// The reason a tiny random-weight model of `id` gives for having no recipe on the CPU.
    fn refusal(id: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let spec = family(id).unwrap();
        testing::write_tiny_gguf(spec, &path, 3, GgmlDType::Q8_0, None).unwrap();
        let model = load_gguf(&Gguf::open(&path).unwrap(), &Device::Cpu).unwrap();
        model.recipe().expect_err("no recipe")
    }

    #[test]
    fn mixtures_of_experts_say_they_have_no_recipe() {
        for id in ["mixtral", "qwen3_moe"] {
            assert!(refusal(id).contains("experts"), "{id}: {}", refusal(id));
        }
    }

    #[test]
    fn families_without_a_recipe_name_themselves() {
        assert!(
            refusal("granite").contains("granite"),
            "{}",
            refusal("granite")
        );
    }
}
