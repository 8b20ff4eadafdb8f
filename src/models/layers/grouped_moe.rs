//! DeepSeek's mixture of experts (DeepSeek-V2/V3, GLM-4.x MoE): a router with group-limited
//! top-k and a selection bias, routed SwiGLU experts, and shared experts every token goes
//! through, their output added unscaled.
//!
//! Routing, as transformers' `DeepseekV3TopkRouter` and `DeepseekV2TopkRouter` do it (and
//! llama.cpp's `build_moe_ffn`):
//! 1. scores: `sigmoid(logits)` (V3, GLM) or `softmax(logits)` (V2);
//! 2. for choosing only, each score plus its expert's `e_score_correction_bias` (V3, GLM);
//! 3. the experts are split into `n_group` equal groups, each group is ranked by the sum of its
//!    two best biased scores (V3, GLM) or by its best score (V2's `group_limited_greedy`), and
//!    only the best `topk_group` groups stay eligible;
//! 4. the `k` best biased scores among those are the chosen experts, weighted by their
//!    *unbiased* scores, divided by their sum (`norm_topk_prob`) and multiplied by
//!    `routed_scaling_factor`.

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::mlp::{Activation, Mlp};
use super::moe::Experts;
use crate::formats::gguf::Gguf;
use crate::formats::hf_config::HfConfig;
use crate::formats::weights::Vb;
use crate::kernels::cpu::host;
use crate::models::values;
use crate::{Error, Result};

/// How router logits become scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// `sigmoid` of each logit (`scoring_func: sigmoid`; DeepSeek-V3, GLM-4.x).
    Sigmoid,
    /// A softmax over all logits (`scoring_func: softmax`; DeepSeek-V2).
    Softmax,
}

/// How a group of experts is ranked when only the best `topk_group` groups may be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupRank {
    /// By the sum of its two best choice scores (DeepSeek-V3, GLM-4.x; llama.cpp's rule for
    /// every architecture).
    TopTwoSum,
    /// By its best score (DeepSeek-V2's `topk_method: group_limited_greedy`).
    Best,
}

/// Shape and routing of one block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Routed experts (`n_routed_experts`).
    pub n_experts: usize,
    /// Experts each token uses (`num_experts_per_tok`).
    pub n_used: usize,
    /// Width of one routed expert (`moe_intermediate_size`).
    pub ffn: usize,
    /// Width of the shared experts together (`n_shared_experts × moe_intermediate_size`);
    /// 0 for none.
    pub shared_ffn: usize,
    /// Expert groups (`n_group`).
    pub n_group: usize,
    /// Groups a token may choose from (`topk_group`).
    pub topk_group: usize,
    /// How groups are ranked.
    pub group_rank: GroupRank,
    /// How logits become scores.
    pub scoring: Scoring,
    /// Divide the chosen weights by their sum (`norm_topk_prob`).
    pub norm_topk_prob: bool,
    /// Multiplier of the routed weights (`routed_scaling_factor`).
    pub scale: f32,
}

/// A `config.json` class's defaults for the router keys a file may leave out.
#[derive(Clone, Copy, Debug)]
pub struct HfDefaults {
    /// `num_experts_per_tok`.
    pub n_used: usize,
    /// `moe_intermediate_size`.
    pub ffn: usize,
    /// `n_shared_experts`.
    pub n_shared: usize,
    /// `n_group`.
    pub n_group: usize,
    /// `topk_group`.
    pub topk_group: usize,
    /// `norm_topk_prob`.
    pub norm_topk_prob: bool,
    /// `routed_scaling_factor`.
    pub scale: f64,
}

