"""The turn commit written in-process must be exactly what `git commit` would have made."""

from __future__ import annotations

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
