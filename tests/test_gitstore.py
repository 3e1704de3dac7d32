"""The turn commit written in-process must be exactly what `git commit` would have made."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import git

from anima import gitstore
from anima.home import Home
from tests.conftest import make_agent


def _consistent(repo_dir: Path) -> git.Repo:
    repo = git.Repo(repo_dir)
    repo.git.fsck("--strict")
    assert repo.git.status("--porcelain", "--untracked-files=all") == ""
    assert repo.git.write_tree() == repo.head.commit.tree.hexsha  # index == HEAD
    return repo


def test_commit_adds_edits_and_removes_nested_paths(home: Home) -> None:
    agent = make_agent(home)
    gitstore.commit_external(agent.path)
    d = agent.path
    (d / "outbox/2026-11").mkdir(parents=True)
    (d / "outbox/2026-11/a.md").write_text("a\n")
    (d / "memory/MEMORY.md").write_text("edited\n")
    (d / "deep/er/still").mkdir(parents=True)
    (d / "deep/er/still/x.md").write_text("x\n")
    sha = gitstore.commit(
        d,
        "turn(arya): one",
        body="b",
        trailers=[("Anima-Message", "m1")],
        paths=["outbox/2026-11/a.md", "memory/MEMORY.md", "deep/er/still/x.md"],
    )
    repo = _consistent(d)
    assert repo.head.commit.hexsha == sha
    assert repo.head.commit.message.endswith("Anima-Message: m1\n")
    assert gitstore.log(d, limit=1)[0].trailers == {"Anima-Message": "m1"}
    (d / "deep/er/still/x.md").unlink()
    (d / "memory/MEMORY.md").unlink()
    gitstore.commit(d, "turn(arya): two", paths=["deep/er/still/x.md", "memory/MEMORY.md"])
    repo = _consistent(d)
    names = repo.git.ls_tree("-r", "--name-only", "HEAD").split()
    assert "deep/er/still/x.md" not in names and "memory/MEMORY.md" not in names
    assert "outbox/2026-11/a.md" in names
    assert repo.git.log("-1", "--format=%an <%ae>") == "arya <arya@anima.local>"
    assert "commit: turn(arya): two" in repo.git.reflog("-1")


def test_fast_hand_edit_check_skips_git_but_sees_every_kind_of_edit(home: Home) -> None:
    agent = make_agent(home)
    d = agent.path
    assert gitstore.commit_external(d) is not None  # the agent.toml edit of make_agent
    assert gitstore.commit_external(d, full=False) is None  # nothing changed: no commit
    import time

    time.sleep(0.01)
    (d / "memory/people").mkdir()
    (d / "memory/people/ana.md").write_text("Ana\n")
    assert gitstore.commit_external(d, full=False) is not None
    time.sleep(0.01)
    (d / "notes.md").write_text("a new top-level file\n")
    assert gitstore.commit_external(d, full=False) is not None
    time.sleep(0.01)
    (d / "memory/people/ana.md").unlink()
    sha = gitstore.commit_external(d, full=False)
    assert sha is not None
    assert "memory/people/ana.md" in git.Repo(d).git.show("--name-only", "--format=", sha)
    _consistent(d)


def test_turn_commit_edits_trees_as_git_would_and_the_index_follows(home: Home) -> None:
    """A turn's files are committed from the parent's trees (not from the index): modes,
    .gitattributes filters, new and emptied directories come out as `git add` would make them,
    and the index matches HEAD again once the commit returns."""
    agent = make_agent(home)
    d = agent.path
    (d / ".gitattributes").write_text("*.txt text eol=lf\n")
    gitstore.commit_external(d)
    (d / "workspace/new/deeper").mkdir(parents=True)
    (d / "workspace/new/deeper/crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    (d / "workspace/run.sh").write_text("#!/bin/sh\n")
    (d / "workspace/run.sh").chmod(0o755)
    (d / "workspace/.gitkeep").unlink()
    paths = ["workspace/new/deeper/crlf.txt", "workspace/run.sh", "workspace/.gitkeep"]
    gitstore.commit(d, "turn(arya): files", paths=paths)
    repo = _consistent(d)
    assert repo.git.show("HEAD:workspace/new/deeper/crlf.txt") == "one\ntwo"
    assert repo.git.ls_tree("HEAD", "workspace/run.sh").startswith("100755 ")
    assert "workspace/.gitkeep" not in repo.git.ls_tree("-r", "--name-only", "HEAD")
    for p in ("workspace/new/deeper/crlf.txt", "workspace/run.sh"):
        (d / p).unlink()
    gitstore.commit(d, "turn(arya): gone", paths=paths[:2])
    repo = _consistent(d)
    assert repo.git.ls_tree("HEAD", "workspace") == ""  # emptied directories leave the tree


def test_a_persons_git_holding_the_index_makes_the_turn_wait_not_fail(home: Home) -> None:
    """A person's git holding index.lock makes the sync fail; it is redone, waiting for their
    git, before HEAD moves."""
    agent = make_agent(home)
    d = agent.path
    gitstore.commit_external(d)
    lock = d / ".git/index.lock"
    lock.write_text("")  # a person's `git add` at work: the turns commit all the same
    threading.Timer(0.5, lock.unlink).start()
    with gitstore.agent_lock(home.run_dir / "locks" / "arya.lock"):
        (d / "outbox/2026-11").mkdir(parents=True)
        for i in range(3):
            (d / f"outbox/2026-11/{i}.md").write_text(f"{i}\n")
            gitstore.commit(d, f"turn(arya): {i}", paths=[f"outbox/2026-11/{i}.md"])
            assert not lock.exists()  # the first commit waited for their git
    repo = _consistent(d)
    assert len(repo.git.ls_files("outbox").split()) == 3


def test_an_index_left_behind_head_is_mended_without_an_empty_commit(home: Home) -> None:
    """A crash between a turn's commit and its index sync leaves the index behind HEAD; the
    hand-edit check brings it back without attributing the turn's files to a person."""
    agent = make_agent(home)
    d = agent.path
    gitstore.commit_external(d)
    (d / "archive/2026-11").mkdir(parents=True)
    (d / "archive/2026-11/m.md").write_text("m\n")
    sha = gitstore.commit(d, "turn(arya): m", paths=["archive/2026-11/m.md"])
    subprocess.run(["git", "read-tree", "HEAD~1"], cwd=d, check=True)  # the sync never ran
    assert gitstore.commit_external(d) is None
    repo = _consistent(d)
    assert repo.head.commit.hexsha == sha


