"""The oracle's cases: one or more tiny configurations per mlcli family, each exercising the
features that family's file implements. `family` is the mlcli family id (tests/oracle.rs
checks that every registered family has at least one case); `config` is passed to
transformers' config class, which saves it in its own (transformers 5) format."""

# Shared tiny dimensions: GQA (4 query heads over 2 KV heads), head width 16.
BASE = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


# A prompt longer than the gated delta rule's chunk of 64 tokens (Qwen3.5), so that state
# carried from one chunk into the next is checked; ids spread over the tiny vocabulary.
LONG_TOKENS = [1] + [(37 * i + 11) % 125 + 3 for i in range(79)]


# A prompt of 16 tokens: four windows of 4 (Gemma 4's cases).
TOKENS_16 = [1, 5, 17, 42, 8, 99, 3, 64, 77, 12, 30, 58, 91, 23, 46, 70]


def tiny(**over):
    c = dict(BASE)
    c.update(over)
    return c


# gpt-oss: 3 layers (sliding, full, sliding as layer_types' default alternates them, which is
# all llama.cpp's GGUF can say), 4 experts of width 32 (MXFP4 blocks of 32 along both inputs),
# gpt-oss's own YaRN (truncate false: the correction range is not rounded to whole dimensions).
GPT_OSS = tiny(num_hidden_layers=3, intermediate_size=32, num_local_experts=4,
               num_experts_per_tok=2, sliding_window=5, tie_word_embeddings=False,
               pad_token_id=0, max_position_embeddings=512,
               rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                                "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                                "original_max_position_embeddings": 16})
# Sinks large enough to take a visible share of each softmax; gate/up weights shifted so that
# some gate values pass the clamp at 7 (and some up values pass -7 or 7).
GPT_OSS_OFFSETS = {"sinks": 1.0, "gate_up_proj_bias": 5.0}


# DeepSeek-V3: 3 layers (the first dense), MLA with a low-rank query (q_lora_rank 32), a latent
# of 32 and rope/nope/value widths 8/16/16, interleaved RoPE with DeepSeek's YaRN (mscale and
# mscale_all_dim: the softmax scale grows by mscale^2), 8 experts in 4 groups (top 2 groups,
# top 2 experts, sigmoid scores, a selection bias, normalised weights times 2.5) and one
# shared expert.
DEEPSEEK_V3 = tiny(num_hidden_layers=3, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=32,
                   qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, n_routed_experts=8,
                   n_group=4, topk_group=2, num_experts_per_tok=2, moe_intermediate_size=32,
                   n_shared_experts=1, first_k_dense_replace=1, routed_scaling_factor=2.5,
                   norm_topk_prob=True, rope_interleave=True, tie_word_embeddings=False,
                   num_nextn_predict_layers=0, max_position_embeddings=512,
                   # As published configs say it (transformers' class always uses sigmoid;
                   # llama.cpp's converter writes the GGUF's gating function from it).
                   scoring_func="sigmoid", topk_method="noaux_tc",
                   rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                    "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0,
                                    "mscale_all_dim": 1.0,
                                    "original_max_position_embeddings": 128})


# GLM-4.5-style MoE: 3 layers (the first dense), GQA with q/k/v biases and per-head q/k norms,
# RoPE on half of each head (partial_rotary_factor 0.5, NeoX pairs), and DeepSeek-V3's router
# and shared expert (8 experts in 4 groups, top 2 groups, top 2, a selection bias, weights
# normalised and scaled).
# DeepSeek-V2 (DeepseekV2ForCausalLM, as DeepSeek-V2 and V2.5 are published): DeepSeek-V3's
# shape with V2's router (softmax scores, no selection bias, groups ranked by their best score,
# weights scaled but not normalised) and YaRN with mscale = mscale_all_dim = 0.707, as published.
DEEPSEEK_V2 = tiny(num_hidden_layers=3, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=32,
                   qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, n_routed_experts=8,
                   n_group=4, topk_group=2, topk_method="group_limited_greedy",
                   num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=2,
                   first_k_dense_replace=1, routed_scaling_factor=2.0, norm_topk_prob=False,
                   tie_word_embeddings=False, max_position_embeddings=512,
                   # As published configs say it (transformers' class always uses softmax;
                   # llama.cpp's converter writes the GGUF's gating function from it).
                   scoring_func="softmax",
                   rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                    "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.707,
                                    "mscale_all_dim": 0.707,
                                    "original_max_position_embeddings": 128})


