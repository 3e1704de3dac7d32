"""Opt-in checks against real model services. Never run by default or in CI:
ANIMA_TEST_REAL_ANTHROPIC=1 (with ANTHROPIC_API_KEY) and/or ANIMA_TEST_REAL_OLLAMA=1 (with an
Ollama at OLLAMA_HOST or 127.0.0.1:11434 and ANIMA_TEST_OLLAMA_MODEL pulled)."""

from __future__ import annotations

import os

import pytest

from anima.home import Home
from anima.runtime import run_once
from tests.conftest import make_agent, send

real_anthropic = pytest.mark.skipif(
    os.environ.get("ANIMA_TEST_REAL_ANTHROPIC") != "1",
    reason="set ANIMA_TEST_REAL_ANTHROPIC=1 to call the real API",
)
real_ollama = pytest.mark.skipif(
    os.environ.get("ANIMA_TEST_REAL_OLLAMA") != "1",
    reason="set ANIMA_TEST_REAL_OLLAMA=1 to call a real Ollama",
)


def _home(home: Home, **providers: str) -> None:
    lines = ["[providers]"] + [f'{k} = "{v}"' for k, v in providers.items()]
    home.config_path.write_text("\n".join(lines) + "\n")


@real_anthropic
def test_real_anthropic_turn_with_a_tool_call(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    key = os.environ.get("ANIMA_TEST_ANTHROPIC_KEY")
    if not key:
        pytest.skip("put the key in ANIMA_TEST_ANTHROPIC_KEY (conftest hides ANTHROPIC_API_KEY)")
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    _home(home)
    agent = make_agent(home, provider="anthropic")
    send(agent, "Please remember that my cat is called Miso (use the memory tool), then say done.")
    (r,) = run_once(home)
    assert r.error is None and r.tool_calls >= 1
    assert "Miso" in (agent.memory_dir / "MEMORY.md").read_text()


@real_ollama
def test_real_ollama_turn(home: Home) -> None:
    model = os.environ.get("ANIMA_TEST_OLLAMA_MODEL", "llama3.2")
    _home(home, ollama_host=os.environ.get("ANIMA_TEST_OLLAMA_HOST", "http://127.0.0.1:11434"))
    agent = make_agent(home, provider="ollama", model=model)
    send(agent, "Reply with the single word: pong")
    (r,) = run_once(home)
    assert r.error is None and r.reply and "pong" in r.reply.body.lower()
