"""Named provider endpoints ([providers.NAME]) resolved through the registry, real SDKs and turns."""

from __future__ import annotations

import re

import pytest

from anima import gitstore
from anima.agent import Agent, effective_model
from anima.config import load_global_config
from anima.errors import BadConfig
from anima.home import Home
from anima.llm import registry
from anima.runtime import run_once
from anima.testing import FakeModelServer, Fault, Reply
from tests.conftest import make_agent, send


def _config(home: Home, text: str) -> None:
    home.config_path.write_text(text)


def test_named_endpoint_of_a_kind_carries_its_url_key_and_model(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("GATEWAY_KEY", "gw-secret")
    _config(
        home,
        "[providers]\nretries = 0\n"
        f'[providers.gateway]\nkind = "anthropic"\nbase_url = "{fake.url}"\n'
        'api_key_env = "GATEWAY_KEY"\nmodel = "claude-via-gateway"\n',
    )
    agent = make_agent(home, provider="gateway")
    send(agent, "hi")
    fake.add(Reply("through the gateway"))

    (result,) = run_once(home)

    assert result.error is None and result.reply is not None
    (req,) = fake.requests
    assert req.body["model"] == "claude-via-gateway"
    sent = req.headers.get("x-api-key", "") + req.headers.get("authorization", "")
    assert "gw-secret" in sent
    assert gitstore.log(agent.path, limit=1)[0].trailers["Anima-Model"].startswith("gateway/")
    eff = effective_model(Agent(home, "arya"))
    assert (eff.provider, eff.model) == ("gateway", "claude-via-gateway")


def test_earlier_flat_provider_keys_still_work(home: Home, fake: FakeModelServer) -> None:
    # conftest writes anthropic_base_url / ollama_host, the keys of earlier releases
    assert "anthropic_base_url" in home.config_path.read_text()
    agent = make_agent(home, provider="anthropic")
    send(agent, "hi")
    fake.add(Reply("still here"))
    (result,) = run_once(home)
    assert result.error is None and len(fake.requests) == 1


def test_fallback_names_an_endpoint_and_a_model(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(
        home,
        "[providers]\nretries = 0\n"
        f'[providers.anthropic]\nbase_url = "{fake.url}"\n'
        f'[providers.backup]\nkind = "ollama"\nhost = "{fake.url}"\n',
    )
    agent = make_agent(home, provider="anthropic", fallback=["backup/llama-big"])
    send(agent, "hi")
    fake.add(Reply(fault=Fault(status=500)), Reply("from the backup"))

    (result,) = run_once(home)

    assert result.error is None and result.reply is not None
    assert result.reply.body == "from the backup"
    assert fake.requests[1].body["model"] == "llama-big"
    assert result.model == "backup/llama-big"


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('[providers.x]\nbase_url = "http://h"\n', "providers.x: set kind"),
        ('[providers.x]\nkind = "nope"\n', "unknown kind 'nope'"),
        ('[providers.x]\nkind = "anthropic"\nhost = "h"\n', "providers.x: unknown key(s) host"),
        ('[providers.x]\nkind = "anthropic"\nmodel = 3\n', "providers.x.model must be text"),
        ("[providers.ollama]\nhost = 7\n", "providers.ollama.host must be str"),
    ],
)
def test_bad_endpoint_tables_are_clear_errors(tmp_path, table: str, error: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "anima.toml"
    path.write_text(table)
    settings = load_global_config(path).providers
    with pytest.raises(BadConfig, match=re.escape(error)):
        registry.endpoints(settings)


def test_unknown_provider_name_lists_the_endpoints(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "anima.toml"
    path.write_text('[providers.mine]\nkind = "ollama"\n')
    with pytest.raises(BadConfig, match=r"unknown provider 'typo'.*mine"):
        registry.get_provider("typo", load_global_config(path).providers)


def test_auto_asks_each_kind_in_order(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "anima.toml"
    path.write_text('[providers.ollama]\nhost = "http://127.0.0.1:9"\n')  # nothing listens
    settings = load_global_config(path).providers
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert registry.detect(settings) == "offline"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    assert registry.detect(settings) == "anthropic"


def test_provider_keys_of_every_endpoint_are_redacted_secrets(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anima.credentials import known_secrets

    monkeypatch.setenv("MY_GATEWAY_CRED", "sekrit-value-123")
    _config(home, '[providers.gw]\nkind = "anthropic"\napi_key_env = "MY_GATEWAY_CRED"\n')
    assert known_secrets(home)["MY_GATEWAY_CRED"] == "sekrit-value-123"


def test_variables_handed_to_mcp_servers_are_redacted_secrets(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anima.credentials import known_secrets

    monkeypatch.setenv("GH_PAT", "ghp-abcdef-123456")
    monkeypatch.setenv("SEARCH_BEARER", "Bearer zzz-999")
    home.config_path.write_text(
        '[mcp.gh]\ncommand = "x"\npass_env = ["GH_PAT"]\n'
        '[mcp.search]\nurl = "https://example.org/mcp"\nheaders_env = { Authorization = "SEARCH_BEARER" }\n'
    )
    found = known_secrets(home)
    assert found["GH_PAT"] == "ghp-abcdef-123456" and found["SEARCH_BEARER"] == "Bearer zzz-999"


def test_variables_an_agent_hands_its_own_mcp_servers_are_redacted_in_its_turns(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anima.tools.base import ToolContext

    monkeypatch.setenv("NOTES_PAT", "pat-value-98765")
    agent = make_agent(home)
    with open(agent.path / "agent.toml", "a") as fh:
        fh.write('\n[mcp.notes]\ncommand = "x"\npass_env = ["NOTES_PAT"]\n')
    agent = Agent(home, "arya")
    ctx = ToolContext(agent.name, agent.path, agent.config, [], [], "cli")
    assert ctx.secrets()["NOTES_PAT"] == "pat-value-98765"


def test_a_named_endpoint_sends_no_key_it_was_not_given(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A [providers.NAME] table of another kind's endpoint that names no api_key_env must not
    send that kind's default key (OPENAI_API_KEY, ANTHROPIC_API_KEY) to its server."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-the-real-key")
    _config(
        home,
        f'[providers]\nretries = 0\n[providers.gw]\nkind = "anthropic"\nbase_url = "{fake.url}"\n',
    )
    ep = registry.endpoint("gw", load_global_config(home.config_path).providers)
    assert ep.settings.api_key_env == ""
    agent = make_agent(home, provider="gw")
    send(agent, "hi")
    fake.add(Reply("x"))
    (result,) = run_once(home)
    assert result.error and "providers.gw" in result.error and "api_key_env" in result.error
    assert not fake.requests  # nothing, and no key, was sent
    # the built-in endpoint keeps its default
    assert (
        registry.endpoint(
            "anthropic", load_global_config(home.config_path).providers
        ).settings.api_key_env
        == "ANTHROPIC_API_KEY"
    )


def test_an_unreachable_endpoint_is_named_once_with_its_url(home: Home) -> None:
    """A newcomer saw `local: local: API unreachable` and no address to check."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    _config(
        home,
        "[providers]\nretries = 0\ntimeout = 5.0\n"
        f'[providers.local]\nkind = "openai"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
        'model = "qwen"\n',
    )
    agent = make_agent(home, provider="local")
    send(agent, "hi")
    (result,) = run_once(home)
    assert result.error and f"API unreachable at http://127.0.0.1:{port}/v1" in result.error
    assert "local: local:" not in result.error and "local/qwen: local" not in result.error
