#!/usr/bin/env python3
"""The reference oracle: tiny random-weight checkpoints made by transformers, their GGUFs made
by llama.cpp's own converter, and transformers' logits, one case per feature set of a family.

    scripts/oracle/make.py [--out DIR] [--check] [CASE ...]

Writes <out>/<case>/ (tests/data/oracle/, not committed, by default; the tests use mlcli's cache): config.json and model.safetensors exactly
as transformers' save_pretrained writes them, model.gguf from convert_hf_to_gguf.py
(--outtype f16), and oracle.json (the family, the token ids, and transformers' logits at every
position, from one pass over all tokens and from one token per pass). tests/oracle.rs compares mlcli on both forms against those logits.
--check regenerates into a temporary directory and fails unless every file is byte-identical
to the one in --out.

Run it with scripts/oracle/run.sh, which makes the pinned environment (torch, transformers,
the llama.cpp converter from the llama-cpp-python sdist) and then calls this script.
"""

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import cases

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The prompt of a case without its own `tokens` (cases.py).
TOKENS = [1, 5, 17, 42, 8, 99, 3, 64, 77, 12, 30, 58]


def tokenizer_model(vocab: int) -> bytes:
    """A SentencePiece model of `vocab` pieces (no training: a fixed list), which llama.cpp's
    converter reads for every family here: <unk> <s> </s>, ▁, printable ASCII, then word-initial pairs."""
    from sentencepiece import sentencepiece_model_pb2 as sp

    m = sp.ModelProto()
    m.trainer_spec.model_type = sp.TrainerSpec.BPE
    m.trainer_spec.vocab_size = vocab
    m.trainer_spec.byte_fallback = False
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    pieces = [("<unk>", sp.ModelProto.SentencePiece.UNKNOWN),
              ("<s>", sp.ModelProto.SentencePiece.CONTROL),
              ("</s>", sp.ModelProto.SentencePiece.CONTROL),
              ("\u2581", sp.ModelProto.SentencePiece.NORMAL)]
    pieces += [(chr(c), sp.ModelProto.SentencePiece.NORMAL) for c in range(33, 127)]
    pairs = ("\u2581" + a + b for a in "etaoinshrdlu" for b in "etaoinshrdlu ")
    while len(pieces) < vocab:
        pieces.append((next(pairs).strip(), sp.ModelProto.SentencePiece.NORMAL))
    for i, (text, kind) in enumerate(pieces):
        p = m.pieces.add()
        p.piece, p.type, p.score = text, kind, float(-i)
    return m.SerializeToString()


def tokenizer_json(vocab: int, specials: tuple = ()) -> bytes:
    """A byte-level BPE vocabulary of `vocab` single characters, no merges, for the families
    whose llama.cpp converter reads only GPT-2-style tokenizers (Qwen MoE). `specials` (a
    case's `special_tokens`) take the last ids as added special tokens (GLM's converter looks
    up its own by name)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())[:vocab - len(specials)] + list(specials)
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    return tok.to_str().encode()


def tokenizer_json_spm_bpe(vocab: int) -> bytes:
    """A SentencePiece-style BPE tokenizer.json of `vocab` pieces (spaces as \u2581, byte
    fallback): <unk> <s> </s>, \u2581, printable ASCII, then letter pairs with their merges.
    The form llama.cpp's Gemma 4 converter requires (and its GGUF then carries merges)."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    pieces = ["<unk>", "<s>", "</s>", "\u2581"] + [chr(c) for c in range(33, 127)]
    pairs = (a + b for a in "etaoinshrdlu" for b in "etaoinshrdlu")
    merges = []
    while len(pieces) < vocab:
        pair = next(pairs)
        pieces.append(pair)
        merges.append((pair[0], pair[1]))
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges,
                               unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    return tok.to_str().encode()


