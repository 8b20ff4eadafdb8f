//! The engine: one loaded model with its tokenizer, chat template and cache, and the ONE
//! decode loop ([`Engine::generate`]) that `run`, chat and `bench` all use.
//!
//! The engine owns the [`cache::Cache`], which holds the one position of the sequence; the
//! layer-by-layer path and the fused decoder both feed at that position and commit to it.

pub mod cache;
pub mod decoder;
pub mod dry;
pub mod generation;
pub mod grammar;
mod hf_dir;
mod parallel;
mod prefill;
pub mod recommended;
pub mod sampler;
pub mod settings;
pub mod stop;
mod top_k;

/// How a harmony model's reply splits into channels (the chat UI folds its reasoning).
pub use crate::formats::harmony;
/// How a reasoning model's reply splits into reasoning and answer (the chat UI folds it).
pub use crate::formats::reasoning;
pub use recommended::Recommended;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;

pub use crate::formats::chat_template::Message;
use crate::formats::chat_template::{self, ChatTemplate, RenderOptions};
use crate::formats::detect::{self, Format};
use crate::formats::gguf::Gguf;
use crate::formats::tokenizer::{EncodeOptions, Tokenizer};
use crate::formats::weights::Precision;
use crate::models::{self, CausalLm, ModelInfo, Tracer};
use crate::{Error, Result};
use cache::Cache;
use decoder::Fused;
pub use generation::{Generation, Next, Step};
pub use prefill::Prefill;
pub use sampler::Params as SamplingParams;

/// Default context when the user gives none: the model's, capped here to keep memory modest.
pub const DEFAULT_CTX_CAP: usize = 4096;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Where to run.
    pub device: Device,
    /// Context size in tokens; `None` = the model's, capped at [`DEFAULT_CTX_CAP`].
    pub ctx_size: Option<usize>,
    /// A chat template source replacing the model's own.
    pub chat_template: Option<String>,
    /// Prompt tokens fed per forward pass.
    pub batch_size: usize,
    /// dtype and in-situ quantization of full-precision (safetensors) weights.
    pub precision: Precision,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            ctx_size: None,
            chat_template: None,
            batch_size: 512,
            precision: Precision::default(),
        }
    }
}

/// What a chat asks of a reasoning model's template; each unset keeps the template's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reasoning {
    /// `reasoning_effort`: `low`, `medium` or `high` (gpt-oss's harmony reads it).
    pub effort: Option<String>,
    /// `enable_thinking`: whether the model thinks before answering (Gemma 4's template).
    pub thinking: Option<bool>,
}

/// What one call of [`Engine::generate`] should do.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateParams {
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Stop after this many generated tokens (`None` = until EOS or the context is full).
    pub max_tokens: Option<usize>,
    /// Stop when the generated text contains one of these (not emitted).
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (for parity tests and benchmarks).
    pub ignore_eos: bool,
    /// Refuse a prompt that leaves fewer positions than this for the reply (the chat keeps
    /// room for a short answer).
    #[serde(default)]
    pub min_room: usize,
    /// Report each generated token's log-probability under the model, with this many most
    /// likely alternatives (`None`: none at all).
    #[serde(default)]
    pub logprobs: Option<usize>,
    /// Stream special (control) tokens as their text, for replies whose markup is made of
    /// them (Gemma 4's tool calls); end-of-generation tokens still end the reply unseen.
    #[serde(default)]
    pub render_special: bool,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// A stop string appeared.
    StopString,
    /// The caller cancelled.
    Cancelled,
    /// The context window is full.
    ContextFull,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::EndOfGeneration => "end-of-generation token (eos)",
            StopReason::MaxTokens => "max tokens (-n)",
            StopReason::StopString => "stop string",
            StopReason::Cancelled => "cancelled",
            StopReason::ContextFull => "context full",
        })
    }
}

