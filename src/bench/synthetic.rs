//! Synthetic models for `bench --synthetic`: a preset's tensors with random weights of the
//! mix's types, built in memory on the target device and loaded through the family's own code,
//! or written to a GGUF file (`--write-gguf`) that llama.cpp can run. The tokenizer is either
//! copied from a real GGUF (`--tokenizer-from`, padded with unused tokens up to the preset's
//! vocabulary) or a small byte-fallback SentencePiece vocabulary made up here.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::Device;

use super::presets::Choice;
use crate::formats::gguf::{self, Gguf, MemoryTensor};
use crate::formats::gguf_builder;
use crate::models::synthetic::{self, RandomTensors, Role};
use crate::models::FAMILIES;
use crate::{Error, Result};

/// Metadata and tensors of a synthetic model.
pub struct Parts {
    /// Metadata in file order.
    pub metadata: Vec<(String, gguf_file::Value)>,
    /// Tensors in file order, on the device they were built for (MXFP4 on the CPU).
    pub tensors: Vec<(String, MemoryTensor)>,
}

impl Parts {
    /// The model as an in-memory GGUF named `synthetic:NAME:MIX`.
    pub fn into_gguf(self, choice: &Choice) -> Result<Gguf> {
        Gguf::from_memory(
            &format!("synthetic:{}", choice.label()),
            self.metadata,
            self.tensors,
        )
    }

    /// Writes the model as a GGUF file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let meta: Vec<(String, _)> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), gguf::header_value(v)))
            .collect();
        let mut dims = Vec::with_capacity(self.tensors.len());
        let mut data = Vec::with_capacity(self.tensors.len());
        for (_, t) in &self.tensors {
            dims.push(
                t.dims()
                    .iter()
                    .rev()
                    .map(|&d| d as u64)
                    .collect::<Vec<u64>>(),
            );
            data.push(match t {
                MemoryTensor::Candle(q) => q.data()?,
                MemoryTensor::Blocks(m) => std::borrow::Cow::Borrowed(m.data()),
            });
        }
        let mut entries = Vec::with_capacity(self.tensors.len());
        for (((name, t), dims), data) in self.tensors.iter().zip(&dims).zip(&data) {
            entries.push(gguf_builder::Entry {
                name,
                dims,
                type_id: t.type_id()?,
                data,
            });
        }
        gguf_builder::write_streamed(path, &meta, &entries)
    }
}

