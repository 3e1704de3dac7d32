"""Short commands start fast (issue #13): `anima tick`, `send` and `status` import only what they
use (a plain tick or send not even click), every command is still reachable and listed, the
click-free start does what the click command does, and the YAML-free front matter of tick and send
is byte for byte what PyYAML writes."""

from __future__ import annotations

import inspect
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
from anima.cli import app, main, messages, short
from anima.home import Home
from anima.message import Message, render, simple_head

BEING_WRITTEN = {"model", "mcp", "skills"}
"""Commands whose modules other work adds: checked once their module exists."""

HEAVY = ("rich", "anthropic", "openai", "mcp", "watchfiles", "yaml", "git", "prompt_toolkit")
"""Packages none of the short commands needs (git: GitPython)."""
HEAVY_ANIMA = ("anima.runtime", "anima.turn", "anima.llm", "anima.agent", "anima.front_matter")


def anima(home: Home, *args: str, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`python [PYTHON] -m anima ARGS` as a process, as cron or a script starts it."""
    return subprocess.run(
        [sys.executable, *python, "-m", "anima", *args],
        env={**os.environ, "ANIMA_HOME": str(home.root)},
        capture_output=True,
        text=True,
        check=False,
    )


def imported_modules(home: Home, *args: str) -> set[str]:
    """The modules `python -m anima ARGS` imports, from -X importtime (the command must succeed)."""
    proc = anima(home, *args, python=("-X", "importtime"))
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


def test_tick_imports_no_heavy_module_nor_click(agent_home: Home) -> None:
    modules = imported_modules(agent_home, "tick", "arya", "--force")
    assert heavy_in(modules) == set()
    assert "click" not in modules
    assert len(list((agent_home.agents_dir / "arya/inbox").glob("hb-*.md"))) == 1


def test_send_imports_no_heavy_module_nor_click(agent_home: Home) -> None:
    modules = imported_modules(agent_home, "--home", str(agent_home.root), "send", "arya", "hi")
    assert heavy_in(modules) == set()
    assert "click" not in modules
    assert len(list((agent_home.agents_dir / "arya/inbox").glob("*.md"))) == 1


def test_status_imports_rich_for_its_table_and_nothing_else_heavy(agent_home: Home) -> None:
    modules = imported_modules(agent_home, "status")
    # anima.agent: through anima.budget, which status.collect reads pause state from
    assert heavy_in(modules, allowed=("rich", "anima.agent")) == set()


@pytest.mark.parametrize(
    ("args", "module"),
    [(("tick", "arya", "--help"), "messages"), (("status",), "runtime_cmds")],
)
def test_a_command_imports_only_its_own_cli_module(
    agent_home: Home, args: tuple[str, ...], module: str
) -> None:
    modules = imported_modules(agent_home, *args)
    cli = {m for m in modules if m.startswith("anima.cli.")}
    assert cli == {"anima.cli.short", "anima.cli.app", f"anima.cli.{module}"}  # short: the entry


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


def test_short_commands_take_the_options_their_click_commands_declare() -> None:
    for command, takes_value, fn in (
        (messages.send, short.SEND_OPTIONS, short.send),
        (messages.tick, short.TICK_FLAGS, short.tick),
    ):
        options = [p for p in command.params if isinstance(p, click.Option)]
        assert {o: p.name for p in options for o in p.opts} == takes_value
        assert all(p.is_flag == (command is messages.tick) for p in options)
        defaults, ctx = inspect.signature(fn).parameters, click.Context(command)
        assert {p.name: p.get_default(ctx) for p in options} == {
            p.name: defaults[p.name].default for p in options if p.name
        }
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        assert len(arguments) == (2 if command is messages.send else 1)


@pytest.mark.parametrize(
    "argv",
    [
        ["tick"],
        ["tick", "arya", "--help"],
        ["tick", "arya", "-h"],
        ["tick", "arya", "--force=1"],
        ["tick", "arya", "bran"],
        ["send", "arya"],
        ["send", "arya", "-"],
        ["send", "arya", "  "],
        ["send", "arya", "hi", "--from"],
        ["send", "arya", "hi", "--from", "--channel"],
        ["send", "arya", "hi", "--force"],
        ["send", "--", "arya", "-x"],
        ["--home"],
        ["--home=/x", "tick", "arya"],
        ["--version"],
        ["status"],
        [],
    ],
)
def test_anything_but_a_plain_tick_or_send_goes_to_click(argv: list[str]) -> None:
    assert short.parse(argv) is None


def test_a_plain_send_is_parsed_in_any_order() -> None:
    argv = ["--home", "/h", "send", "--from", "bob", "arya", "--channel", "x", "hi there"]
    assert short.parse(argv) == short.Call(
        "/h", "send", ["arya", "hi there"], {"sender": "bob", "channel": "x"}
    )


def test_send_without_click_delivers_what_the_click_command_delivers(agent_home: Home) -> None:
    argv = ["send", "arya", "hi", "--from", "bob", "--conversation", "c1", "--channel", "x"]
    proc = anima(agent_home, *argv)
    assert proc.returncode == 0, proc.stderr
    result = CliRunner().invoke(main, ["--home", str(agent_home.root), *argv])
    assert result.exit_code == 0, result.output
    inbox = agent_home.agents_dir / "arya/inbox"
    by_id = {p.stem: p.read_text() for p in inbox.glob("*.md")}
    fast, slow = by_id[proc.stdout.strip()], by_id[result.output.strip()]
    assert _without_id_and_time(fast) == _without_id_and_time(slow)
    assert "from: bob" in fast and "conversation: c1" in fast


def _without_id_and_time(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if not ln.startswith(("id:", "created:"))]


def test_tick_without_click_says_what_the_click_command_says(agent_home: Home) -> None:
    proc = anima(agent_home, "tick", "arya", "--force")
    assert proc.returncode == 0 and proc.stdout.startswith("hb-")
    missing = anima(agent_home, "tick", "bran")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: no agent named 'bran'")
    result = CliRunner().invoke(main, ["--home", str(agent_home.root), "tick", "bran"])
    assert result.exit_code == 1 and result.output == missing.stderr


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
