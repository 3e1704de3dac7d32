"""Hostile tool calls: whatever a model sends, the turn survives, git's files stay git's, memory
and reminders stay within their caps, and no configured secret reaches history or a commit."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from anima import history
from anima.agent import Agent
from anima.home import Home
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from anima.tools import Tool, ToolContext, available, run_tool
from tests.conftest import make_agent, send

SECRET = "tg-0123456789-abcdefghijklmnop"


def ctx_for(agent: Agent) -> ToolContext:
    return ToolContext(agent.name, agent.path, agent.config, agent.home.agent_names(), [], "cli")


def call(
    agent: Agent, name: str, ctx: ToolContext | None = None, **args: object
) -> tuple[str, bool]:
    tools = {t.name: t for t in available(agent.config)}
    return run_tool(tools, ctx or ctx_for(agent), name, args)


def configure(agent: Agent, section: str, **values: object) -> Agent:
    """Set keys of one agent.toml table, as a person would (the table is added when missing)."""
    path = agent.path / "agent.toml"
    lines = path.read_text().splitlines()
    if f"[{section}]" not in lines:
        lines += ["", f"[{section}]"]
    start = lines.index(f"[{section}]") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    for key, value in values.items():
        new = f"{key} = {json.dumps(value)}"
        at = [i for i in range(start, end) if lines[i].split("=")[0].strip() == key]
        if at:
            lines[at[0]] = new
        else:
            lines.insert(start, new)
            end += 1
    path.write_text("\n".join(lines) + "\n")
    return Agent(agent.home, agent.name)


def commits(agent: Agent) -> None:
    """The repo still takes everything in its tree: a tool call never leaves it unable to commit."""
    subprocess.run(["git", "add", "-A"], cwd=agent.path, check=True, capture_output=True)
    subprocess.run(
        ["git", "commit", "-q", "--allow-empty", "-m", "check"],
        cwd=agent.path,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def agent(home: Home) -> Agent:
    return make_agent(home)


# -- every exception is an error result --------------------------------------------------------
def test_a_bug_in_a_tool_is_an_error_result_and_logged(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(ctx: ToolContext) -> str:
        raise RuntimeError("a bug")

    tools = {
        "boom": Tool("boom", "raises", {"type": "object", "properties": {}, "required": []}, boom)
    }
    with caplog.at_level(logging.ERROR, logger="anima.tools.base"):
        out, err = run_tool(tools, ctx_for(agent), "boom", {})
    assert err and "RuntimeError: a bug" in out
    (record,) = caplog.records
    assert record.exc_info is not None  # the traceback is logged


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("http_fetch", {"url": "http://[::1"}, "not a valid URL"),
        ("http_fetch", {"url": "http://example.com:99999/"}, "not a valid URL"),
        ("http_fetch", {"url": "http://example.com/a b\x01"}, "control characters"),
        ("write_file", {"path": "a.txt", "content": "half \ud800 surrogate"}, "not valid text"),
        ("write_file", {"path": "\ud800.txt", "content": "x"}, "not valid text"),
        ("write_file", {"path": "x" * 300, "content": "x"}, "path too long"),
        ("read_file", {"path": "a/" * 600}, "path too long"),
        ("schedule", {"text": "x", "at": "9999-12-31T23:59:59-12:00"}, "date-time"),
        ("schedule", {"text": "x", "cron": "0 0 30 2 *"}, "never fires"),
        ("unschedule", {"reminder_id": "x\x00y"}, "no reminder"),
        ("send_message", {"to": "telegram:a\x1b[2Jb", "text": "hi"}, "cannot be sent"),
        ("send_message", {"to": "telegram:1", "text": "x" * (1 << 20)}, "cannot be sent"),
    ],
)
def test_hostile_arguments_are_error_results(
    agent: Agent, name: str, args: dict[str, object], says: str
) -> None:
    out, err = call(agent, name, **args)
    assert err and says in out, out
    commits(agent)


def test_non_utf8_file_and_dangling_symlink(agent: Agent) -> None:
    (agent.workspace / "latin1.txt").write_bytes("café".encode("latin-1"))
    os.symlink("nowhere", agent.workspace / "dangling")
    out, err = call(agent, "edit_file", path="latin1.txt", old_text="caf", new_text="x")
    assert err and "not UTF-8" in out
    out, err = call(agent, "list_files")
    assert not err and "dangling -> nowhere" in out
    out, err = call(agent, "read_file", path="dangling")
    assert err and "no such file" in out


@pytest.fixture
def hostile_http() -> Iterator[str]:
    """A server answering text in a charset nobody knows; at /drip, a byte every 0.2 s."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=x-no-such-charset")
            self.end_headers()
            if self.path != "/drip":
                self.wfile.write(b"hello \xff")
                return
            with contextlib.suppress(OSError):  # the client hangs up
                for _ in range(50):
                    self.wfile.write(b".")
                    self.wfile.flush()
                    time.sleep(0.2)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # a dripping handler is not waited for
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_unknown_charset_is_read_as_utf8(agent: Agent, hostile_http: str) -> None:
    agent = configure(agent, "tools.http", allow_private=True)
    out, err = call(agent, "http_fetch", url=hostile_http)
    assert not err and out.startswith("HTTP 200") and "hello" in out


