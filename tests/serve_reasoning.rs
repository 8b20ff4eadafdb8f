//! `mlcli serve` with the reasoning formats: forced tool calls in gpt-oss's harmony and Gemma
//! 4's call syntax (held to the tool's schema), `reasoning_effort` and `enable_thinking`
//! reaching the templates that read them, and no channel marker leaking into a reply.

mod support;

use serde_json::{json, Value};
use support::serve::{post, post_text, weather_tool, Served};

/// `body` sent to a server with the default template (which reads neither reasoning field):
/// a 400 whose message names `field`.
fn refused_by_the_default_template(body: &Value, field: &str) {
    let s = Served::start(&[]);
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", body);
    assert_eq!(status, 400, "{text}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(field),
        "{text}"
    );
}

/// A forced call in the format `template` teaches, whole: the call's name and arguments.
fn forced_call(template: &str) -> (String, Value) {
    let s = Served::start(&["--chat-template", template]);
    let body = json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                      "max_tokens": 100, "tools": weather_tool(), "temperature": 0,
                      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{text}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{text}");
    assert!(choice["message"]["content"].is_null(), "{text}");
    assert!(
        choice["message"].get("reasoning_content").is_none(),
        "{text}"
    );
    let call = &choice["message"]["tool_calls"][0]["function"];
    let args = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    (call["name"].as_str().unwrap().to_string(), args)
}

#[test]
fn forced_harmony_and_gemma4_calls_come_back_as_tool_calls() {
    // gpt-oss's format (the shipped harmony template): a message to functions.get_weather,
    // its JSON arguments held to the tool's schema.
    let (name, args) = forced_call("harmony");
    assert_eq!(name, "get_weather");
    assert!(
        args["city"].is_string() && ["c", "f"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    // Gemma 4's format, from a template that teaches it: `call:get_weather{…}` in Gemma's
    // own argument syntax, turned into JSON.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma4-tools.jinja");
    std::fs::write(
        &path,
        "{% for m in messages %}<|turn>{{ m.role }}\n{{ m.content }}<turn|>\n{% endfor %}\
         {% if tools %}<|tool_call>call:NAME{}<tool_call|>{% endif %}<|turn>model\n",
    )
    .unwrap();
    // The arguments are held to the tool's schema there too: both keys, the enum, the length.
    let (name, args) = forced_call(path.to_str().unwrap());
    assert_eq!(name, "get_weather");
    let city = args["city"].as_str().unwrap_or_else(|| panic!("{args}"));
    assert!(city.chars().count() <= 40, "{args}");
    assert!(
        ["c", "f"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    assert_eq!(args.as_object().unwrap().len(), 2, "{args}");
}

#[test]
fn reasoning_effort_reaches_the_harmony_template_and_is_refused_by_others() {
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                      "reasoning_effort": "low"});
    let s = Served::start(&["--chat-template", "harmony"]);
    let (status, _, text) = post(&s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{text}");
    let mut bad = body.clone();
    bad["reasoning_effort"] = json!("extreme");
    let (status, _, text) = post(&s.addr, "/v1/chat/completions", &bad);
    assert_eq!(status, 400, "{text}");
    refused_by_the_default_template(&body, "reasoning_effort");
}

#[test]
fn enable_thinking_reaches_the_gemma4_template_and_is_refused_by_others() {
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
                      "temperature": 0, "chat_template_kwargs": {"enable_thinking": true}});
    let s = Served::start(&["--chat-template", "gemma4"]);
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{text}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(!content.contains("channel"), "{text}");
    // Streamed: no marker in any chunk.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, text) = post_text(&s.addr, "/v1/chat/completions", &streamed);
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.contains("<|channel>") && !text.contains("<channel|>"),
        "{text}"
    );
    let anthropic = json!({"model": "m", "max_tokens": 8, "messages": body["messages"],
                           "thinking": {"type": "enabled", "budget_tokens": 4}});
    let (status, _, text) = post(&s.addr, "/v1/messages", &anthropic);
    assert_eq!(status, 200, "{text}");
    let mut bad = body.clone();
    bad["chat_template_kwargs"] = json!({"enable_thinking": "yes"});
    let (status, v, text) = post(&s.addr, "/v1/chat/completions", &bad);
    assert_eq!(
        (status, &v["error"]["param"]),
        (400, &json!("chat_template_kwargs")),
        "{text}"
    );
    refused_by_the_default_template(&body, "enable_thinking");
}