/// Counters and timings of one generation.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, tokens whose KV entries were reused from the previous call.
    pub reused_tokens: usize,
    /// Time spent feeding the new prompt tokens.
    pub prompt_time: Duration,
    /// Tokens generated (sampled), including a final end-of-generation token.
    pub generated_tokens: usize,
    /// Time spent generating after the first token.
    pub generation_time: Duration,
    /// From the call to the first sampled token.
    pub time_to_first_token: Duration,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// The stop string that ended it, when one did.
    pub stop_string: Option<String>,
    /// When each generated token was sampled, from the start of the call (`[0]` is the TTFT).
    pub token_times: Vec<Duration>,
    /// Time in forward passes after the prompt (one single-token pass per sampled token but
    /// the last); with `prompt_time`, all the model's compute.
    pub decode_forward_time: Duration,
    /// Time in the sampler, measured apart from the forward passes.
    pub sampling_time: Duration,
}

impl Stats {
    /// Prompt tokens fed per second (excluding reused ones).
    pub fn prompt_tok_per_s(&self) -> f64 {
        per_second(self.prompt_tokens - self.reused_tokens, self.prompt_time)
    }

    /// Generated tokens per second after the first.
    pub fn gen_tok_per_s(&self) -> f64 {
        per_second(
            self.generated_tokens.saturating_sub(1),
            self.generation_time,
        )
    }
}

