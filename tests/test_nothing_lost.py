"""DESIGN §1.4, nothing is lost: what git records, what a failed or interrupted turn undoes, and
how one failure is kept from stopping an agent. Real git, real turns, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anima import gitstore, mailbox, turnlog
from anima.agent import Agent
from anima.home import Home
from anima.message import Message
from anima.runtime import run_once
from anima.testing import FakeModelServer, Fault, Reply
from tests.conftest import LiveRuntime, make_agent, replies, send, wait_for, write_global_config


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def assert_clean(repo: Path) -> None:
    """fsck --strict passes, the index is HEAD, and the working tree has nothing uncommitted."""
    git(repo, "fsck", "--strict", "--no-progress")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(repo, "write-tree").strip() == git(repo, "rev-parse", "HEAD^{tree}").strip()


def entry(repo: Path, path: str) -> tuple[str, str]:
    """(mode, type) of a path in HEAD's tree."""
    mode, kind, _ = git(repo, "ls-tree", "HEAD", "--", path).split(maxsplit=2)
    return mode, kind


# -- commits through git --------------------------------------------------------------------------


def test_exec_bit_and_symlink_are_committed_as_git_records_them(home: Home) -> None:
    d = make_agent(home).path
    gitstore.commit_external(d)
    (d / "workspace/run.sh").write_text("#!/bin/sh\necho hi\n")
    (d / "workspace/run.sh").chmod(0o755)
    (d / "workspace/link").symlink_to("run.sh")
    gitstore.commit(d, "turn(arya): tools", paths=["workspace/run.sh", "workspace/link"])
    assert entry(d, "workspace/run.sh") == ("100755", "blob")
    assert entry(d, "workspace/link") == ("120000", "blob")
    assert git(d, "cat-file", "-p", "HEAD:workspace/link") == "run.sh"
    assert_clean(d)
    (d / "workspace/other.sh").write_text("x\n")
    (d / "workspace/other.sh").chmod(0o755)
    gitstore.commit_external(d)  # a hand edit keeps its mode too
    assert entry(d, "workspace/other.sh") == ("100755", "blob")
    assert_clean(d)


@pytest.mark.parametrize("how", ["gitattributes", "autocrlf"])
def test_line_ending_rules_commit_blobs_that_exist(home: Home, how: str) -> None:
    d = make_agent(home).path
    if how == "gitattributes":
        (d / ".gitattributes").write_text("*.txt text eol=lf\n")
    else:
        git(d, "config", "core.autocrlf", "true")
    gitstore.commit_external(d)
    (d / "workspace/notes.txt").write_bytes(b"one\r\ntwo\r\n")
    gitstore.commit(d, "turn(arya): notes", paths=["workspace/notes.txt"])
    git(d, "fsck", "--strict", "--no-progress")  # before: "missing blob"
    assert git(d, "cat-file", "-p", "HEAD:workspace/notes.txt") == "one\ntwo\n"
    assert git(d, "diff", "--stat") == ""


def test_nested_repository_is_committed_as_plain_files(home: Home) -> None:
    d = make_agent(home).path
    gitstore.commit_external(d)
    proj = d / "workspace/proj"
    proj.mkdir()
    git(proj, "init", "-q")
    (proj / "main.py").write_text("print('hi')\n")
    gitstore.commit(d, "turn(arya): shell", paths=["workspace"])
    assert entry(d, "workspace/proj/main.py") == ("100644", "blob")  # before: a 160000 gitlink
    assert "160000" not in git(d, "ls-files", "-s")
    (proj / "second.py").write_text("x = 1\n")
    hand = d / "memory/proj"
    hand.mkdir()
    git(hand, "init", "-q")
    (hand / "a.md").write_text("a\n")
    gitstore.commit_external(d)
    assert entry(d, "workspace/proj/second.py")[0] == "100644"
    assert entry(d, "memory/proj/a.md")[0] == "100644"
    git(d, "fsck", "--strict", "--no-progress")


