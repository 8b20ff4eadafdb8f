#!/usr/bin/env python3
"""Writes small valid seed files for the fuzz targets (GGUF and safetensors headers,
config.json, chat templates).

Run from fuzz/ before fuzzing: python3 seeds/make_seeds.py. The seeds are generated, never
committed (no model-format files in git).
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# GGUF value type ids.
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
       BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def value(ty, v):
    if ty == STR:
        return s(v)
    if ty == ARR:
        elem, items = v
        out = struct.pack("<IQ", elem, len(items))
        return out + b"".join(value(elem, i) for i in items)
    return struct.pack(FMT[ty], v)


def gguf(meta, tensors, align=32):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for k, ty, v in meta:
        out += s(k) + struct.pack("<I", ty) + value(ty, v)
    off, data = 0, b""
    for name, dims, tid, payload in tensors:
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", tid, off)
        data += payload
        pad = (-len(data)) % align
        data += b"\0" * pad
        off = len(data)
    out += b"\0" * ((-len(out)) % align)
    return out + data


def safetensors(meta, tensors):
    header, off, data = {}, 0, b""
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(payload)]}
        off += len(payload)
        data += payload
    j = json.dumps(header).encode()
    j += b" " * ((-len(j)) % 8)
    return struct.pack("<Q", len(j)) + j + data


def write(target, name, blob):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "ab", "Ġ", "Ġa"]
llama = gguf(
    [
        ("general.architecture", STR, "llama"),
        ("general.alignment", U32, 32),
        ("llama.block_count", U32, 1),
        ("llama.context_length", U32, 64),
        ("llama.embedding_length", U32, 8),
        ("llama.attention.head_count", U32, 2),
        ("llama.rope.freq_base", F32, 10000.0),
        ("x.i64", I64, -3),
        ("x.f64", F64, 0.5),
        ("x.nested", ARR, (ARR, [(I16, [1, -2])])),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, "default"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.token_type", ARR, (I32, [3, 3, 3, 1, 1, 1, 1, 1])),
        ("tokenizer.ggml.merges", ARR, (STR, ["a b", "Ġ a"])),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.chat_template", STR,
         "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"),
    ],
    [
        ("token_embd.weight", [8, 8], 0, b"\0" * 256),
        ("blk.0.attn_q.weight", [32, 1], 8, b"\0" * 34),
        ("blk.0.ffn_down.weight", [256, 1], 23, b"\0" * 136),
    ],
)
spm = gguf(
    [
        ("general.architecture", STR, "gemma3"),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, ["<pad>", "<eos>", "<bos>", "▁a", "a", "<0x41>"])),
        ("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, 0.0, -1.0, -2.0, 0.0])),
        ("tokenizer.ggml.token_type", ARR, (I32, [3, 3, 3, 1, 1, 6])),
    ],
    [("output_norm.weight", [4], 0, b"\0" * 16)],
)
for target in ["gguf_header", "gguf_summary"]:
    write(target, "llama.gguf", llama)
    write(target, "spm.gguf", spm)
    write(target, "empty.gguf", gguf([], []))

write("safetensors_header", "two.safetensors", safetensors(
    {"format": "pt"},
    [("a.weight", "F32", [2, 2], b"\0" * 16), ("b", "BF16", [3], b"\0" * 6)],
))
write("safetensors_header", "odd.safetensors", safetensors(
    {}, [("x", "F8_E4M3", [1], b"\0"), ("y", "Q9", [2], b"\0\0")],
))

# config.json: one per family shape, and the multimodal nesting.
base = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
for arch, extra in [
    ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192}}),
    ("Qwen3ForCausalLM", {"head_dim": 16, "tie_word_embeddings": True}),
    ("Qwen3MoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2,
                             "moe_intermediate_size": 32}),
    ("MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    ("Phi3ForCausalLM", {"rope_scaling": {"type": "longrope", "short_factor": [1.0] * 8,
                         "long_factor": [2.0] * 8}, "original_max_position_embeddings": 128}),
    ("Gemma3ForCausalLM", {"head_dim": 16, "sliding_window": 32, "query_pre_attn_scalar": 16,
                           "rope_local_base_freq": 10000.0}),
    ("GraniteForCausalLM", {"embedding_multiplier": 12.0, "residual_multiplier": 0.22,
                            "attention_multiplier": 0.0078125, "logits_scaling": 8.0}),
]:
    write("config_json", arch + ".json", json.dumps(dict(base, architectures=[arch], **extra)).encode())
write("config_json", "multimodal.json", json.dumps({
    "architectures": ["Gemma3ForConditionalGeneration"],
    "text_config": dict(base, model_type="gemma3_text", head_dim=16)}).encode())

# Chat templates: the shipped ones.
templates = os.path.join(HERE, "..", "..", "assets", "templates")
for name in sorted(os.listdir(templates)):
    with open(os.path.join(templates, name), "rb") as f:
        write("chat_template", name, f.read())
