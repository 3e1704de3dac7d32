"""Tools against real files: confinement, limits, policies and errors returned to the model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anima.agent import Agent
from anima.home import Home
from anima.testing import FakeModelServer
from anima.tools import ToolContext, available, registry, run_tool
from tests.conftest import make_agent


def ctx_for(agent: Agent) -> ToolContext:
    return ToolContext(agent.name, agent.path, agent.config, agent.home.agent_names(), [], "cli")


def call(agent: Agent, name: str, **args: object) -> tuple[str, bool]:
    tools = {t.name: t for t in available(agent.config)}
    return run_tool(tools, ctx_for(agent), name, args)


@pytest.fixture
def agent(home: Home) -> Agent:
    return make_agent(home)


def test_write_read_edit_list_inside_workspace(agent: Agent) -> None:
    assert call(agent, "write_file", path="a/b.txt", content="one two")[1] is False
    out, err = call(agent, "read_file", path="a/b.txt")
    assert not err and "one two" in out
    assert call(agent, "edit_file", path="a/b.txt", old_text="two", new_text="three") == (
        "edited a/b.txt",
        False,
    )
    assert (agent.workspace / "a/b.txt").read_text() == "one three"
    out, err = call(agent, "list_files")
    assert not err and "a/b.txt" in out


@pytest.mark.parametrize(
    "path", ["../persona.md", "../../etc/passwd", "a/../../x", "/etc/passwd", "~/x"]
)
def test_paths_outside_workspace_are_refused(agent: Agent, path: str) -> None:
    for tool in ("read_file", "write_file"):
        args = {"path": path} if tool == "read_file" else {"path": path, "content": "x"}
        out, err = call(agent, tool, **args)
        assert err, out
        assert "refused" in out
    assert (agent.path / "persona.md").read_text().startswith("# arya")


def test_symlink_escape_is_refused(agent: Agent, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, agent.workspace / "link.txt")
    os.symlink(tmp_path, agent.workspace / "dirlink")
    out, err = call(agent, "read_file", path="link.txt")
    assert err and "outside your workspace" in out
    out, err = call(agent, "write_file", path="dirlink/new.txt", content="x")
    assert err and not (tmp_path / "new.txt").exists()
    out, err = call(agent, "list_files", path="dirlink")
    assert err


def test_edit_requires_exactly_one_match(agent: Agent) -> None:
    call(agent, "write_file", path="f.txt", content="x x")
    out, err = call(agent, "edit_file", path="f.txt", old_text="x", new_text="y")
    assert err and "2 times" in out


def test_bad_arguments_get_clear_errors(agent: Agent) -> None:
    out, err = call(agent, "write_file", path="f.txt")
    assert err and "missing required argument(s): content" in out
    out, err = call(agent, "read_file", path=3)
    assert err and "must be a string" in out
    out, err = call(agent, "read_file", path="f", bogus=1)
    assert err and "unknown argument(s) bogus" in out
    out, err = run_tool({}, ctx_for(agent), "nope", {})
    assert err and "unknown tool" in out


def test_file_size_limit(agent: Agent) -> None:
    out, err = call(agent, "write_file", path="big.txt", content="x" * (1024 * 1024 + 1))
    assert err and "limit" in out


def test_shell_is_off_by_default(agent: Agent) -> None:
    assert "shell" not in {t.name for t in available(agent.config)}
    out, err = call(agent, "shell", command="echo hi")
    assert err and "unknown tool" in out


def test_shell_when_enabled_runs_in_workspace_with_timeout(home: Home) -> None:
    agent = make_agent(home, "bran")
    path = agent.path / "agent.toml"
    path.write_text(
        path.read_text()
        .replace("enabled = false          # shell", "enabled = true  # shell")
        .replace("timeout = 30.0", "timeout = 0.5")
    )
    agent = Agent(home, "bran")
    out, err = call(agent, "shell", command="pwd; echo $ANTHROPIC_API_KEY; echo done")
    assert not err and str(agent.workspace.resolve()) in out and "test-key" not in out
    assert out.startswith("exit code 0")
    out, err = call(agent, "shell", command="sleep 5")
    assert err and "timed out" in out


def test_http_fetch_refuses_private_addresses_by_default(
    agent: Agent, fake: FakeModelServer
) -> None:
    out, err = call(agent, "http_fetch", url=f"{fake.url}/api/tags")
    assert err and "private address" in out
    out, err = call(agent, "http_fetch", url="file:///etc/passwd")
    assert err and "only http" in out


def test_http_fetch_when_private_allowed(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home, "sansa")
    path = agent.path / "agent.toml"
    path.write_text(path.read_text().replace("allow_private = false", "allow_private = true"))
    agent = Agent(home, "sansa")
    out, err = call(agent, "http_fetch", url=f"{fake.url}/api/tags")
    assert not err and out.startswith("HTTP 200") and "fake:latest" in out
    out, err = call(agent, "http_fetch", url=f"{fake.url}/nothing")
    assert not err and out.startswith("HTTP 404")


def test_send_message_validates_recipient(home: Home) -> None:
    agent = make_agent(home)
    make_agent(home, "gendry")
    agent = Agent(home, "arya")
    ctx = ctx_for(agent)
    tools = registry()
    out, err = run_tool(tools, ctx, "send_message", {"to": "nobody", "text": "hi"})
    assert err and "gendry" in out
    out, err = run_tool(tools, ctx, "send_message", {"to": "gendry", "text": "hi"})
    assert not err and ctx.outgoing[0].to == "gendry" and ctx.outgoing[0].channel == "agent"
    out, err = run_tool(tools, ctx, "send_message", {"to": "arya", "text": "hi"})
    assert err


def test_tool_schemas_come_from_signatures() -> None:
    t = registry()["write_file"]
    assert t.schema["required"] == ["path", "content"]
    assert t.schema["properties"]["path"]["type"] == "string"
    assert "workspace" in t.description
    assert registry()["memory"].schema["properties"]["command"]["enum"] == [
        "view",
        "create",
        "str_replace",
        "insert",
        "delete",
        "rename",
    ]


def test_reminder_for_a_moment_ago_still_fires(agent: Agent) -> None:
    """A time that slipped into the past while the model answered fires now, not never."""
    import datetime as dt

    from anima import schedule

    at = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)).isoformat()
    out, err = call(agent, "schedule", text="stretch", at=at)
    assert not err, out
    fired = schedule.fire_due(agent.home, agent.name)
    assert [m.body for m in fired] == ["stretch\n"]
    assert call(agent, "schedule", text="x", at="2001-01-01T00:00Z")[1] is True
