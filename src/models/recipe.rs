//! A family-independent description of a dense pre-norm decoder, for backends that run the
//! whole forward pass themselves (the fused CUDA decoder in `kernels::cuda`).
//!
//! A family opts in by implementing [`crate::models::CausalLm::recipe`] from the layers it
//! already holds: each block is norm → attention (optional per-head Q/K norm, RoPE, window,
//! soft-cap) → optional post-norm → residual, then norm → gated MLP → optional post-norm →
//! residual. Llama, Qwen 2/3 and Gemma 3 are all of that shape, and so are the mixtures of
//! experts whose feed-forward network is a routed set of gated MLPs (Qwen3-MoE, Mixtral):
//! [`Ffn::Experts`]. Anything else (biases, fused projections, dense weights) answers why not,
//! and the model runs layer by layer.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::Tensor;

use super::layers::attention::{self, Attention};
use super::layers::embedding::{Embedding, Table};
use super::layers::linear::Linear;
use super::layers::mlp::{Activation, Mlp};
use super::layers::moe::{Router, SparseMoe};
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
    /// The feed-forward network.
    pub ffn: Ffn,
    /// The gate's activation.
    pub act: Activation,
    /// Norm of the MLP output before the residual (Gemma).
    pub post_ffn_norm: Option<RmsNorm>,
}

/// A block's feed-forward network: one gated MLP, or experts picked per token by a router.
#[derive(Clone, Debug)]
pub enum Ffn {
    /// `down(act(gate x) * up x)`.
    Dense {
        /// Gate projection `(ffn, hidden)`.
        gate: Arc<QTensor>,
        /// Up projection `(ffn, hidden)`.
        up: Arc<QTensor>,
        /// Down projection `(hidden, ffn)`.
        down: Arc<QTensor>,
    },
    /// The routing-weighted sum of the chosen experts' gated MLPs.
    Experts(Experts),
}

/// Routed experts, each a gated MLP of the same shapes and weight types.
#[derive(Clone, Debug)]
pub struct Experts {
    /// The router `(experts, hidden)`, f32 (as llama.cpp keeps it: a rounded logit can swap
    /// experts).
    pub router: Tensor,
    /// How router logits become weights.
    pub routing: Router,
    /// Experts each token uses.
    pub n_used: usize,
    /// Each expert's gate projection `(ffn, hidden)`.
    pub gate: Vec<Arc<QTensor>>,
    /// Each expert's up projection.
    pub up: Vec<Arc<QTensor>>,
    /// Each expert's down projection `(hidden, ffn)`.
    pub down: Vec<Arc<QTensor>>,
}

impl Ffn {
    /// The width of one (expert's) MLP.
    pub fn width(&self) -> usize {
        let gate = match self {
            Ffn::Dense { gate, .. } => gate,
            Ffn::Experts(e) => match e.gate.first() {
                Some(g) => g,
                None => return 0,
            },
        };
        gate.shape().dims().first().copied().unwrap_or(0)
    }
}

/// A block's feed-forward network as a family holds it.
#[derive(Clone, Copy)]
pub enum FfnParts<'a> {
    /// One gated MLP.
    Dense(&'a Mlp),
    /// Routed experts.
    Experts(&'a SparseMoe),
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
    /// The MLP or the experts.
    pub ffn: FfnParts<'a>,
    /// Post-MLP norm, if the family has one.
    pub post_ffn_norm: Option<&'a RmsNorm>,
}

fn quantized<'a>(l: &'a Linear, what: &str) -> Result<&'a Arc<QTensor>, Unsupported> {
    l.quantized()
        .ok_or_else(|| format!("{what} has a bias or dense (not GGUF-quantized) weights"))
}

/// Gate, up and down of one MLP, quantized and separate, with its activation.
type Gated = (Arc<QTensor>, Arc<QTensor>, Arc<QTensor>, Activation);

fn gated(mlp: &Mlp) -> Result<Gated, Unsupported> {
    let Some((gate, up, down, act)) = mlp.separate() else {
        return Err("gate and up are one fused matrix".into());
    };
    Ok((
        quantized(gate, "the gate projection")?.clone(),
        quantized(up, "the up projection")?.clone(),
        quantized(down, "the down projection")?.clone(),
        act,
    ))
}

fn ffn(parts: FfnParts) -> Result<(Ffn, Activation), Unsupported> {
    match parts {
        FfnParts::Dense(mlp) => {
            let (gate, up, down, act) = gated(mlp)?;
            Ok((Ffn::Dense { gate, up, down }, act))
        }
        FfnParts::Experts(moe) => {
            let router = moe
                .router()
                .dense()
                .ok_or("the expert router is quantized or has a bias")?
                .clone();
            let (mut gate, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
            let mut acts = Vec::new();
            for mlp in moe.experts().mlps() {
                let (g, u, d, act) = gated(mlp)?;
                gate.push(g);
                up.push(u);
                down.push(d);
                acts.push(act);
            }
            let Some(&act) = acts.first() else {
                return Err("a mixture of experts without experts".into());
            };
            if acts.iter().any(|&a| a != act) {
                return Err("experts with different activations".into());
            }
            let cfg = moe.config();
            let experts = Experts {
                router,
                routing: cfg.router,
                n_used: cfg.n_used,
                gate,
                up,
                down,
            };
            Ok((Ffn::Experts(experts), act))
        }
    }
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
        let (ffn, act) = ffn(p.ffn)?;
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
            ffn,
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
            embed: match embed.table() {
                Table::Candle(t) => t.clone(),
                Table::Blocks(b) => {
                    return Err(format!(
                        "the embedding table is {b:?}, which candle does not read"
                    ))
                }
            },
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

    use super::{Activation, Ffn, FfnParts, Router, SparseMoe};
    use crate::formats::gguf::Gguf;
    use crate::formats::weights::Weights;
    use crate::models::layers::moe;
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
    fn routed_experts_of_gated_mlps_become_recipe_experts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let spec = family("qwen3_moe").unwrap();
        testing::write_tiny_gguf(spec, &path, 3, GgmlDType::Q8_0, None).unwrap();
        let gguf = Gguf::open(&path).unwrap();
        let weights = Weights::from_gguf(&gguf, &[], &Device::Cpu);
        let cfg = moe::Config {
            n_experts: 4,
            n_used: 2,
            ffn: 64,
            router: Router::SoftmaxTopK { renormalize: true },
            names: moe::QWEN_NAMES,
        };
        let block = SparseMoe::load(&weights.pp("model.layers.0"), testing::HIDDEN, &cfg).unwrap();
        let (ffn, act) = super::ffn(FfnParts::Experts(&block)).unwrap();
        assert_eq!(act, Activation::Silu);
        assert_eq!(ffn.width(), 64);
        let Ffn::Experts(e) = ffn else {
            panic!("dense")
        };
        assert_eq!((e.gate.len(), e.up.len(), e.down.len()), (4, 4, 4));
        assert_eq!(e.n_used, 2);
        assert_eq!(e.router.dims(), &[4, testing::HIDDEN]);
        assert_eq!(e.down[3].shape().dims(), &[testing::HIDDEN, 64]);
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