def test_object_and_ref_formats_are_pinned(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever default a person's git has (GIT_DEFAULT_HASH here; init.defaultObjectFormat
    and init.defaultRefFormat on newer gits), an agent repository is SHA-1 with loose refs."""
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[init]\n\tdefaultObjectFormat = sha256\n\tdefaultRefFormat = reftable\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_DEFAULT_HASH", "sha256")
    subprocess.run(["git", "init", "-q", str(tmp_path / "plain")], check=True)
    assert git(tmp_path / "plain", "rev-parse", "--show-object-format").strip() == "sha256"
    d = make_agent(home).path
    assert git(d, "rev-parse", "--show-object-format").strip() == "sha1"
    assert (d / ".git/refs/heads").is_dir() and (d / ".git/HEAD").read_text().startswith("ref:")


def test_git_environment_of_the_caller_does_not_redirect_commits(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime started from inside a git hook inherits GIT_DIR / GIT_INDEX_FILE."""
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    d = make_agent(home).path
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git/index"))
    gitstore.commit_external(d)
    (d / "memory/MEMORY.md").write_text("edited\n")
    gitstore.commit(d, "turn(arya): x", paths=["memory/MEMORY.md"])
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert git(d, "log", "-1", "--format=%s").strip() == "turn(arya): x"
    assert not list((other / ".git").glob("index"))
    assert_clean(d)


