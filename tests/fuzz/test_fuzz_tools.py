"""Fuzzing every built-in tool's arguments: random values of the schema's types (with hostile
paths, control characters, lone surrogates, huge integers) and outright wrong types. Whatever
comes in, run_tool returns (content, is_error) and raises nothing, and afterwards the agent's
repository still commits: the turn's own commit of the touched paths, and everything in the tree.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anima import gitstore
from anima.agent import Agent, create_agent
from anima.home import Home
from anima.message import render
from anima.tools import Tool, ToolContext, available, run_tool
from tests.fuzz import examples

HOSTILE = [
    "",
    ".",
    "..",
    "../persona.md",
    "/etc/passwd",
    "~",
    ".git/config",
    ".GIT/HEAD",
    "a/.Git/x.md",
    ".git ",
    "GIT~1/x",
    ".gitattributes",
    ".gitmodules",
    "MEMORY.md",
    "people/ana.md",
    "x.md",
    "\x00",
    "a\x00b.md",
    "\ud800",
    "\x1b[2J",
    "\r\n",
    "x" * 5000,
    "é" * 300 + ".md",
    "http://[::1",
    "http://127.0.0.1:1/",
    "http://10.0.0.1/",
    "https://user@[fe80::1%25eth0]/",
    "ftp://x/",
    "http://a b/",
    "* * * * *",
    "0 0 30 2 *",
    "*/15 * * * *",
    "2001-01-01T00:00Z",
    "9999-12-31T23:59:59-12:00",
    "all",
    "arya",
    "telegram:123",
    "x:\x00",
]
"""Strings worth trying in any string argument: paths, URLs, schedules, addresses."""

TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=60))
INTEGER = st.one_of(st.integers(-5, 5), st.integers(), st.just(10**40), st.just(-(10**40)))
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.integers(),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _value(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in prop:
        return st.one_of(st.sampled_from(prop["enum"]), TEXT)
    return {
        "string": TEXT,
        "integer": INTEGER,
        "number": st.floats(allow_nan=True),
        "boolean": st.booleans(),
    }.get(prop["type"], WRONG)


def arguments(tool: Tool) -> st.SearchStrategy[Any]:
    """Mostly well-typed argument objects (any subset of the properties), sometimes not."""
    props = tool.schema["properties"]
    typed = st.fixed_dictionaries({}, optional={k: _value(p) for k, p in props.items()})
    wrong = st.dictionaries(st.sampled_from([*props, "bogus"]), WRONG, max_size=4)
    return st.one_of(typed, typed, typed, wrong, WRONG)


def _tools(agent: Agent) -> dict[str, Tool]:
    return {t.name: t for t in available(agent.config)}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One agent for the whole module, shell on: state piles up across examples, as in life."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("fuzz") / "home"
    mp.setenv("ANIMA_HOME", str(root))
    mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OLLAMA_HOST"):
        mp.delenv(var, raising=False)
    home = Home(root)
    home.init()
    a = create_agent(home, "arya")
    create_agent(home, "gendry")
    toml = a.path / "agent.toml"
    toml.write_text(
        toml.read_text()
        .replace("enabled = false", "enabled = true", 1)
        .replace("timeout = 30.0", "timeout = 2.0")
    )
    yield Agent(home, "arya")
    mp.undo()


class Bugs(logging.Handler):
    """Collects what run_tool logs as a bug (an exception that was not a ToolError)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def check_call(agent: Agent, name: str, args: Any) -> None:
    """One call as a turn makes it, then the turn's commit, then a commit of the whole tree.
    Every refusal must be a deliberate one (a ToolError with a message), not a caught bug."""
    ctx = ToolContext(agent.name, agent.path, agent.config, agent.home.agent_names(), [], "cli")
    bugs = Bugs()
    logger = logging.getLogger("anima.tools.base")
    logger.addHandler(bugs)
    try:
        content, is_error = run_tool(_tools(agent), ctx, name, args)
    finally:
        logger.removeHandler(bugs)
    assert isinstance(content, str) and isinstance(is_error, bool)
    assert not bugs.seen, content
    for msg in ctx.outgoing:
        render(msg).encode("utf-8")
    gitstore.commit(
        agent.path,
        f"fuzz {name}",
        body="\n".join(ctx.memory_lines()),
        paths=sorted(ctx.touched),
    )
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "--allow-empty", "-m", "tree"]):
        subprocess.run(cmd, cwd=agent.path, check=True, capture_output=True)


NAMES = [
    "read_file",
    "write_file",
    "edit_file",
    "list_files",
    "memory",
    "memory_search",
    "send_message",
    "schedule",
    "unschedule",
    "http_fetch",
    "shell",
    "propose",
]
EXAMPLES = {"shell": 15, "memory": 60, "write_file": 40, "edit_file": 30}


def test_every_builtin_tool_is_fuzzed(agent: Agent) -> None:
    assert set(_tools(agent)) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_tool_arguments_never_crash_or_wedge_the_repo(agent: Agent, name: str) -> None:
    tool = _tools(agent)[name]

    @settings(
        max_examples=examples(EXAMPLES.get(name, 25)),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(args=arguments(tool))
    def run(args: Any) -> None:
        check_call(agent, name, args)

    run()


def test_the_fuzzed_agent_is_still_whole(agent: Agent) -> None:
    assert (agent.path / "persona.md").is_file()
    assert not [p for p in Path(agent.workspace).rglob("*") if p.name.casefold() == ".git"]
    assert gitstore.head(agent.path)
