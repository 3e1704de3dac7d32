"""Operator commands over CliRunner: output shapes, --json, and errors for unknown agents."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from anima.cli import main
from anima.home import Home
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from tests.conftest import make_agent, send


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return r.exit_code, r.output


@pytest.fixture
def busy(home: Home, fake: FakeModelServer) -> Home:
    agent = make_agent(home)
    fake.add(
        Reply("one", tool_calls=[{"name": "list_files", "input": {}}]), Reply("two"), Reply("three")
    )
    send(agent, "first")
    run_once(home)
    send(agent, "second")
    run_once(home)
    return home


@pytest.mark.parametrize(
    "cmd",
    [
        ["log", "nobody"],
        ["show", "nobody"],
        ["undo", "nobody", "--yes"],
        ["stats", "nobody"],
        ["send", "nobody", "x"],
        ["chat", "nobody"],
    ],
)
def test_unknown_agent_is_one_clear_line(home: Home, cmd: list[str]) -> None:
    make_agent(home)
    code, out = invoke(*cmd)
    assert code == 1 and "no agent named 'nobody'" in out and "Traceback" not in out


def test_agents_json_shape(busy: Home) -> None:
    code, out = invoke("agents", "--json")
    (row,) = json.loads(out)
    assert set(row) == {
        "name",
        "provider",
        "provider_from",
        "model",
        "model_from",
        "pending",
        "last_turn",
        "heartbeat",
        "next_heartbeat",
    }
    assert (
        row["name"] == "arya"
        and row["pending"] == 0
        and row["last_turn"]["subject"].startswith("turn(arya)")
    )


def test_status_json_shape(busy: Home) -> None:
    code, out = invoke("status", "--json")
    data = json.loads(out)
    assert data["live"] is False and set(data["agents"]["arya"]) >= {
        "pending",
        "rejected",
        "failing",
        "last_turn",
        "next_heartbeat",
        "next_reminder",
        "last_error",
    }


def test_show_prints_the_turns_message_and_diff(busy: Home) -> None:
    code, out = invoke("show", "arya")
    assert code == 0 and "turn(arya): reply to cli message from you" in out
    assert "Anima-Message:" in out and "+++ b/history/cli/" in out and "three" in out
    code, out = invoke("show", "arya", "~1")
    assert "list_files" in out  # the turn before, with its tool call in the history diff
    code, out = invoke("show", "arya", "zzzz")
    assert code == 1 and "no single turn" in out


def test_undo_reverts_after_confirmation(busy: Home) -> None:
    code, out = invoke("undo", "arya", input="n\n")
    assert code == 1
    code, out = invoke("undo", "arya", input="y\n")
    assert code == 0 and "reverted" in out
    code, out = invoke("log", "arya", "-n", "1", "--json")
    assert json.loads(out)[0]["subject"].startswith("Revert")
    last = json.loads(invoke("status", "--json")[1])["agents"]["arya"]["last_turn"]
    assert last["undone"] and last["subject"].startswith('Revert "turn(arya)')
    assert "(an undo)" in invoke("status")[1]


def test_stats_json_from_trailers(busy: Home) -> None:
    code, out = invoke("stats", "arya", "--json")
    s = json.loads(out)
    assert s["turns"] == 2 and s["tool_calls"] == 1 and s["tokens_in"] > 0
    assert set(s["duration_ms"]) == {"p50", "p95", "p99", "mean"}
    assert list(s["models"]) == ["anthropic/claude-sonnet-5-5"]
    code, out = invoke("stats", "arya")
    assert "2 turns" in out and "p95" in out


def test_doctor_reports_problems_with_fixes(busy: Home) -> None:
    (busy.root / "credentials.env").write_text("X=1\n")
    (busy.root / "credentials.env").chmod(0o644)
    (busy.agents_dir / "arya/agent.toml").write_text("max_steps = 'x'\n")
    code, out = invoke("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)}
    assert code == 1
    assert checks["git"]["ok"] and checks["home"]["ok"]
    assert not checks["credentials.env"]["ok"] and "chmod 600" in checks["credentials.env"]["fix"]
    assert not checks["agent arya"]["ok"] and "max_steps" in checks["agent arya"]["detail"]
    assert checks["anthropic key"]["ok"]  # the test key is set
    assert checks["runtime"]["ok"] is False and "anima units install" in checks["runtime"]["fix"]
    code, out = invoke("doctor")
    assert "chmod 600" in out


def test_doctor_without_a_home(tmp_path) -> None:  # noqa: ANN001
    code, out = invoke("--home", str(tmp_path / "none"), "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)}
    assert code == 1 and checks["home"]["fix"] == "anima init"


def test_memory_show_edit_search_reindex(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    import git

    agent = make_agent(home)
    (agent.memory_dir / "garden.md").write_text(
        "---\ndescription: the garden\n---\nTomatoes go in the south bed.\n"
    )
    code, out = invoke("memory", "show", "arya")
    assert code == 0 and "/4000 characters" in out and "- garden.md — the garden" in out
    code, out = invoke("memory", "show", "arya", "garden")
    assert code == 0 and "Tomatoes go in the south bed." in out
    code, out = invoke("memory", "show", "arya", "../agent.toml")
    assert code == 1 and "not a note inside memory/" in out

    # $EDITOR is whatever the person uses; here a sed script stands in for them.
    monkeypatch.setenv("EDITOR", "sed -i 's/south bed/north bed/'")
    code, out = invoke("memory", "edit", "arya", "garden.md")
    assert code == 0 and "(external)" in out
    repo = git.Repo(agent.path)
    assert repo.head.commit.message.startswith("external: hand edits to ")
    assert "memory/garden.md" in repo.head.commit.message
    assert "north bed" in (agent.memory_dir / "garden.md").read_text()

    code, out = invoke("memory", "search", "arya", "tomatoes north")
    assert code == 0 and "memory/garden.md" in out and "[Tomatoes]" in out
    code, out = invoke("memory", "search", "arya", "zeppelin", "--json")
    assert code == 0 and json.loads(out) == []
    code, out = invoke("memory", "reindex", "arya")
    assert code == 0 and out.startswith("indexed 2 files")  # MEMORY.md and garden.md

    monkeypatch.setenv(
        "EDITOR", 'python3 -c \'import sys; open(sys.argv[1], "w").write("x" * 5000)\''
    )
    code, out = invoke("memory", "edit", "arya")
    assert code == 0 and "over its cap of 4000" in out