def test_a_dripping_server_is_cut_off_at_the_timeout(agent: Agent, hostile_http: str) -> None:
    agent = configure(agent, "tools.http", allow_private=True, timeout=1.0)
    started = time.monotonic()
    out, err = call(agent, "http_fetch", url=hostile_http + "drip")
    assert err and "longer than the timeout" in out
    assert time.monotonic() - started < 3


# -- git's own files ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".GIT/config",
        "x/.Git/HEAD",
        ".git ",
        ".git./x",
        "GIT~1/x",
        ".git::$INDEX_ALLOCATION/x",
        ".g\u200cit/x",
        ".gitattributes",
        "sub/.GITATTRIBUTES",
        "sub/.gitmodules",
        ".gitignore",
    ],
)
def test_file_tools_never_write_git_names(agent: Agent, path: str) -> None:
    out, err = call(agent, "write_file", path=path, content="* filter=evil\n")
    assert err and "belong to git" in out
    assert not any(p.name != ".gitkeep" for p in agent.workspace.rglob("*"))
    commits(agent)


def test_memory_tool_never_writes_under_git_names(agent: Agent) -> None:
    for path in (".GIT/x.md", "a/.git/b.md", "GIT~1/c.md"):
        out, err = call(agent, "memory", command="create", path=path, file_text="x", reason="r")
        assert err and "belong to git" in out, out
    call(agent, "memory", command="create", path="ok.md", file_text="x", reason="r")
    out, err = call(
        agent, "memory", command="rename", path="ok.md", new_path=".Git/ok.md", reason="r"
    )
    assert err and "belong to git" in out
    commits(agent)


def test_symlink_to_a_git_name_is_no_way_in(agent: Agent) -> None:
    os.symlink(".GIT", agent.workspace / "innocent")
    out, err = call(agent, "write_file", path="innocent/config", content="x")
    assert err and "belong to git" in out
    commits(agent)


# -- memory totals -----------------------------------------------------------------------------
def test_memory_written_in_one_turn_is_capped(agent: Agent) -> None:
    agent = configure(agent, "budget", memory_turn_bytes=1000)
    ctx = ctx_for(agent)
    out, err = call(
        agent, "memory", ctx, command="create", path="a.md", file_text="a" * 600, reason="r"
    )
    assert not err, out
    out, err = call(
        agent, "memory", ctx, command="create", path="b.md", file_text="b" * 600, reason="r"
    )
    assert err and "a turn" in out
    assert not (agent.memory_dir / "b.md").exists()
    out, err = call(agent, "memory", command="create", path="b.md", file_text="b" * 600, reason="r")
    assert not err, out  # the next turn has a fresh allowance


def test_memory_folder_total_is_capped_but_condensing_is_allowed(agent: Agent) -> None:
    used = sum(p.stat().st_size for p in agent.memory_dir.rglob("*") if p.is_file())
    agent = configure(agent, "budget", memory_total_bytes=used + 2500)
    for i in range(2):
        out, err = call(
            agent, "memory", command="create", path=f"n{i}.md", file_text="x" * 1000, reason="r"
        )
        assert not err, out
    out, err = call(
        agent, "memory", command="create", path="n2.md", file_text="x" * 1000, reason="r"
    )
    assert err and "past its cap" in out
    out, err = call(
        agent,
        "memory",
        command="str_replace",
        path="n0.md",
        old_str="x" * 1000,
        new_str="short",
        reason="r",
    )
    assert not err, out
    out, err = call(
        agent, "memory", command="create", path="n2.md", file_text="x" * 1000, reason="r"
    )
    assert not err, out