fn per_second(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// Where the chat template in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The model's own files.
    Model,
    /// The user's `--chat-template`.
    User,
    /// The family's default shipped in `assets/templates/` (the model has none).
    FamilyDefault(&'static str),
}

/// A loaded model ready to generate.
pub struct Engine {
    model: Box<dyn CausalLm>,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    template_origin: TemplateOrigin,
    /// The cache of sequence 0 (run, chat, bench, and the server's first slot): position,
    /// token ids, and the layer-by-layer path's per-layer entries.
    cache: Cache,
    /// The caches of sequences 1.. when the server decodes several at once
    /// ([`Engine::set_parallel`]).
    slots: Vec<Cache>,
    /// The backend's fused decoder (its KV storage on the device; the position is the
    /// cache's), when the model runs on it.
    fused: Option<Fused>,
    /// Which decoder runs the model and why (`-v`).
    decoder_note: String,
    device: Device,
    batch_size: usize,
    name: String,
    recommended: Recommended,
    /// DRY's sequence breakers in this vocabulary, for the breaker strings they came from.
    breakers: Option<(Vec<String>, Arc<dry::Breakers>)>,
    /// The vocabulary as the grammar engine sees it, once a constraint asked for it.
    vocabulary: Option<grammar::Vocabulary>,
    /// Lines for the user about what was loaded.
    notes: Vec<String>,
    /// What chats ask of a reasoning template (`--reasoning-effort`, `--thinking`).
    reasoning: Reasoning,
}

impl Engine {
    /// Detects the format of `path`, loads the model, tokenizer and chat template.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let gguf = match detect::detect(path)? {
            Format::Gguf(p) => Gguf::open(&p)?,
            Format::SafetensorsDir(dir) => {
                let l = hf_dir::load(&dir, opts.precision, &opts.device)?;
                let mut engine = Self::assemble(
                    l.model,
                    l.tokenizer,
                    l.template,
                    l.name,
                    l.recommended,
                    opts,
                )?;
                engine.notes = l.notes;
                return Ok(engine);
            }
        };
        Self::from_gguf(&gguf, opts)
    }

    /// Loads the model, tokenizer and chat template from an open GGUF (a file, or one built in
    /// memory such as `bench --synthetic`).
    pub fn from_gguf(gguf: &Gguf, opts: &LoadOptions) -> Result<Self> {
        let path = gguf.path();
        // Refuse unsupported architectures before the slower tokenizer and weight loading.
        models::family_for_gguf(gguf.architecture()?)?;
        let tokenizer = Tokenizer::from_gguf(gguf.content())?;
        let source = gguf.opt_str("tokenizer.chat_template")?.map(str::to_string);
        let recommended = recommended::from_gguf(gguf)?;
        let model = models::load_gguf(gguf, &opts.device)?;
        let name = gguf
            .opt_str("general.name")?
            .map(str::to_string)
            .unwrap_or_else(|| {
                path.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into())
            });
        Self::assemble(model, tokenizer, source, name, recommended, opts)
    }

    /// The common tail of loading: template, context size, cache.
    fn assemble(
        model: Box<dyn CausalLm>,
        tokenizer: Tokenizer,
        template: Option<String>,
        name: String,
        recommended: Recommended,
        opts: &LoadOptions,
    ) -> Result<Self> {
        crate::kernels::cpu::heap::return_freed();
        let (source, template_origin) = match (&opts.chat_template, template) {
            (Some(user), _) => (user.clone(), TemplateOrigin::User),
            (None, Some(own)) => (own, TemplateOrigin::Model),
            (None, None) => {
                let name =
                    models::family(model.info().family).map_or("chatml", |f| f.default_template);
                let source = crate::formats::chat_template::builtin(name).unwrap_or_default();
                (source.to_string(), TemplateOrigin::FamilyDefault(name))
            }
        };
        // Errors name whose code the template is (the model's, the user's or ours).
        let origin = match template_origin {
            TemplateOrigin::User => chat_template::Origin::User,
            TemplateOrigin::Model => chat_template::Origin::Model,
            TemplateOrigin::FamilyDefault(name) => chat_template::Origin::Builtin(name),
        };
        let template = ChatTemplate::with_origin(&source, origin)?;
        let info = model.info();
        let ctx = match opts.ctx_size {
            Some(0) => info.context_length,
            Some(n) => n,
            None => info.context_length.min(DEFAULT_CTX_CAP),
        };
        let cache = models::new_cache(&*model, ctx)?;
        let (fused, decoder_note) = decoder::build(&*model, &opts.device, ctx, opts.batch_size)?;
        Ok(Self {
            cache,
            slots: Vec::new(),
            fused,
            decoder_note,
            model,
            tokenizer: Arc::new(tokenizer),
            recommended,
            breakers: None,
            vocabulary: None,
            template_origin,
            template,
            device: opts.device.clone(),
            batch_size: opts.batch_size.max(1),
            name,
            notes: Vec::new(),
            reasoning: Reasoning::default(),
        })
    }

    /// The model's dimensions.
    pub fn info(&self) -> &ModelInfo {
        self.model.info()
    }

    /// The model's display name (`general.name` or the file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sampling the model's own files recommend (`general.sampling.*` in a GGUF,
    /// `generation_config.json` beside safetensors).
    pub fn recommended(&self) -> &Recommended {
        &self.recommended
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Where the chat template came from.
    pub fn template_origin(&self) -> TemplateOrigin {
        self.template_origin
    }

    /// The chat template: the user's, the model's own, or the family's default.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The context size of this run.
    pub fn ctx_size(&self) -> usize {
        self.cache.max_len()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What the user should know about what was loaded (e.g. that a multimodal checkpoint's
    /// vision tower is not used), one line each.
    pub fn load_notes(&self) -> &[String] {
        &self.notes
    }

    /// Whether the fused decoder runs the model (it holds one sequence).
    pub fn has_fused_decoder(&self) -> bool {
        self.fused.is_some()
    }

    /// Which decoder runs the model (fused on the GPU, or layer by layer) and why.
    pub fn decoder_note(&self) -> &str {
        &self.decoder_note
    }

    /// Passes `effort` (`low`, `medium`, `high`) to the chat template as `reasoning_effort`
    /// from now on. A template that does not read the variable is refused: the setting would
    /// change nothing, and saying so beats ignoring it.
    pub fn set_reasoning_effort(&mut self, effort: Option<&str>) -> Result<()> {
        if let Some(e) = effort {
            self.check_reasoning_effort(e)?;
        }
        self.reasoning.effort = effort.map(str::to_string);
        Ok(())
    }

    /// Passes `on` to the chat template as `enable_thinking` from now on (unset: the
    /// template's default). A template that does not read the variable is refused.
    pub fn set_thinking(&mut self, on: Option<bool>) -> Result<()> {
        if on.is_some() {
            self.check_thinking()?;
        }
        self.reasoning.thinking = on;
        Ok(())
    }

    /// Refuses thinking switched for a template that does not read `enable_thinking`.
    pub fn check_thinking(&self) -> Result<()> {
        match self.template.takes_enable_thinking() {
            true => Ok(()),
            false => Err(Error::InvalidArgument(format!(
                "{} does not read enable_thinking, so switching thinking would change nothing \
                 (Gemma 4's template reads it)",
                self.template.origin()
            ))),
        }
    }

    /// Refuses a reasoning effort the template cannot take (see
    /// [`Engine::set_reasoning_effort`]).
    pub fn check_reasoning_effort(&self, effort: &str) -> Result<()> {
        if !["low", "medium", "high"].contains(&effort) {
            return Err(Error::InvalidArgument(format!(
                "reasoning effort '{}' is not one of low, medium, high",
                crate::formats::untrusted::short(effort)
            )));
        }
        if !self.template.takes_reasoning_effort() {
            return Err(Error::InvalidArgument(format!(
                "{} does not read reasoning_effort, so a reasoning effort would change \
                 nothing (gpt-oss's harmony template reads it)",
                self.template.origin()
            )));
        }
        Ok(())
    }

    /// Renders `messages` with the chat template and tokenizes the result (special tokens in
    /// the rendered text are parsed; BOS is added only when the template did not write it).
    pub fn chat_tokens(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.chat_tokens_with_tools(messages, None)
    }

    /// [`Engine::chat_tokens`] with `tools` (OpenAI's list) given to the template, which must
    /// take them.
    pub fn chat_tokens_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<Vec<u32>> {
        self.chat_tokens_with(messages, tools, &self.reasoning)
    }

    /// [`Engine::chat_tokens_with_tools`] with these reasoning switches instead of the ones
    /// set (a server request's own).
    pub fn chat_tokens_with(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        reasoning: &Reasoning,
    ) -> Result<Vec<u32>> {
        if let Some(e) = &reasoning.effort {
            self.check_reasoning_effort(e)?;
        }
        if reasoning.thinking.is_some() {
            self.check_thinking()?;
        }
        let template = &self.template;
        if tools.is_some() && !template.takes_tools() {
            return Err(Error::InvalidArgument(format!(
                "{} does not take tools (a template with tool support, e.g. --chat-template chatml, does)",
                template.origin()
            )));
        }
        let piece = |id: Option<u32>| id.and_then(|i| self.tokenizer.piece(i)).unwrap_or("");
        let bos = piece(self.tokenizer.bos_id());
        let text = template.render(
            messages,
            &RenderOptions {
                add_generation_prompt: true,
                bos_token: bos,
                eos_token: piece(self.tokenizer.eos_id()),
                tools,
                reasoning_effort: reasoning.effort.as_deref(),
                enable_thinking: reasoning.thinking,
            },
        )?;
        let add_bos = bos.is_empty() || !text.starts_with(bos);
        Ok(self.tokenizer.encode(
            &text,
            EncodeOptions {
                add_bos,
                parse_special: true,
            },
        )?)
    }

    /// Tokenizes a raw prompt (BOS as the model's metadata says).
    pub fn raw_tokens(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(
            text,
            EncodeOptions {
                add_bos: true,
                parse_special,
            },
        )?)
    }

    /// Positions currently held in the cache.
    pub fn cached_len(&self) -> usize {
        self.cache.pos()
    }

    /// Fails with [`Error::ContextFull`] unless `n` more tokens fit after what is cached.
    pub fn ensure_fits(&self, n: usize) -> Result<()> {
        self.cache.ensure_fits(n)
    }

    /// Bytes the cache holds now (grows with the conversation; windows stay bounded).
    pub fn cache_bytes(&self) -> usize {
        std::iter::once(&self.cache)
            .chain(&self.slots)
            .map(Cache::reserved_bytes)
            .sum()
    }

    /// Replaces the KV cache with an empty one holding `ctx` positions (0 = the model's).
    pub fn set_ctx_size(&mut self, ctx: usize) -> Result<()> {
        let ctx = if ctx == 0 {
            self.info().context_length
        } else {
            ctx
        };
        self.cache = models::new_cache(&*self.model, ctx)?;
        for slot in &mut self.slots {
            *slot = models::new_cache(&*self.model, ctx)?;
        }
        if self.fused.is_some() {
            // Free the old cache before the new one is allocated.
            self.fused = None;
            let (fused, note) = decoder::build(&*self.model, &self.device, ctx, self.batch_size)?;
            (self.fused, self.decoder_note) = (fused, note);
        }
        Ok(())
    }

    /// Forgets the cached conversation.
    pub fn reset(&mut self) {
        self.cache.reset();
    }

    /// Goes back to at most `len` cached positions (keeping that prefix of the conversation)
    /// and returns the position reached, which may be earlier where a layer's state cannot
    /// go back that far (see [`Cache::rewind`]).
    pub fn rewind(&mut self, len: usize) -> usize {
        self.cache.rewind(len)
    }

    /// Feeds `tokens` after what is cached and returns the last token's logits.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.feed_with(0, tokens, None)
    }

    /// Like [`Engine::feed`], with every block's output reported to `tracer` (for
    /// `inspect --layer-trace`); a prompt longer than the batch size reports once per chunk.
    pub fn feed_traced(&mut self, tokens: &[u32], tracer: &mut dyn Tracer) -> Result<Vec<f32>> {
        self.feed_with(0, tokens, Some(tracer))
    }

    /// Feeds `tokens` to sequence `seq` (the fused decoder serves sequence 0 only).
    fn feed_with(
        &mut self,
        seq: usize,
        tokens: &[u32],
        mut tracer: Option<&mut dyn Tracer>,
    ) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let fused = if seq == 0 { self.fused.as_mut() } else { None };
        let cache = match seq {
            0 => &mut self.cache,
            i => self.slots.get_mut(i - 1).ok_or_else(|| no_sequence(i))?,
        };
        cache.ensure_fits(tokens.len())?;
        if let (Some(f), None) = (fused, tracer.as_ref()) {
            cache.begin(tokens.len())?;
            let fed = f.feed(tokens, cache.pos());
            return Self::settle(cache, tokens, fed);
        }
        let mut logits = None;
        for chunk in tokens.chunks(self.batch_size) {
            // Reborrow (not as_deref_mut) so the trait object's lifetime may shorten.
            let tracer = tracer.as_mut().map(|t| &mut **t as &mut dyn Tracer);
            logits = Some(models::step(
                &*self.model,
                chunk,
                &self.device,
                cache,
                tracer,
            )?);
        }
        match logits {
            Some(l) => Ok(l.to_vec1()?),
            None => Err(Error::EmptyPrompt),
        }
    }

    /// Commits a fused decoder's pass to the cache, or abandons it on failure.
    fn settle<T>(cache: &mut Cache, tokens: &[u32], fed: Result<T>) -> Result<T> {
        match fed {
            Ok(v) => {
                cache.commit(tokens)?;
                Ok(v)
            }
            Err(e) => {
                cache.abort();
                Err(e)
            }
        }
    }

    /// Feeds `tokens` to sequence `seq`; with `on_device`, returns the greedy token found by
    /// the fused decoder.
    fn next(&mut self, seq: usize, tokens: &[u32], on_device: bool) -> Result<Next> {
        match (on_device && seq == 0, self.fused.as_mut()) {
            (true, Some(f)) => {
                self.cache.begin(tokens.len())?;
                let fed = f.feed_greedy(tokens, self.cache.pos());
                Ok(Next::Token(Self::settle(&mut self.cache, tokens, fed)?))
            }
            _ => Ok(Next::Logits(self.feed_with(seq, tokens, None)?)),
        }
    }

    /// The cache of sequence `seq`.
    fn seq_cache(&mut self, seq: usize) -> Result<&mut Cache> {
        match seq {
            0 => Ok(&mut self.cache),
            i => self.slots.get_mut(i - 1).ok_or_else(|| no_sequence(i)),
        }
    }

    /// DRY's sequence breakers in this vocabulary (none while DRY is off), computed once per
    /// list of breaker strings: finding them reads every token of the vocabulary.
    fn breakers_for(&mut self, dry: &dry::Params) -> Result<Arc<dry::Breakers>> {
        if !dry.is_on() {
            return Ok(Arc::default());
        }
        if let Some((strings, b)) = &self.breakers {
            if *strings == dry.sequence_breakers {
                return Ok(Arc::clone(b));
            }
        }
        let b = Arc::new(dry::Breakers::for_vocab(
            &self.tokenizer,
            &dry.sequence_breakers,
        )?);
        self.breakers = Some((dry.sequence_breakers.clone(), Arc::clone(&b)));
        Ok(b)
    }

    /// Generates a continuation of `prompt`, calling `on_text` with each piece of text as it
    /// becomes final; `on_text` returning `Break` cancels. Reuses cached KV entries for the
    /// longest common prefix with the previous call.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Stats> {
        self.generate_constrained(prompt, params, None, on_text)
    }

    /// A matcher for `constraint` over this model's vocabulary (the vocabulary's trie is
    /// built on first use and kept).
    pub fn grammar(&mut self, constraint: &grammar::Constraint) -> Result<grammar::Grammar> {
        if self.vocabulary.is_none() {
            self.vocabulary = Some(grammar::Vocabulary::new(Arc::clone(&self.tokenizer))?);
        }
        match &self.vocabulary {
            Some(v) => v.matcher(constraint),
            None => Err(Error::Internal("vocabulary not built".into())),
        }
    }

    /// [`Engine::generate`] with the output held to `grammar` (each step's logits masked to
    /// what it allows; generation ends when it is complete).
    pub fn generate_constrained(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        grammar: Option<grammar::Grammar>,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Stats> {
        let (mut gen, mut next) = self.start(0, prompt, params, grammar)?;
        let on_device = self.on_device(0, &gen);
        let reason = loop {
            match gen.advance(&next, self.cache.remaining(), on_text)? {
                Step::Done(reason) => break reason,
                Step::Feed(token) => {
                    let forward_start = Instant::now();
                    next = self.next(0, &[token], on_device)?;
                    gen.add_forward_time(forward_start.elapsed());
                }
            }
        };
        Ok(gen.finish(reason, on_text))
    }

    /// Starts generating a reply to `prompt` in sequence `seq` (0: the engine's own; others:
    /// [`Engine::set_parallel`]'s): reuses the cached common prefix, feeds the rest, and
    /// returns the generation with the last prompt token's output for its first step.
    pub fn start(
        &mut self,
        seq: usize,
        prompt: &[u32],
        params: &GenerateParams,
        grammar: Option<grammar::Grammar>,
    ) -> Result<(Generation, Next)> {
        let (mut gen, mut prefill) = self.begin(seq, prompt, params, grammar)?;
        loop {
            if let Some(next) = self.prefill(&mut prefill, &mut gen, usize::MAX)? {
                return Ok((gen, next));
            }
        }
    }

    /// Whether sequence `seq`'s tokens come from the fused decoder's own argmax.
    fn on_device(&self, seq: usize, gen: &Generation) -> bool {
        seq == 0 && self.fused.is_some() && gen.greedy_unconstrained()
    }
}

/// The error for a sequence index past those [`Engine::set_parallel`] made.
fn no_sequence(i: usize) -> Error {
    Error::Internal(format!("no sequence {i}: the engine decodes fewer at once"))
}
