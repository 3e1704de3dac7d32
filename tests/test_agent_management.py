"""Managing agents from the CLI as a person would: rm, rename, edit, names the runtime ignores,
and which provider/model an agent really uses."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from anima import mailbox, status
from anima.cli import main
from anima.home import Home
from anima.message import Message
from anima.runtime import run_once
from tests.conftest import make_agent, send


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return r.exit_code, r.output


def editor_script(tmp_path: Path, body: str) -> str:
    """An $EDITOR that rewrites the file it is given with `body` (what a person would type)."""
    script = tmp_path / "editor.sh"
    script.write_text(f"#!/bin/sh\n/bin/cat > \"$1\" <<'EOF'\n{body}\nEOF\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_rm_archives_the_repository_after_confirmation(home: Home) -> None:
    agent = make_agent(home)
    send(agent, "still pending")
    code, out = invoke("rm", "arya", input="n\n")
    assert code == 1 and "1 message(s) still pending" in out and agent.path.is_dir()
    code, out = invoke("rm", "arya", input="y\n")
    assert code == 0 and not agent.path.exists()
    (archived,) = (home.root / "trash").glob("arya-*[0-9]")
    assert str(archived) in out
    assert git.Repo(archived).head.commit.summary.startswith("init(arya)")
    assert len(list((archived / "inbox").glob("*.md"))) == 1  # nothing is lost
    assert "arya" not in home.agent_names()


def test_rm_yes_skips_the_question_and_unknown_names_are_one_line(home: Home) -> None:
    make_agent(home)
    assert invoke("rm", "arya", "--yes")[0] == 0
    code, out = invoke("rm", "arya", "--yes")
    assert code == 1 and "no agent named 'arya'" in out and "Traceback" not in out


def test_rename_keeps_history_and_state_and_the_agent_keeps_working(
    home: Home, fake: object
) -> None:
    from anima.testing import Reply

    agent = make_agent(home)
    fake.add(Reply("first"), Reply("second"))  # type: ignore[attr-defined]
    send(agent, "hello")
    run_once(home)
    routed = home.run_dir / "routed" / "arya"
    assert routed.exists()
    code, out = invoke("rename", "arya", "mira")
    assert code == 0 and "renamed arya to mira" in out
    assert home.agent_names() == ["mira"] and (home.run_dir / "routed" / "mira").exists()
    repo = git.Repo(home.agents_dir / "mira")
    assert any(c.summary.startswith("turn(arya)") for c in repo.iter_commits())
    mailbox.deliver(home.agents_dir / "mira", Message.create(sender="you", to="mira", body="hi"))
    (result,) = run_once(home)
    assert result.error is None and result.reply is not None
    assert repo.head.commit.author.name == "mira"


def test_rename_is_refused_while_a_runtime_is_live(home: Home) -> None:
    make_agent(home)
    lock = status.home_lock(home)
    lock.acquire()
    try:
        code, out = invoke("rename", "arya", "mira")
    finally:
        lock.release()
    assert code == 1 and "cannot rename arya while a runtime is live" in out
    assert home.agent_names() == ["arya"]


def test_rename_refuses_an_existing_or_bad_new_name(home: Home) -> None:
    make_agent(home)
    make_agent(home, "bob")
    assert "already exists" in invoke("rename", "arya", "bob")[1]
    assert "is not valid" in invoke("rename", "arya", "Bob")[1]
    assert home.agent_names() == ["arya", "bob"]


def test_edit_persona_commits_a_hand_edit(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(home)
    monkeypatch.setenv("EDITOR", editor_script(tmp_path, "You are Arya, a gardener."))
    code, out = invoke("edit", "arya")
    assert code == 0 and "committed" in out
    assert "gardener" in agent.persona
    head = git.Repo(agent.path).head.commit
    assert head.summary == "edit: persona.md by hand (anima edit arya persona)"
    assert list(head.stats.files) == ["persona.md"]


def test_edit_config_rejects_an_invalid_agent_toml_and_keeps_the_draft(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(home)
    before = (agent.path / "agent.toml").read_text()
    monkeypatch.setenv("EDITOR", editor_script(tmp_path, "max_steps = 'many'"))
    code, out = invoke("edit", "arya", "config", input="n\n")
    assert code == 1 and "max_steps must be int" in out and "Traceback" not in out
    assert (agent.path / "agent.toml").read_text() == before
    (draft,) = (home.run_dir / "edits").iterdir()
    assert str(draft) in out.replace("\n", "") and "many" in draft.read_text()


def test_edit_config_accepts_a_valid_edit(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_agent(home)
    monkeypatch.setenv("EDITOR", editor_script(tmp_path, 'provider = "offline"'))
    assert invoke("edit", "arya", "config")[0] == 0
    rows = json.loads(invoke("agents", "--json")[1])
    assert (rows[0]["provider"], rows[0]["provider_from"]) == ("offline", "agent.toml")


def test_editor_fallback_is_announced(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_agent(home)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nano = Path(editor_script(tmp_path, "edited")).rename(bin_dir / "nano")
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)
    git_exe = shutil.which("git")
    assert git_exe
    (bin_dir / "git").symlink_to(git_exe)
    monkeypatch.setenv("PATH", str(bin_dir))  # no sensible-editor, vim or vi: nano is found
    code, out = invoke("memory", "edit", "arya")
    assert code == 0 and "no $EDITOR set: opening nano" in out and "export EDITOR=" in out
    assert nano.exists() and "committed" in out


def test_invalid_agent_directory_is_reported_everywhere(home: Home) -> None:
    agent = make_agent(home)
    shutil.copytree(agent.path, home.agents_dir / "Bad")
    for cmd in (["agents"], ["status"], ["doctor"]):
        out = invoke(*cmd)[1].replace("\n", "")
        assert "Bad" in out and "anima rename" in out, cmd
    assert json.loads(invoke("status", "--json")[1])["invalid_agents"] == [
        str(home.agents_dir / "Bad")
    ]
    code, _ = invoke("rename", "Bad", "bert")
    assert code == 0 and home.agent_names() == ["arya", "bert"]
    assert "Bad" not in invoke("agents")[1]


def test_agents_shows_the_effective_provider_and_where_it_comes_from(home: Home) -> None:
    make_agent(home, "arya", provider="offline")
    make_agent(home, "bob", provider="auto")  # home fixture: an Anthropic key is set
    home.config_path.write_text(
        home.config_path.read_text().replace('provider = "auto"', 'provider = "ollama"', 1) + ""
    )
    rows = {r["name"]: r for r in json.loads(invoke("agents", "--json")[1])}
    assert (rows["arya"]["provider"], rows["arya"]["provider_from"]) == ("offline", "agent.toml")
    assert (rows["arya"]["model"], rows["arya"]["model_from"]) == ("offline-1", "provider default")
    assert (rows["bob"]["provider"], rows["bob"]["provider_from"]) == ("ollama", "anima.toml")
    home.config_path.write_text(
        home.config_path.read_text().replace('provider = "ollama"', 'provider = "auto"', 1)
    )
    rows = {r["name"]: r for r in json.loads(invoke("agents", "--json")[1])}
    assert (rows["bob"]["provider"], rows["bob"]["provider_from"]) == ("anthropic", "auto-detected")
    out = invoke("agents")[1]
    assert "auto/default" not in out and "anthropic/claude" in out and "auto-detected" in out