/// Tokenizer metadata (`tokenizer.*` keys) copied from the GGUF at `path`.
pub fn tokenizer_metadata_from(path: &Path) -> Result<Vec<(String, gguf_file::Value)>> {
    let gguf = Gguf::open(path)?;
    let mut out: Vec<(String, gguf_file::Value)> = gguf
        .content()
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !out.iter().any(|(k, _)| k == "tokenizer.ggml.tokens") {
        return Err(Error::MissingMetadata(format!(
            "tokenizer.ggml.tokens (in {}, given to copy a tokenizer from)",
            path.display()
        )));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Pads the per-token arrays of `meta` with unused `[PAD{id}]` tokens up to `vocab` entries;
/// a larger vocabulary than the model's is an error (its ids would not fit the embedding).
fn pad_vocabulary(meta: &mut [(String, gguf_file::Value)], vocab: usize) -> Result<()> {
    use gguf_file::Value as V;
    for (key, value) in meta.iter_mut() {
        let V::Array(items) = value else { continue };
        let pad: fn(usize) -> V = match key.as_str() {
            "tokenizer.ggml.tokens" => |i: usize| V::String(format!("[PAD{i}]")),
            "tokenizer.ggml.scores" => |_| V::F32(-1000.0),
            "tokenizer.ggml.token_type" => |_| V::I32(5),
            _ => continue,
        };
        if items.len() > vocab {
            return Err(Error::InvalidArgument(format!(
                "the tokenizer has {} tokens but the synthetic model's vocabulary is {vocab}; copy one with at most {vocab}",
                items.len()
            )));
        }
        let start = items.len();
        items.extend((start..vocab).map(pad));
    }
    Ok(())
}

/// A SentencePiece (`llama`) vocabulary of `vocab` tokens: `<unk>`, `<s>`, `</s>`, the 256
/// byte tokens, then filler pieces. Any text encodes (through the byte tokens).
pub fn made_up_tokenizer(vocab: usize) -> Result<Vec<(String, gguf_file::Value)>> {
    use gguf_file::Value as V;
    if vocab < 3 + 256 {
        return Err(Error::InvalidArgument(format!(
            "a vocabulary of {vocab} cannot hold the 259 special and byte tokens"
        )));
    }
    let mut tokens = vec![V::String("<unk>".into()), V::String("<s>".into())];
    tokens.push(V::String("</s>".into()));
    tokens.extend((0..256).map(|b| V::String(format!("<0x{b:02X}>"))));
    tokens.extend((tokens.len()..vocab).map(|i| V::String(format!("▁t{i}"))));
    let types = (0..vocab).map(|i| {
        V::I32(match i {
            0 => 2,
            1 | 2 => 3,
            3..259 => 6,
            _ => 1,
        })
    });
    let scores = (0..vocab).map(|i| V::F32(if i < 259 { 0.0 } else { -(i as f32) }));
    Ok(vec![
        ("tokenizer.ggml.model".into(), V::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.scores".into(), V::Array(scores.collect())),
        (
            "tokenizer.ggml.token_type".into(),
            V::Array(types.collect()),
        ),
        ("tokenizer.ggml.unknown_token_id".into(), V::U32(0)),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(true)),
        ("tokenizer.ggml.add_eos_token".into(), V::Bool(false)),
    ])
}

/// Builds the model `choice` with random weights (deterministic in `seed`) on `device`, with
/// `tokenizer` metadata (see [`tokenizer_metadata_from`] and [`made_up_tokenizer`]).
pub fn build(
    choice: &Choice,
    seed: u64,
    mut tokenizer: Vec<(String, gguf_file::Value)>,
    device: &Device,
) -> Result<Parts> {
    let p = choice.preset;
    let spec = FAMILIES
        .iter()
        .find(|f| f.id == p.family)
        .ok_or_else(|| Error::Internal(format!("preset {}: no family '{}'", p.name, p.family)))?;
    let arch = spec.gguf_architecture().ok_or_else(|| {
        Error::Internal(format!(
            "preset {}: family '{}' has no GGUF architecture",
            p.name, spec.id
        ))
    })?;
    let mut metadata = synthetic::metadata(arch, &p.dims, p.eps, p.rope_base, p.extra);
    metadata.insert(
        1,
        (
            "general.name".into(),
            gguf_file::Value::String(format!("{} (synthetic)", choice.label())),
        ),
    );
    metadata.insert(
        2,
        (
            "general.description".into(),
            gguf_file::Value::String(format!(
                "random weights with the shapes of {} in llama.cpp's {} mix, by mlcli bench --synthetic (seed {seed})",
                p.about, choice.mix.name
            )),
        ),
    );
    metadata.push((
        "general.file_type".into(),
        gguf_file::Value::U32(choice.mix.file_type),
    ));
    pad_vocabulary(&mut tokenizer, p.dims.vocab)?;
    metadata.extend(tokenizer);
    let plan = synthetic::plan(spec, &p.dims, p.tied_embeddings, p.rope_freqs, p.extra)?;
    let mut random = RandomTensors::new(seed, device);
    let mut tensors = Vec::with_capacity(plan.len());
    for t in &plan {
        let ty = choice.mix.type_for(t, p.dims.layers);
        let fan_in = t.shape.last().copied().unwrap_or(1) as f32;
        let (center, spread) = match t.role {
            Role::Vector if synthetic::is_norm(&t.name) => (1.0, 0.2),
            // Gemma 4's block scalars and router/expert scales: around 1.
            Role::Vector
                if t.name.ends_with(".scale") || t.name.ends_with("layer_output_scale.weight") =>
            {
                (1.0, 0.1)
            }
            // RoPE frequency factors of 1 leave the base frequencies as they are.
            Role::Vector if t.name == "rope_freqs.weight" => (1.0, 0.0),
            // A DeltaNet's -exp(A_log): negative, so its state decays.
            Role::Vector if t.name.ends_with(".ssm_a") => (-0.5, 0.3),
            Role::Vector => (0.0, 0.02),
            Role::Embedding | Role::Output if t.name == "token_embd.weight" => (0.0, 1.0),
            _ => (0.0, 1.0 / fan_in.sqrt()),
        };
        tensors.push((t.name.clone(), random.stored(&t.shape, ty, center, spread)?));
    }
    Ok(Parts { metadata, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::presets;
    use crate::formats::tokenizer::{EncodeOptions, Tokenizer};

    #[test]
    fn the_made_up_tokenizer_encodes_any_text_through_bytes() {
        let meta = made_up_tokenizer(300).unwrap();
        let content = gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata: meta.into_iter().collect(),
            tensor_infos: Default::default(),
            tensor_data_offset: 0,
        };
        let tok = Tokenizer::from_gguf(&content).unwrap();
        let opts = EncodeOptions {
            add_bos: true,
            parse_special: false,
        };
        let ids = tok.encode("hé", opts).unwrap();
        assert_eq!(ids[0], 1);
        assert!(tok.decode(&ids[1..]).ends_with("hé"), "{ids:?}");
        assert!(made_up_tokenizer(200).is_err());
    }

    #[test]
    fn copied_vocabularies_are_padded_and_too_large_ones_refused() {
        use gguf_file::Value as V;
        let mut meta = vec![
            (
                "tokenizer.ggml.tokens".to_string(),
                V::Array(vec![V::String("a".into()), V::String("b".into())]),
            ),
            (
                "tokenizer.ggml.token_type".to_string(),
                V::Array(vec![V::I32(1), V::I32(1)]),
            ),
        ];
        pad_vocabulary(&mut meta, 4).unwrap();
        let V::Array(tokens) = &meta[0].1 else {
            panic!()
        };
        assert_eq!(tokens.len(), 4);
        assert_eq!(tokens[3].to_string().unwrap(), "[PAD3]");
        let V::Array(types) = &meta[1].1 else {
            panic!()
        };
        assert_eq!(types[2].to_i32().unwrap(), 5);
        assert!(pad_vocabulary(&mut meta, 3).is_err());
    }

    #[test]
    fn a_built_model_holds_every_planned_tensor_in_the_mix_types() {
        let choice = presets::parse("llama-tiny:q4_k").unwrap();
        let tok = made_up_tokenizer(choice.preset.dims.vocab).unwrap();
        let parts = build(&choice, 1, tok, &Device::Cpu).unwrap();
        let spec = &crate::models::llama::SPEC;
        let plan = synthetic::plan(spec, &choice.preset.dims, true, false, &[]).unwrap();
        assert_eq!(parts.tensors.len(), plan.len());
        for ((name, t), p) in parts.tensors.iter().zip(&plan) {
            assert_eq!(name, &p.name);
            assert_eq!(t.dims(), &p.shape[..], "{name}");
            let MemoryTensor::Candle(q) = t else {
                panic!("{name}: not candle's")
            };
            assert_eq!(
                crate::models::synthetic::Stored::Ggml(q.dtype()),
                choice.mix.type_for(p, 2),
                "{name}"
            );
        }
    }

    /// The logits after `tokens` fed as one prompt, then after each of `more` decoded one
    /// at a time.
    fn logits(gguf: &Gguf, tokens: &[u32], more: &[u32]) -> Vec<Vec<f32>> {
        let m = crate::models::load_gguf(gguf, &Device::Cpu).unwrap();
        let mut cache = crate::models::new_cache(m.as_ref(), 64).unwrap();
        let mut step = |t: &[u32]| -> Vec<f32> {
            crate::models::step(m.as_ref(), t, &Device::Cpu, &mut cache, None)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let mut out = vec![step(tokens)];
        out.extend(more.iter().map(|&t| step(&[t])));
        out
    }

    #[test]
    fn iq4_models_run_their_tables_and_matrices_as_the_dequantized_model_does() {
        use crate::formats::blocks::{BlockType, Blocks};
        use candle_core::quantized::{GgmlDType, QTensor};
        use candle_core::Tensor;
        for (mix, ty) in [("iq4_xs", BlockType::Iq4Xs), ("iq4_nl", BlockType::Iq4Nl)] {
            let choice = presets::parse(&format!("llama-tiny:{mix}")).unwrap();
            let tok = made_up_tokenizer(choice.preset.dims.vocab).unwrap();
            let mut parts = build(&choice, 3, tok, &Device::Cpu).unwrap();
            // The tied table is the output layer, which llama-quantize gives Q6_K; in an
            // untied model it is of the mix's type. Here it is made so, to run a table of
            // blocks both as the embedding and as the output layer.
            for (name, t) in parts.tensors.iter_mut() {
                if let (true, MemoryTensor::Candle(q)) = (name == "token_embd.weight", &*t) {
                    let v = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
                    let dims = q.shape().dims().to_vec();
                    let b = Blocks::quantize(ty, &v.to_vec1().unwrap(), dims).unwrap();
                    *t = MemoryTensor::Blocks(b);
                }
            }
            // The same model with every block tensor dequantized to f32.
            let mut dense = Vec::new();
            let mut blocks = 0;
            for (name, t) in &parts.tensors {
                let t: MemoryTensor = match t {
                    MemoryTensor::Blocks(b) => {
                        assert_eq!(b.block_type(), ty, "{name}");
                        blocks += 1;
                        let v = Tensor::from_vec(b.dequantize(), b.shape(), &Device::Cpu);
                        QTensor::quantize(&v.unwrap(), GgmlDType::F32)
                            .unwrap()
                            .into()
                    }
                    MemoryTensor::Candle(q) => {
                        let v = q.dequantize(&Device::Cpu).unwrap();
                        QTensor::quantize(&v, q.dtype()).unwrap().into()
                    }
                };
                dense.push((name.clone(), t));
            }
            // Every matrix, the (tied) embedding table among them: 7 per layer and the table.
            assert_eq!(blocks, 2 * 7 + 1, "{mix}");
            let dense = Gguf::from_memory("dense", parts.metadata.clone(), dense).unwrap();
            let ours = parts.into_gguf(&choice).unwrap();
            let prompt: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 512).collect();
            let a = logits(&ours, &prompt, &[7, 300, 11]);
            let b = logits(&dense, &prompt, &[7, 300, 11]);
            for (step, (a, b)) in a.iter().zip(&b).enumerate() {
                // Ours quantizes the activations to 8 bits per block, as llama.cpp does.
                let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    err <= 0.05 * scale,
                    "{mix} step {step}: |Δ| {err}, scale {scale}"
                );
                let top = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
                assert_eq!(top(a), top(b), "{mix} step {step}");
            }
        }
    }
}
