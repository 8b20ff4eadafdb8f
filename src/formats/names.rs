//! The canonical tensor-name table: Hugging Face names are canonical and GGUF names map to
//! them through patterns where `{}` stands for the block index. Families add or override rows
//! as data (their `FamilySpec::gguf_names`), never by code.

/// One mapping: (Hugging Face pattern, GGUF pattern).
pub type NamePair = (&'static str, &'static str);

/// Rows shared by the llama-like families.
pub static COMMON: &[NamePair] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
    ("model.rope_freqs.weight", "rope_freqs.weight"),
    (
        "model.layers.{}.input_layernorm.weight",
        "blk.{}.attn_norm.weight",
    ),
    (
        "model.layers.{}.self_attn.q_proj.weight",
        "blk.{}.attn_q.weight",
    ),
    (
        "model.layers.{}.self_attn.k_proj.weight",
        "blk.{}.attn_k.weight",
    ),
    (
        "model.layers.{}.self_attn.v_proj.weight",
        "blk.{}.attn_v.weight",
    ),
    (
        "model.layers.{}.self_attn.o_proj.weight",
        "blk.{}.attn_output.weight",
    ),
    (
        "model.layers.{}.self_attn.q_proj.bias",
        "blk.{}.attn_q.bias",
    ),
    (
        "model.layers.{}.self_attn.k_proj.bias",
        "blk.{}.attn_k.bias",
    ),
    (
        "model.layers.{}.self_attn.v_proj.bias",
        "blk.{}.attn_v.bias",
    ),
    (
        "model.layers.{}.self_attn.q_norm.weight",
        "blk.{}.attn_q_norm.weight",
    ),
    (
        "model.layers.{}.self_attn.k_norm.weight",
        "blk.{}.attn_k_norm.weight",
    ),
    (
        "model.layers.{}.post_attention_layernorm.weight",
        "blk.{}.ffn_norm.weight",
    ),
    (
        "model.layers.{}.mlp.gate_proj.weight",
        "blk.{}.ffn_gate.weight",
    ),
    ("model.layers.{}.mlp.up_proj.weight", "blk.{}.ffn_up.weight"),
    (
        "model.layers.{}.mlp.down_proj.weight",
        "blk.{}.ffn_down.weight",
    ),
    // Mixture of experts (Qwen MoE naming): the router and the stacked experts, which GGUF
    // stores as one tensor per projection (`Vb::experts` splits them).
    (
        "model.layers.{}.mlp.gate.weight",
        "blk.{}.ffn_gate_inp.weight",
    ),
    (
        "model.layers.{}.mlp.experts.*.gate_proj.weight",
        "blk.{}.ffn_gate_exps.weight",
    ),
    (
        "model.layers.{}.mlp.experts.*.up_proj.weight",
        "blk.{}.ffn_up_exps.weight",
    ),
    (
        "model.layers.{}.mlp.experts.*.down_proj.weight",
        "blk.{}.ffn_down_exps.weight",
    ),
];

/// `config.json` keys shared by the families, as (HF key, GGUF key without the architecture
/// prefix): what an exporter writes and what `Config::from_hf` reads back.
pub static CONFIG_KEYS: &[NamePair] = &[
    ("num_hidden_layers", "block_count"),
    ("hidden_size", "embedding_length"),
    ("intermediate_size", "feed_forward_length"),
    ("num_attention_heads", "attention.head_count"),
    ("num_key_value_heads", "attention.head_count_kv"),
    ("head_dim", "attention.key_length"),
    ("max_position_embeddings", "context_length"),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ("rope_theta", "rope.freq_base"),
    ("sliding_window", "attention.sliding_window"),
    ("num_experts_per_tok", "expert_used_count"),
    ("moe_intermediate_size", "expert_feed_forward_length"),
    ("final_logit_softcapping", "final_logit_softcapping"),
];

/// Splits `model.layers.7.rest` into (`model.layers.{}.rest`, 7).
fn pattern_of(name: &str) -> Option<(String, usize)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (idx, tail) = rest.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    Some((format!("model.layers.{{}}.{tail}"), idx))
}

/// The GGUF name of a canonical name; `extra` rows take precedence over [`COMMON`].
pub fn to_gguf(hf: &str, extra: &[NamePair]) -> Option<String> {
    let (pattern, idx) = match pattern_of(hf) {
        Some((p, i)) => (p, Some(i)),
        None => (hf.to_string(), None),
    };
    let (_, gguf) = extra.iter().chain(COMMON).find(|(h, _)| *h == pattern)?;
    Some(match idx {
        Some(i) => gguf.replace("{}", &i.to_string()),
        None => gguf.to_string(),
    })
}

/// The canonical name of a GGUF name (`blk.7.attn_q.weight` → `model.layers.7...`); `extra`
/// rows take precedence over [`COMMON`]. Stacked expert tensors map to a pattern holding `*`
/// where the expert index goes.
pub fn to_hf(gguf: &str, extra: &[NamePair]) -> Option<String> {
    let parsed = gguf.strip_prefix("blk.").and_then(|rest| {
        let (idx, tail) = rest.split_once('.')?;
        Some((format!("blk.{{}}.{tail}"), idx.parse::<usize>().ok()?))
    });
    let (pattern, idx) = match parsed {
        Some((p, i)) => (p, Some(i)),
        None => (gguf.to_string(), None),
    };
    let (hf, _) = extra.iter().chain(COMMON).find(|(_, g)| *g == pattern)?;
    Some(match idx {
        Some(i) => hf.replace("{}", &i.to_string()),
        None => hf.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_back_to_canonical_ones() {
        for hf in [
            "model.layers.12.self_attn.q_proj.weight",
            "model.embed_tokens.weight",
            "model.layers.0.mlp.experts.*.up_proj.weight",
        ] {
            let g = to_gguf(hf, &[]).unwrap();
            assert_eq!(to_hf(&g, &[]).as_deref(), Some(hf), "{g}");
        }
        assert_eq!(to_hf("blk.x.attn_q.weight", &[]), None);
        assert_eq!(to_hf("mystery.weight", &[]), None);
    }

    #[test]
    fn block_names_map_with_their_index() {
        assert_eq!(
            to_gguf("model.layers.12.self_attn.q_proj.weight", &[]).as_deref(),
            Some("blk.12.attn_q.weight")
        );
        assert_eq!(
            to_gguf("model.embed_tokens.weight", &[]).as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(to_gguf("model.layers.x.mlp", &[]), None);
    }

    #[test]
    fn family_rows_override_common_ones() {
        let extra: &[NamePair] = &[(
            "model.layers.{}.post_attention_layernorm.weight",
            "blk.{}.post_attention_norm.weight",
        )];
        assert_eq!(
            to_gguf("model.layers.3.post_attention_layernorm.weight", extra).as_deref(),
            Some("blk.3.post_attention_norm.weight")
        );
    }
}