impl Config {
    /// Reads `{arch}.expert_*` metadata as llama.cpp's converter writes it for `deepseek2`
    /// and `glm4moe`: a file without `expert_gating_func` scores as llama.cpp's rule for the
    /// architecture says (`unnamed`: softmax for early DeepSeek-V2 files, sigmoid for GLM),
    /// without groups has one, without a scale or normalisation has neither. Softmax scores
    /// come only from DeepSeek-V2 checkpoints, whose groups rank by their best score as the
    /// reference does (llama.cpp ranks every file's groups by their two best, V3's rule).
    pub fn from_gguf(g: &Gguf, arch: &str, unnamed: Scoring) -> Result<Self> {
        let k = |s: &str| format!("{arch}.{s}");
        let opt = |s: &str| g.opt(&k(s), Gguf::usize);
        let scoring = match opt("expert_gating_func")? {
            None => unnamed,
            Some(1) => Scoring::Softmax,
            Some(2) => Scoring::Sigmoid,
            Some(other) => {
                return Err(values::refused(
                    &g.path().display().to_string(),
                    &k("expert_gating_func"),
                    other,
                    "1 (softmax), 2 (sigmoid)",
                ))
            }
        };
        let ffn = g.usize(&k("expert_feed_forward_length"))?;
        Ok(Self {
            n_experts: g.usize(&k("expert_count"))?,
            n_used: g.usize(&k("expert_used_count"))?,
            ffn,
            shared_ffn: opt("expert_shared_count")?.unwrap_or(0) * ffn,
            n_group: opt("expert_group_count")?.unwrap_or(1),
            topk_group: opt("expert_group_used_count")?.unwrap_or(1),
            group_rank: match scoring {
                Scoring::Softmax => GroupRank::Best,
                Scoring::Sigmoid => GroupRank::TopTwoSum,
            },
            scoring,
            norm_topk_prob: g
                .opt(&k("expert_weights_norm"), Gguf::bool)?
                .unwrap_or(false),
            scale: values::opt_positive(g, &k("expert_weights_scale"))?.unwrap_or(1.0) as f32,
        })
    }

    /// Reads the router keys of a `config.json` (`n_routed_experts`, `num_experts_per_tok`,
    /// `moe_intermediate_size`, `n_shared_experts`, `n_group`, `topk_group`,
    /// `norm_topk_prob`, `routed_scaling_factor`), absent ones taking the class's defaults;
    /// `null` where a number is needed is refused. Groups rank as DeepSeek-V3's router ranks
    /// them.
    pub fn from_hf(h: &HfConfig, d: &HfDefaults, scoring: Scoring) -> Result<Self> {
        let or = |key: &str, default: usize| -> Result<usize> {
            h.opt_usize_or(key, Some(default))?
                .ok_or_else(|| values::refused(h.origin(), key, "null", "a number"))
        };
        let ffn = or("moe_intermediate_size", d.ffn)?;
        Ok(Self {
            n_experts: h.usize_any(&["n_routed_experts", "num_local_experts"])?,
            n_used: or("num_experts_per_tok", d.n_used)?,
            ffn,
            shared_ffn: or("n_shared_experts", d.n_shared)? * ffn,
            n_group: or("n_group", d.n_group)?,
            topk_group: or("topk_group", d.topk_group)?,
            group_rank: GroupRank::TopTwoSum,
            scoring,
            norm_topk_prob: h.opt_bool("norm_topk_prob")?.unwrap_or(d.norm_topk_prob),
            scale: h.opt_positive("routed_scaling_factor")?.unwrap_or(d.scale) as f32,
        })
    }

    /// Rejects shapes that cannot route.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::UnsupportedConfig(m));
        if self.n_experts == 0 || self.ffn == 0 {
            return bad(format!(
                "mixture of experts needs experts of non-zero width, found {} experts of width {}",
                self.n_experts, self.ffn
            ));
        }
        if self.n_group == 0 || !self.n_experts.is_multiple_of(self.n_group) {
            return bad(format!(
                "{} experts cannot be split into {} equal groups (n_group)",
                self.n_experts, self.n_group
            ));
        }
        if self.topk_group == 0 || self.topk_group > self.n_group {
            return bad(format!(
                "topk_group {} out of {} groups; supported: 1 to {}",
                self.topk_group, self.n_group, self.n_group
            ));
        }
        let eligible = self.topk_group * self.n_experts / self.n_group;
        if self.n_used == 0 || self.n_used > eligible {
            return bad(format!(
                "{} experts used per token out of the {eligible} in {} of {} groups; supported: \
                 1 to {eligible}",
                self.n_used, self.topk_group, self.n_group
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return bad(format!(
                "routed_scaling_factor {}; supported: a positive number",
                self.scale
            ));
        }
        Ok(())
    }

    /// The chosen experts of one token and their weights, best first: `logits` are its router
    /// logits, `bias` the selection bias (if any). Ties go to the lower index.
    pub fn route(&self, logits: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
        let scores: Vec<f32> = match self.scoring {
            Scoring::Sigmoid => logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect(),
            Scoring::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f32 = exp.iter().sum();
                exp.into_iter().map(|e| e / sum).collect()
            }
        };
        let choice: Vec<f32> = match bias {
            Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
            None => scores.clone(),
        };
        // Groups ranked by the sum of their two best choice scores, or by their best.
        let size = self.n_experts / self.n_group;
        let best = |o: &mut Vec<usize>, v: &[f32]| {
            o.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
        };
        let ranked = match self.group_rank {
            GroupRank::TopTwoSum => 2,
            GroupRank::Best => 1,
        };
        let group_score: Vec<f32> = (0..self.n_group)
            .map(|g| {
                let mut members: Vec<usize> = (g * size..(g + 1) * size).collect();
                best(&mut members, &choice);
                members.iter().take(ranked).map(|&e| choice[e]).sum()
            })
            .collect();
        let mut groups: Vec<usize> = (0..self.n_group).collect();
        best(&mut groups, &group_score);
        let mut eligible: Vec<usize> = groups[..self.topk_group]
            .iter()
            .flat_map(|g| g * size..(g + 1) * size)
            .collect();
        best(&mut eligible, &choice);
        eligible.truncate(self.n_used);
        let sum: f32 = eligible.iter().map(|&e| scores[e]).sum();
        let norm = if self.norm_topk_prob {
            sum + 1e-20
        } else {
            1.0
        };
        eligible
            .into_iter()
            .map(|e| (e, scores[e] / norm * self.scale))
            .collect()
    }
}

