//! The engine's worker thread for the chat UI: requests in, events out over channels, with a
//! shared cancel flag so a generation can be stopped between tokens.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::engine::{Engine, GenerateParams, Message, StopReason};
use crate::Error;

/// What the UI asks the engine to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Reply to this conversation (system message first, if any).
    Chat {
        /// The whole conversation so far, ending with the user's turn.
        messages: Vec<Message>,
        /// Sampling and stop settings.
        params: GenerateParams,
    },
    /// Forget the cached conversation.
    Reset,
}

/// Figures of one finished reply.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Tokens in the rendered conversation.
    pub prompt_tokens: usize,
    /// Of those, tokens reused from the KV cache (not prefilled again).
    pub reused_tokens: usize,
    /// Prefill speed.
    pub prompt_tok_per_s: f64,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Generation speed.
    pub gen_tok_per_s: f64,
    /// From the request to the first token, in milliseconds.
    pub ttft_ms: f64,
    /// Why the reply ended.
    pub stop_reason: StopReason,
    /// Positions used in the context after the reply.
    pub ctx_used: usize,
}

/// What the engine reports back.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Context positions in use while a reply streams: the prompt, then one more per token.
    Progress(usize),
    /// A piece of the reply.
    Text(String),
    /// The reply is complete (or was cancelled, or filled the context).
    Finished(Summary),
    /// The conversation does not fit the context window.
    TooLong {
        /// Tokens the conversation needs.
        needed: usize,
        /// The context size.
        ctx_size: usize,
    },
    /// Something went wrong; the conversation is unchanged.
    Failed(String),
}

/// The running worker.
pub struct Worker {
    requests: Sender<Request>,
    cancel: Arc<AtomicBool>,
    _thread: JoinHandle<()>,
}

impl Worker {
    /// Moves `engine` onto a new thread; events are delivered through `deliver`.
    pub fn spawn(mut engine: Engine, deliver: impl Fn(Event) + Send + 'static) -> Self {
        let (requests, inbox): (Sender<Request>, Receiver<Request>) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let thread = std::thread::spawn(move || {
            for request in inbox {
                match request {
                    Request::Reset => engine.reset(),
                    Request::Chat { messages, params } => {
                        flag.store(false, Ordering::SeqCst);
                        deliver(reply(&mut engine, &messages, &params, &flag, &deliver));
                    }
                }
            }
        });
        Self {
            requests,
            cancel,
            _thread: thread,
        }
    }

    /// Queues a request (ignored when the worker has stopped).
    pub fn send(&self, request: Request) {
        let _ = self.requests.send(request);
    }

    /// Stops the current generation after the token in flight; what was produced is kept.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Positions a chat prompt must leave free for the reply.
const REPLY_ROOM: usize = 16;

/// Runs one chat turn; returns the final event.
fn reply(
    engine: &mut Engine,
    messages: &[Message],
    params: &GenerateParams,
    cancel: &AtomicBool,
    deliver: &dyn Fn(Event),
) -> Event {
    let tokens = match engine.chat_tokens(messages) {
        Ok(t) => t,
        Err(e) => return Event::Failed(e.to_string()),
    };
    // Leave room for at least a short reply.
    let params = GenerateParams {
        min_room: REPLY_ROOM,
        ..params.clone()
    };
    // Positions after each token: the prompt and the reply so far (the engine's own count
    // arrives with `Finished`).
    let mut used = tokens.len();
    let result = engine.generate(&tokens, &params, &mut |text| {
        used += 1;
        deliver(Event::Progress(used));
        if !text.is_empty() {
            deliver(Event::Text(text.to_string()));
        }
        if cancel.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    match result {
        Ok(s) => Event::Finished(Summary {
            prompt_tokens: s.prompt_tokens,
            reused_tokens: s.reused_tokens,
            prompt_tok_per_s: s.prompt_tok_per_s(),
            generated_tokens: s.generated_tokens,
            gen_tok_per_s: s.gen_tok_per_s(),
            ttft_ms: s.time_to_first_token.as_secs_f64() * 1000.0,
            stop_reason: s.stop_reason,
            ctx_used: engine.cached_len(),
        }),
        Err(Error::ContextFull {
            needed, ctx_size, ..
        }) => Event::TooLong { needed, ctx_size },
        Err(e) => Event::Failed(e.to_string()),
    }
}
