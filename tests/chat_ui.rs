//! The chat UI's state machine and screen, driven by scripted key and engine messages:
//! `App::update` transitions are asserted on state, and whole screens are snapshot on
//! ratatui's `TestBackend`.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mlcli::engine::{GenerateParams, Message, SamplingParams, StopReason};
use mlcli::ui::app::{App, Effect, Level, ModelCard, Msg};
use mlcli::ui::transcript::Transcript;
use mlcli::ui::view;
use mlcli::ui::worker::{Event, Summary};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn app() -> App {
    let params = GenerateParams {
        sampling: SamplingParams {
            seed: 7,
            ..SamplingParams::default()
        },
        ..GenerateParams::default()
    };
    App::new(
        ModelCard {
            name: "SmolLM2 135M".into(),
            family: "llama".into(),
            device: "cpu".into(),
            ctx_size: 2048,
            template: "{{ messages }}".into(),
        },
        params,
        None,
    )
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        assert!(app.update(key(KeyCode::Char(c))).is_empty());
    }
}

fn summary(prompt: usize, reused: usize, ctx_used: usize) -> Summary {
    Summary {
        prompt_tokens: prompt,
        reused_tokens: reused,
        prompt_tok_per_s: 321.5,
        generated_tokens: 9,
        gen_tok_per_s: 42.0,
        ttft_ms: 120.0,
        stop_reason: StopReason::EndOfGeneration,
        ctx_used,
    }
}

/// Types `question`, sends it, streams `answer` and finishes.
fn exchange(app: &mut App, question: &str, answer: &str) {
    type_text(app, question);
    let effects = app.update(key(KeyCode::Enter));
    assert!(matches!(effects.as_slice(), [Effect::Generate(..)]));
    for piece in answer.split_inclusive(' ') {
        app.update(Msg::Engine(Event::Text(piece.into())));
    }
    app.update(Msg::Engine(Event::Finished(summary(40, 0, 50))));
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::draw(f, app)).unwrap();
    format!("{}", t.backend())
}

#[test]
fn typing_and_enter_sends_the_conversation_and_streams_the_reply() {
    let mut a = app();
    a.system = Some("Be brief.".into());
    type_text(&mut a, "Hi there");
    let effects = a.update(key(KeyCode::Enter));
    let [Effect::Generate(messages, _)] = effects.as_slice() else {
        panic!("expected one Generate, got {effects:?}")
    };
    assert_eq!(
        messages,
        &vec![
            Message::new("system", "Be brief."),
            Message::new("user", "Hi there")
        ]
    );
    assert!(a.busy() && a.input.is_empty());
    a.update(Msg::Engine(Event::Text("Hel".into())));
    a.update(Msg::Engine(Event::Text("lo!".into())));
    assert_eq!(a.reply.as_deref(), Some("Hello!"));
    assert_eq!(
        a.update(Msg::Engine(Event::Finished(summary(20, 0, 30)))),
        vec![Effect::Changed]
    );
    assert!(!a.busy());
    assert_eq!(
        a.messages.last(),
        Some(&Message::new("assistant", "Hello!"))
    );
    assert_eq!(a.ctx_used, 30);
}

#[test]
fn esc_and_ctrl_c_cancel_a_reply_and_keep_what_was_produced() {
    let mut a = app();
    type_text(&mut a, "Tell me a story");
    a.update(key(KeyCode::Enter));
    a.update(Msg::Engine(Event::Text("Once upon".into())));
    assert_eq!(a.update(key(KeyCode::Esc)), vec![Effect::Cancel]);
    assert_eq!(a.update(ctrl('c')), vec![Effect::Cancel]);
    assert!(!a.quit, "Ctrl+C during a reply must not quit");
    let mut s = summary(10, 0, 12);
    s.stop_reason = StopReason::Cancelled;
    a.update(Msg::Engine(Event::Finished(s)));
    assert_eq!(
        a.messages.last(),
        Some(&Message::new("assistant", "Once upon"))
    );
    assert_eq!(a.update(ctrl('c')), vec![Effect::Quit]);
    assert!(a.quit);
}