# -- secrets -----------------------------------------------------------------------------------
def test_secret_values_are_redacted_from_results(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = agent.home.root / "credentials.env"
    creds.write_text(f"TELEGRAM_BOT_TOKEN={SECRET}\nSHORT=abc\n")
    creds.chmod(0o600)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fromtheenvironment")
    (agent.workspace / "leak.txt").write_text(f"token {SECRET} key sk-ant-fromtheenvironment abc\n")
    out, err = call(agent, "read_file", path="leak.txt")
    assert not err
    assert SECRET not in out and "sk-ant-fromtheenvironment" not in out
    assert "[redacted: TELEGRAM_BOT_TOKEN]" in out and "[redacted: ANTHROPIC_API_KEY]" in out
    assert "abc" in out  # too short to be treated as a secret
    out, err = call(agent, "read_file", path=f"no-{SECRET}")  # error results too
    assert err and SECRET not in out


def test_a_secret_read_in_a_turn_reaches_neither_history_nor_git(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    (home.root / "credentials.env").write_text(f"DISCORD_BOT_TOKEN={SECRET}\n")
    (agent.workspace / "leak.txt").write_text(f"the token is {SECRET}\n")
    fake.add(
        Reply("", tool_calls=[{"name": "read_file", "input": {"path": "leak.txt"}}]), Reply("Done.")
    )
    send(agent, "read leak.txt")
    (result,) = run_once(home)
    assert result.error is None
    (hist,) = history.day_files(agent.path, "cli")
    assert SECRET not in hist.read_text() and "[redacted: DISCORD_BOT_TOKEN]" in hist.read_text()
    log = subprocess.run(
        ["git", "log", "-p", "--all", "--", "history"],
        cwd=agent.path,
        capture_output=True,
        text=True,
    ).stdout
    assert "redacted" in log and SECRET not in log


# -- runaway reminders -------------------------------------------------------------------------
def test_reminders_have_a_cap_and_a_minimum_repeat(agent: Agent) -> None:
    agent = configure(agent, "tools.schedule", max_reminders=2)
    for cron in ("* * * * *", "*/5 * * * *", "0,1 9 * * *", "* * * * * *"):
        out, err = call(agent, "schedule", text="nag", cron=cron)
        assert err and "at most every 15 minutes" in out, (cron, out)
    assert not call(agent, "schedule", text="ok", cron="*/15 * * * *")[1]
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert not call(agent, "schedule", text="once", at=soon)[1]
    out, err = call(agent, "schedule", text="third", at=soon)
    assert err and "the limit is 2" in out
    agent = configure(agent, "tools.schedule", min_repeat_minutes=1)
    out, err = call(
        agent,
        "unschedule",
        reminder_id=sorted(p.stem for p in (agent.path / "reminders").glob("*.toml"))[0],
    )
    assert not err, out
    assert not call(agent, "schedule", text="every minute", cron="* * * * *")[1]


def test_agent_scheduling_reminders_in_a_loop_hits_the_cap(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home, max_steps=30)
    agent = configure(agent, "tools.schedule", max_reminders=5)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    call_ = {"name": "schedule", "input": {"text": "wake me", "at": later}}
    fake.add(*[Reply("", tool_calls=[call_])] * 12, Reply("Done."))
    send(agent, "set reminders forever")
    (result,) = run_once(home)
    assert result.error is None and result.tool_calls == 12
    assert len(list((agent.path / "reminders").glob("*.toml"))) == 5
    (hist,) = history.day_files(agent.path, "cli")
    results = [
        b
        for line in hist.read_text().splitlines()
        for b in json.loads(line)["content"]
        if b["type"] == "tool_result"
    ]
    assert [r["is_error"] for r in results] == [False] * 5 + [True] * 7
    assert "the limit is 5" in results[-1]["content"]


def test_hand_made_reminder_that_never_fires_does_not_break_the_schedule(agent: Agent) -> None:
    from anima import schedule

    (agent.path / "reminders").mkdir(exist_ok=True)
    (agent.path / "reminders" / "never.toml").write_text('text = "x"\ncron = "0 0 30 2 *"\n')
    assert schedule.next_due(agent.home, agent.name, dt.datetime.now(dt.UTC)) is None
    assert schedule.fire_due(agent.home, agent.name) == []
