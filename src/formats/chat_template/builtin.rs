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
        "granite",
        include_str!("../../../assets/templates/granite.jinja"),
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
    use super::super::{ChatTemplate, Message, RenderOptions};
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
}