#[test]
fn alt_enter_and_paste_make_one_multiline_message() {
    let mut a = app();
    type_text(&mut a, "first");
    a.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)));
    a.update(Msg::Paste("pasted\nblock".into()));
    assert_eq!(a.input.text(), "first\npasted\nblock");
    let effects = a.update(key(KeyCode::Enter));
    let [Effect::Generate(m, _)] = effects.as_slice() else {
        panic!()
    };
    assert_eq!(m[0].content, "first\npasted\nblock");
}

#[test]
fn regen_drops_the_last_reply_and_asks_again() {
    let mut a = app();
    exchange(&mut a, "Q1", "A1");
    type_text(&mut a, "/regen");
    let effects = a.update(key(KeyCode::Enter));
    let [Effect::Generate(m, _)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(m, &vec![Message::new("user", "Q1")]);
    assert_eq!(a.messages, vec![Message::new("user", "Q1")]);
}

#[test]
fn edit_puts_the_last_question_back_in_the_input() {
    let mut a = app();
    exchange(&mut a, "Q1", "A1");
    exchange(&mut a, "Q2", "A2");
    type_text(&mut a, "/edit");
    a.update(key(KeyCode::Enter));
    assert_eq!(a.input.text(), "Q2");
    assert_eq!(a.messages.len(), 2);
    type_text(&mut a, "!");
    let effects = a.update(key(KeyCode::Enter));
    let [Effect::Generate(m, _)] = effects.as_slice() else {
        panic!()
    };
    assert_eq!(m.last(), Some(&Message::new("user", "Q2!")));
}

#[test]
fn set_show_and_unknown_commands() {
    let mut a = app();
    type_text(&mut a, "/set temp 0.2");
    a.update(key(KeyCode::Enter));
    assert_eq!(a.params.sampling.temperature, 0.2);
    type_text(&mut a, "/set max_tokens 64");
    a.update(key(KeyCode::Enter));
    assert_eq!(a.params.max_tokens, Some(64));
    type_text(&mut a, "/set temp hot");
    a.update(key(KeyCode::Enter));
    assert!(matches!(&a.banner, Some((Level::Error, m)) if m.contains("temp")));
    type_text(&mut a, "/show template");
    a.update(key(KeyCode::Enter));
    assert_eq!(
        a.overlay.as_ref().map(|o| o.body.as_str()),
        Some("{{ messages }}")
    );
    a.update(key(KeyCode::Esc));
    assert!(a.overlay.is_none());
    type_text(&mut a, "/bogus");
    a.update(key(KeyCode::Enter));
    assert!(matches!(&a.banner, Some((Level::Error, m)) if m.contains("/help")));
}

#[test]
fn clear_save_and_load_go_through_effects() {
    let mut a = app();
    exchange(&mut a, "Q1", "A1");
    type_text(&mut a, "/save out.json");
    let effects = a.update(key(KeyCode::Enter));
    let [Effect::Save(path, t)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(path, "out.json");
    assert_eq!(t.messages.len(), 2);
    let saved: Transcript = t.clone();
    type_text(&mut a, "/clear");
    assert_eq!(
        a.update(key(KeyCode::Enter)),
        vec![Effect::ResetEngine, Effect::Changed]
    );
    assert!(a.messages.is_empty());
    assert_eq!(
        a.update(Msg::Loaded(Ok(saved))),
        vec![Effect::ResetEngine, Effect::Changed]
    );
    assert_eq!(a.messages.len(), 2);
}

#[test]
fn too_long_gives_the_message_back_and_offers_drop_or_clear() {
    let mut a = app();
    exchange(&mut a, "Q1", "A1");
    type_text(&mut a, "a very long question");
    a.update(key(KeyCode::Enter));
    a.update(Msg::Engine(Event::TooLong {
        needed: 3000,
        ctx_size: 2048,
    }));
    assert!(!a.busy());
    assert_eq!(a.input.text(), "a very long question");
    assert_eq!(a.messages.len(), 2);
    assert!(
        matches!(&a.banner, Some((Level::Warning, m)) if m.contains("/drop") && m.contains("/clear"))
    );
    a.update(ctrl('u'));
    type_text(&mut a, "/drop");
    a.update(key(KeyCode::Enter));
    assert!(a.messages.is_empty());
}

#[test]
fn engine_errors_show_a_banner_and_lose_nothing() {
    let mut a = app();
    type_text(&mut a, "hello");
    a.update(key(KeyCode::Enter));
    a.update(Msg::Engine(Event::Failed("tokenizer: boom".into())));
    assert_eq!(a.input.text(), "hello");
    assert!(a.messages.is_empty());
    assert!(matches!(&a.banner, Some((Level::Error, m)) if m == "tokenizer: boom"));
}

#[test]
fn history_recalls_earlier_inputs_and_tab_completes() {
    let mut a = app();
    exchange(&mut a, "first question", "A");
    exchange(&mut a, "second question", "B");
    a.update(key(KeyCode::Up));
    assert_eq!(a.input.text(), "second question");
    a.update(key(KeyCode::Up));
    assert_eq!(a.input.text(), "first question");
    a.update(key(KeyCode::Down));
    a.update(key(KeyCode::Down));
    assert!(a.input.is_empty());
    type_text(&mut a, "/reg");
    a.update(key(KeyCode::Tab));
    assert_eq!(a.input.text(), "/regen");
}

#[test]
fn ctrl_d_on_empty_input_and_quit_command_leave() {
    let mut a = app();
    assert_eq!(a.update(ctrl('d')), vec![Effect::Quit]);
    let mut b = app();
    type_text(&mut b, "/quit");
    assert_eq!(b.update(key(KeyCode::Enter)), vec![Effect::Quit]);
}

#[test]
fn context_gauge_moves_while_a_reply_streams() {
    let mut a = app();
    exchange(&mut a, "Hi", "Hello!");
    assert_eq!(a.ctx_used, 50);
    type_text(&mut a, "And then?");
    a.update(key(KeyCode::Enter));
    let mut seen = Vec::new();
    for used in 61..=64 {
        a.update(Msg::Engine(Event::Progress(used)));
        a.update(Msg::Engine(Event::Text("x".into())));
        seen.push(a.ctx_used);
        assert!(screen(&a, 80, 16).contains(&format!("ctx {used}/2048")));
    }
    assert_eq!(seen, [61, 62, 63, 64]);
    let mut s = summary(60, 50, 64);
    s.stop_reason = StopReason::MaxTokens;
    a.update(Msg::Engine(Event::Finished(s)));
    assert_eq!(a.ctx_used, 64);
    assert!(
        matches!(&a.banner, Some((Level::Info, m)) if m.contains("max_tokens")),
        "a reply cut short says so: {:?}",
        a.banner
    );
    // A late progress event after the reply does not move the gauge.
    a.update(Msg::Engine(Event::Progress(99)));
    assert_eq!(a.ctx_used, 64);
}

#[test]
fn set_dry_and_show_params_with_their_sources() {
    let mut a = app();
    type_text(&mut a, "/set dry_multiplier 0.8");
    a.update(key(KeyCode::Enter));
    assert_eq!(a.params.sampling.dry.multiplier, 0.8);
    type_text(&mut a, "/set dry_base 0.5");
    a.update(key(KeyCode::Enter));
    assert!(
        matches!(&a.banner, Some((Level::Error, m)) if m.contains("dry_base") && m.contains("1 or more")),
        "{:?}",
        a.banner
    );
    assert_eq!(
        a.params.sampling.dry.base, 1.75,
        "a refused value changes nothing"
    );
    type_text(&mut a, "/show params");
    a.update(key(KeyCode::Enter));
    let body = a
        .overlay
        .as_ref()
        .map(|o| o.body.clone())
        .unwrap_or_default();
    let line = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("dry_multiplier").contains("0.8") && line("dry_multiplier").ends_with("(/set)"),
        "{body}"
    );
    assert!(line("dry_base").ends_with("(mlcli default)"), "{body}");
    assert!(line("max_tokens").contains("none"), "{body}");
}

#[test]
fn screen_empty_chat() {
    insta::assert_snapshot!(screen(&app(), 80, 16));
}

#[test]
fn screen_streaming_mid_reply() {
    let mut a = app();
    type_text(&mut a, "What is the capital of France?");
    a.update(key(KeyCode::Enter));
    for (used, piece) in [(21, "The"), (22, " capital"), (23, " of")] {
        a.update(Msg::Engine(Event::Progress(used)));
        a.update(Msg::Engine(Event::Text(piece.into())));
    }
    insta::assert_snapshot!(screen(&a, 80, 16));
}

#[test]
fn screen_finished_reply_with_stats_and_code_block() {
    let mut a = app();
    exchange(
        &mut a,
        "Show me hello world in Rust",
        "Here:\n```rust\nfn main() {\n    println!(\"hi\");\n}\n```\nDone.",
    );
    insta::assert_snapshot!(screen(&a, 80, 20));
}

#[test]
fn screen_error_banner() {
    let mut a = app();
    type_text(&mut a, "/nope");
    a.update(key(KeyCode::Enter));
    insta::assert_snapshot!(screen(&a, 80, 12));
}

#[test]
fn screen_narrow_terminal() {
    let mut a = app();
    exchange(
        &mut a,
        "Why is the sky blue?",
        "Because of Rayleigh scattering of sunlight by the air.",
    );
    insta::assert_snapshot!(screen(&a, 40, 12));
}

#[test]
fn screen_long_transcript_scrolled() {
    let mut a = app();
    for i in 0..8 {
        exchange(&mut a, &format!("question {i}"), &format!("answer {i}"));
    }
    a.update(key(KeyCode::PageUp));
    insta::assert_snapshot!(screen(&a, 60, 14));
}

#[test]
fn screen_help_overlay() {
    let mut a = app();
    type_text(&mut a, "/help");
    a.update(key(KeyCode::Enter));
    insta::assert_snapshot!(screen(&a, 100, 26));
}

#[test]
fn a_harmony_reply_shows_its_final_channel_with_the_reasoning_folded() {
    let mut a = App::new(
        ModelCard {
            name: "gpt-oss".into(),
            family: "gpt_oss".into(),
            device: "cpu".into(),
            ctx_size: 2048,
            template: mlcli::formats::chat_template::builtin("harmony")
                .unwrap()
                .into(),
        },
        GenerateParams::default(),
        None,
    );
    exchange(
        &mut a,
        "Capital of France?",
        "<|channel|>analysis<|message|>The user asks a simple fact. Answer briefly.<|end|>\
         <|start|>assistant<|channel|>final<|message|>Paris.",
    );
    let reply = &a.messages[1];
    assert_eq!(reply.content, "Paris.");
    assert_eq!(
        reply.extra["thinking"],
        "The user asks a simple fact. Answer briefly."
    );
    let folded = screen(&a, 60, 10);
    assert!(!folded.contains("simple fact"), "{folded}");
    insta::assert_snapshot!("harmony_folded", folded);
    assert!(a.update(ctrl('r')).is_empty());
    let shown = screen(&a, 60, 10);
    assert!(
        shown.contains("simple fact") && !shown.contains("<|"),
        "{shown}"
    );
    insta::assert_snapshot!("harmony_unfolded", shown);
}

#[test]
fn a_gemma4_reply_shows_its_answer_with_the_thought_folded() {
    let mut a = App::new(
        ModelCard {
            name: "gemma4".into(),
            family: "gemma4".into(),
            device: "cpu".into(),
            ctx_size: 2048,
            template: mlcli::formats::chat_template::builtin("gemma4")
                .unwrap()
                .into(),
        },
        GenerateParams::default(),
        None,
    );
    // The markers may be special tokens: the chat decodes them as text for the splitter.
    assert!(a.params.render_special);
    exchange(
        &mut a,
        "Capital of France?",
        "<|channel>thought\nA simple fact.<channel|>Paris.",
    );
    let reply = &a.messages[1];
    assert_eq!(reply.content, "Paris.");
    assert_eq!(reply.extra["thinking"], "A simple fact.");
    let folded = screen(&a, 60, 10);
    assert!(
        !folded.contains("simple fact") && !folded.contains("channel"),
        "{folded}"
    );
    assert!(a.update(ctrl('r')).is_empty());
    let shown = screen(&a, 60, 10);
    assert!(
        shown.contains("simple fact") && !shown.contains("<|"),
        "{shown}"
    );
}
