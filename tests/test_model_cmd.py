"""`anima model NAME [PROVIDER/MODEL]`: show or set an agent's endpoint and model."""

from __future__ import annotations

import json
import tomllib

import pytest
from click.testing import CliRunner

from anima import gitstore
from anima.agent import Agent, create_agent
from anima.agent_model import set_top_level
from anima.cli import main
from anima.errors import BadConfig
from anima.home import Home
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from tests.conftest import send
from tests.test_openai_provider import add_endpoint


def anima(home: Home, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--home", str(home.root), *args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def toml(agent: Agent) -> dict[str, object]:
    return tomllib.loads((agent.path / "agent.toml").read_text())


def test_shows_the_effective_model_and_where_it_comes_from(home: Home) -> None:
    create_agent(home, "arya")
    code, out = anima(home, "model", "arya")
    assert code == 0
    assert out.strip() == (
        "arya: anthropic/claude-sonnet-5-5 (provider from auto-detected, model from provider default)"
    )
    code, out = anima(home, "model", "arya", "--json")
    assert json.loads(out)["provider_from"] == "auto-detected"


def test_sets_endpoint_and_model_with_slashes_keeping_comments_and_commits(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    add_endpoint(home, "openrouter", "https://openrouter.ai/api", api_key_env="OPENROUTER_API_KEY")
    agent = create_agent(home, "arya")
    before = (agent.path / "agent.toml").read_text()
    code, out = anima(home, "model", "arya", "openrouter/meta-llama/llama-3.3-70b-instruct")
    assert code == 0, out
    assert "uses openrouter/meta-llama/llama-3.3-70b-instruct" in out
    assert "set OPENROUTER_API_KEY" in out
    after = (agent.path / "agent.toml").read_text()
    for key, value in (("provider", "openrouter"), ("model", "meta-llama/llama-3.3-70b-instruct")):
        (old,) = [line for line in before.splitlines() if line.startswith(f"{key} = ")]
        comment = old[old.index('"', old.index('"') + 1) + 1 :]  # the spacing and "# ..." after
        assert "#" in comment and f'{key} = "{value}"{comment}' in after.splitlines()
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 2  # every other line, comments included, is as it was
    head = gitstore.log(agent.path, limit=1)[0]
    assert (
        head.subject
        == "edit: agent.toml: model openrouter/meta-llama/llama-3.3-70b-instruct (anima model)"
    )
    assert f"committed {head.sha[:8]}" in out
    code, out = anima(home, "model", "arya")
    assert (
        "openrouter/meta-llama/llama-3.3-70b-instruct (provider from agent.toml, model from agent.toml)"
        in out
    )


def test_endpoint_alone_clears_the_model_and_the_same_again_changes_nothing(home: Home) -> None:
    agent = create_agent(home, "arya")
    assert anima(home, "model", "arya", "ollama/qwen3:8b")[0] == 0
    assert toml(agent)["model"] == "qwen3:8b"
    code, out = anima(home, "model", "arya", "offline")
    assert code == 0 and "uses offline" in out
    assert toml(agent)["provider"] == "offline" and toml(agent)["model"] == ""
    commits = len(gitstore.log(agent.path, limit=None))
    code, out = anima(home, "model", "arya", "offline")
    assert code == 0 and "no change" in out
    assert len(gitstore.log(agent.path, limit=None)) == commits


def test_unknown_endpoint_is_refused_naming_the_choices_and_nothing_changes(home: Home) -> None:
    agent = create_agent(home, "arya")
    before = (agent.path / "agent.toml").read_text()
    commits = len(gitstore.log(agent.path, limit=None))
    code, out = anima(home, "model", "arya", "nope/some-model")
    assert code == 1
    assert "unknown provider 'nope'" in out and "openai" in out and "[providers.NAME]" in out
    assert (agent.path / "agent.toml").read_text() == before
    assert len(gitstore.log(agent.path, limit=None)) == commits


def test_next_turn_uses_the_model_set(home: Home, fake: FakeModelServer) -> None:
    add_endpoint(home, "local", fake.url)
    agent = create_agent(home, "arya")
    assert anima(home, "model", "arya", "local/qwen/qwen3-8b")[0] == 0
    fake.add(Reply("hello from the local model"))
    send(agent, "hi")
    (r,) = run_once(home)
    assert r.error is None and r.model == "local/qwen/qwen3-8b"
    assert fake.requests[0].path == "/v1/chat/completions"


def test_missing_keys_are_added_after_the_previous_one_or_before_the_first_key() -> None:
    text = "# mine\nowner = 'me'  # me\n\n[budget]\nmemory_chars = 10"
    out = set_top_level(text, {"provider": "local", "model": "m"})
    assert out == (
        '# mine\nprovider = "local"\nmodel = "m"\nowner = \'me\'  # me\n\n[budget]\nmemory_chars = 10'
    )
    assert set_top_level(out, {"provider": "x", "model": ""}).count('model = ""') == 1
    assert (
        set_top_level("[budget]\n", {"provider": "a", "model": ""}) == 'provider = "a"\n[budget]\n'
    )


@pytest.mark.parametrize(
    "text",
    [
        'provider = """auto"""\n',  # a multi-line string form
        'provider.x = "auto"\n',  # a dotted key: not a string at all
        "provider = [\n]\n",
        "provider = ",  # does not parse
    ],
)
def test_a_layout_it_cannot_edit_safely_is_refused(text: str) -> None:
    with pytest.raises(BadConfig):
        set_top_level(text, {"provider": "local", "model": ""})


def test_unsafe_agent_toml_is_refused_through_the_command_and_left_alone(home: Home) -> None:
    agent = create_agent(home, "arya")
    path = agent.path / "agent.toml"
    path.write_text(path.read_text().replace('provider = "auto"', "provider = '''auto'''"))
    before = path.read_text()
    code, out = anima(home, "model", "arya", "offline")
    assert code == 1 and "anima edit NAME config" in out
    assert path.read_text() == before
