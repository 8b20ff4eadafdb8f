//! Chat templates shipped in `assets/templates/`: the fallback for models whose files carry
//! none (base checkpoints, old GGUFs), each family naming its default, and the names
//! `--chat-template NAME` accepts.

/// Every shipped template, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "chatml",
        include_str!("../../../assets/templates/chatml.jinja"),
    ),
    (
        "gemma",
        include_str!("../../../assets/templates/gemma.jinja"),
    ),
    (
        "gemma4",
        include_str!("../../../assets/templates/gemma4.jinja"),
    ),
    (
        "granite",
        include_str!("../../../assets/templates/granite.jinja"),
    ),
    (
        "harmony",
        include_str!("../../../assets/templates/harmony.jinja"),
    ),
    (
        "llama3",
        include_str!("../../../assets/templates/llama3.jinja"),
    ),
    (
        "mistral",
        include_str!("../../../assets/templates/mistral.jinja"),
    ),
    ("phi3", include_str!("../../../assets/templates/phi3.jinja")),
];

/// The source of the shipped template `name`.
pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The shipped templates' names, comma-separated (for help and errors).
pub fn builtin_names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::{ChatTemplate, Message, Origin, RenderOptions};
    use super::*;

    fn render(name: &str) -> String {
        let t = ChatTemplate::new(builtin(name).unwrap()).unwrap();
        let messages = [
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello."),
            Message::new("user", "Capital of France?"),
        ];
        t.render(
            &messages,
            &RenderOptions {
                add_generation_prompt: true,
                bos_token: "<s>",
                eos_token: "</s>",
                tools: None,
                reasoning_effort: None,
                enable_thinking: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn every_builtin_template_renders_a_conversation() {
        for (name, _) in BUILTIN {
            let out = render(name);
            assert!(out.contains("Capital of France?"), "{name}: {out}");
            assert!(out.contains("Be brief."), "{name}: {out}");
        }
        assert_eq!(
            render("gemma"),
            "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n\
             Hello.<end_of_turn>\n<start_of_turn>user\nCapital of France?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
        assert_eq!(
            render("chatml"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    /// The harmony fallback writes what OpenAI's gpt-oss template writes (compared byte for
    /// byte with it, llama.cpp's copy of `openai-gpt-oss-120b.jinja`, for these
    /// conversations): tools as a TypeScript namespace, a call and its result, the effort.
    #[test]
    fn harmony_template_writes_what_gpt_oss_own_writes() {
        fn clock() -> std::time::Duration {
            std::time::Duration::from_secs(1_764_892_800) // 2025-12-05
        }
        let t =
            ChatTemplate::with_clock(builtin("harmony").unwrap(), Origin::Unnamed, clock).unwrap();
        let tools = serde_json::json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
             "parameters": {"type": "object", "properties": {
                 "city": {"type": "string", "description": "The city"},
                 "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
                 "days": {"type": "integer"},
                 "tags": {"type": "array", "items": {"type": "string"}},
                 "exact": {"type": "boolean", "default": false}},
              "required": ["city"]}}},
            {"type": "function", "function": {"name": "now", "description": "The time",
             "parameters": {"type": "object", "properties": {}}}}
        ]);
        let mut call = Message::new("assistant", "");
        call.extra.insert(
            "tool_calls".into(),
            serde_json::json!([{"id": "c1", "type": "function",
                                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
        );
        let mut result = Message::new("tool", "{\"t\": 20}");
        result
            .extra
            .insert("tool_call_id".into(), serde_json::json!("c1"));
        let opts = RenderOptions {
            add_generation_prompt: true,
            tools: Some(&tools),
            reasoning_effort: Some("high"),
            ..RenderOptions::default()
        };
        let out = t
            .render(&[Message::new("user", "Weather?"), call, result], &opts)
            .unwrap();
        assert_eq!(
            out,
            "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n\
             Knowledge cutoff: 2024-06\nCurrent date: 2025-12-05\n\nReasoning: high\n\n\
             # Valid channels: analysis, commentary, final. Channel must be included for every message.\n\
             Calls to these tools must go to the commentary channel: 'functions'.<|end|>\
             <|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n\
             // Weather in a city\ntype get_weather = (_: {\n// The city\ncity: string,\n\
             unit?: \"c\" | \"f\", // default: c,\ndays?: number,\ntags?: string[],\n\
             exact?: boolean, // default: false,\n}) => any;\n\n// The time\ntype now = () => any;\n\n\
             } // namespace functions<|end|><|start|>user<|message|>Weather?<|end|>\
             <|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>\
             {\"city\": \"Paris\"}<|call|><|start|>functions.get_weather to=assistant<|channel|>\
             commentary<|message|>\"{\\\"t\\\": 20}\"<|end|><|start|>assistant"
        );
        let plain = t
            .render(
                &[
                    Message::new("system", "Be brief."),
                    Message::new("user", "Hi"),
                ],
                &RenderOptions {
                    add_generation_prompt: true,
                    ..RenderOptions::default()
                },
            )
            .unwrap();
        assert!(plain.contains("Reasoning: medium\n\n"), "{plain}");
        assert!(
            plain.ends_with(
                "<|start|>developer<|message|># Instructions\n\nBe brief.\n\n<|end|>\
                 <|start|>user<|message|>Hi<|end|><|start|>assistant"
            ),
            "{plain}"
        );
        assert!(crate::formats::harmony::detect(t.source()) && t.takes_reasoning_effort());
    }

    /// Gemma 4's own turns (compared with Google's `gemma-4-31B-it` template for plain
    /// conversations), not Gemma 3's; tool calls, which it does not write, are refused.
    #[test]
    fn gemma4_template_writes_gemma4_turns() {
        assert_eq!(
            render("gemma4"),
            "<s><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n\
             Hello.<turn|>\n<|turn>user\nCapital of France?<turn|>\n<|turn>model\n\
             <|channel>thought\n<channel|>"
        );
        let t = ChatTemplate::new(builtin("gemma4").unwrap()).unwrap();
        let err = t
            .render(&[Message::new("tool", "{}")], &RenderOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("tool"), "{err}");
        assert!(!t.takes_tools());
        // Thinking asked for: `<|think|>` in a system turn, and the channel left to the model.
        let thinking = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: Some(true),
            ..RenderOptions::default()
        };
        assert!(t.takes_enable_thinking());
        assert_eq!(
            t.render(&[Message::new("user", "Hi")], &thinking).unwrap(),
            "<|turn>system\n<|think|>\n<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n"
        );
    }
}
