"""The OpenAI-compatible provider through the real `openai` SDK against the fake model server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from anima import gitstore
from anima.agent import Agent
from anima.errors import ContextOverflow, ProviderError
from anima.home import Home
from anima.llm import registry
from anima.llm.base import ChatRequest, Completed, Retrying, TextDelta, ToolCall, ToolSpec
from anima.llm.openai_provider import (
    INVALID_ARGUMENTS,
    OpenAIProvider,
    OpenAISettings,
    to_openai_messages,
    wire_id,
)
from anima.runtime import run_once
from anima.testing import FakeModelServer, Fault, Reply
from anima.testing.fake_model import anthropic_problem, openai_problem
from tests.conftest import make_agent, send, set_toml
from tests.test_compaction import scripted_model

ANTHROPIC_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # with fullmatch: "$" would allow a "\n"
TOOL = ToolSpec("write_file", "Write a file.", {"type": "object", "properties": {}})


def provider(fake: FakeModelServer, **settings: str) -> OpenAIProvider:
    values = {"base_url": f"{fake.url}/v1", "api_key_env": "", **settings}
    return OpenAIProvider("local", OpenAISettings(**values), timeout=10.0)


def ask(text: str, history: list[dict[str, Any]] | None = None) -> ChatRequest:
    user = {"role": "user", "content": [{"type": "text", "text": text}]}
    return ChatRequest("fake-model", ["persona", "memory"], [*(history or []), user], [TOOL])


def run(p: OpenAIProvider, request: ChatRequest) -> list[Any]:
    return list(p.stream(request))


def test_history_translates_to_chat_completions_exactly() -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "write_file", "input": {"path": "a"}}
    bad = {"type": "tool_use", "id": "toolu_2", "name": "read_file", "input": {}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Writing."}, use, bad]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "written"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "no",
                    "is_error": True,
                },
                {"type": "text", "text": "and then?"},
            ],
        },
    ]
    out = to_openai_messages(ChatRequest("m", ["persona", "", "memory"], messages))
    assert out == [
        {"role": "system", "content": "persona\n\nmemory"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "Writing.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "write_file", "arguments": '{"path": "a"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "written"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "ERROR: no"},
        {"role": "user", "content": "and then?"},
    ]


def test_ids_from_elsewhere_that_openai_would_refuse_are_mapped_the_same_for_call_and_result() -> (
    None
):
    odd = "call:1/" + "x" * 50
    messages = [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": odd, "name": "t", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": odd, "content": "ok"}]},
    ]
    call, result = to_openai_messages(ChatRequest("m", [], messages))
    assert call["tool_calls"][0]["id"] == result["tool_call_id"] == wire_id(odd)
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", result["tool_call_id"])
    assert wire_id("toolu_01AbC") == "toolu_01AbC"


def test_text_streams_and_usage_reaches_completed(fake: FakeModelServer) -> None:
    fake.add(Reply("streamed in small pieces", chunk=4))
    events = run(provider(fake), ask("hello"))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 5 and "".join(deltas) == "streamed in small pieces"
    done = events[-1]
    assert isinstance(done, Completed)
    assert done.content == [{"type": "text", "text": "streamed in small pieces"}]
    assert done.stop_reason == "end_turn" and done.model == "fake-model"
    assert done.tokens_in > 0 and done.tokens_out > 0
    body = fake.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 1024 and "max_completion_tokens" not in body
    assert body["tools"][0]["function"]["name"] == "write_file"
    assert fake.requests[0].path == "/v1/chat/completions"


def test_tool_call_is_assembled_from_argument_fragments(fake: FakeModelServer) -> None:
    args = {"path": "notes/a long file name.txt", "content": "alpha " * 10}
    fake.add(Reply("Writing.", tool_calls=[{"name": "write_file", "input": args}]))
    events = run(provider(fake), ask("write"))
    (call,) = [e for e in events if isinstance(e, ToolCall)]
    assert call.name == "write_file" and call.input == args
    done = events[-1]
    assert done.stop_reason == "tool_use"
    assert done.content[1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "write_file",
        "input": args,
    }


def test_invalid_json_arguments_are_kept_and_the_history_stays_valid(
    fake: FakeModelServer,
) -> None:
    raw = '{"path": "a.txt", "content": "cut off'
    fake.add(Reply(tool_calls=[{"name": "write_file", "arguments": raw}]), Reply("retrying"))
    p = provider(fake)
    first = run(p, ask("write"))
    (call,) = [e for e in first if isinstance(e, ToolCall)]
    assert call.input == {INVALID_ARGUMENTS: raw}
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "bad", "is_error": True}
    history = [
        {"role": "assistant", "content": first[-1].content},
        {"role": "user", "content": [result]},
    ]
    request = ask("go on", history)
    assert anthropic_problem({"messages": request.messages}) is None
    second = run(p, request)  # the fake refuses a malformed history, as OpenAI would
    assert second[-1].content == [{"type": "text", "text": "retrying"}]
    replayed = fake.requests[1].body["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(replayed) == {INVALID_ARGUMENTS: raw}


@pytest.mark.parametrize("server_id", ["", "call 1/2", "x" * 80, "toolu_seen", "call_1\n"])
def test_missing_odd_or_reused_ids_are_replaced_by_ids_both_apis_accept(
    fake: FakeModelServer, server_id: str
) -> None:
    seen = {"type": "tool_use", "id": "toolu_seen", "name": "write_file", "input": {}}
    answer = {"type": "tool_result", "tool_use_id": "toolu_seen", "content": "ok"}
    history = [{"role": "assistant", "content": [seen]}, {"role": "user", "content": [answer]}]
    calls = [{"name": "write_file", "input": {}, "id": server_id}] * 2
    fake.add(Reply(tool_calls=calls))
    events = run(provider(fake), ask("again", history))
    ids = [e.id for e in events if isinstance(e, ToolCall)]
    assert len(set(ids)) == 2 and "toolu_seen" not in ids
    assert all(ANTHROPIC_ID.fullmatch(i) for i in ids)


def test_a_good_server_id_is_kept(fake: FakeModelServer) -> None:
    fake.add(Reply(tool_calls=[{"name": "write_file", "input": {}, "id": "call_abc123"}]))
    (call,) = [e for e in run(provider(fake), ask("x")) if isinstance(e, ToolCall)]
    assert call.id == "call_abc123"


def test_unset_key_variable_is_named_and_empty_means_no_key(
    fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANIMA_TEST_OPENAI_KEY", raising=False)
    with pytest.raises(ProviderError, match="set ANIMA_TEST_OPENAI_KEY"):
        provider(fake, api_key_env="ANIMA_TEST_OPENAI_KEY")
    monkeypatch.setenv("ANIMA_TEST_OPENAI_KEY", "sk-test")
    run(provider(fake, api_key_env="ANIMA_TEST_OPENAI_KEY"), ask("hi"))
    run(provider(fake), ask("hi"))
    keyed, keyless = (r.headers["authorization"] for r in fake.requests)
    assert keyed == "Bearer sk-test" and keyless.startswith("Bearer ")


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (408, True), (503, True), (400, False), (404, False)]
)
def test_status_errors_are_retryable_or_not_with_retry_after(
    fake: FakeModelServer, status: int, retryable: bool
) -> None:
    fake.add(Reply(fault=Fault(status=status, retry_after=1.5, message="nope")))
    with pytest.raises(ProviderError) as info:
        run(provider(fake), ask("hi"))
    err = info.value
    assert not isinstance(err, ContextOverflow)
    assert err.retryable is retryable and err.retry_after == 1.5
    assert f"local: API error {status}: nope" in str(err)


def test_context_overflow_is_recognised(fake: FakeModelServer) -> None:
    fake.context_chars = 200
    with pytest.raises(ContextOverflow, match="context_length_exceeded"):
        run(provider(fake), ask("x" * 400))


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Request too large for this model", "context_length_exceeded"),
        ("the request exceeds the available context size, try increasing it", ""),
        ("request rejected", "exceed_context_size_error"),
    ],
)
def test_context_overflow_is_recognised_by_code_or_local_server_wording(
    fake: FakeModelServer, message: str, code: str
) -> None:
    fake.add(Reply(fault=Fault(status=400, message=message, code=code)))
    with pytest.raises(ContextOverflow):
        run(provider(fake), ask("hi"))


def test_cut_stream_is_a_retryable_error(fake: FakeModelServer) -> None:
    fake.add(Reply("partial text that is cut", fault=Fault(cut=True)))
    with pytest.raises(ProviderError) as info:
        run(provider(fake), ask("hi"))
    assert info.value.retryable


def test_unreachable_server_is_a_retryable_error(fake: FakeModelServer) -> None:
    url = fake.url
    fake.stop()
    p = OpenAIProvider("local", OpenAISettings(base_url=f"{url}/v1", api_key_env=""), 2.0)
    with pytest.raises(ProviderError, match="local: API unreachable") as info:
        run(p, ask("hi"))
    assert info.value.retryable


def test_warm_runs_a_canned_stream_without_the_network(fake: FakeModelServer) -> None:
    provider(fake).warm()
    assert fake.requests == []


def test_fake_server_refuses_tool_histories_a_real_server_would() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    orphan = [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "c1", "content": ""},
    ]
    unanswered = [assistant, {"role": "user", "content": "hi"}]
    assert "must be a response" in str(openai_problem({"model": "m", "messages": orphan}))
    assert "did not have response" in str(openai_problem({"model": "m", "messages": unanswered}))
    good = [assistant, {"role": "tool", "tool_call_id": "c1", "content": ""}]
    assert openai_problem({"model": "m", "messages": good}) is None
    use = {"type": "tool_use", "id": "call:1", "name": "t", "input": {}}
    assert "pattern" in str(
        anthropic_problem({"messages": [{"role": "assistant", "content": [use]}]})
    )


def test_fake_server_lists_models(fake: FakeModelServer) -> None:
    p = provider(fake)
    assert [m.id for m in p._client.models.list()] == ["fake"]


# -- whole turns: an agent on a named OpenAI-compatible endpoint ---------------------------------


def add_endpoint(home: Home, name: str, url: str, **values: str) -> None:
    """Append a `[providers.NAME]` table of kind "openai" to anima.toml, as a person would."""
    table = {"kind": "openai", "base_url": f"{url}/v1", "api_key_env": "", **values}
    lines = [f"[providers.{name}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    with open(home.config_path, "a") as fh:
        fh.write("\n" + "\n".join(lines) + "\n")


def trailers(agent: Agent) -> dict[str, str]:
    return gitstore.log(agent.path, limit=1)[0].trailers


def test_agent_on_a_named_endpoint_calls_a_tool_and_answers(
    home: Home, fake: FakeModelServer
) -> None:
    add_endpoint(home, "local", fake.url, model="local-model")
    agent = make_agent(home, provider="local")
    write = {"name": "write_file", "input": {"path": "notes/a.txt", "content": "alpha"}}
    fake.add(Reply("Writing.", tool_calls=[write]), Reply("Done: alpha is saved."))
    send(agent, "save alpha")
    (r,) = run_once(home)
    assert r.error is None and r.reply and r.reply.body == "Writing.\n\nDone: alpha is saved."
    assert (agent.workspace / "notes/a.txt").read_text() == "alpha"
    t = trailers(agent)
    assert t["Anima-Model"] == "local/local-model" and t["Anima-Tool-Calls"] == "1"
    assert int(t["Anima-Tokens-In"]) > 0 and int(t["Anima-Tokens-Out"]) > 0
    first, second = fake.requests
    assert first.path == second.path == "/v1/chat/completions"
    call = second.body["messages"][-2]["tool_calls"][0]
    assert second.body["messages"][-1]["tool_call_id"] == call["id"]
    assert second.body["messages"][0]["role"] == "system"


def test_rate_limit_waits_for_retry_after_then_answers(home: Home, fake: FakeModelServer) -> None:
    add_endpoint(home, "local", fake.url)
    agent = make_agent(home, provider="local")
    fake.add(Reply(fault=Fault(status=429, retry_after=0.3)), Reply("after the wait"))
    send(agent, "hi")
    waits: list[float] = []
    (r,) = run_once(
        home, on_event=lambda _m, ev: waits.append(ev.delay) if isinstance(ev, Retrying) else None
    )
    assert r.error is None and r.reply and r.reply.body == "after the wait"
    assert len(waits) == 1 and waits[0] >= 0.3


def test_cut_stream_is_retried_and_partial_text_discarded(
    home: Home, fake: FakeModelServer
) -> None:
    add_endpoint(home, "local", fake.url)
    agent = make_agent(home, provider="local")
    fake.add(Reply("partial text that is cut", fault=Fault(cut=True)), Reply("whole reply"))
    send(agent, "hi")
    (r,) = run_once(home)
    assert r.error is None and r.reply and r.reply.body == "whole reply"
    assert len(fake.requests) == 2


@pytest.mark.parametrize("failure", ["500", "unset key"])
def test_a_failing_endpoint_falls_back_to_another(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    monkeypatch.delenv("ANIMA_TEST_UNSET_KEY", raising=False)
    key_env = "ANIMA_TEST_UNSET_KEY" if failure == "unset key" else ""
    add_endpoint(home, "cloud", fake.url, model="model-a", api_key_env=key_env)
    add_endpoint(home, "backup", fake.url, model="model-b")
    agent = make_agent(home, provider="cloud", fallback=["backup"])
    if failure == "500":
        fake.add(*[Reply(fault=Fault(status=500))] * 3)  # the first try and its 2 retries
    fake.add(Reply("from the backup"))
    send(agent, "hi")
    (r,) = run_once(home)
    assert r.error is None and r.reply and r.reply.body == "from the backup"
    assert trailers(agent)["Anima-Model"] == "backup/model-b"
    assert [q.body["model"] for q in fake.requests][-1] == "model-b"


def test_conversation_switches_provider_and_back_keeping_a_valid_tool_history(
    home: Home, fake: FakeModelServer
) -> None:
    """Anthropic → an OpenAI-compatible endpoint (whose server sends no call ids) → Anthropic:
    the fake refuses, as the real APIs do, any history whose calls and results do not pair."""
    add_endpoint(home, "local", fake.url)
    agent = make_agent(home, provider="anthropic")
    listing = {"name": "list_files", "input": {}}
    turns = [("anthropic", "first"), ("local", "second"), ("anthropic", "third")]
    for provider_name, word in turns:
        set_toml(agent, provider=provider_name)
        fake.add(Reply("", tool_calls=[{**listing, "id": ""}]), Reply(f"{word} answer"))
        send(agent, f"{word}: list your files")
        (r,) = run_once(home)
        assert r.error is None and r.reply and r.reply.body == f"{word} answer", r.error
    apis = ["/v1/messages", "/v1/chat/completions", "/v1/messages"]
    assert [q.path for q in fake.requests[::2]] == apis
    last = fake.requests[-1].body["messages"]
    uses = [b["id"] for m in last for b in m["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for m in last for b in m["content"] if b["type"] == "tool_result"]
    assert len(uses) == 3 and uses == results and len(set(uses)) == 3
    assert all(ANTHROPIC_ID.fullmatch(u) for u in uses)
    on_openai = fake.requests[3].body["messages"]
    replayed = [c["id"] for m in on_openai for c in m.get("tool_calls") or []]
    assert replayed[0] == uses[0] and len(replayed) == 2


def test_context_overflow_on_an_endpoint_compacts_and_retries(
    home: Home, fake: FakeModelServer
) -> None:
    add_endpoint(home, "local", fake.url)
    fake.responder = scripted_model()
    fake.context_chars = 14000
    agent = make_agent(home, provider="local")
    for i in range(8):
        send(agent, f"message number {i} " + "long words here " * 60)
        assert not any(r.error for r in run_once(home))
    assert any(len(json.dumps(r.body)) > 14000 for r in fake.requests), "window never hit"
    subjects = gitstore.log(agent.path, limit=None)
    assert any(c.subject.startswith("compact(arya)") for c in subjects)


def test_auto_picks_openai_when_only_its_key_is_set(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert registry.detect(home.config().providers) != "openai"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert registry.detect(home.config().providers) == "openai"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    assert registry.detect(home.config().providers) == "anthropic"


@pytest.mark.parametrize(("code", "overflow"), [("", False), ("context_length_exceeded", True)])
def test_an_error_event_mid_stream_is_retryable_or_an_overflow(
    fake: FakeModelServer, code: str, overflow: bool
) -> None:
    fault = Fault(in_stream=True, message="upstream failed", code=code)
    fake.add(Reply("some text before it fails", fault=fault))
    with pytest.raises(ProviderError, match="local: error mid-stream: upstream failed") as info:
        run(provider(fake), ask("hi"))
    assert isinstance(info.value, ContextOverflow) is overflow
    assert info.value.retryable or overflow


def test_a_huge_error_body_is_cut_short_in_the_error(fake: FakeModelServer) -> None:
    fake.add(Reply(fault=Fault(status=502, message="<html>" + "x" * 100_000)))
    with pytest.raises(ProviderError) as info:
        run(provider(fake), ask("hi"))
    assert len(str(info.value)) < 700 and "100006 characters" in str(info.value)


@pytest.mark.parametrize("index", [None, 0], ids=["no index", "same index"])
def test_calls_without_an_index_or_sharing_one_are_told_apart(
    fake: FakeModelServer, index: int | None
) -> None:
    args = {"path": "a long enough path to arrive in fragments.txt"}
    calls = [
        {"name": "write_file", "input": args, "id": f"call_{n}", "index": index} for n in range(2)
    ]
    fake.add(Reply(tool_calls=calls))
    got = [e for e in run(provider(fake), ask("x")) if isinstance(e, ToolCall)]
    assert [(c.id, c.input) for c in got] == [("call_0", args), ("call_1", args)]


def test_a_call_without_a_name_is_answered_as_an_unknown_tool_and_history_stays_valid(
    home: Home, fake: FakeModelServer
) -> None:
    add_endpoint(home, "local", fake.url)
    agent = make_agent(home, provider="local")
    fake.add(Reply(tool_calls=[{"name": "", "input": {}}]), Reply("sorry"))
    send(agent, "hi")
    (r,) = run_once(home)
    assert r.error is None and r.reply and r.reply.body == "sorry"
    tool_message = fake.requests[1].body["messages"][-1]
    assert (
        tool_message["role"] == "tool" and "unknown tool 'unnamed_tool'" in tool_message["content"]
    )


def test_broken_arguments_reach_the_model_as_a_tool_error_and_run_nothing(
    home: Home, fake: FakeModelServer
) -> None:
    add_endpoint(home, "local", fake.url)
    agent = make_agent(home, provider="local")
    raw = '{"path": "a.txt", "content": "cut'
    fake.add(Reply(tool_calls=[{"name": "write_file", "arguments": raw}]), Reply("I will retry."))
    send(agent, "write a.txt")
    (r,) = run_once(home)
    assert r.error is None and r.reply and r.reply.body == "I will retry."
    assert not (agent.workspace / "a.txt").exists()
    tool_message = fake.requests[1].body["messages"][-1]
    assert (
        tool_message["content"].startswith("ERROR: ")
        and INVALID_ARGUMENTS in tool_message["content"]
    )


def test_fake_server_answers_json_when_not_streaming(fake: FakeModelServer) -> None:
    fake.add(Reply("plain", tool_calls=[{"name": "write_file", "input": {"path": "a"}}]))
    client = provider(fake)._client
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    (choice,) = answer.choices
    assert choice.message.content == "plain" and choice.finish_reason == "tool_calls"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"path": "a"}
    assert answer.usage is not None and answer.usage.prompt_tokens > 0


def test_openai_itself_gets_max_completion_tokens(
    fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no base_url the SDK's default host is used (OPENAI_BASE_URL points it here), and
    OpenAI's newer models refuse max_tokens."""
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.url}/v1")
    run(OpenAIProvider("openai", OpenAISettings(api_key_env=""), 10.0), ask("hi"))
    body = fake.requests[0].body
    assert body["max_completion_tokens"] == 1024 and "max_tokens" not in body
