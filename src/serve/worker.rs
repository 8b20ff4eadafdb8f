//! The engine's thread: takes jobs from a bounded queue one at a time, renders and tokenizes
//! each, generates through the engine (whose cache keeps the previous prompt, so a resent
//! conversation prefills only its new suffix) and streams the text back. A job whose client
//! has gone is skipped or stopped at its next token; shutdown cancels the one running.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::api_error::ApiError;
use crate::engine::grammar::Constraint;
use crate::engine::{Engine, GenerateParams, Message, StopReason};

/// What to generate from.
#[derive(Debug)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template (with the tools it may call).
    Chat(Vec<Message>, Option<serde_json::Value>),
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

/// Runs jobs until the queue closes. `stopping` cancels the running job and fails the rest.
pub fn run(mut engine: Engine, mut jobs: mpsc::Receiver<Job>, stopping: Arc<AtomicBool>) {
    let mut served = 0u64;
    while let Some(job) = jobs.blocking_recv() {
        served += 1;
        if stopping.load(Ordering::SeqCst) {
            let _ = job.events.send(Event::Failed(ApiError::unavailable(
                "the server is shutting down",
            )));
            continue;
        }
        if job.events.is_closed() {
            eprintln!(
                "request {served} ({}): skipped, the client left while it waited",
                job.endpoint
            );
            continue;
        }
        one(&mut engine, job, served, &stopping);
    }
}

fn one(engine: &mut Engine, job: Job, served: u64, stopping: &AtomicBool) {
    let tokens = match &job.prompt {
        Prompt::Chat(messages, tools) => engine.chat_tokens_with_tools(messages, tools.as_ref()),
        Prompt::Text(text) => engine.raw_tokens(text, true),
    };
    let tokens = match tokens {
        Ok(t) => t,
        Err(e) => {
            let _ = job.events.send(Event::Failed(ApiError::from_engine(&e)));
            return;
        }
    };
    let room = engine.ctx_size().saturating_sub(tokens.len());
    if tokens.len() >= engine.ctx_size() {
        let _ = job.events.send(Event::Failed(ApiError::context_length(
            tokens.len(),
            engine.ctx_size(),
        )));
        return;
    }
    let mut grammar = match &job.params.constraint {
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
                let e = ApiError::invalid_param(param, e.to_string());
                let _ = job.events.send(Event::Failed(e));
                return;
            }
        },
    };
    let mut params = job.params.generate.clone();
    // A reply may not run past the context: the limit is the room left, never more.
    params.max_tokens = Some(params.max_tokens.map_or(room, |m| m.min(room)));
    let _ = job.events.send(Event::Started {
        prompt_tokens: tokens.len(),
    });
    let mut client_left = false;
    let mut on_text = |text: &str| {
        if stopping.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        if !text.is_empty() && job.events.send(Event::Text(text.to_string())).is_err() {
            client_left = true;
            return ControlFlow::Break(());
        }
        if job.events.is_closed() {
            client_left = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };
    let result = engine.generate_constrained(&tokens, &params, grammar.as_mut(), &mut on_text);
    match result {
        Ok(stats) => {
            let why = if client_left {
                "cancelled: the client left".to_string()
            } else {
                stats.stop_reason.to_string()
            };
            eprintln!(
                "request {served} ({}): {} prompt tokens ({} reused, {} prefilled), {} generated, {why}",
                job.endpoint,
                stats.prompt_tokens,
                stats.reused_tokens,
                stats.prompt_tokens - stats.reused_tokens,
                stats.generated_tokens,
            );
            let _ = job.events.send(Event::Done(Finished {
                prompt_tokens: stats.prompt_tokens,
                reused_tokens: stats.reused_tokens,
                completion_tokens: stats.generated_tokens,
                reason: stats.stop_reason,
                stop_string: stats.stop_string,
            }));
        }
        Err(e) => {
            eprintln!("request {served} ({}): failed: {e}", job.endpoint);
            // The cache may hold a half-fed prompt: start the next request afresh.
            engine.reset();
            let _ = job.events.send(Event::Failed(ApiError::from_engine(&e)));
        }
    }
}
