//! Rendering tests: real chat templates of popular model families, with outputs taken from
//! jinja2 configured as transformers configures it.

use super::*;

/// SmolLM2-Instruct's `tokenizer.chat_template`, byte for byte.
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Meta-Llama-3-8B-Instruct's template: `bos_token`, `loop.index0`, `| trim` binding
/// tighter than `+`.
const LLAMA3: &str = r#"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}"#;

/// Gemma-3-it's template: system folded into the first user turn, `loop.first`,
/// `raise_exception` on roles that do not alternate, `is string`, `messages[1:]`.
const GEMMA3: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"#;

/// Qwen2.5-Instruct's template (tool-call branches for assistant turns cut), preceded by a
/// `set tools` so its `tools | tojson` branch runs: HF passes `tools = None` otherwise.
const QWEN25_WITH_TOOLS: &str = r#"{%- set tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in <city> & 'region'", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}] %}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

/// The date header of Llama-3.2-Instruct's template.
const LLAMA32_DATE: &str = r#"{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

/// jinja2 behaviours HF templates lean on: lenient undefined, Python methods, Python
/// `str()` output, `trim_blocks`/`lstrip_blocks`, no trailing newline.
const BEHAVIOURS: &str = r#"{% if foo is defined %}defined{% else %}undefined{% endif %}|{{ foo }}|{{ messages[0].missing }}|{{ tools }}|{{ documents is none }}
  {% for m in messages %}
[{{ m.content.strip() }}] {{ m.content.startswith('  Hi') }} {{ m.content.split() }} {{ m.role.upper() }}
  {% endfor %}
{% for k, v in {'b': 1, 'a': [true, none, 'x']}.items() %}{{ k }}={{ v }};{% endfor %}
{{ eos_token ~ '|' ~ (3 / 2) ~ '|' ~ add_generation_prompt | string }}
"#;

/// HF's `{% generation %}` marker (SmolLM3, OLMo) renders its body; modifiers still trim.
const GENERATION_TAG: &str = "{% for m in messages %}{%- generation -%}\n  {{ m.content }}\n{%- endgeneration %}\n!{% endfor %}";

/// 2023-11-14 22:13:20 UTC.
fn fixed_clock() -> Duration {
    Duration::from_secs(1_700_000_000)
}

fn render(source: &str, messages: &[Message], add_generation_prompt: bool) -> String {
    let opts = RenderOptions {
        add_generation_prompt,
        bos_token: "<s>",
        eos_token: "</s>",
        tools: None,
        reasoning_effort: None,
        enable_thinking: None,
    };
    let template = ChatTemplate::with_clock(source, Origin::Unnamed, fixed_clock).unwrap();
    template.render(messages, &opts).unwrap()
}

fn user(content: &str) -> Message {
    Message::new("user", content)
}

fn sys(content: &str) -> Message {
    Message::new("system", content)
}

fn assistant(content: &str) -> Message {
    Message::new("assistant", content)
}

const SMOLLM2_DEFAULT_SYSTEM: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

#[test]
fn smollm2_injects_default_system_turn_before_lone_user_message() {
    let messages = [user("What is the capital of France?")];
    let turn = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n";
    assert_eq!(
        render(SMOLLM2, &messages, true),
        format!("{SMOLLM2_DEFAULT_SYSTEM}{turn}<|im_start|>assistant\n")
    );
    assert_eq!(
        render(SMOLLM2, &messages, false),
        format!("{SMOLLM2_DEFAULT_SYSTEM}{turn}")
    );
}