def randomize(model: torch.nn.Module, seed: int, offsets: dict | None = None,
              buffers: list | None = None) -> None:
    """Weights that make every part of the model matter: matrices N(0, 1/fan_in), norms and
    biases visibly away from their identity values. `offsets` shifts the parameters whose
    name ends with a key (a case's `param_offsets`: e.g. a slower recurrent decay, so that
    state carried across the delta rule's chunks matters). Saved buffers whose name ends with
    one of `buffers` (a case's `random_buffers`: e.g. Gemma 4's `layer_scalar`, ones unless
    set) become uniform in [0.5, 1.5). Rounded to f16 (the stored precision), so
    transformers' logits come from exactly the weights written."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                std = p.shape[-1] ** -0.5
                if "embed" in name:
                    std = 1.0
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif "norm" in name or "layernorm" in name:
                base = 0.0 if p.abs().max() == 0 else 1.0  # Gemma stores (w - 1)
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            for suffix, shift in (offsets or {}).items():
                if name.endswith(suffix):
                    p.add_(shift)
            p.copy_(p.half().float())
        for name, b in sorted(model.named_buffers()):
            if any(name.endswith(suffix) for suffix in buffers or []):
                b.copy_((0.5 + torch.rand(b.shape, generator=g)).half().float())


# ggml's MXFP4 values (e2m1, doubled: the block's scale is halved to match).
MXFP4_VALUES = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]


def mxfp4(w: torch.Tensor):
    """`w` (rows, cols), cols a multiple of 32, quantized as ggml's reference quantizer does:
    per block of 32 the e8m0 exponent floor(log2(max |x|)) - 2 + 127, each value the nearest
    of MXFP4_VALUES times 2^(e - 128) (the first on ties). Returns the dequantized values,
    the blocks as published checkpoints store them (rows, cols/32, 16: value 2i in the low
    nibble of byte i, 2i + 1 in the high one) and the exponents (rows, cols/32)."""
    rows, cols = w.shape
    values = torch.tensor(MXFP4_VALUES, dtype=torch.float64)
    b = w.double().reshape(rows, cols // 32, 32)
    amax = b.abs().amax(-1)
    e = torch.where(amax > 0, torch.floor(torch.log2(amax)) - 2 + 127, torch.zeros_like(amax))
    d = torch.ldexp(torch.ones_like(amax), (e - 128).long())
    idx = (values * d[..., None, None] - b[..., None]).abs().argmin(-1)
    deq = (values[idx] * d[..., None]).reshape(rows, cols).float()
    blocks = (idx[..., 0::2] | (idx[..., 1::2] << 4)).to(torch.uint8)
    return deq, blocks, e.to(torch.uint8)


def quantize_experts(model: torch.nn.Module) -> dict:
    """Replaces every stacked expert matrix (gpt-oss: `experts.gate_up_proj`, (E, in, out))
    by its MXFP4 rounding, blocks along each expert's input, and returns the blocks and
    scales by parameter name, for the checkpoint (see `write_mxfp4`)."""
    packed = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                continue
            blocks, scales = [], []
            for e in range(p.shape[0]):
                deq, b, s = mxfp4(p[e].t())
                p[e].copy_(deq.t())
                blocks.append(b)
                scales.append(s)
            packed[name] = (torch.stack(blocks), torch.stack(scales))
    return packed


def write_mxfp4(out: Path, packed: dict) -> None:
    """Stores the experts of `packed` as gpt-oss checkpoints do: `NAME_blocks` and
    `NAME_scales` in place of `NAME`, and `quantization_config` in config.json."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(out / "model.safetensors")
    for name, (blocks, scales) in packed.items():
        del tensors[name]
        tensors[name + "_blocks"] = blocks.contiguous()
        tensors[name + "_scales"] = scales.contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = {
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                   "model.embed_tokens", "lm_head"],
        "quant_method": "mxfp4"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def fp8(w: torch.Tensor, block: list) -> tuple:
    """`w` (..., rows, cols) rounded to FP8 (E4M3) with one f32 scale per block of `block` =
    [rows, cols] (partial blocks at the ends, as transformers' FP8Linear has them): the scale
    is the block's max |x| / 448 (E4M3's largest value; 1 for a block of zeros), each value
    x / scale rounded by torch's cast. Returns the dequantized values (f32), the E4M3 values
    and the scales (..., ceil(rows / block rows), ceil(cols / block cols))."""
    rows, cols = w.shape[-2:]
    br, bc = block
    sr, sc = -(-rows // br), -(-cols // bc)
    padded = torch.zeros(*w.shape[:-2], sr * br, sc * bc, dtype=torch.float32)
    padded[..., :rows, :cols] = w.float()
    amax = padded.unflatten(-1, (sc, bc)).unflatten(-3, (sr, br)).abs().amax(dim=(-3, -1))
    scale = torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))
    full = scale.repeat_interleave(br, -2)[..., :rows, :].repeat_interleave(bc, -1)[..., :cols]
    q = (w.float() / full).to(torch.float8_e4m3fn)
    return q.float() * full, q, scale


