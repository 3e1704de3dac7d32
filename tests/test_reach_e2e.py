"""Reach, end to end through the real runtime: an agent on an OpenAI-compatible endpoint uses an
MCP server's tool and a skill, in `anima run` (one live MCP session across turns, stopped with
the runtime) and in `anima run --once` (started and stopped by the pass)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from anima import gitstore
from anima.agent import Agent
from anima.home import Home
from anima.testing import FakeModelServer, Reply
from tests.conftest import LiveRuntime, make_agent, replies, send, wait_for

ECHO = Path(__file__).parent / "mcp_servers" / "echo_server.py"


def _reach(home: Home, fake: FakeModelServer) -> Agent:
    with open(home.config_path, "a") as fh:
        fh.write(
            f'\n[providers.local]\nkind = "openai"\nbase_url = "{fake.url}/v1"\napi_key_env = ""\n'
            f'\n[mcp.echo]\ncommand = {json.dumps(sys.executable)}\nargs = ["{ECHO}", "stdio"]\n'
            "timeout = 20\n"
        )
    agent = make_agent(home, provider="local")
    skill = agent.path / "skills" / "greeting"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        "---\nname: greeting\ndescription: How to greet the owner warmly.\n---\nSay hello twice.\n"
    )
    return agent


def _sid(result: str) -> int:
    return int(result.strip())


def _tool_results(fake: FakeModelServer, name: str) -> list[str]:
    """The contents the model was sent for tool calls (Chat Completions `tool` messages)."""
    out = []
    for req in fake.requests:
        names = {}
        for m in req.body.get("messages", []):
            for call in m.get("tool_calls") or ():
                names[call["id"]] = call["function"]["name"]
            if m.get("role") == "tool" and names.get(m.get("tool_call_id")) == name:
                out.append(str(m.get("content")))
    return list(dict.fromkeys(out))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    )


def test_live_runtime_keeps_one_mcp_session_and_stops_it(home: Home, fake: FakeModelServer) -> None:
    agent = _reach(home, fake)
    gitstore.commit_external(agent.path, full=True)
    for _ in range(2):
        fake.add(
            Reply(tool_calls=[{"name": "echo__session_id", "input": {}}]),
            Reply(tool_calls=[{"name": "skill", "input": {"name": "greeting"}}]),
            Reply("hello, hello"),
        )
    with LiveRuntime(home) as rt:
        send(agent, "first")
        wait_for(lambda: len(replies(agent)) == 1, timeout=60, what="the first reply")
        send(agent, "second")
        wait_for(lambda: len(replies(agent)) == 2, timeout=60, what="the second reply")
        results = _tool_results(fake, "echo__session_id")
        sids = {_sid(r) for r in results if r.strip().isdigit()}
        assert len(sids) == 1, results  # one live session served both turns
        (sid,) = sids
        assert _alive(sid)
        assert rt.stop() == 0
    wait_for(lambda: not _alive(sid), timeout=10, what="the MCP server to stop with the runtime")
    turns = [e for e in gitstore.log(agent.path, limit=None) if e.subject.startswith("turn(")]
    assert len(turns) == 2
    show = subprocess.run(
        ["git", "-C", str(agent.path), "show", "-s", "--format=%B", turns[0].sha],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Tools: echo__session_id, skill" in show
    assert turns[0].trailers["Anima-Tool-Calls"] == "2"
    assert turns[0].trailers["Anima-Model"].startswith("local/")
    # the skill's catalogue was in the context, its body came back through the tool
    assert any("greeting" in json.dumps(r.body) for r in fake.requests[:1])
    assert any("Say hello twice." in r for r in _tool_results(fake, "skill"))


def test_run_once_starts_and_stops_the_mcp_servers_itself(
    home: Home, fake: FakeModelServer
) -> None:
    agent = _reach(home, fake)
    send(agent, "hi")
    fake.add(Reply(tool_calls=[{"name": "echo__session_id", "input": {}}]), Reply("done"))
    proc = subprocess.run(
        [sys.executable, "-m", "anima", "run", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANIMA_HOME": str(home.root)},
    )
    assert proc.returncode == 0, proc.stderr
    (sid,) = {_sid(r) for r in _tool_results(fake, "echo__session_id") if r.strip().isdigit()}
    assert not _alive(sid)
    assert (
        "Tools: echo__session_id"
        in subprocess.run(
            ["git", "-C", str(agent.path), "log", "-1", "--format=%B"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