/// A DeepSeek mixture-of-experts block: router, routed experts and shared experts.
#[derive(Clone, Debug)]
pub struct GroupedMoe {
    router: Linear,
    bias: Option<Vec<f32>>,
    experts: Experts,
    shared: Option<Mlp>,
    cfg: Config,
}

impl GroupedMoe {
    /// Loads `gate.weight` (and `gate.e_score_correction_bias` when the file has it),
    /// `experts.E.{gate,up,down}_proj` and `shared_experts.{gate,up,down}_proj` under `vb`
    /// (the layer's `mlp`).
    pub fn load(vb: &Vb, hidden: usize, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let n = cfg.n_experts;
        // The router stays f32, as llama.cpp keeps it: a rounded logit can swap experts.
        let router = Linear::load_f32(&vb.pp("gate"), hidden, n)?;
        let bias = match vb.pp("gate").contains("e_score_correction_bias") {
            true => Some(
                vb.pp("gate")
                    .tensor("e_score_correction_bias", &[n])?
                    .to_vec1()?,
            ),
            false => None,
        };
        let names = ["gate_proj", "up_proj", "down_proj"];
        let shared = match cfg.shared_ffn {
            0 => None,
            w => Some(Mlp::load(
                &vb.pp("shared_experts"),
                hidden,
                w,
                Activation::Silu,
                false,
            )?),
        };
        Ok(Self {
            router,
            bias,
            experts: Experts::load(vb, n, names, (hidden, cfg.ffn))?,
            shared,
            cfg: *cfg,
        })
    }

    /// Applies the block to `(..., hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.dims().to_vec();
        let hidden = shape.last().copied().unwrap_or(0);
        let xs = x.reshape(((), hidden))?; // (T, hidden)
                                           // 1. Router logits (T, E), routed on the host.
        let logits: Vec<Vec<f32>> = self.router.forward(&xs)?.to_dtype(DType::F32)?.to_vec2()?;
        let routes: Vec<Vec<(usize, f32)>> = logits
            .iter()
            .map(|l| self.cfg.route(l, self.bias.as_deref()))
            .collect();
        // 2. The chosen experts, weighted, plus the shared experts.
        let mut y = self.experts.forward(&xs, &routes)?;
        if let Some(s) = &self.shared {
            y = host::add(&y, &s.forward(&xs)?)?;
        }
        Ok(y.reshape(shape)?)
    }
}

/// A block's feed-forward part in these models: a dense SwiGLU MLP in the leading
/// `first_k_dense_replace` blocks, the experts in the others.
#[derive(Clone, Debug)]
pub enum Ffn {
    /// The dense MLP.
    Dense(Mlp),
    /// The mixture of experts.
    Moe(GroupedMoe),
}

impl Ffn {
    /// Loads block `layer`'s part under `vb` (its `mlp`): dense of width `dense_ffn` before
    /// block `first_dense`, experts from there on.
    pub fn load(
        vb: &Vb,
        hidden: usize,
        (layer, first_dense): (usize, usize),
        dense_ffn: usize,
        moe: &Config,
    ) -> Result<Self> {
        Ok(match layer < first_dense {
            true => Self::Dense(Mlp::load(vb, hidden, dense_ffn, Activation::Silu, false)?),
            false => Self::Moe(GroupedMoe::load(vb, hidden, moe)?),
        })
    }