def quantize_fp8(model: torch.nn.Module, block: list) -> dict:
    """Replaces the weight of every linear layer of the decoder blocks and of every routed
    expert by its FP8 rounding (see `fp8`), and returns the E4M3 values and scales by the
    name the saved checkpoint gives the weight, for the checkpoint (see `write_fp8`).
    Embeddings, norms, routers and the output stay as they are, as in published FP8
    checkpoints. Stacked experts (`experts.gate_up_proj`, (E, 2 * ffn, hidden), gate rows
    first; `experts.down_proj`, (E, hidden, ffn)), which transformers saves one matrix per
    expert (`experts.E.{gate,up,down}_proj.weight`), are rounded as those matrices: gate and
    up each with their own block scales, as a published checkpoint has them."""
    packed = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." not in name or p.dim() < 2:
                continue
            if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                packed.update(quantize_fp8_experts(name, p, block))
            elif name.endswith(("_proj.weight", "_proj_with_mqa.weight")):
                deq, q, scale = fp8(p, block)
                p.copy_(deq)
                packed[name] = (q, scale)
    return packed


def quantize_fp8_experts(name: str, p: torch.Tensor, block: list) -> dict:
    """`quantize_fp8` for one stacked expert tensor `name` (see there): rounds `p` in place,
    part by part, and returns each expert's E4M3 values and scales under its saved name."""
    prefix = name.removesuffix("gate_up_proj").removesuffix("down_proj")
    if name.endswith("gate_up_proj"):
        ffn = p.shape[1] // 2
        parts = {"gate_proj": slice(0, ffn), "up_proj": slice(ffn, 2 * ffn)}
    else:
        parts = {"down_proj": slice(0, p.shape[1])}
    packed = {}
    for part, rows in parts.items():
        deq, q, scale = fp8(p[:, rows], block)
        p[:, rows].copy_(deq)
        for e in range(p.shape[0]):
            packed[f"{prefix}{e}.{part}.weight"] = (q[e].clone(), scale[e].clone())
    return packed