GLM4_MOE = tiny(num_hidden_layers=3, head_dim=16, partial_rotary_factor=0.5, use_qk_norm=True,
                attention_bias=True, n_routed_experts=8, n_group=4, topk_group=2,
                num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
                first_k_dense_replace=1, routed_scaling_factor=2.5, norm_topk_prob=True,
                num_nextn_predict_layers=0, tie_word_embeddings=False, pad_token_id=0)


CASES = [
    {
        "name": "llama-llama3-rope",
        "family": "llama",
        "model_type": "llama",
        "architecture": "LlamaForCausalLM",
        "features": "GQA, untied output, llama3 RoPE scaling in rope_parameters",
        "seed": 1,
        "config": tiny(tie_word_embeddings=False, max_position_embeddings=64,
                       rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                        "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 16}),
    },
    {
        "name": "mistral-sliding-window",
        "family": "llama",
        "model_type": "mistral",
        "architecture": "MistralForCausalLM",
        "features": "sliding window 5 (shorter than the 12 tokens), head_dim set apart from hidden/heads",
        "gguf_skip": "llama.cpp's converter drops sliding_window for the llama architecture "
                     "(llama.cpp runs Mistral v0.1 GGUFs with full attention)",
        "seed": 2,
        "config": tiny(sliding_window=5, head_dim=24, tie_word_embeddings=False),
    },
    {
        "name": "qwen2-bias-yarn",
        "family": "qwen2",
        "model_type": "qwen2",
        "architecture": "Qwen2ForCausalLM",
        "features": "q/k/v biases, tied output, YaRN RoPE",
        "seed": 3,
        "config": tiny(tie_word_embeddings=True,
                       rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0,
                                        "factor": 4.0,
                                        "original_max_position_embeddings": 64}),
    },
    {
        "name": "qwen3-qk-norm",
        "family": "qwen3",
        "model_type": "qwen3",
        "architecture": "Qwen3ForCausalLM",
        "features": "q/k RMSNorm, head_dim 32 (wider than hidden/heads), tied output, linear RoPE scaling",
        "seed": 4,
        "config": tiny(head_dim=32, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "linear", "rope_theta": 1000000.0,
                                        "factor": 2.0}),
    },
    {
        "name": "qwen3-fp8",
        "family": "qwen3",
        "model_type": "qwen3",
        "architecture": "Qwen3ForCausalLM",
        "features": "qwen3-qk-norm with its linear weights stored as Qwen and DeepSeek publish "
                    "FP8 checkpoints: F8_E4M3 with f32 weight_scale_inv per block of 48 x 48 "
                    "(quantization_config fp8; partial blocks at the ends of the 64- and "
                    "128-wide dimensions); transformers' logits from the dequantized "
                    "weights; llama.cpp's converter dequantizes them for the GGUF",
        "seed": 26,
        "fp8_block": [48, 48],
        "config": tiny(head_dim=32, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "linear", "rope_theta": 1000000.0,
                                        "factor": 2.0}),
    },
    {
        "name": "qwen3-moe-routing",
        "family": "qwen3_moe",
        "model_type": "qwen3_moe",
        "architecture": "Qwen3MoeForCausalLM",
        "features": "MoE (8 experts, top-2, normalized top-k probabilities), q/k norm, untied output",
        "seed": 5,
        "config": tiny(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                       norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                       tie_word_embeddings=False),
    },
    {
        "name": "mixtral-routing",
        "family": "mixtral",
        "model_type": "mixtral",
        "architecture": "MixtralForCausalLM",
        "features": "MoE (4 experts, top-2 softmax routing), GQA, untied output",
        "seed": 6,
        "config": tiny(num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    },
    {
        "name": "phi3-fused",
        "family": "phi3",
        "model_type": "phi3",
        "architecture": "Phi3ForCausalLM",
        "features": "fused qkv and gate_up projections, sliding window 7, untied output",
        "seed": 7,
        "config": tiny(sliding_window=7, tie_word_embeddings=False, pad_token_id=0),
    },
    {
        "name": "phi3-longrope",
        "family": "phi3",
        "model_type": "phi3",
        "architecture": "Phi3ForCausalLM",
        "features": "LongRoPE (short factors within the original 8 positions, long past them, "
                    "attention factor), tied output",
        "gguf_skip": "llama.cpp's converter reads original_max_position_embeddings at the top "
                     "level, where transformers 5 no longer writes it: its GGUF says 4096 and "
                     "attention factor 1, a different model",
        "seed": 10,
        "config": tiny(max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=0,
                       rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                        "original_max_position_embeddings": 8,
                                        "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
                                        "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 18.0]}),
    },
    {
        "name": "llama-dynamic-ntk",
        "family": "llama",
        "model_type": "llama",
        "architecture": "LlamaForCausalLM",
        "features": "dynamic NTK RoPE past a trained context of 8 positions",
        "gguf_skip": "llama.cpp has no dynamic NTK scaling; its converter drops it",
        "seed": 11,
        "config": tiny(max_position_embeddings=8, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0,
                                        "factor": 2.0}),
    },
    {
        "name": "gemma3-sliding",
        "family": "gemma3",
        "model_type": "gemma3_text",
        "architecture": "Gemma3ForCausalLM",
        "features": "5 local + 1 global layers, sliding window 4, per-layer-type rope_parameters "
                    "(local 10k, global 1M with linear scaling 8), q/k norm, head_dim 32, "
                    "soft-capped logits",
        "seed": 8,
        "config": tiny(num_hidden_layers=6, head_dim=32, sliding_window=4,
                       query_pre_attn_scalar=32, final_logit_softcapping=30.0,
                       hidden_activation="gelu_pytorch_tanh",
                       rope_parameters={
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                           "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0,
                                              "factor": 8.0}},
                       tie_word_embeddings=True, pad_token_id=0),
    },
    {
        "name": "gemma3-multimodal",
        "family": "gemma3",
        "model_type": "gemma3",
        "architecture": "Gemma3ForConditionalGeneration",
        "features": "a multimodal checkpoint: the text model inside text_config (with "
                    "per-layer-type rope_parameters) beside a vision tower that is not used",
        "seed": 12,
        "config": {
            # Six layers: llama.cpp has Gemma 3's 5:1 pattern built in (its GGUF has no key
            # for it), so a shorter model would be another model there.
            "text_config": tiny(num_hidden_layers=6, head_dim=32, sliding_window=4,
                                query_pre_attn_scalar=32,
                                rope_parameters={
                                    "sliding_attention": {"rope_type": "default",
                                                          "rope_theta": 10000.0},
                                    "full_attention": {"rope_type": "linear",
                                                       "rope_theta": 1000000.0,
                                                       "factor": 8.0}},
                                pad_token_id=0),
            "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                              "num_hidden_layers": 1, "num_attention_heads": 2,
                              "image_size": 28, "patch_size": 14},
            "mm_tokens_per_image": 4, "image_token_index": 127, "boi_token_index": 125,
            "eoi_token_index": 126, "vocab_size": 128,
        },
    },
    {
        "name": "llama-biases",
        "family": "llama",
        "model_type": "llama",
        "architecture": "LlamaForCausalLM",
        "features": "attention_bias (q, k, v and o) and mlp_bias (gate, up, down), untied output",
        "seed": 13,
        "config": tiny(attention_bias=True, mlp_bias=True, tie_word_embeddings=False),
    },
    {
        "name": "qwen2-window-layers",
        "family": "qwen2",
        "model_type": "qwen2",
        "architecture": "Qwen2ForCausalLM",
        "features": "use_sliding_window with max_window_layers 1: layer 0 full, layer 1 a "
                    "window of 5 (shorter than the 12 tokens)",
        "gguf_skip": "llama.cpp's converter writes no sliding window for qwen2 (llama.cpp runs "
                     "Qwen 2 with full attention)",
        "seed": 14,
        "config": tiny(use_sliding_window=True, sliding_window=5, max_window_layers=1,
                       tie_word_embeddings=True),
    },
    {
        "name": "gemma3-softcap-bias",
        "family": "gemma3",
        "model_type": "gemma3_text",
        "architecture": "Gemma3ForCausalLM",
        "features": "attn_logit_softcapping, attention_bias, layer_types out of the 5:1 order "
                    "(local, global, local), query_pre_attn_scalar left at its default 256 "
                    "with head_dim 32",
        "gguf_skip": "llama.cpp's converter refuses Gemma 3 with attn_logit_softcapping (and "
                     "writes no layer types)",
        "seed": 15,
        "config": tiny(num_hidden_layers=3, head_dim=32, sliding_window=4,
                       attn_logit_softcapping=5.0, attention_bias=True,
                       layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                       hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                       pad_token_id=0),
    },
    {
        "name": "granite-biases",
        "family": "granite",
        "model_type": "granite",
        "architecture": "GraniteForCausalLM",
        "features": "attention_bias and mlp_bias with the four multipliers (attention "
                    "multiplier left at its default 1), one layer",
        "seed": 16,
        "config": tiny(num_hidden_layers=1, attention_bias=True, mlp_bias=True,
                       embedding_multiplier=4.0, residual_multiplier=0.5, logits_scaling=2.0,
                       tie_word_embeddings=True),
    },
    {
        "name": "granite-multipliers",
        "family": "granite",
        "model_type": "granite",
        "architecture": "GraniteForCausalLM",
        "features": "embedding/residual/attention/logit multipliers, tied output",
        "seed": 9,
        "config": tiny(embedding_multiplier=12.0, residual_multiplier=0.22,
                       attention_multiplier=0.0078125, logits_scaling=8.0,
                       tie_word_embeddings=True),
    },
    {
        "name": "qwen3_5-hybrid",
        "family": "qwen3_5",
        "model_type": "qwen3_5_text",
        "architecture": "Qwen3_5ForCausalLM",
        "features": "a gated DeltaNet layer (2 key heads over 4 value heads, conv kernel 4) "
                    "then a gated full-attention layer (q/k norm, partial RoPE 0.25 of "
                    "head_dim 32), (1 + w) norms, untied output, 80 tokens (two delta-rule "
                    "chunks), slow decay so state crosses the chunk boundary; config.json "
                    "declares one multi-token-prediction layer (the GGUF counts it as a block, "
                    "without weights)",
        "seed": 17,
        "tokens": LONG_TOKENS,
        "param_offsets": {"A_log": -3.0},
        "config": tiny(head_dim=32, max_position_embeddings=128,
                       layer_types=["linear_attention", "full_attention"],
                       linear_num_key_heads=2, linear_num_value_heads=4,
                       linear_key_head_dim=16, linear_value_head_dim=16,
                       linear_conv_kernel_dim=4, tie_word_embeddings=False,
                       mtp_num_hidden_layers=1,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "partial_rotary_factor": 0.25,
                                        "mrope_section": [2, 1, 1],
                                        "mrope_interleaved": True}),
    },
    {
        "name": "qwen3_5-moe",
        "family": "qwen3_5_moe",
        "model_type": "qwen3_5_moe_text",
        "architecture": "Qwen3_5MoeForCausalLM",
        "features": "the hybrid Qwen3.5 stack with MoE (8 experts, top-2, renormalized) and a "
                    "sigmoid-gated shared expert, tied output (the 12-token prompt: over 80, "
                    "in-situ Q8_0 rounding swaps a near-tied expert somewhere, which the "
                    "Q8_0 bound does not allow; the dense case crosses the chunk)",
        "seed": 18,
        # transformers' Qwen3.5 tokenizer adds <|endoftext|> after the made-up vocabulary, which
        # the converter's GPT-2 path (Qwen MoE) requires inside vocab_size: leave it one id.
        "bpe_vocab": 127,
        "param_offsets": {"A_log": -3.0},
        "config": tiny(head_dim=32, max_position_embeddings=128,
                       layer_types=["linear_attention", "full_attention"],
                       linear_num_key_heads=2, linear_num_value_heads=4,
                       linear_key_head_dim=16, linear_value_head_dim=16,
                       linear_conv_kernel_dim=4, num_experts=8, num_experts_per_tok=2,
                       moe_intermediate_size=32, shared_expert_intermediate_size=48,
                       mtp_num_hidden_layers=1,
                       tie_word_embeddings=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "partial_rotary_factor": 0.25}),
    },
    {
        "name": "qwen3_5-multimodal",
        "family": "qwen3_5",
        "model_type": "qwen3_5",
        "architecture": "Qwen3_5ForConditionalGeneration",
        "auto_class": "AutoModelForImageTextToText",
        "features": "a multimodal checkpoint: the hybrid text model inside text_config (value "
                    "heads as many as key heads, tied output) beside a vision tower that is "
                    "not used",
        "seed": 19,
        "bpe_vocab": 127,  # as for qwen3_5-moe
        "param_offsets": {"A_log": -3.0},
        "config": {
            "text_config": tiny(head_dim=32, max_position_embeddings=128,
                                layer_types=["linear_attention", "full_attention"],
                                linear_num_key_heads=2, linear_num_value_heads=2,
                                linear_key_head_dim=16, linear_value_head_dim=16,
                                linear_conv_kernel_dim=4, tie_word_embeddings=True,
                                mtp_num_hidden_layers=1,
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "partial_rotary_factor": 0.25,
                                                 "mrope_section": [2, 1, 1],
                                                 "mrope_interleaved": True}),
            "vision_config": {"depth": 1, "hidden_size": 32, "intermediate_size": 64,
                              "num_heads": 2, "out_hidden_size": 64, "patch_size": 14,
                              "num_position_embeddings": 16},
            "image_token_id": 127, "video_token_id": 126, "vision_start_token_id": 124,
            "vision_end_token_id": 125, "tie_word_embeddings": True,
        },
    },
    {
        "name": "qwen3_next-moe",
        "family": "qwen3_next",
        "model_type": "qwen3_next",
        "architecture": "Qwen3NextForCausalLM",
        "features": "Qwen3.5's design with the DeltaNet projections fused per key head "
                    "(in_proj_qkvz, in_proj_ba; 2 key heads over 4 value heads), MoE (8 "
                    "experts, top-2, norm_topk_prob) with a gated shared expert, partial RoPE",
        "seed": 20,
        "bpe_vocab": 127,  # as for qwen3_5-moe
        "param_offsets": {"A_log": -3.0},
        "config": tiny(head_dim=32, max_position_embeddings=128,
                       layer_types=["linear_attention", "full_attention"],
                       linear_num_key_heads=2, linear_num_value_heads=4,
                       linear_key_head_dim=16, linear_value_head_dim=16,
                       linear_conv_kernel_dim=4, num_experts=8, num_experts_per_tok=2,
                       moe_intermediate_size=32, shared_expert_intermediate_size=48,
                       norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                       mtp_num_hidden_layers=1, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "partial_rotary_factor": 0.25}),
    },
    {
        "name": "smollm3-nope",
        "family": "smollm3",
        "model_type": "smollm3",
        "architecture": "SmolLM3ForCausalLM",
        "features": "NoPE on every 4th layer (layer 3 of 4, no_rope_layer_interval's default), "
                    "GQA, tied output, RoPE base 2e6 (the class default)",
        "seed": 17,
        "config": tiny(num_hidden_layers=4, tie_word_embeddings=True, pad_token_id=0),
    },
    {
        "name": "smollm3-nope-list-window",
        "family": "smollm3",
        "model_type": "smollm3",
        "architecture": "SmolLM3ForCausalLM",
        "features": "no_rope_layers [1, 0, 1] with use_sliding_window: the NoPE layer 1 sees "
                    "a window of 5 (shorter than the 12 tokens), attention_bias, untied output",
        "gguf_skip": "llama.cpp has the NoPE layers of smollm3 fixed at every 4th and no "
                     "window; its converter writes neither",
        "seed": 18,
        "config": tiny(num_hidden_layers=3, no_rope_layers=[1, 0, 1], use_sliding_window=True,
                       sliding_window=5, attention_bias=True, tie_word_embeddings=False,
                       pad_token_id=0),
    },
    {
        "name": "olmo3-sliding",
        "family": "olmo3",
        "model_type": "olmo3",
        "architecture": "Olmo3ForCausalLM",
        "features": "post-norm blocks, q/k RMSNorm over the whole projection, 3 sliding + 1 "
                    "full layers (layer_types' default), window 5 (shorter than the 12 tokens), "
                    "YaRN on the full layer only, GQA, untied output",
        "seed": 19,
        "config": tiny(num_hidden_layers=4, sliding_window=5, tie_word_embeddings=False,
                       pad_token_id=0,
                       rope_parameters={
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                           "full_attention": {"rope_type": "yarn", "rope_theta": 10000.0,
                                              "factor": 4.0,
                                              "original_max_position_embeddings": 64}}),
    },
    {
        "name": "olmo3-layer-types-bias",
        "family": "olmo3",
        "model_type": "olmo3",
        "architecture": "Olmo3ForCausalLM",
        "features": "layer_types out of the 3:1 order (full, sliding, sliding), window 4, "
                    "attention_bias, tied output",
        "seed": 20,
        "config": tiny(num_hidden_layers=3, sliding_window=4, attention_bias=True,
                       layer_types=["full_attention", "sliding_attention", "sliding_attention"],
                       tie_word_embeddings=True, pad_token_id=0),
    },
    {
        "name": "olmo2-post-norm",
        "family": "olmo3",
        "model_type": "olmo2",
        "architecture": "Olmo2ForCausalLM",
        "features": "OLMo 2: post-norm blocks and whole-projection q/k norm with no window, "
                    "untied output",
        "seed": 21,
        "config": tiny(tie_word_embeddings=False, pad_token_id=0),
    },
    {
        "name": "lfm2-hybrid",
        "family": "lfm2",
        "model_type": "lfm2",
        "architecture": "Lfm2ForCausalLM",
        "features": "short-convolution blocks (3 taps, state across the 12 tokens) around one "
                    "attention block (q/k layernorm, GQA), the MLP width adjusted (2/3 of 96, "
                    "multiple of 32), tied output",
        "seed": 22,
        "config": tiny(num_hidden_layers=4, norm_eps=1e-5, conv_L_cache=3, block_multiple_of=32,
                       layer_types=["conv", "full_attention", "conv", "conv"],
                       tie_word_embeddings=True, pad_token_id=0),
    },
    {
        "name": "lfm2-conv-bias",
        "family": "lfm2",
        "model_type": "lfm2",
        "architecture": "Lfm2ForCausalLM",
        "features": "conv_bias (in_proj, conv and out_proj biases), 4 taps, full_attn_idxs "
                    "[1, 2], block_ffn_dim_multiplier 1.5, untied output",
        "gguf_skip": "llama.cpp's converter fails on conv_bias (it squeezes the 1-D conv bias "
                     "as if it were the kernel), and llama.cpp's graph has no convolution biases",
        "seed": 23,
        "config": tiny(num_hidden_layers=3, norm_eps=1e-5, conv_L_cache=4, conv_bias=True,
                       full_attn_idxs=[1, 2], block_multiple_of=32, block_ffn_dim_multiplier=1.5,
                       tie_word_embeddings=False, pad_token_id=0),
    },
    {
        "name": "gemma4-dense",
        "family": "gemma4",
        "model_type": "gemma4_text",
        "architecture": "Gemma4ForCausalLM",
        "features": "E2B/E4B-like: sliding (head_dim 16, window 4) and full (global_head_dim "
                    "32, proportional RoPE over a quarter of each head) layers, per-layer "
                    "inputs, the last 3 of 6 layers reusing the KV of layers 1 and 2 with "
                    "double-wide MLPs, v-norm, layer scalars, soft-capped logits, tied output",
        "seed": 24,
        "tokens": TOKENS_16,
        "spm_bpe_tokenizer": True,  # llama.cpp's Gemma 4 converter reads no other
        "random_buffers": ["layer_scalar"],
        "config": tiny(num_hidden_layers=6, head_dim=16, global_head_dim=32, sliding_window=4,
                       layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                    "sliding_attention", "sliding_attention", "full_attention"],
                       hidden_size_per_layer_input=8, vocab_size_per_layer_input=128,
                       num_kv_shared_layers=3, use_double_wide_mlp=True,
                       final_logit_softcapping=10.0, hidden_activation="gelu_pytorch_tanh",
                       rope_parameters={
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                           "full_attention": {"rope_type": "proportional",
                                              "partial_rotary_factor": 0.25,
                                              "rope_theta": 1000000.0}},
                       tie_word_embeddings=True, pad_token_id=0),
    },
    {
        "name": "gemma4-moe",
        "family": "gemma4",
        "model_type": "gemma4_text",
        "architecture": "Gemma4ForCausalLM",
        "features": "26B-A4B-like: a dense GeGLU MLP beside a mixture of 4 experts (top-2, "
                    "scaled router, per-expert scales) in every layer, attention_k_eq_v with "
                    "1 KV head on the full layer, no per-layer inputs, window 4",
        "seed": 25,
        "tokens": TOKENS_16,
        "spm_bpe_tokenizer": True,  # llama.cpp's Gemma 4 converter reads no other
        "random_buffers": ["layer_scalar"],
        # Router scales around 1 (as trained ones are), not 0: logits near 0 would make
        # every routing a near-tie.
        "param_offsets": {"router.scale": 1.0, "router.per_expert_scale": 1.0},
        "config": tiny(num_hidden_layers=3, head_dim=16, global_head_dim=32,
                       num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=4,
                       layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                       hidden_size_per_layer_input=0, enable_moe_block=True, num_experts=4,
                       top_k_experts=2, moe_intermediate_size=32,
                       final_logit_softcapping=10.0, hidden_activation="gelu_pytorch_tanh",
                       rope_parameters={
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                           "full_attention": {"rope_type": "proportional",
                                              "partial_rotary_factor": 0.25,
                                              "rope_theta": 1000000.0}},
                       tie_word_embeddings=True, pad_token_id=0),
    },
    {
        "name": "gemma4-multimodal",
        "family": "gemma4",
        "model_type": "gemma4",
        "architecture": "Gemma4ForConditionalGeneration",
        "auto_class": "AutoModelForImageTextToText",
        "features": "a multimodal checkpoint: an E2B-like text model (per-layer inputs, KV "
                    "sharing, one KV head) inside text_config beside a vision tower that is "
                    "not used",
        "seed": 26,
        "tokens": TOKENS_16,
        "spm_bpe_tokenizer": True,  # llama.cpp's Gemma 4 converter reads no other
        "random_buffers": ["layer_scalar"],
        "config": {
            "text_config": tiny(num_hidden_layers=4, num_key_value_heads=1, head_dim=16,
                                global_head_dim=32, sliding_window=4,
                                layer_types=["sliding_attention", "full_attention",
                                             "sliding_attention", "full_attention"],
                                hidden_size_per_layer_input=8, vocab_size_per_layer_input=128,
                                num_kv_shared_layers=2, final_logit_softcapping=10.0,
                                rope_parameters={
                                    "sliding_attention": {"rope_type": "default",
                                                          "rope_theta": 10000.0},
                                    "full_attention": {"rope_type": "proportional",
                                                       "partial_rotary_factor": 0.25,
                                                       "rope_theta": 1000000.0}},
                                tie_word_embeddings=True, pad_token_id=0),
            "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                              "num_hidden_layers": 1, "num_attention_heads": 2,
                              "num_key_value_heads": 2, "head_dim": 16, "patch_size": 4,
                              "position_embedding_size": 64},
            "audio_config": None,
            "boi_token_id": 124, "eoi_token_id": 125, "image_token_id": 127,
            "video_token_id": 126, "boa_token_id": 123, "eoa_token_index": 122,
            "audio_token_id": 121, "tie_word_embeddings": True,
        },
    },
    {
        "name": "gpt-oss-sinks",
        "family": "gpt_oss",
        "model_type": "gpt_oss",
        "architecture": "GptOssForCausalLM",
        "features": "attention sinks, sliding window 5 (shorter than the 12 tokens) on layers "
                    "0 and 2 with layer 1 full, q/k/v/o biases, YaRN without truncation of the "
                    "correction range, MoE (4 experts, router bias, top-2 then softmax), experts "
                    "with biases and the clamped SwiGLU of interleaved gate/up (weights shifted "
                    "so the clamp at 7 bites), untied output",
        "seed": 24,
        "bpe_vocab": 128,
        "param_offsets": GPT_OSS_OFFSETS,
        "config": GPT_OSS,
    },
    {
        "name": "gpt-oss-mxfp4",
        "family": "gpt_oss",
        "model_type": "gpt_oss",
        "architecture": "GptOssForCausalLM",
        "features": "gpt-oss-sinks with its experts stored as published checkpoints store them: "
                    "MXFP4 blocks and e8m0 scales (quantization_config mxfp4); transformers' "
                    "logits from the dequantized experts; the GGUF keeps them MXFP4",
        "seed": 25,
        "bpe_vocab": 128,
        "param_offsets": GPT_OSS_OFFSETS,
        "mxfp4_experts": True,
        "config": GPT_OSS,
    },
    {
        "name": "deepseek-v3-mla",
        "family": "deepseek_v3",
        "model_type": "deepseek_v3",
        "architecture": "DeepseekV3ForCausalLM",
        "features": "MLA (q_lora_rank, kv_lora_rank, rope/nope split), interleaved RoPE, YaRN "
                    "with mscale_all_dim on the softmax scale, a dense first layer, MoE with "
                    "sigmoid scores, a selection bias, group-limited top-k, normalised and "
                    "scaled weights, a shared expert; the long prompt routes through every group",
        "seed": 26,
        "bpe_vocab": 128,
        "tokens": LONG_TOKENS[:24],
        "random_buffers": ["e_score_correction_bias"],
        "config": DEEPSEEK_V3,
    },
    {
        "name": "deepseek-v3-fp8",
        "family": "deepseek_v3",
        "model_type": "deepseek_v3",
        "architecture": "DeepseekV3ForCausalLM",
        "features": "deepseek-v3-mla stored as DeepSeek publishes V3: the latent projections, "
                    "the output projection, the dense MLP, the shared expert and every routed "
                    "expert's gate, up and down (one tensor each per expert) in F8_E4M3 with "
                    "f32 weight_scale_inv per block of 48 x 48 (partial blocks at the ends); "
                    "transformers' logits from the dequantized weights",
        # A seed without near-ties in routing after the FP8 rounding (in transformers' scores
        # every token's last chosen expert and group lead the next by at least 0.013): with
        # seeds 7, 8, 10, 13, 26, 31 and 42 in-situ Q8_0 (13: even the f16 GGUF) swapped some
        # token's experts (rel. RMS 0.26-0.74 at that position).
        "seed": 56,
        "bpe_vocab": 128,
        "tokens": LONG_TOKENS[:24],
        "random_buffers": ["e_score_correction_bias"],
        "fp8_block": [48, 48],
        "config": DEEPSEEK_V3,
    },
    {
        "name": "deepseek-v2-lite-mla",
        "family": "deepseek_v3",
        "model_type": "deepseek_v3",
        "architecture": "DeepseekV3ForCausalLM",
        "features": "deepseek-v3-mla with V2-Lite's shape: no q_lora_rank (a plain query "
                    "projection), plain RoPE (no scaling), one group, no routed scaling",
        # The selection bias spreads the experts' scores: without it, the sigmoid scores of 8
        # experts lie so close that in 15 of 18 seeds tried in-situ Q8_0 swaps some token's
        # 2nd and 3rd expert (rel. RMS 0.1-0.5 at that position).
        "random_buffers": ["e_score_correction_bias"],
        "seed": 27,
        "bpe_vocab": 128,
        "tokens": LONG_TOKENS[:24],
        "config": dict(DEEPSEEK_V3, q_lora_rank=None, n_group=1, topk_group=1,
                       routed_scaling_factor=1.0,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    },
    {
        "name": "deepseek-v2-groups",
        "family": "deepseek_v3",
        "model_type": "deepseek_v2",
        "architecture": "DeepseekV2ForCausalLM",
        "features": "DeepSeek-V2's own class: MLA with q_lora_rank, interleaved RoPE, YaRN with "
                    "mscale 0.707 on the softmax scale, a dense first layer, softmax scores, "
                    "group_limited_greedy (groups ranked by their best score), weights scaled "
                    "and not normalised, two shared experts",
        # A seed whose routing in-situ Q8_0 keeps: softmax scores of 8 experts lie close
        # (every choice here leads by at least 0.0046), and with seeds 1 and 42 Q8_0 swapped
        # some token's experts (rel. RMS 0.13 and 0.38 at that position).
        "seed": 58,
        "bpe_vocab": 128,
        "tokens": LONG_TOKENS[:24],
        "config": DEEPSEEK_V2,
    },
    {
        "name": "deepseek-v2-lite-greedy",
        "family": "deepseek_v3",
        "model_type": "deepseek_v2",
        "architecture": "DeepseekV2ForCausalLM",
        "features": "deepseek-v2-groups with V2-Lite's router and query: greedy top-k over all "
                    "experts (n_group and topk_group null), no routed scaling, a plain query "
                    "projection, plain RoPE over the rotary part",
        "seed": 1,
        "bpe_vocab": 128,
        "tokens": LONG_TOKENS[:24],
        "config": dict(DEEPSEEK_V2, q_lora_rank=None, topk_method="greedy", n_group=None,
                       topk_group=None, routed_scaling_factor=1.0,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    },
    {
        "name": "glm4-moe-routing",
        "family": "glm4_moe",
        "model_type": "glm4_moe",
        "architecture": "Glm4MoeForCausalLM",
        "features": "GQA with q/k/v biases and q/k norms, partial RoPE (half of each head), a "
                    "dense first layer, DeepSeek-V3's router (sigmoid scores, a selection bias, "
                    "group-limited top-k, normalised and scaled weights) and a shared expert",
        # A seed whose routing has no near-tie: every token's 2nd and 3rd expert score differ
        # by more than 0.02, so in-situ Q8_0 chooses the same experts (seeds 37, 39, 41 and 43
        # have a margin under 0.01, which Q8_0's rounding crosses).
        "seed": 42,
        "bpe_vocab": 128,
        # llama.cpp's GLM converter names these four as its special tokens.
        "special_tokens": ["[gMASK]", "<|user|>", "<|endoftext|>", "<|observation|>"],
        "tokens": LONG_TOKENS[:24],
        "random_buffers": ["e_score_correction_bias"],
        "config": GLM4_MOE,
    },
]
