"""Fuzzing message parsing and inbox intake: random bytes, YAML-ish front matter and hostile
inbox entries. parse() raises nothing but BadMessage; scan() raises nothing at all and leaves
every entry it looked at either pending or in inbox/rejected/ (nothing lost, nothing raised)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anima import front_matter, mailbox
from anima.errors import BadFrontMatter, BadMessage
from anima.message import Message, parse, render
from tests.fuzz import examples

FUZZ = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _parse(raw: bytes) -> Message | None:
    try:
        return parse(raw, fallback_id="x", default_to="arya", mtime=0.0)
    except BadMessage:
        return None


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_parse_or_are_bad_messages(raw: bytes) -> None:
    _parse(raw)
    _parse(b"---\n" + raw + b"\n---\nbody\n")


# -- YAML-ish front matter ----------------------------------------------------------------------

KEYS = ["id", "from", "to", "channel", "conversation", "kind", "in_reply_to", "created",
        "hops", "reminder_id", "description", "x", "on", "1", "<<", "? a", "- b"]  # fmt: skip
DATES = st.builds(
    lambda y, m, d, h, tz: f"{y:04d}-{m:02d}-{d:02d}" + (f"T{h:02d}:00:00{tz}" if h >= 0 else ""),
    st.integers(0, 99999),
    st.integers(0, 14),
    st.integers(0, 40),
    st.integers(-1, 30),
    st.sampled_from(["", "Z", "+01:00", "-12:00", "+99:00", ".123Z", " +05"]),
)
SCALARS = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "~",
            "null",
            "yes",
            "no",
            "on",
            ".inf",
            "-.nan",
            "0x1F",
            "0b101",
            "0o17",
            "190:20:30",
            "1_000",
            "1e400",
            "'quoted'",
            '"a\\x00b"',
            "|",
            ">",
            "*a",
            "&a x",
            "!!binary aGk=",
            "!!python/name:os.system",
            "!foo x",
            "! x",
            "[",
            "{",
            "]",
            "}",
            "\t",
            "%TAG",
            "...",
            "---",
            "@",
            "`",
        ]
    ),  # fmt: skip
    st.integers().map(str),
    st.floats().map(str),
    DATES,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=4).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
        ),
    ),
    max_leaves=12,
)
HEADS = st.lists(
    st.tuples(st.sampled_from(KEYS) | st.text(max_size=10), VALUES, st.integers(0, 4)), max_size=8
).map(lambda items: "\n".join(" " * indent + f"{k}: {v}" for k, v, indent in items))


@FUZZ
@given(HEADS, st.sampled_from(["---\n", "", "--- x\n"]), st.text(max_size=40))
def test_yaml_ish_front_matter_parses_or_is_a_bad_message(head: str, close: str, body: str) -> None:
    msg = _parse(f"---\n{head}\n{close}{body}".encode("utf-8", "surrogatepass"))
    if msg is not None:  # what is accepted renders and parses back to itself
        again = parse(render(msg).encode(), fallback_id="x", default_to="arya")
        assert again.with_(extra={}) == msg.with_(extra={})


@FUZZ
@given(HEADS)
def test_note_front_matter_is_a_mapping_or_refused(head: str) -> None:
    try:
        meta = front_matter.load(head)
    except BadFrontMatter:
        return
    assert isinstance(meta, dict) and all(isinstance(k, str) for k in meta)


# -- hostile inbox entries ----------------------------------------------------------------------

NAMES = st.one_of(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["rejected", ".tmp", "x.md", "a b.md", "-x.md", "x.MD", "..md", "é.md"]),
).filter(lambda n: n not in (".", "..") and len(n.encode()) < 200)
KINDS = st.sampled_from(["file", "file", "file", "dir", "symlink", "fifo", "hardlink"])
CONTENTS = st.one_of(
    st.binary(max_size=300),
    HEADS.map(lambda h: f"---\n{h}\n---\nhello\n".encode()),
    st.just(b"---\nfrom: you\n"),
    st.just(b"plain text message\n"),
)


def _make(inbox: Path, outside: Path, name: str, kind: str, content: bytes) -> None:
    path = inbox / name
    if kind == "dir":
        path.mkdir()
        (path / "inner.md").write_bytes(content)
    elif kind == "symlink":
        path.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "hardlink":
        os.link(outside, path)
    else:
        path.write_bytes(content)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(NAMES, KINDS, CONTENTS), max_size=6, unique_by=lambda e: e[0]))
def test_scan_keeps_every_entry_pending_or_rejected(entries: list[tuple[str, str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        agent_dir = Path(tmp) / "arya"
        inbox = agent_dir / "inbox"
        inbox.mkdir(parents=True)
        outside = Path(tmp) / "outside.md"
        outside.write_text("another agent's file\n")
        entries = [e for e in entries if not (e[0] in mailbox.RESERVED and e[1] == "dir")]
        for name, kind, content in entries:
            _make(inbox, outside, name, kind, content)
        scan = mailbox.scan(agent_dir, "arya")
        looked_at = {n for n, _, _ in entries if not n.startswith(".") or n == ".tmp"}
        pending = {p.path.name for p in scan.pending}
        left = {p.name for p in inbox.iterdir()} - {"rejected", ".tmp"}
        assert pending == left & looked_at  # what scan saw is pending, or it is gone from inbox/
        rejected = inbox / "rejected"
        moved = [p for p in rejected.iterdir() if not p.name.endswith(".error.md")] if (
            rejected.is_dir()
        ) else []  # fmt: skip
        assert len(moved) == len(looked_at) - len(pending)  # ... into rejected/, with a note each
        assert all((rejected / f"{p.name}.error.md").is_file() for p in moved)
        assert outside.read_text() == "another agent's file\n"