def write_fp8(out: Path, packed: dict, block: list) -> None:
    """Stores the weights of `packed` as DeepSeek, GLM and Qwen publish FP8 checkpoints:
    `NAME` in F8_E4M3 and `NAME_scale_inv` (f32) beside it, and `quantization_config` in
    config.json."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(out / "model.safetensors")
    missing = [n for n in packed if n not in tensors]
    if missing:
        raise SystemExit(f"FP8: {missing[:3]} are not in the saved checkpoint")
    for name, (q, scale) in packed.items():
        tensors[name] = q.contiguous()
        tensors[name + "_scale_inv"] = scale.float().contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                     "quant_method": "fp8", "weight_block_size": list(block)}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def convert(converter: Path, out: Path, name: str) -> None:
    """out/model.gguf from out/, by llama.cpp's converter (f16 matrices, f32 vectors)."""
    done = subprocess.run([sys.executable, str(HERE / "convert.py"), str(converter), str(out),
                           "--outfile", str(out / "model.gguf"), "--outtype", "f16"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: llama.cpp's converter failed:\n{done.stderr[-3000:]}")


def make_case(case: dict, out: Path, converter: Path) -> None:
    import transformers
    from transformers import AutoConfig

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.for_model(case["model_type"], **case["config"])
    config.architectures = [case["architecture"]]
    # The auto class that builds the checkpoint's architecture (a case's `auto_class`: e.g.
    # the image-text one for a multimodal architecture AutoModelForCausalLM maps to its text
    # model).
    auto = getattr(transformers, case.get("auto_class", "AutoModelForCausalLM"))
    model = auto.from_config(config, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    randomize(model, case["seed"], case.get("param_offsets"), case.get("random_buffers"))
    packed = quantize_experts(model) if case.get("mxfp4_experts") else {}
    # A case's `fp8_block` stores its linear weights as FP8 with block scales of that size.
    fp8_packed = quantize_fp8(model, case["fp8_block"]) if case.get("fp8_block") else {}
    tokens = case.get("tokens", TOKENS)
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].float()
        stepwise, past = [], None
        for t in tokens:
            step = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
            past = step.past_key_values
            stepwise.append(step.logits[0, -1].float())
    model.half().save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    if packed:
        write_mxfp4(out, packed)
    if fp8_packed:
        write_fp8(out, fp8_packed, case["fp8_block"])
    vocab = case["config"].get("vocab_size") or case["config"]["text_config"]["vocab_size"]
    tokenizer_files = {"tokenizer.model": tokenizer_model(vocab),
                       "tokenizer.json": (tokenizer_json_spm_bpe(vocab)
                                          if case.get("spm_bpe_tokenizer")
                                          else tokenizer_json(case.get("bpe_vocab", vocab),
                                                              tuple(case.get("special_tokens", ())))),
                       "tokenizer_config.json": b'{"tokenizer_class": "PreTrainedTokenizerFast"}'}
    for name, data in tokenizer_files.items():
        (out / name).write_bytes(data)
    if not case.get("gguf_skip"):
        convert(converter, out, case["name"])
    for name in tokenizer_files:
        (out / name).unlink()
    record = {
        "case": case["name"],
        "family": case["family"],
        "features": case["features"],
        "made_by": {"transformers": transformers.__version__,
                    "torch": torch.__version__.split("+")[0],
                    "converter": "convert_hf_to_gguf.py (llama-cpp-python "
                                 + os.environ.get("ORACLE_LCP_VERSION", "?") + ")"},
        "gguf_skip": case.get("gguf_skip"),
        "tokens": tokens,
        "logits": [[round(float(x), 6) for x in row] for row in logits],
        "logits_stepwise": [[round(float(x), 6) for x in row] for row in stepwise],
    }
    (out / "oracle.json").write_text(json.dumps(record, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests/data/oracle")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--converter", type=Path, required=True)
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    chosen = [c for c in cases.CASES if not args.names or c["name"] in args.names]
    if args.names and len(chosen) != len(args.names):
        print(f"unknown case among {args.names}; cases: {[c['name'] for c in cases.CASES]}",
              file=sys.stderr)
        return 2
    if not args.check:
        for c in chosen:
            shutil.rmtree(args.out / c["name"], ignore_errors=True)
            make_case(c, args.out / c["name"], args.converter)
            print(f"wrote {args.out / c['name']}")
        return 0
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for c in chosen:
            make_case(c, Path(tmp) / c["name"], args.converter)
            new, old = Path(tmp) / c["name"], args.out / c["name"]
            names = sorted(p.name for p in new.iterdir())
            olds = sorted(p.name for p in old.iterdir()) if old.is_dir() else []
            same = names == olds and all(
                filecmp.cmp(new / n, old / n, shallow=False) for n in names)
            print(f"{'same' if same else 'DIFFERENT'}: {c['name']}")
            bad += not same
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