def test_full_check_sees_edits_everywhere_and_new_files_outside_the_records(home: Home) -> None:
    """Edited or removed tracked files are found anywhere; new files are looked for everywhere
    but archive/ and outbox/, which only turns add to (and commit)."""
    agent = make_agent(home)
    d = agent.path
    gitstore.commit_external(d)
    records = ["archive/2025-01/old.md", "outbox/2025-01/sent.md"]
    for rel in records:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text("as sent\n")
    gitstore.commit(d, "turn(arya): records", paths=records)
    (d / "archive/2025-01/stray.md").write_text("not looked for\n")
    assert gitstore.commit_external(d) is None
    (d / "archive/2025-01/old.md").write_text("corrected by hand\n")
    (d / "outbox/2025-01/sent.md").unlink()
    (d / "history/imported").mkdir(parents=True)
    (d / "history/imported/2024-12-31.jsonl").write_text("{}\n")
    (d / "memory/new.md").write_text("new note\n")
    sha = gitstore.commit_external(d)
    assert sha is not None
    shown = set(git.Repo(d).git.show("--name-only", "--format=", sha).split())
    assert shown >= {*records, "history/imported/2024-12-31.jsonl", "memory/new.md"}


def test_gc_packs_loose_objects_into_few_packs_and_loses_nothing(home: Home) -> None:
    agent = make_agent(home)
    d = agent.path
    gitstore.commit_external(d)
    (d / "outbox/2026-11").mkdir(parents=True)

    def turns(first: int, n: int) -> None:
        for i in range(first, first + n):
            (d / f"outbox/2026-11/{i}.md").write_text(f"reply {i}\n")
            gitstore.commit(d, f"turn(arya): {i}", paths=[f"outbox/2026-11/{i}.md"])

    def loose_and_packs() -> tuple[int, int]:
        out = dict(line.split(": ") for line in git.Repo(d).git.count_objects("-v").splitlines())
        return int(out["count"]), int(out["packs"])

    turns(0, 5)
    assert gitstore.gc(d, loose_limit=1000).startswith("gc: ")  # too few: nothing done
    assert loose_and_packs()[0] > 0
    for rounds in range(8):
        turns(5 + 5 * rounds, 5)
        assert "packed" in gitstore.gc(d, loose_limit=10)
        assert loose_and_packs()[0] == 0
    assert loose_and_packs()[1] <= 4  # rolled up geometrically, not one pack per gc
    repo = _consistent(d)
    assert len(list(repo.iter_commits())) >= 46


def test_a_repository_that_ignores_file_modes_keeps_the_recorded_mode(home: Home) -> None:
    """core.fileMode=false (a person's choice on a filesystem without exec bits): git keeps the
    mode the index has, and so must a turn's commit."""
    agent = make_agent(home)
    d = agent.path
    gitstore.commit_external(d)
    (d / "workspace/tool.sh").write_text("#!/bin/sh\n")
    (d / "workspace/tool.sh").chmod(0o755)
    gitstore.commit(d, "turn(arya): tool", paths=["workspace/tool.sh"])
    subprocess.run(["git", "-C", str(d), "config", "core.fileMode", "false"], check=True)
    (d / "workspace/tool.sh").chmod(0o644)  # the filesystem lost the bit; git does not care
    (d / "workspace/tool.sh").write_text("#!/bin/sh\necho hi\n")
    gitstore.commit(d, "turn(arya): edit tool", paths=["workspace/tool.sh"])
    repo = _consistent(d)
    assert repo.git.ls_tree("HEAD", "workspace/tool.sh").startswith("100755 ")