def test_hand_commit_during_a_turn_is_its_parent_not_orphaned(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    gitstore.commit_external(agent.path)
    send(agent, "take your time")
    fake.add(Reply("done", fault=Fault(delay=1.5)))
    with LiveRuntime(home) as rt:
        fake.wait_for_requests(1)
        (agent.path / "persona.md").write_text("You are Arya, edited while she thought.\n")
        git(agent.path, "commit", "-qam", "person: edit persona mid-turn")
        mine = git(agent.path, "rev-parse", "HEAD").strip()
        wait_for(lambda: replies(agent), what="the reply")
        rt.stop()
    subjects = git(agent.path, "log", "-2", "--format=%s").splitlines()
    assert subjects == [
        "turn(arya): reply to cli message from you",
        "person: edit persona mid-turn",
    ]
    assert git(agent.path, "rev-parse", "HEAD^").strip() == mine
    assert "edited while she thought" in git(agent.path, "show", "HEAD:persona.md")
    assert_clean(agent.path)


def test_commit_waits_for_a_live_gits_lock_and_clears_a_dead_ones(home: Home) -> None:
    d = make_agent(home).path
    gitstore.commit_external(d)
    lock = d / ".git/index.lock"
    holder = subprocess.Popen(  # a live git holds index.lock open for a moment
        [sys.executable, "-c", f"import time; f = open({str(lock)!r}, 'w'); time.sleep(1.0)"]
    )
    wait_for(lock.exists, what="the live lock")
    assert gitstore.recover(d) == []  # held open: not ours to remove
    (d / "memory/MEMORY.md").write_text("after the lock\n")
    t0 = time.monotonic()
    threading_unlock = subprocess.Popen(
        [sys.executable, "-c", f"import time, os; time.sleep(0.6); os.unlink({str(lock)!r})"]
    )
    gitstore.commit(d, "turn(arya): waited", paths=["memory/MEMORY.md"])
    assert time.monotonic() - t0 >= 0.4
    holder.wait()
    threading_unlock.wait()
    lock.write_text("")  # left by a git that died: nobody holds it
    assert gitstore.recover(d) == ["index.lock"]
    assert_clean(d)


def test_damaged_index_is_rebuilt_from_head_and_reported_by_doctor(home: Home) -> None:
    agent = make_agent(home)
    gitstore.commit_external(agent.path)
    index = agent.path / ".git/index"
    data = bytearray(index.read_bytes())
    data[20:40] = b"\xff" * 20  # a torn write
    index.write_bytes(bytes(data))
    assert any("index" in p for p in gitstore.health(agent.path))
    from anima.doctor import run_checks

    assert any("index checksum" in c.detail for c in run_checks(home) if not c.ok)
    msg = send(agent, "are you there?")
    (result,) = run_once(home)
    assert result.error is None and result.message_ids == [msg.id]
    assert gitstore.health(agent.path) == []
    assert_clean(agent.path)


# -- rollback and recovery ------------------------------------------------------------------------


def test_failed_turn_puts_back_only_its_own_paths(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    gitstore.commit_external(agent.path)
    msg = send(agent, "write then fail")
    fake.add(
        Reply("", tool_calls=[{"name": "write_file", "input": {"path": "w.txt", "content": "x"}}]),
        Reply("unreachable", fault=Fault(status=400, delay=1.0)),
    )
    import threading

    result: list[object] = []
    t = threading.Thread(target=lambda: result.extend(run_once(home)))
    t.start()
    fake.wait_for_requests(2)  # the tool ran; the second call is in flight
    (agent.memory_dir / "groceries.md").write_text("a person's new note\n")
    (agent.path / "persona.md").write_text("a person's persona edit\n")
    t.join(30)
    (r,) = result
    assert r.error and (agent.inbox / f"{msg.id}.md").exists()  # type: ignore[attr-defined]
    assert not (agent.workspace / "w.txt").exists()  # the turn's own write is undone
    assert (agent.memory_dir / "groceries.md").read_text() == "a person's new note\n"
    assert (agent.path / "persona.md").read_text() == "a person's persona edit\n"
    fake.add(Reply("second time lucky"))
    run_once(home)  # the hand edits are committed as such before the next turn
    assert "external: hand edits" in git(agent.path, "log", "--format=%s")
    assert git(agent.path, "show", "HEAD:memory/groceries.md") == "a person's new note\n"
    assert_clean(agent.path)


def test_replay_that_keeps_failing_is_set_aside_and_the_agent_goes_on(home: Home) -> None:
    """A write-ahead record whose commit cannot be made (here: its history file is a
    directory) is tried three times, then set aside with its messages back in inbox/."""
    from dataclasses import asdict, replace

    from tests.test_recovery import _interrupted_record

    agent, rec, msg = _interrupted_record(home)
    bad_history = "history/elsewhere/2026-11-24.jsonl"
    (agent.path / bad_history).mkdir(parents=True)
    (agent.path / bad_history / "x").write_text("a directory where a file should be\n")
    gitstore.commit_external(agent.path)
    rec = replace(rec, history_path=bad_history)
    (agent.path / ".git/anima-turn.json").write_text(
        json.dumps({"phase": "committing", "record": asdict(rec)})
    )
    for _ in range(3):
        (r,) = run_once(home)  # reported, never raised
        assert r.error and "IsADirectoryError" in r.error
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == [msg.id]  # answered once set aside
    (aside,) = turnlog.set_aside(agent.path)
    assert aside["messages"] == [msg.id]
    from anima import status

    assert status.agent_status(home, "arya")["set_aside"] == 1
    assert len(replies(agent)) == 1


def test_one_odd_message_never_starves_the_agents_other_conversations(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    # an agent message with a hop count that is not a number (once a crash of the whole pass)
    odd = Message.create(sender="b2", to="arya", body="hi", channel="agent", extra={"hops": "lots"})
    mailbox.deliver(agent.path, odd)
    # a conversation whose compaction state is a directory: its turn raises a bare OSError
    (agent.path / "history/broken/compaction.json").mkdir(parents=True)
    broken = send(agent, "this one cannot be answered", conversation="broken")
    fine = send(agent, "and this one can", conversation="fine")
    results = {tuple(r.message_ids): r for r in run_once(home)}
    assert (odd.id,) not in results  # refused at intake, with its reason
    assert "hops" in (agent.inbox / "rejected" / f"{odd.id}.md.error.md").read_text()
    assert results[(fine.id,)].error is None
    bad = results[(broken.id,)]
    assert bad.error and "IsADirectoryError" in bad.error
    from anima import attempts

    assert len(attempts.load(home, "arya")[broken.id]) == 1  # counted as an attempt
    assert (agent.inbox / f"{broken.id}.md").exists()


def test_each_turn_is_routed_as_soon_as_it_commits(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    first = send(agent, "quick", sender="webhook:caller", channel="webhook")
    time.sleep(0.002)
    send(agent, "slow", conversation="later")
    fake.add(Reply("the quick answer"), Reply("the slow answer", fault=Fault(delay=3)))
    with LiveRuntime(home) as rt:
        fake.wait_for_requests(2)  # the second conversation's turn is in flight
        spooled = list((home.spool_dir / "webhook/new").glob("*.md"))
        assert len(spooled) == 1, "the first reply waited for the agent's next conversation"
        assert f"in_reply_to: {first.id}" in spooled[0].read_text()
        wait_for(lambda: len(replies(agent)) == 2, what="both replies")
        rt.stop()


# -- processes and signals ------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_ctrl_c_in_a_terminal_finishes_the_turn_and_commits(
    home: Home, fake: FakeModelServer
) -> None:
    pexpect = pytest.importorskip("pexpect")
    agent = make_agent(home)
    send(agent, "think a moment")
    fake.add(Reply("finished despite Ctrl-C", fault=Fault(delay=1.5)))
    child = pexpect.spawn(
        sys.executable, ["-m", "anima", "run"], env=dict(os.environ), encoding="utf-8", timeout=30
    )
    try:
        child.expect("anima run: watching")
        fake.wait_for_requests(1)
        child.sendintr()  # the terminal's Ctrl-C: SIGINT to the whole foreground group
        child.expect(pexpect.EOF)
    finally:
        child.close()
    out = child.before or ""
    assert child.exitstatus == 0, out
    assert "Traceback" not in out and "BrokenPipe" not in out
    assert "stopped" in out
    assert [r.body.strip() for r in replies(agent)] == ["finished despite Ctrl-C"]
    assert not (agent.path / ".git/anima-turn.json").exists()  # nothing left for next start
    assert_clean(agent.path)


def test_runtime_survives_its_git_children_being_killed(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    fake.add(Reply("one"), Reply("two"))
    with LiveRuntime(home) as rt:
        send(agent, "first")
        wait_for(lambda: len(replies(agent)) == 1, what="the first reply")
        assert rt.proc is not None
        for pid in children_of(rt.proc.pid):  # GitPython's cat-file helpers used to live here
            with contextlib.suppress(ProcessLookupError):  # a child that just finished
                os.kill(pid, signal.SIGKILL)
        send(agent, "second")
        wait_for(lambda: len(replies(agent)) == 2, what="the second reply")
        rt.stop()
    assert_clean(agent.path)


def test_gc_runs_per_agent_under_its_lock_and_says_what_it_did(
    home: Home, fake: FakeModelServer
) -> None:
    write_global_config(home, fake.url, runtime={"gc_every_turns": 2})
    agent = make_agent(home)
    fake.add(Reply("one"), Reply("two"))
    with LiveRuntime(home) as rt:
        send(agent, "first")
        wait_for(lambda: len(replies(agent)) == 1, what="the first reply")
        send(agent, "second")
        wait_for(lambda: "arya: gc" in rt.output(), what="the gc log line")
        rt.stop()
    assert_clean(agent.path)


def test_full_disk_is_one_clear_error_and_everything_is_handled_once_after(
    tmp_path: Path, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        home = Home(disk / "home")
        home.init()
        write_global_config(home, fake.url)
        monkeypatch.setenv("ANIMA_HOME", str(home.root))
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        agent = make_agent(home)
        gitstore.commit_external(agent.path)
        msg = send(agent, "are you there?")
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        fake.add(Reply("yes, after the disk was freed"))
        cli = [sys.executable, "-m", "anima", "run", "--once"]
        full = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert full.returncode != 0
        assert "Traceback" not in full.stderr + full.stdout, full.stderr
        assert "disk is full" in full.stderr or "No space left" in full.stderr, full.stderr
        assert (agent.inbox / f"{msg.id}.md").exists()
        filler.unlink()
        fake.add(Reply("yes, after the disk was freed"))
        freed = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert freed.returncode == 0, freed.stderr
        assert [r.in_reply_to for r in replies(Agent(home, "arya"))] == [msg.id]
        assert_clean(agent.path)
    finally:
        subprocess.run(["umount", "-l", str(disk)])


# -- found by an adversarial review of the store (each reproduced on the first version) ----------


def test_failed_turn_restores_a_git_ignored_file_it_edited(
    home: Home, fake: FakeModelServer
) -> None:
    """Rollback goes back to what a path held before the tool wrote it, not to HEAD: a file
    git ignores is restored, never deleted as if the turn had made it."""
    agent = make_agent(home)
    with open(agent.path / ".gitignore", "a") as fh:
        fh.write("workspace/datasets/\n")
    (agent.workspace / "datasets").mkdir()
    (agent.workspace / "datasets/survey.csv").write_text("id,answer\n1,yes\n")
    gitstore.commit_external(agent.path)
    send(agent, "fix the header")
    edit = {"path": "datasets/survey.csv", "old_text": "id,answer", "new_text": "id,response"}
    fake.add(
        Reply("", tool_calls=[{"name": "edit_file", "input": edit}]),
        Reply("", fault=Fault(status=400)),
    )
    (r,) = run_once(home)
    assert r.error
    assert (agent.workspace / "datasets/survey.csv").read_text() == "id,answer\n1,yes\n"


def test_what_a_rollback_discards_is_kept_on_a_side_ref(home: Home) -> None:
    """A shell turn killed mid-way: the workspace goes back to its snapshot from before the
    command, and everything that differed is kept as refs/anima/abandoned/…"""
    agent = make_agent(home, provider="offline")
    (agent.workspace / "essay.md").write_text("v1\n")
    gitstore.commit_external(agent.path)
    journal = turnlog.begin(agent.path)
    journal.add("workspace")  # as the shell tool does before it runs
    (agent.workspace / "agent-out.txt").write_text("half a command's output\n")
    (agent.workspace / "essay.md").write_text("v1\nwritten while the runtime was down\n")
    send(agent, "hello")
    (r,) = run_once(home)  # the killed turn is undone first, then the message answered
    assert r.error is None
    assert not (agent.workspace / "agent-out.txt").exists()
    refs = git(agent.path, "for-each-ref", "--format=%(refname)", "refs/anima/abandoned").split()
    assert len(refs) == 1
    kept = git(agent.path, "show", f"{refs[0]}:workspace/essay.md")
    assert kept == "v1\nwritten while the runtime was down\n"
    assert "half a command" in git(agent.path, "show", f"{refs[0]}:workspace/agent-out.txt")
    assert_clean(agent.path)


def test_tools_name_a_path_before_they_write_it(home: Home) -> None:
    """The claim comes first: if it cannot be recorded, nothing is written."""
    from anima.tools import ToolContext, registry, run_tool

    agent = make_agent(home)

    class Refusing(set[str]):
        def add(self, rel: str) -> None:
            raise RuntimeError(f"cannot record {rel}")

    ctx = ToolContext(agent.name, agent.path, agent.config, ["arya"], [], "cli", touched=Refusing())
    tools = registry()
    (agent.workspace / "old.md").write_text("old text\n")
    calls = [
        ("write_file", {"path": "new.md", "content": "x"}),
        ("edit_file", {"path": "old.md", "old_text": "old", "new_text": "new"}),
        ("memory", {"command": "create", "path": "n.md", "content": "x", "reason": "r"}),
        ("schedule", {"text": "t", "at": "2030-01-01T10:00:00Z"}),
    ]
    for name, args in calls:
        out, is_error = run_tool(tools, ctx, name, args)
        assert is_error, (name, out)
    assert not (agent.workspace / "new.md").exists()
    assert (agent.workspace / "old.md").read_text() == "old text\n"
    assert not (agent.memory_dir / "n.md").exists()
    assert not list((agent.path / "reminders").glob("*.toml"))


def test_a_landed_turn_is_not_replayed_after_a_hand_edit(home: Home) -> None:
    """Killed right after HEAD moved, before the record was removed; a person then commits a
    hand edit. The record names its commit, which is in HEAD's history: no second turn."""
    agent = make_agent(home, provider="offline")
    send(agent, "hello")
    (r,) = run_once(home)
    from dataclasses import asdict

    rec = turnlog.TurnRecord(
        subject=git(agent.path, "log", "-1", "--format=%s").strip(),
        body="",
        trailers=[("Anima-Message", r.message_ids[0])],
        archive=[],
        outbox=[],
        history_path=next(
            str(p.relative_to(agent.path)) for p in (agent.path / "history").rglob("*.jsonl")
        ),
        history_records=[{"role": "user", "content": [], "turn": "x"}],
    )
    record = {"phase": "committing", "record": asdict(rec), "commit": r.commit}
    (agent.path / ".git/anima-turn.json").write_text(json.dumps(record))
    (agent.memory_dir / "MEMORY.md").write_text("- a person's note\n")
    lines = (agent.path / rec.history_path).read_text()
    run_once(home)
    assert (agent.path / rec.history_path).read_text() == lines
    turns = git(agent.path, "log", "--format=%s").count("turn(arya)")
    assert turns == 1 and "external: hand edits" in git(agent.path, "log", "-1", "--format=%s")


def test_whole_tree_commit_racing_a_persons_fast_forward_keeps_their_files(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(home)
    gitstore.commit_external(agent.path)
    who = ["-c", "user.name=p", "-c", "user.email=p@x"]
    git(agent.path, "checkout", "-q", "-b", "upstream")
    (agent.memory_dir / "recipes.md").write_text("pulled from upstream\n")
    git(agent.path, "add", "memory/recipes.md")
    git(agent.path, *who, "commit", "-qm", "upstream: recipes")
    git(agent.path, "checkout", "-q", "main")
    (agent.path / "persona.md").write_text("You are Arya.\nhand edit\n")
    real = gitstore._git_waiting
    fired: list[int] = []

    def person_pulls_now(path: Path, *args: str, **kw: object) -> str:
        if args[0] == "update-ref" and not fired:  # the instant between write-tree and the ref
            fired.append(1)
            git(agent.path, "merge", "-q", "--ff-only", "upstream")
        return real(path, *args, **kw)

    monkeypatch.setattr(gitstore, "_git_waiting", person_pulls_now)
    gitstore.commit_external(agent.path)
    assert fired
    assert "memory/recipes.md" in git(agent.path, "ls-tree", "-r", "--name-only", "HEAD")
    assert "hand edit" in git(agent.path, "show", "HEAD:persona.md")
    assert_clean(agent.path)


def test_a_merge_in_progress_is_never_committed_and_messages_wait(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    gitstore.commit_external(agent.path)
    who = ["-c", "user.name=p", "-c", "user.email=p@x"]
    mem = agent.memory_dir / "MEMORY.md"
    base = mem.read_text()
    git(agent.path, "checkout", "-q", "-b", "laptop")
    mem.write_text(base + "- from laptop\n")
    git(agent.path, *who, "commit", "-qam", "laptop note")
    git(agent.path, "checkout", "-q", "main")
    mem.write_text(base + "- from server\n")
    git(agent.path, *who, "commit", "-qam", "server note")
    subprocess.run(["git", "-C", str(agent.path), *who, "merge", "laptop"], capture_output=True)
    msg = send(agent, "hello")
    (r,) = run_once(home)
    assert r.error and "merge is in progress" in r.error
    assert "<<<<<<<" not in git(agent.path, "show", "HEAD:memory/MEMORY.md")
    assert (agent.inbox / f"{msg.id}.md").exists()
    from anima import attempts

    assert msg.id not in attempts.load(home, "arya")  # not the message's fault
    from anima import status
    from anima.doctor import run_checks

    assert status.agent_status(home, "arya")["git_busy"] == "a merge"  # says why it waits
    assert any("merge is in progress" in c.detail for c in run_checks(home) if not c.ok)
    mem.write_text(base + "- from laptop\n- from server\n")
    git(agent.path, "add", "memory/MEMORY.md")
    git(agent.path, *who, "commit", "-q", "--no-edit")
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == [msg.id]


def test_a_persons_commit_waiting_on_its_editor_keeps_its_lock(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    gitstore.commit_external(agent.path)
    mem = agent.memory_dir / "MEMORY.md"
    mem.write_text(mem.read_text() + "- a person's note\n")
    env = {**os.environ, "GIT_EDITOR": "sleep 2; echo 'my careful message' >"}
    person = subprocess.Popen(
        ["git", "-C", str(agent.path), "commit", "-a"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for((agent.path / ".git/index.lock").exists, what="the person's lock")
    assert gitstore.recover(agent.path) == []  # a git is at work here: not stale
    assert not any("stale lock" in p for p in gitstore.health(agent.path))  # doctor agrees
    out, err = person.communicate(timeout=30)
    assert person.returncode == 0, err
    assert git(agent.path, "log", "-1", "--format=%s").strip() == "my careful message"


def test_one_agent_without_a_head_does_not_stop_the_others(home: Home) -> None:
    first = make_agent(home, "aaa", provider="offline")
    second = make_agent(home, "bbb", provider="offline")
    git(first.path, "checkout", "-q", "--orphan", "fresh")
    send(first, "hello")
    msg = send(second, "hello")
    results = {r.agent: r for r in run_once(home)}
    assert results["aaa"].error and "HEAD has no commit" in results["aaa"].error
    assert results["bbb"].error is None and results["bbb"].message_ids == [msg.id]


def test_a_lost_shared_index_is_rebuilt(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    send(agent, "one")
    run_once(home)
    shared = list((agent.path / ".git").glob("sharedindex.*"))
    assert shared, "agent repositories use a split index"
    for f in shared:
        f.unlink()
    msg = send(agent, "two")
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == [msg.id]
    assert_clean(agent.path)


def test_a_name_git_refuses_outside_the_workspace_does_not_wedge_the_agent(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    (agent.memory_dir / ".GIT").write_text("left by some other program\n")
    (agent.memory_dir / "fine.md").write_text("a real note\n")
    msg = send(agent, "hello")
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == [msg.id]
    assert git(agent.path, "show", "HEAD~1:memory/fine.md") == "a real note\n"


def test_a_flood_is_answered_in_batches_and_a_huge_commit_fits_the_command_line(
    home: Home,
) -> None:
    agent = make_agent(home, provider="offline")
    for i in range(120):
        send(agent, f"message {i}")
    results = run_once(home)
    assert [len(r.message_ids) for r in results] == [50, 50, 20]
    assert all(r.error is None for r in results)
    many = [f"workspace/flood/{'n' * 60}-{i:05d}.txt" for i in range(40_000)]
    (agent.workspace / "flood").mkdir()
    for rel in many:
        (agent.path / rel).write_text("x")
    gitstore.commit(agent.path, "turn(arya): a flood", paths=many)  # > ARG_MAX in one argv
    assert len(git(agent.path, "ls-files", "workspace/flood").split()) == 40_000
