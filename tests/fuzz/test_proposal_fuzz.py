"""Fuzzing proposals: hostile paths and agent.toml keys and values, as a model could send them.
A path is refused or lands under skills/ (or is persona.md / always.md); an agent.toml edit is
refused or changes exactly the key asked, never tools, owner, channels or anything else."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from anima import proposals
from anima.errors import BadProposal
from anima.packaged import data_dir
from tests.fuzz import examples

SEGMENTS = st.one_of(
    st.sampled_from(["skills", "..", ".", "", ".git", ".GIT", "SKILL.md", "x", "~", "/", "\\"]),
    st.text(alphabet="abc./\\-_~\x00 é", max_size=8),
)
PATHS = st.one_of(
    st.lists(SEGMENTS, max_size=5).map("/".join),
    st.text(max_size=40),
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "model",
            "owner",
            "tools.shell.enabled",
            "heartbeat.every",
            "budget.memory_chars",
            "budget",
            "mcp.x.command",
            "proposals.auto_apply",
            "trusted_channels",
            "heartbeat.every.x",
            "autonomy.turns_per_day",
            "reflection.at",
            "channels.telegram.owner",
        ]
    ),
    st.text(alphabet="abtols.\"' =[]\n#", max_size=20),
)
VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
TEMPLATE = (data_dir("agents-template") / "agent.toml").read_text()
GUARDED = ("owner", "trusted_channels", "tools", "mcp", "proposals", "channels")


@settings(max_examples=examples(600), deadline=None)
@given(PATHS)
@example("skills/x/../../../etc/passwd")
@example("skills/x/.git/hooks/pre-commit")
@example("skills//SKILL.md")
def test_a_path_is_refused_or_stays_where_proposals_may_write(rel: str) -> None:
    try:
        out = proposals.allowed_path(rel)
    except BadProposal:
        return
    if out in ("persona.md", "always.md"):
        return
    parts = PurePosixPath(out).parts
    assert parts[0] == "skills" and len(parts) >= 3 and out == "/".join(parts)
    assert not any(p.startswith(".") for p in parts)
    root = Path("/agent")
    assert (root / out).resolve().is_relative_to(root / "skills")


@settings(max_examples=examples(400), deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=3))
@example({"heartbeat.every": 'x"\nowner = "mallory'})
@example({"model": "a\n[tools.shell]\nenabled = true"})
def test_an_agent_toml_edit_changes_only_the_keys_asked(config: dict[str, Any]) -> None:
    try:
        text = proposals.edit_toml(TEMPLATE, config)
    except BadProposal:
        return
    before, after = tomllib.loads(TEMPLATE), tomllib.loads(text)
    for key in GUARDED:
        assert after.get(key) == before.get(key)
    for key, value in config.items():
        *table, name = key.split(".")
        scope = after[table[0]] if table else after
        assert scope.get(name) == value if value is not None else name not in scope
