"""The official openai and anthropic Python clients, unmodified, against `mlcli serve`.

    python3 serve_clients.py http://127.0.0.1:PORT

Prints one line per check; exits non-zero at the first failure."""

import sys

import anthropic
import openai

base = sys.argv[1]
oa = openai.OpenAI(base_url=base + "/v1", api_key="unused")
question = [{"role": "user", "content": "What is the capital of France?"}]

whole = oa.chat.completions.create(model="m", messages=question, max_tokens=12, temperature=0)
text = whole.choices[0].message.content
assert text, whole
assert whole.choices[0].finish_reason in ("stop", "length"), whole
assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
print("openai chat:", repr(text))

parts, usage = [], None
for chunk in oa.chat.completions.create(model="m", messages=question, max_tokens=12,
                                        temperature=0, stream=True,
                                        stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert "".join(parts) == text, (parts, text)
assert usage and usage.completion_tokens == whole.usage.completion_tokens, usage
print("openai stream: same text, usage", usage.completion_tokens)

comp = oa.completions.create(model="m", prompt="The capital of France is", max_tokens=4,
                             temperature=0)
assert isinstance(comp.choices[0].text, str), comp
print("openai completion:", repr(comp.choices[0].text))

models = oa.models.list()
assert len(models.data) == 1, models
print("openai models:", models.data[0].id)

try:
    oa.chat.completions.create(model="m", messages=question, n=3)
    raise AssertionError("n=3 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and "n = 1" in str(e), e
    print("openai error: 400", e.body["param"] if isinstance(e.body, dict) else e.body)

import jsonschema

# Bounded, so that the answer always ends before max_tokens (a reply cut by max_tokens is
# incomplete JSON, with finish_reason "length", as OpenAI's is).
schema = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 20},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
structured = oa.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "Invent a person."}], max_tokens=200,
    temperature=0.7, seed=1,
    response_format={"type": "json_schema",
                     "json_schema": {"name": "person", "strict": True, "schema": schema}})
import json
assert structured.choices[0].finish_reason == "stop", structured
person = json.loads(structured.choices[0].message.content)
jsonschema.validate(person, schema)
print("openai json_schema: valid", person)

weather = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 40},
                          "unit": {"type": "string", "enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
tooled = oa.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    max_tokens=200, temperature=0.7, seed=1,
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": weather}}],
    tool_choice={"type": "function", "function": {"name": "get_weather"}})
assert tooled.choices[0].finish_reason == "tool_calls", tooled
call = tooled.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather", call
jsonschema.validate(json.loads(call.function.arguments), weather)
print("openai tool call: valid", call.function.arguments)

an = anthropic.Anthropic(base_url=base, api_key="unused")
msg = an.messages.create(model="m", max_tokens=10, system="Answer briefly.",
                         messages=[{"role": "user", "content": "Hi"}],
                         extra_body={"temperature": 0})
assert msg.content[0].type == "text" and msg.stop_reason in ("end_turn", "max_tokens"), msg
print("anthropic message:", repr(msg.content[0].text))

with an.messages.stream(model="m", max_tokens=10, system="Answer briefly.",
                        messages=[{"role": "user", "content": "Hi"}],
                         extra_body={"temperature": 0}) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
assert streamed == msg.content[0].text, (streamed, msg.content[0].text)
assert final.usage.output_tokens == msg.usage.output_tokens, final
print("anthropic stream: same text,", final.stop_reason)

with an.messages.stream(model="m", max_tokens=200,
                        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                        tools=[{"name": "get_weather", "description": "The weather in a city",
                                "input_schema": weather}],
                        tool_choice={"type": "tool", "name": "get_weather"}) as s:
    final = s.get_final_message()
uses = [b for b in final.content if b.type == "tool_use"]
assert final.stop_reason == "tool_use" and len(uses) == 1, final
jsonschema.validate(uses[0].input, weather)
print("anthropic streamed tool use: valid", uses[0].input)

lp = oa.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0,
    logprobs=True, top_logprobs=2)
entries = lp.choices[0].logprobs.content
assert len(entries) == lp.usage.completion_tokens, lp
assert all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries), entries
print("openai logprobs:", [(e.token, round(e.logprob, 3)) for e in entries])