    /// Applies it to `(..., hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(mlp) => mlp.forward(x),
            Self::Moe(moe) => moe.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n_group: usize, topk_group: usize, k: usize) -> Config {
        Config {
            n_experts: 8,
            n_used: k,
            ffn: 4,
            shared_ffn: 0,
            n_group,
            topk_group,
            group_rank: GroupRank::TopTwoSum,
            scoring: Scoring::Sigmoid,
            norm_topk_prob: true,
            scale: 2.5,
        }
    }

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn groups_limit_the_choice_and_the_bias_only_chooses() {
        // Groups of two: {0,1} {2,3} {4,5} {6,7}. Expert 6 has the best single logit, but
        // group {6,7} sums lower than {0,1} and {2,3}.
        let logits = [1.0, 0.9, 0.8, 0.8, -2.0, -2.0, 2.0, -3.0];
        let r = cfg(4, 2, 2).route(&logits, None);
        let (e, w): (Vec<usize>, Vec<f32>) = r.into_iter().unzip();
        assert_eq!(e, [0, 1]);
        let (s0, s1) = (sigmoid(1.0), sigmoid(0.9));
        assert!((w[0] - s0 / (s0 + s1) * 2.5).abs() < 1e-6, "{w:?}");
        assert!((w[1] - s1 / (s0 + s1) * 2.5).abs() < 1e-6, "{w:?}");
        // A bias lifts group {4,5} and expert 5 into the choice; the weights stay unbiased.
        let bias = [0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0];
        let r = cfg(4, 2, 2).route(&logits, Some(&bias));
        assert_eq!(r[0].0, 5);
        assert_eq!(r[1].0, 0);
        let (s5, s0) = (sigmoid(-2.0), sigmoid(1.0));
        assert!((r[0].1 - s5 / (s5 + s0) * 2.5).abs() < 1e-6, "{r:?}");
        // One group: the plain top-k over all experts.
        let r = cfg(1, 1, 2).route(&logits, None);
        assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), [6, 0]);
    }

    #[test]
    fn softmax_scoring_without_normalisation_keeps_the_full_softmax_weights() {
        let c = Config {
            scoring: Scoring::Softmax,
            norm_topk_prob: false,
            scale: 1.0,
            ..cfg(1, 1, 2)
        };
        let logits = [1.0, 3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let sum: f32 = logits.iter().map(|l: &f32| l.exp()).sum();
        let r = c.route(&logits, None);
        assert_eq!(r[0].0, 1);
        assert!((r[0].1 - 3f32.exp() / sum).abs() < 1e-6);
        assert!((r[1].1 - 2f32.exp() / sum).abs() < 1e-6);
    }

    #[test]
    fn v2_groups_rank_by_their_best_score_where_v3_sums_the_two_best() {
        // Groups of two: {0,1} {2,3} {4,5} {6,7}; one group eligible. Group {2,3} has the
        // best pair (0.8 + 0.8), group {6,7} the best single logit (2.0).
        let logits = [1.0, 0.2, 0.8, 0.8, -2.0, -2.0, 2.0, -3.0];
        let v3 = cfg(4, 1, 2).route(&logits, None);
        assert_eq!(v3.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 3]);
        let v2 = Config {
            group_rank: GroupRank::Best,
            scoring: Scoring::Softmax,
            norm_topk_prob: false,
            scale: 16.0,
            ..cfg(4, 1, 2)
        };
        let r = v2.route(&logits, None);
        assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), [6, 7]);
        let sum: f32 = logits.iter().map(|l: &f32| l.exp()).sum();
        assert!((r[0].1 - 2f32.exp() / sum * 16.0).abs() < 1e-5, "{r:?}");
        assert!((r[1].1 - (-3f32).exp() / sum * 16.0).abs() < 1e-5, "{r:?}");
    }

    #[test]
    fn unroutable_shapes_are_rejected() {
        assert!(cfg(4, 2, 2).validate().is_ok());
        assert!(cfg(3, 1, 2).validate().is_err()); // 8 experts in 3 groups
        assert!(cfg(4, 5, 2).validate().is_err());
        assert!(cfg(4, 1, 3).validate().is_err()); // 3 of the 2 eligible
        assert!(cfg(4, 2, 0).validate().is_err());
    }
}
