"""The `anima` command: click's CliRunner for commands, a real subprocess for the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git
from click.testing import CliRunner

from anima.cli import main
from anima.home import Home
from anima.testing import FakeModelServer, Reply


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.output


def test_init_then_new_makes_a_git_repo_with_one_commit(tmp_path: Path) -> None:
    root = tmp_path / "h"
    assert invoke("--home", str(root), "init")[0] == 0
    assert (root / "anima.toml").is_file() and (root / "always.md").is_file()
    code, out = invoke("--home", str(root), "new", "arya")
    assert code == 0 and "created agent arya" in out
    repo = git.Repo(root / "agents/arya")
    assert [c.summary for c in repo.iter_commits()] == ["init(arya): new agent from template"]
    tracked = set(repo.git.ls_files().split())
    assert {"persona.md", "always.md", "agent.toml", "memory/MEMORY.md", ".gitignore"} <= tracked
    assert "arya" in (root / "agents/arya/persona.md").read_text()


def test_bad_and_duplicate_names_are_clear_errors(tmp_path: Path) -> None:
    root = str(tmp_path / "h")
    invoke("--home", root, "new", "arya")
    for bad in ("../evil", ".hidden", "a/b", "Arya", "all"):
        code, out = invoke("--home", root, "new", bad)
        assert code == 1 and "error:" in out and "Traceback" not in out
    code, out = invoke("--home", root, "new", "arya")
    assert code == 1 and "already exists" in out


def test_unknown_agent_error_lists_agents(tmp_path: Path) -> None:
    root = str(tmp_path / "h")
    invoke("--home", root, "new", "arya")
    code, out = invoke("--home", root, "send", "nobody", "hi")
    assert code == 1 and "no agent named 'nobody'" in out and "arya" in out
    code, out = invoke("--home", root, "log", "nobody")
    assert code == 1 and "no agent named" in out


def test_send_with_options_and_stdin(home: Home) -> None:
    invoke("new", "arya")
    code, msg_id = invoke(
        "send", "arya", "-", "--from", "ana", "--conversation", "plans", input="from stdin\n"
    )
    assert code == 0
    text = (home.agents_dir / "arya/inbox" / f"{msg_id.strip()}.md").read_text()
    assert "from: ana" in text and "conversation: plans" in text and "from stdin" in text
    code, out = invoke("send", "arya", "-", input="  \n")
    assert code != 0 and "empty" in out


def test_run_once_answers_and_log_shows_turns(home: Home, fake: FakeModelServer) -> None:
    invoke("new", "arya")
    cfg = home.agents_dir / "arya/agent.toml"
    cfg.write_text(cfg.read_text().replace('provider = "auto"', 'provider = "anthropic"'))
    invoke("send", "arya", "hello")
    fake.add(Reply("hello back"))
    code, out = invoke("run", "--once")
    assert code == 0 and "hello back" in out
    code, out = invoke("log", "arya", "-n", "5")
    assert code == 0 and "turn(arya): reply to cli message from you" in out and "anthropic/" in out
    code, out = invoke("log", "arya", "--json", "--grep", "turn(arya)")
    entries = json.loads(out)
    assert len(entries) == 1 and entries[0]["trailers"]["Anima-Tool-Calls"] == "0"
    code, out = invoke("agents", "--json")
    assert json.loads(out)[0]["name"] == "arya"


def test_run_once_reports_failure_and_exits_nonzero(home: Home, fake: FakeModelServer) -> None:
    from anima.testing import Fault

    invoke("new", "arya")
    cfg = home.agents_dir / "arya/agent.toml"
    cfg.write_text(cfg.read_text().replace('provider = "auto"', 'provider = "anthropic"'))
    invoke("send", "arya", "hello")
    fake.add(*[Reply(fault=Fault(status=500))] * 3)
    code, out = invoke("run", "--once")
    assert code == 2 and "stay pending" in out


def test_bad_agent_toml_is_a_clear_error(home: Home) -> None:
    invoke("new", "arya")
    (home.agents_dir / "arya/agent.toml").write_text("max_steps = 'many'\n")
    invoke("send", "arya", "hi")
    code, out = invoke("run", "--once")
    assert code == 2 and "max_steps must be int" in out and "stay pending" in out


def test_demo_one_liner_runs_offline_in_a_subprocess(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "OLLAMA"))}
    env["OLLAMA_HOST"] = "http://127.0.0.1:9"
    proc = subprocess.run(
        [sys.executable, "-m", "anima", "demo", "--keep", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[offline model] From my core memory:" in proc.stdout
    assert "- my favourite colour is green" in proc.stdout
    assert "Anima-Trigger: message:cli:you" in proc.stdout
    repo = git.Repo(tmp_path / "d/agents/arya")
    assert len([c for c in repo.iter_commits() if c.summary.startswith("turn(arya)")]) == 3
    assert "asked to remember" in repo.git.log("--format=%B")
    subjects = [c.summary for c in repo.iter_commits()]
    assert "demo: configure the offline model" in subjects
    assert not any(s.startswith("external:") for s in subjects)


def test_agents_lists_every_agent_when_one_config_is_bad(home: Home) -> None:
    from click.testing import CliRunner

    from anima.cli import main
    from tests.conftest import make_agent

    make_agent(home, "arya")
    bad = make_agent(home, "gendry")
    (bad.path / "agent.toml").write_text("[heartbeat]\nmax_steps = 3\n")
    out = CliRunner().invoke(main, ["agents", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert "error" in rows["gendry"] and "heartbeat" in rows["gendry"]["error"]
    assert rows["arya"]["provider"] == "anthropic"
