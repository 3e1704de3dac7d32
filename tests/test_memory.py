"""The memory tool on real files: every write path respects caps, read_only and reasons."""

from __future__ import annotations

import git
import pytest

from anima.agent import Agent
from anima.home import Home
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from tests.conftest import make_agent, send
from tests.test_tools import call


@pytest.fixture
def agent(home: Home) -> Agent:
    a = make_agent(home)
    cfg = a.path / "agent.toml"
    cfg.write_text(
        cfg.read_text()
        .replace("memory_chars = 4000", "memory_chars = 100")
        .replace("note_chars = 20000", "note_chars = 200")
    )
    return Agent(home, "arya")


def mem(agent: Agent, **args: object) -> tuple[str, bool]:
    return call(agent, "memory", **args)


def test_create_view_edit_insert_rename_delete(agent: Agent) -> None:
    assert (
        mem(
            agent,
            command="create",
            path="people/ana.md",
            reason="met Ana",
            file_text="---\ndescription: Ana, my sister\n---\nlikes tea",
        )[1]
        is False
    )
    out, err = mem(agent, command="view")
    assert not err and "memory/people/ana.md — Ana, my sister" in out
    assert (
        mem(
            agent,
            command="str_replace",
            path="people/ana.md",
            old_str="tea",
            new_str="green tea",
            reason="more precise",
        )[1]
        is False
    )
    assert (
        mem(
            agent,
            command="insert",
            path="people/ana.md",
            insert_line=3,
            insert_text="lives in Oslo",
            reason="new fact",
        )[1]
        is False
    )
    out, err = mem(agent, command="view", path="people/ana.md")
    assert "likes green tea" in out and out.splitlines()[3].endswith("lives in Oslo")
    assert (
        mem(
            agent,
            command="rename",
            path="people/ana.md",
            new_path="people/ana-k.md",
            reason="surname",
        )[1]
        is False
    )
    assert (agent.memory_dir / "people/ana-k.md").exists() and not (
        agent.memory_dir / "people/ana.md"
    ).exists()
    assert (
        mem(agent, command="delete", path="people/ana-k.md", reason="asked to forget")[1] is False
    )
    assert not (agent.memory_dir / "people/ana-k.md").exists()


@pytest.mark.parametrize(
    "args",
    [
        {"command": "create", "path": "big.md", "file_text": "x" * 300},
        {"command": "insert", "path": "MEMORY.md", "insert_text": "x" * 100},
        {"command": "str_replace", "path": "MEMORY.md", "old_str": "Core", "new_str": "x" * 100},
        {"command": "rename", "path": "long.md", "new_path": "other.md"},
    ],
)
def test_no_write_path_can_exceed_a_cap(agent: Agent, args: dict[str, object]) -> None:
    (agent.memory_dir / "long.md").write_text(
        "y" * 250
    )  # over note_chars by hand: rename may not carry it
    before = {p: p.read_text() for p in agent.memory_dir.rglob("*.md")}
    out, err = mem(agent, reason="test", **args)
    assert err and "cap is" in out
    assert {p: p.read_text() for p in agent.memory_dir.rglob("*.md")} == before


@pytest.mark.parametrize(
    "args",
    [
        {"command": "str_replace", "old_str": "fixed", "new_str": "changed"},
        {"command": "insert", "insert_text": "more"},
        {"command": "delete"},
        {"command": "rename", "new_path": "free.md"},
    ],
)
def test_read_only_notes_are_refused(agent: Agent, args: dict[str, object]) -> None:
    (agent.memory_dir / "rules.md").write_text("---\nread_only: true\n---\nfixed\n")
    out, err = mem(agent, path="rules.md", reason="try", **args)
    assert err and "read-only" in out
    assert (agent.memory_dir / "rules.md").read_text().endswith("fixed\n")


def test_reason_is_required_and_paths_are_confined(agent: Agent) -> None:
    out, err = mem(agent, command="insert", path="MEMORY.md", insert_text="x")
    assert err and "reason is required" in out
    for bad in ("../persona.md", "/etc/passwd.md", "notes.txt"):
        out, err = mem(agent, command="create", path=bad, file_text="x", reason="r")
        assert err
    out, err = mem(agent, command="delete", path="MEMORY.md", reason="r")
    assert err and "cannot be deleted" in out
    out, err = mem(
        agent, command="str_replace", path="MEMORY.md", old_str="nope", new_str="x", reason="r"
    )
    assert err and "occurs 0 times" in out


def test_reason_appears_in_git_log_and_edit_is_in_the_next_context(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    fake.add(
        Reply(
            "",
            tool_calls=[
                {
                    "name": "memory",
                    "input": {
                        "command": "insert",
                        "path": "MEMORY.md",
                        "insert_text": "- likes jazz",
                        "reason": "told me their taste",
                    },
                }
            ],
        ),
        Reply("Noted."),
        Reply("You like jazz."),
    )
    send(agent, "I like jazz")
    run_once(home)
    log = git.Repo(agent.path).git.log("-1", "--format=%B")
    assert "edited memory/MEMORY.md: told me their taste" in log
    send(agent, "what do I like?")
    run_once(home)
    system = fake.requests[-1].body["system"]
    assert any("- likes jazz" in s["text"] for s in system)
