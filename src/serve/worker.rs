//! The engine's thread: takes jobs from a bounded queue into the engine's sequences (as many
//! at once as `--parallel`), renders, tokenizes and prefills each in the sequence whose cache
//! shares most of its prompt (a resent conversation prefills only its new suffix), then
//! decodes every job under way together, one batched pass per token, streaming each one's
//! text back. A job whose client has gone is skipped or stopped at its next token; shutdown
//! cancels the ones running.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::api_error::ApiError;
use crate::engine::generation::TokenLogprob;
use crate::engine::grammar::Constraint;
use crate::engine::{
    Engine, GenerateParams, Generation, Message, Prefill, Reasoning, Step, StopReason,
};

/// Prompt tokens fed per pass while other replies are under way: a long prompt is fed in
/// chunks of this many between their decode steps, so their streams do not stall for it.
pub const PREFILL_CHUNK: usize = 256;

/// What to generate from.
#[derive(Debug)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template (with the tools it may call,
    /// and what it asks of a reasoning template).
    Chat(Vec<Message>, Option<serde_json::Value>, Reasoning),
    /// Raw text (the completions endpoint), BOS as the model says.
    Text(String),
}

/// One request for the engine.
#[derive(Debug)]
pub struct Job {
    /// Which endpoint asked, for the log line.
    pub endpoint: &'static str,
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling, limits and the output constraint.
    pub params: Params,
    /// Where the events go; closed when the client has gone.
    pub events: mpsc::UnboundedSender<Event>,
}

/// How to generate for one job.
#[derive(Debug)]
pub struct Params {
    /// Sampling and limits.
    pub generate: GenerateParams,
    /// What the output must be (`response_format`), if anything.
    pub constraint: Option<Constraint>,
}

/// What the engine reports for a job, in order: `Started`, any number of `Text`, then `Done`
/// or `Failed`.
#[derive(Debug)]
pub enum Event {
    /// The prompt was tokenized and fits.
    Started {
        /// Tokens in the prompt.
        prompt_tokens: usize,
    },
    /// Generated text that is final.
    Text(String),
    /// Log-probabilities of the tokens generated since the last such event (only when the
    /// request asked for them).
    Logprobs(Vec<TokenLogprob>),
    /// Generation ended.
    Done(Finished),
    /// The job could not run.
    Failed(ApiError),
}

/// The end of a job.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, tokens reused from the cache (not prefilled again).
    pub reused_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Why it ended.
    pub reason: StopReason,
    /// The stop string that ended it, when one did.
    pub stop_string: Option<String>,
}

/// A job whose reply is being generated in one of the engine's sequences.
struct Active {
    /// The job's number, for the log line.
    served: u64,
    endpoint: &'static str,
    events: mpsc::UnboundedSender<Event>,
    /// The engine sequence holding its cache.
    seq: usize,
    generation: Generation,
    /// The prompt still being fed (none: the reply is being decoded).
    prefill: Option<Prefill>,
    /// The token to feed at the next step.
    token: u32,
    client_left: bool,
}

impl Active {
    /// Sends the log-probabilities of the tokens just generated, if the request wants them.
    fn send_logprobs(&mut self) {
        let lp = self.generation.take_logprobs();
        if !lp.is_empty() {
            let _ = self.events.send(Event::Logprobs(lp));
        }
    }
}

