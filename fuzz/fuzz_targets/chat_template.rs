//! Fuzzes chat-template compilation and rendering under small limits: the input is the
//! template; the conversation is fixed. The binary's memory budget is installed as here, so
//! a template that doubles a string ends in an error, not an allocation failure.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mlcli::formats::chat_template::{
    BudgetAllocator, ChatTemplate, Limits, Message, Origin, RenderOptions,
};

#[global_allocator]
static ALLOCATOR: BudgetAllocator = BudgetAllocator;

/// Small enough that every input renders in milliseconds. A thread that spends the memory
/// budget stays parked holding up to the budget (by design: see docs/security.md), so the
/// budget is small here, where millions of inputs run in one process.
const LIMITS: Limits = Limits {
    fuel: 50_000,
    output_bytes: 1 << 20,
    memory_bytes: 4 << 20,
    time: Duration::from_secs(5),
};

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = ChatTemplate::compile(source, Origin::Unnamed, &LIMITS) else {
        return;
    };
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello."),
        Message::new("user", "Capital of France?"),
    ];
    let opts = RenderOptions {
        add_generation_prompt: true,
        bos_token: "<s>",
        eos_token: "</s>",
        tools: None,
    };
    if let Ok(text) = template.render_within(&messages, &opts, LIMITS) {
        assert!(text.len() <= LIMITS.output_bytes);
    }
});