#[test]
fn smollm2_keeps_given_system_turn_and_all_turns_in_order() {
    let messages = [
        sys("Answer briefly."),
        user("Hi"),
        assistant("Hello!"),
        user("Bye"),
    ];
    assert_eq!(
        render(SMOLLM2, &messages, true),
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        render(SMOLLM2, &messages[..2], false),
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
    assert_eq!(render(SMOLLM2, &[], true), "<|im_start|>assistant\n");
}

#[test]
fn llama3_prepends_bos_once_and_trims_only_the_content() {
    let messages = [sys("  Be terse.\n"), user("Hi there  ")];
    assert_eq!(
        render(LLAMA3, &messages, true),
        "<s><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        render(LLAMA3, &[user("Hi")], false),
        "<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    );
}

#[test]
fn gemma3_folds_system_into_first_user_turn_and_renames_assistant_to_model() {
    let messages = [
        sys("Be kind."),
        user(" Hi "),
        assistant("Hello"),
        user("Bye"),
    ];
    assert_eq!(
        render(GEMMA3, &messages, true),
        "<s><start_of_turn>user\nBe kind.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(
        render(GEMMA3, &[user("Hi")], false),
        "<s><start_of_turn>user\nHi<end_of_turn>\n"
    );
}

#[test]
fn raise_exception_fails_render_with_the_templates_message() {
    let template = ChatTemplate::new(GEMMA3).unwrap();
    let err = template
        .render(&[user("Hi"), user("again")], &RenderOptions::default())
        .unwrap_err();
    match err {
        Error::Raised { message, .. } => assert_eq!(
            message,
            "Conversation roles must alternate user/assistant/user/assistant/..."
        ),
        other => panic!("expected Error::Raised, got {other:?}"),
    }
}

#[test]
fn qwen25_tools_branch_prints_tojson_in_python_layout() {
    let messages = [
        user("Weather in Paris?"),
        Message::new("tool", "{\"temp\": 21}"),
        Message::new("tool", "sunny"),
    ];
    assert_eq!(
        render(QWEN25_WITH_TOOLS, &messages, true),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather in <city> & 'region'\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn tojson_keeps_key_order_and_escapes_no_html() {
    let source = r#"{{ {"z": "<a href='x'>&amp;</a>", "a": [1, none]} | tojson }}"#;
    assert_eq!(
        render(source, &[], false),
        r#"{"z": "<a href='x'>&amp;</a>", "a": [1, null]}"#
    );
}

#[test]
fn strftime_now_formats_the_clock_as_llama32_expects() {
    let messages = [sys(" Be terse. "), user("Hi")];
    assert_eq!(
        render(LLAMA32_DATE, &messages, true),
        "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 14 Nov 2023\n\nBe terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn undefined_is_lenient_python_methods_work_and_values_print_as_python_str() {
    let messages = [user("  Hi there \n"), assistant("Yo")];
    assert_eq!(
        render(BEHAVIOURS, &messages[..1], false),
        "undefined|||None|True\n[Hi there] True ['Hi', 'there'] USER\nb=1;a=[True, None, 'x'];</s>|1.5|False"
    );
    assert_eq!(
        render(BEHAVIOURS, &messages, true),
        "undefined|||None|True\n[Hi there] True ['Hi', 'there'] USER\n[Yo] False ['Yo'] ASSISTANT\nb=1;a=[True, None, 'x'];</s>|1.5|True"
    );
}

#[test]
fn length_of_undefined_is_zero_as_in_jinja2() {
    let source = "{{ messages[0].tool_calls | length }}|{{ messages | count }}|{{ 'é' | length }}";
    assert_eq!(render(source, &[user("Hi")], false), "0|1|1");
}

#[test]
fn generation_tags_render_their_body_and_source_is_kept_verbatim() {
    let template = ChatTemplate::new(GENERATION_TAG).unwrap();
    assert_eq!(template.source(), GENERATION_TAG);
    let messages = [user("a"), assistant("b")];
    assert_eq!(render(GENERATION_TAG, &messages, false), "a!b!");
}

#[test]
fn syntax_error_is_an_error_naming_its_line() {
    let err =
        ChatTemplate::new("{% for m in messages %}\n{{ m.content }\n{% endfor %}").unwrap_err();
    match &err {
        Error::Syntax { line, message, .. } => {
            assert_eq!(*line, Some(2));
            assert!(message.starts_with("syntax error"), "{message}");
        }
        other => panic!("expected Error::Syntax, got {other:?}"),
    }
    assert!(err.to_string().contains("at line 2"), "{err}");
}

#[test]
fn attribute_of_undefined_is_a_render_error_as_in_jinja2() {
    let template = ChatTemplate::new("ok\n{{ nothing.here }}").unwrap();
    let err = template.render(&[], &RenderOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Render { line: Some(2), .. }),
        "{err:?}"
    );
}

#[test]
fn chat_template_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
}

/// Every real template in this file and every shipped one.
fn real_templates() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![
        ("smollm2", SMOLLM2),
        ("llama3", LLAMA3),
        ("gemma3", GEMMA3),
        ("qwen25_tools", QWEN25_WITH_TOOLS),
        ("llama32_date", LLAMA32_DATE),
    ];
    all.extend_from_slice(BUILTIN);
    all
}

/// A conversation of `turns` user/assistant pairs after a system message, each `bytes` long.
fn long_conversation(turns: usize, bytes: usize) -> Vec<Message> {
    let text = "word ".repeat(bytes / 5);
    let mut messages = vec![sys("Be brief.")];
    for _ in 0..turns {
        messages.push(user(&text));
        messages.push(assistant(&text));
    }
    messages.push(user("last"));
    messages
}

const OPTS: RenderOptions = RenderOptions {
    add_generation_prompt: true,
    bos_token: "<s>",
    eos_token: "</s>",
    tools: None,
    reasoning_effort: None,
    enable_thinking: None,
};

#[test]
fn real_templates_render_long_conversations_within_a_tenth_of_the_fuel() {
    // 2,001 messages: the longest chats a context window holds have far fewer.
    for (turns, bytes) in [(1000, 40), (20, 200_000)] {
        let messages = long_conversation(turns, bytes);
        let input: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum();
        let mut limits = Limits::for_input(messages.len(), input + 7);
        limits.fuel /= 10;
        for (name, source) in real_templates() {
            let t = ChatTemplate::with_clock(source, Origin::Unnamed, fixed_clock).unwrap();
            let out = t.render_within(&messages, &OPTS, limits);
            let out = out.unwrap_or_else(|e| panic!("{name}, {turns} turns: {e}"));
            assert!(out.contains("last"), "{name}");
        }
    }
}

fn render_err(source: &str) -> Error {
    let t = ChatTemplate::with_origin(source, Origin::Model).unwrap();
    t.render(&[user("hi")], &OPTS).unwrap_err()
}

#[test]
fn nested_loops_run_out_of_fuel_quickly() {
    let start = std::time::Instant::now();
    let err = render_err(
        "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}",
    );
    assert!(matches!(err, Error::Limit { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("the model's chat template was stopped: it ran more than 2002"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn output_is_bounded_captured_or_not() {
    for source in [
        "{% for a in range(100000) %}{{ 'y' * 10000 }}{% endfor %}",
        "{% set x %}{% for a in range(100000) %}{{ 'y' * 10000 }}{% endfor %}{% endset %}{{ x|length }}",
        "{% macro m() %}{% for a in range(100000) %}{{ 'y' * 10000 }}{% endfor %}{% endmacro %}{{ m()|length }}",
    ] {
        let err = render_err(source);
        assert!(
            matches!(&err, Error::Limit { what, .. } if what.starts_with("wrote more than")
                && what.ends_with("rendering a conversation of 1 message(s)")),
            "{source}: {err:?}"
        );
    }
}

#[test]
fn indent_width_is_bounded() {
    for source in [
        "{{ 'a\nb'|indent(10000000000) }}",
        "{{ 'a\nb'|indent(width=5000000) }}",
    ] {
        let err = render_err(source);
        assert!(err.to_string().contains("indent width"), "{err}");
    }
    let t = ChatTemplate::new("{{ 'a\nb'|indent(2) }}").unwrap();
    assert_eq!(t.render(&[], &OPTS).unwrap(), "a\n  b");
}

#[test]
fn errors_name_the_templates_origin_and_escape_what_it_says() {
    let t = ChatTemplate::new(BUILTIN[0].1).unwrap();
    assert_eq!(t.origin(), &Origin::Builtin(BUILTIN[0].0));
    let err = render_err("{{ raise_exception('no\x1b[2J' ~ 'x' * 5000) }}");
    let text = err.to_string();
    assert!(
        text.starts_with("the model's chat template rejected the conversation: no\\u{1b}[2J"),
        "{text}"
    );
    assert!(text.len() < 1000, "{} bytes", text.len());
    let file = ChatTemplate::with_origin("{{", Origin::File("t.jinja".into())).unwrap_err();
    assert!(
        file.to_string()
            .starts_with("the chat template t.jinja does not compile"),
        "{file}"
    );
}

#[test]
fn deep_recursion_is_an_error_not_a_stack_overflow() {
    for source in [
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% macro f(n) %}{% for i in [1] %}{% if true %}{% with x = n %}{{ f(x + 1) }}{% endwith %}{% endif %}{% endfor %}{% endmacro %}{{ f(0) }}",
    ] {
        let err = render_err(source);
        assert!(matches!(err, Error::Render { .. } | Error::Limit { .. }), "{err:?}");
    }
}
