"""Short commands start fast (issue #13): `anima tick`, `send` and `status` import only what they
use, every command is still reachable and listed, and the YAML-free front matter of tick and send
is byte for byte what PyYAML writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from anima.agent import create_agent
from anima.cli import app, main
from anima.home import Home
from anima.message import Message, render, simple_head

BEING_WRITTEN = {"model", "mcp", "skills"}
"""Commands whose modules other work adds: checked once their module exists."""

HEAVY = ("rich", "anthropic", "openai", "mcp", "watchfiles", "yaml", "git", "prompt_toolkit")
"""Packages none of the short commands needs (git: GitPython)."""
HEAVY_ANIMA = ("anima.runtime", "anima.turn", "anima.llm", "anima.agent", "anima.front_matter")


def imported_modules(home: Home, *args: str) -> set[str]:
    """The modules `python -m anima ARGS` imports, from -X importtime (the command must succeed)."""
    env = {**os.environ, "ANIMA_HOME": str(home.root)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "anima", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    return {ln.rsplit("|", 1)[1].strip() for ln in lines[1:]}  # [0] is the header


def heavy_in(modules: set[str], allowed: tuple[str, ...] = ()) -> set[str]:
    """The heavy packages and anima modules among `modules`, less those `allowed`."""
    packages = {m.split(".")[0] for m in modules} & set(HEAVY)
    own = {
        m for m in modules if m in HEAVY_ANIMA or m.startswith(tuple(f"{h}." for h in HEAVY_ANIMA))
    }
    return (packages | own) - set(allowed)


@pytest.fixture
def agent_home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.init()
    create_agent(home, "arya")
    return home


def test_tick_imports_no_heavy_module(agent_home: Home) -> None:
    assert heavy_in(imported_modules(agent_home, "tick", "arya", "--force")) == set()
    assert len(list((agent_home.agents_dir / "arya/inbox").glob("hb-*.md"))) == 1


def test_send_imports_no_heavy_module(agent_home: Home) -> None:
    assert heavy_in(imported_modules(agent_home, "send", "arya", "hello")) == set()
    assert len(list((agent_home.agents_dir / "arya/inbox").glob("*.md"))) == 1


def test_status_imports_rich_for_its_table_and_nothing_else_heavy(agent_home: Home) -> None:
    modules = imported_modules(agent_home, "status")
    # anima.agent: through anima.budget, which status.collect reads pause state from
    assert heavy_in(modules, allowed=("rich", "anima.agent")) == set()


@pytest.mark.parametrize(
    ("args", "module"),
    [(("tick", "arya", "--force"), "messages"), (("status",), "runtime_cmds")],
)
def test_a_command_imports_only_its_own_cli_module(
    agent_home: Home, args: tuple[str, ...], module: str
) -> None:
    modules = imported_modules(agent_home, *args)
    cli = {m for m in modules if m.startswith("anima.cli.")}
    assert cli == {"anima.cli.app", f"anima.cli.{module}"}


def test_every_lazy_command_resolves_to_its_click_command() -> None:
    for name, target in app.LAZY_COMMANDS.items():
        if name in BEING_WRITTEN and not app.command_exists(target):
            continue
        command = app.load_command(target)
        assert isinstance(command, click.Command), target
        assert command.name == name, f"{target} is named {command.name!r}, listed as {name!r}"


def test_help_lists_every_command_with_its_help() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    for name, target in app.LAZY_COMMANDS.items():
        command = app.load_command(target)
        if command is None:
            assert name in BEING_WRITTEN
            continue
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [name]), "")
        assert line, f"{name} missing from --help"
        assert command.get_short_help_str().split()[0] in line


def test_a_command_whose_module_is_missing_is_unlisted_and_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.LAZY_COMMANDS, "ghost", "anima.cli.ghost_cmds:ghost")
    runner = CliRunner()
    listing = runner.invoke(main, ["--help"])
    assert listing.exit_code == 0 and "ghost" not in listing.output
    assert "tick" in listing.output
    result = runner.invoke(main, ["ghost"])
    assert result.exit_code == 2 and "No such command 'ghost'" in result.output


def test_a_lazy_entry_naming_a_missing_attribute_fails_loudly() -> None:
    with pytest.raises(AttributeError):
        app.load_command("anima.cli.messages:no_such_command")


def test_tick_and_send_messages_skip_yaml_and_match_it() -> None:
    for msg in (
        Message.create(sender="you", to="arya", body="hi", conversation="cli"),
        Message(
            id="hb-20261124T101500",
            sender="timer",
            to="arya",
            body="Heartbeat\n",
            channel="timer",
            conversation="heartbeat",
            kind="heartbeat",
            created="2026-11-24T10:15:00.000Z",
            extra={"hops": 2, "reminder_id": "r-1"},
        ),
    ):
        head = render(msg).split("---\n")[1]
        meta = yaml.safe_load(head)  # created reads back as a datetime: the string it was
        meta["created"] = msg.created
        assert simple_head(meta) is not None, "the common case must not need PyYAML"
        assert head == yaml.safe_dump(
            meta, sort_keys=False, allow_unicode=True, default_flow_style=False
        )


TRICKY = st.sampled_from(
    ["yes", "No", "TRUE", "off", "null", "Null", "~", "", " a", "a ", "a: b", "#x", "-a", "1e3"]
    + ["0x1F", "1:20", "0o7", ".inf", "2026-11-24", "2026-11-24T10:15:00.123Z", "é", "a\nb"]
    + [
        "<<",
        "=",
        "x" * 100,
        "x" * 101,
        "x" * 123,
        "y",
        "n",
        "20261124T101500123Z-7f3a9c",
        "a.b-c_d",
    ]
)
VALUES = st.one_of(
    TRICKY,
    st.text(max_size=12),
    st.from_regex(r"[A-Za-z0-9_.:-]{1,12}", fullmatch=True),
    st.integers(),
    st.booleans(),
    st.none(),
)


@given(st.dictionaries(st.one_of(TRICKY, st.text(max_size=8)), VALUES, min_size=1, max_size=4))
def test_simple_head_writes_what_pyyaml_writes_or_declines(meta: dict[str, object]) -> None:
    head = simple_head(meta)
    if head is not None:
        dumped = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
        assert head == dumped