/// Runs jobs until the queue closes: admits waiting jobs while one of the engine's sequences
/// is free (each in the sequence whose cache shares most of its prompt), advances every job
/// being decoded by one token in one batched pass, then feeds the oldest job still being
/// prefilled one chunk of its prompt ([`PREFILL_CHUNK`]; all of it when nothing else is
/// under way), so a long new prompt does not freeze the other streams. `stopping` cancels
/// the jobs under way and fails the rest.
pub fn run(mut engine: Engine, mut jobs: mpsc::Receiver<Job>, stopping: Arc<AtomicBool>) {
    let mut served = 0u64;
    let mut active: Vec<Active> = Vec::new();
    loop {
        while active.len() < engine.parallel() {
            let job = if active.is_empty() {
                match jobs.blocking_recv() {
                    Some(job) => job,
                    None => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            served += 1;
            let busy: Vec<usize> = active.iter().map(|a| a.seq).collect();
            let free: Vec<usize> = (0..engine.parallel())
                .filter(|s| !busy.contains(s))
                .collect();
            if let Some(a) = admit(&mut engine, job, served, &free, &stopping) {
                active.push(a);
            }
        }
        let (prefilling, decoding): (Vec<Active>, Vec<Active>) =
            active.drain(..).partition(|a| a.prefill.is_some());
        active = decoding;
        if !active.is_empty() {
            step(&mut engine, &mut active, &stopping);
        }
        let chunk = match active.is_empty() {
            true => usize::MAX,
            false => PREFILL_CHUNK,
        };
        let mut prefilling = prefilling.into_iter();
        if let Some(a) = prefilling.next() {
            active.extend(prefill(&mut engine, a, chunk, &stopping));
        }
        active.extend(prefilling);
    }
}

/// Sends `text` to the job's client; `Break` when the server stops or the client has gone.
fn deliver(
    events: &mpsc::UnboundedSender<Event>,
    stopping: &AtomicBool,
    client_left: &mut bool,
    text: &str,
) -> ControlFlow<()> {
    if stopping.load(Ordering::SeqCst) {
        return ControlFlow::Break(());
    }
    if (!text.is_empty() && events.send(Event::Text(text.to_string())).is_err())
        || events.is_closed()
    {
        *client_left = true;
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

/// Checks, tokenizes and prefills `job` in one of the `free` sequences and samples its first
/// token; `None` when it failed or already ended (its client has been told).
fn admit(
    engine: &mut Engine,
    job: Job,
    served: u64,
    free: &[usize],
    stopping: &AtomicBool,
) -> Option<Active> {
    if stopping.load(Ordering::SeqCst) {
        let _ = job.events.send(Event::Failed(ApiError::unavailable(
            "the server is shutting down",
        )));
        return None;
    }
    if job.events.is_closed() {
        eprintln!(
            "request {served} ({}): skipped, the client left while it waited",
            job.endpoint
        );
        return None;
    }
    let fail = |e: ApiError| {
        let _ = job.events.send(Event::Failed(e));
        None
    };
    let tokens = match &job.prompt {
        Prompt::Chat(messages, tools, reasoning) => {
            engine.chat_tokens_with(messages, tools.as_ref(), reasoning)
        }
        Prompt::Text(text) => engine.raw_tokens(text, true),
    };
    let tokens = match tokens {
        Ok(t) => t,
        Err(e) => return fail(ApiError::from_engine(&e)),
    };
    if tokens.len() >= engine.ctx_size() {
        return fail(ApiError::context_length(tokens.len(), engine.ctx_size()));
    }
    let room = engine.ctx_size() - tokens.len();
    let grammar = match &job.params.constraint {
        None => None,
        Some(c) => match engine.grammar(c) {
            Ok(g) => Some(g),
            Err(e) => {
                // A forced tool call is the one Lark grammar serve makes; schemas come from
                // response_format.
                let param = match c {
                    Constraint::Lark(_) => "tool_choice",
                    Constraint::JsonSchema(_) | Constraint::JsonObject => "response_format",
                };
                return fail(ApiError::invalid_param(param, e.to_string()));
            }
        },
    };
    let mut params = job.params.generate.clone();
    // A reply may not run past the context: the limit is the room left, never more.
    params.max_tokens = Some(params.max_tokens.map_or(room, |m| m.min(room)));
    let Some(seq) = engine.pick_sequence(&tokens, free) else {
        return fail(ApiError::internal(
            "no free sequence for an admitted request",
        ));
    };
    let _ = job.events.send(Event::Started {
        prompt_tokens: tokens.len(),
    });
    let (generation, prefill) = match engine.begin(seq, &tokens, &params, grammar) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("request {served} ({}): failed: {e}", job.endpoint);
            return fail(ApiError::from_engine(&e));
        }
    };
    Some(Active {
        served,
        endpoint: job.endpoint,
        events: job.events,
        seq,
        generation,
        prefill: Some(prefill),
        token: 0,
        client_left: false,
    })
}

/// Feeds `a` the next `chunk` tokens of its prompt; once all of it is in, samples its first
/// token. Returns the job while it goes on (`None` when it failed, ended or its client left).
fn prefill(
    engine: &mut Engine,
    mut a: Active,
    chunk: usize,
    stopping: &AtomicBool,
) -> Option<Active> {
    let mut p = a.prefill.take()?;
    if stopping.load(Ordering::SeqCst) || a.events.is_closed() {
        a.client_left = a.events.is_closed();
        // The sequence holds a half-fed prompt: start it afresh next time.
        let _ = engine.reset_sequence(a.seq);
        finish(a, StopReason::Cancelled, stopping);
        return None;
    }
    let fed = engine
        .prefill(&mut p, &mut a.generation, chunk)
        .and_then(|next| Ok((next, engine.room(a.seq)?)));
    let (next, room) = match fed {
        Ok((None, _)) => {
            a.prefill = Some(p);
            return Some(a);
        }
        Ok((Some(next), room)) => (next, room),
        Err(e) => {
            fail_one(engine, a, &e);
            return None;
        }
    };
    let step = a.generation.advance(&next, room, &mut |text| {
        deliver(&a.events, stopping, &mut a.client_left, text)
    });
    a.send_logprobs();
    match step {
        Ok(Step::Feed(token)) => {
            a.token = token;
            Some(a)
        }
        Ok(Step::Done(reason)) => {
            finish(a, reason, stopping);
            None
        }
        Err(e) => {
            fail_one(engine, a, &e);
            None
        }
    }
}

/// Feeds every job under way its next token in one pass, samples each one's next, and ends
/// the jobs that are done.
fn step(engine: &mut Engine, active: &mut Vec<Active>, stopping: &AtomicBool) {
    let mut work: Vec<_> = active
        .iter_mut()
        .map(|a| (a.seq, a.token, &mut a.generation))
        .collect();
    let nexts = match engine.decode_batch(&mut work) {
        Ok(nexts) => nexts,
        Err(e) => {
            for a in active.drain(..) {
                fail_one(engine, a, &e);
            }
            return;
        }
    };
    let mut outcomes = Vec::with_capacity(active.len());
    for (a, next) in active.iter_mut().zip(&nexts) {
        let room = engine.room(a.seq).unwrap_or(0);
        let step = a.generation.advance(next, room, &mut |text| {
            deliver(&a.events, stopping, &mut a.client_left, text)
        });
        a.send_logprobs();
        outcomes.push(step);
    }
    let mut kept = Vec::with_capacity(active.len());
    for (mut a, outcome) in active.drain(..).zip(outcomes) {
        match outcome {
            Ok(Step::Feed(token)) => {
                a.token = token;
                kept.push(a);
            }
            Ok(Step::Done(reason)) => finish(a, reason, stopping),
            Err(e) => fail_one(engine, a, &e),
        }
    }
    *active = kept;
}

/// Ends a job: streams its held-back text, logs it and tells its client.
fn finish(a: Active, reason: StopReason, stopping: &AtomicBool) {
    let (events, served, endpoint) = (a.events, a.served, a.endpoint);
    let mut client_left = a.client_left;
    let stats = a.generation.finish(reason, &mut |text| {
        deliver(&events, stopping, &mut client_left, text)
    });
    let why = if client_left {
        "cancelled: the client left".to_string()
    } else {
        stats.stop_reason.to_string()
    };
    eprintln!(
        "request {served} ({endpoint}): {} prompt tokens ({} reused, {} prefilled), {} generated, {why}",
        stats.prompt_tokens,
        stats.reused_tokens,
        stats.prompt_tokens - stats.reused_tokens,
        stats.generated_tokens,
    );
    let _ = events.send(Event::Done(Finished {
        prompt_tokens: stats.prompt_tokens,
        reused_tokens: stats.reused_tokens,
        completion_tokens: stats.generated_tokens,
        reason: stats.stop_reason,
        stop_string: stats.stop_string,
    }));
}

/// Fails a job under way; its sequence may hold a half-fed pass, so it starts afresh.
fn fail_one(engine: &mut Engine, a: Active, e: &crate::Error) {
    eprintln!("request {} ({}): failed: {e}", a.served, a.endpoint);
    let _ = engine.reset_sequence(a.seq);
    let _ = a.events.send(Event::Failed(ApiError::from_engine(e)));
}
