//! Chat turns reuse the KV cache: the second turn prefills only the new tokens (asserted
//! through the engine's stats) and its reply equals a cold run of the same conversation.

use std::ops::ControlFlow;

use mlcli::engine::{Engine, GenerateParams, LoadOptions, Message, SamplingParams};
use mlcli::models::testing::{real_model, SMOLLM2};

fn greedy() -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(24),
        ..GenerateParams::default()
    }
}

fn reply(engine: &mut Engine, messages: &[Message]) -> (String, mlcli::engine::Stats) {
    let tokens = engine.chat_tokens(messages).expect("template renders");
    let mut text = String::new();
    let stats = engine
        .generate(&tokens, &greedy(), &mut |t| {
            text.push_str(t);
            ControlFlow::Continue(())
        })
        .expect("generates");
    (text, stats)
}

#[test]
fn second_turn_prefills_only_the_new_tokens() {
    let mut engine = Engine::load(&real_model(SMOLLM2), &LoadOptions::default()).expect("loads");
    let mut conversation = vec![Message::new("user", "What is the capital of France?")];
    let (answer, first) = reply(&mut engine, &conversation);
    assert_eq!(first.reused_tokens, 0);
    let cached = engine.cached_len();
    conversation.push(Message::new("assistant", answer));
    conversation.push(Message::new("user", "And of Germany?"));
    let turn2 = engine.chat_tokens(&conversation).expect("renders");
    let (warm_text, second) = reply(&mut engine, &conversation);
    assert_eq!(second.prompt_tokens, turn2.len());
    assert_eq!(
        second.reused_tokens, cached,
        "the whole first turn is reused"
    );
    let prefilled = second.prompt_tokens - second.reused_tokens;
    assert!(
        prefilled < 20,
        "only the new turn is prefilled, got {prefilled} tokens"
    );
    // The reused cache gives the same reply as a cold start.
    engine.reset();
    let (cold_text, cold) = reply(&mut engine, &conversation);
    assert_eq!(cold.reused_tokens, 0);
    assert_eq!(warm_text, cold_text);
}
