"""An adversarial pass over the turn commit that edits trees without `.git/index`
(`gitstore.commit`: `_file_entries`, `_edit_tree`, `_IndexSync`). Each test is a way the
commit could record something other than `git add` + `git commit` would, or lose track of a
file; real git, real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import unicodedata
from pathlib import Path

import pytest

from anima import gitstore


def git(repo: Path, *args: str, input: str | None = None) -> str:  # noqa: A002
    data = input.encode() if input is not None else None
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, input=data)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode("utf-8", "surrogateescape")  # CRLF as git wrote them


def assert_clean(repo: Path) -> None:
    """fsck --strict passes, the index is HEAD, and nothing is left uncommitted."""
    git(repo, "fsck", "--strict", "--no-progress")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(repo, "write-tree").strip() == git(repo, "rev-parse", "HEAD^{tree}").strip()


def as_git_adds(repo: Path, base: str, paths: list[str]) -> str:
    """The tree `git add -A -- paths` makes on `base`, in a private index."""
    env = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "adversarial-index")}
    env["GIT_LITERAL_PATHSPECS"] = "1"
    try:
        for args in (["read-tree", base], ["add", "-A", "--", *paths]):
            subprocess.run(["git", "-C", str(repo), *args], env=env, check=True)
        return subprocess.run(
            ["git", "-C", str(repo), "write-tree"], env=env, capture_output=True, text=True
        ).stdout.strip()
    finally:
        (repo / ".git" / "adversarial-index").unlink(missing_ok=True)


def turn(repo: Path, paths: list[str]) -> str:
    """Commit `paths` as a turn; assert the tree is the one `git add` makes."""
    parent = gitstore.head(repo)
    sha = gitstore.commit(repo, "turn(arya): files", paths=paths)
    assert git(repo, "rev-parse", "HEAD^{tree}").strip() == as_git_adds(repo, parent, paths)
    return sha


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    d = tmp_path / "arya"
    d.mkdir()
    (d / "README.md").write_text("hi\n")
    gitstore.init_repo(d, "arya")
    return d


def write(repo: Path, rel: str, data: str | bytes) -> None:
    """Write a file dated a little in the past: never racily clean, so git trusts an index
    entry's stat and blob as it does on a slow machine, instead of re-reading the file (which
    hid a wrong index blob on a fast one)."""
    p = repo / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data)
    past = time.time() - 10
    os.utime(p, (past, past), follow_symlinks=False)


# -- found, and fixed -----------------------------------------------------------------------------


def test_a_name_ending_in_cr_commits_its_own_content_not_its_namesakes(repo: Path) -> None:
    """`hash-object --stdin-paths` reads lines and drops a trailing CR: the turn's file `a\\r`
    was committed with the content of `a`, and `a` then showed as modified in the index."""
    write(repo, "a", "the content of a\n")
    write(repo, "a\r", "the content of a-with-CR\n")
    turn(repo, ["a\r"])
    assert git(repo, "cat-file", "-p", "HEAD:a\r") == "the content of a-with-CR\n"
    gitstore.commit_external(repo)
    assert_clean(repo)


def test_a_name_that_is_not_utf8_is_committed(repo: Path) -> None:
    """A file name git reported with bytes that are not UTF-8 (kept by Python as surrogates)
    raised UnicodeEncodeError out of commit(); the index path took it as git does."""
    name = os.fsdecode(b"caf\xe9.md")
    write(repo, name, "latin-1 name\n")
    turn(repo, [name])
    assert git(repo, "ls-tree", "--name-only", "HEAD", "--", name).strip() == '"caf\\351.md"'
    assert_clean(repo)


@pytest.mark.parametrize("how", ["autocrlf=input", "autocrlf=true", "text=auto"])
def test_a_crlf_file_git_keeps_as_crlf_is_not_renormalised(repo: Path, how: str) -> None:
    """With auto end-of-line conversion, git keeps CRLF in a file whose committed blob has
    them (it reads the index's blob); hash-object does not read the index and converted it. The
    turn then differed from `git add`, the index sync staged the CRLF back, and the next
    hand-edit check made an "external" commit undoing the turn's line endings."""
    write(repo, "w.txt", b"one\r\ntwo\r\n")
    turn(repo, ["w.txt"])
    if how == "text=auto":
        write(repo, ".gitattributes", "* text=auto\n")
        turn(repo, [".gitattributes"])
    else:
        git(repo, "config", "core.autocrlf", how.split("=")[1])
    write(repo, "w.txt", b"one\r\ntwo\r\nthree\r\n")
    sha = turn(repo, ["w.txt"])
    assert git(repo, "cat-file", "blob", "HEAD:w.txt").count("\r\n") == 3
    assert gitstore.commit_external(repo) is None
    assert gitstore.head(repo) == sha
    assert_clean(repo)


def test_a_path_beyond_a_symlink_is_refused_as_git_refuses_it(repo: Path) -> None:
    """A file written through a symlinked directory the tree does not have: the tree edit
    committed `lnk/y` as a directory entry (git refuses a path beyond a symbolic link), then
    the index sync failed on it and commit() raised after HEAD had moved."""
    write(repo, "real/x", "x\n")
    turn(repo, ["real/x"])
    (repo / "lnk").symlink_to("real")
    write(repo, "lnk/y", "y, through the link\n")
    write(repo, "ok.md", "ok\n")
    gitstore.commit(repo, "turn(arya): through a link", paths=["lnk/y", "ok.md"])
    names = git(repo, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert "lnk/y" not in names and "ok.md" in names
    assert git(repo, "write-tree").strip() == git(repo, "rev-parse", "HEAD^{tree}").strip()


def test_a_failing_clean_filter_leaves_out_only_its_file(repo: Path) -> None:
    """A required clean filter that fails: hash-object's failure raised out of commit() and the
    turn's other files were not committed; the index path leaves out only that file."""
    write(repo, ".gitattributes", "*.sec filter=boom\n")
    git(repo, "config", "filter.boom.clean", "false")
    git(repo, "config", "filter.boom.required", "true")
    turn(repo, [".gitattributes"])
    write(repo, "ok.md", "ok\n")
    write(repo, "x.sec", "secret\n")
    gitstore.commit(repo, "turn(arya): filtered", paths=["ok.md", "x.sec"])
    names = git(repo, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert "ok.md" in names and "x.sec" not in names


def test_a_file_replacing_a_directory_and_back_is_committed_as_git_add_does(repo: Path) -> None:
    """Where the tree has a directory and the disk now a file (or the other way round), the
    commit goes through the index, whose `update-index` refused the path without --replace
    ('appears as both a file and as a directory'): the turn's file was left out."""
    write(repo, "b/c", "c\n")
    write(repo, "a", "a file\n")
    turn(repo, ["b/c", "a"])
    shutil.rmtree(repo / "b")
    write(repo, "b", "now a file\n")
    (repo / "a").unlink()
    write(repo, "a/inner", "now a directory\n")
    turn(repo, ["b", "b/c", "a", "a/inner"])
    assert git(repo, "cat-file", "-p", "HEAD:b") == "now a file\n"
    assert git(repo, "cat-file", "-p", "HEAD:a/inner") == "now a directory\n"
    assert_clean(repo)


def test_a_sync_that_cannot_take_the_index_lands_nothing(repo: Path, tmp_path: Path) -> None:
    """A person's git holds index.lock past the wait: the turn's commit fails before HEAD moves
    (the messages wait for the next pass), never after it (where a failing redo used to raise
    out of the agent lock's release with the turn landed and the index behind)."""
    before = gitstore.head(repo)
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    try:
        with gitstore.agent_lock(tmp_path / "arya.lock"):
            write(repo, "x", "x\n")
            with pytest.raises(gitstore.GitFailed, match="index.lock"):
                gitstore.commit(repo, "turn(arya): x", paths=["x"])
    finally:
        lock.unlink()
    assert gitstore.head(repo) == before
    sha = gitstore.commit(repo, "turn(arya): x", paths=["x"])
    assert git(repo, "cat-file", "-p", f"{sha}:x") == "x\n"
    assert_clean(repo)


# -- tried, and held up ---------------------------------------------------------------------------


def test_names_git_sorts_specially_come_out_as_git_add_makes_them(repo: Path) -> None:
    names = [
        "a",
        "a.b/x",
        "a-",
        "a--/y",
        "a-.d/q",
        "a0",
        "b/c",
        "b.c",
        "b c/d",
        "é.md",
        unicodedata.normalize("NFD", "é2.md"),
        "z/é/中文.txt",
        "deep/" * 20 + "f",
        "x y",
        "[x]",
        "*",
        ":colon",
        "-dash",
    ]
    for n in names:
        write(repo, n, n + "\n")
    turn(repo, names)
    assert_clean(repo)
    for n in ("a.b/x", "deep/" * 20 + "f", "z/é/中文.txt"):
        (repo / n).unlink()
    turn(repo, ["a.b/x", "deep/" * 20 + "f", "z/é/中文.txt"])  # emptied directories go
    assert_clean(repo)
    everything = git(repo, "ls-files", "-z").split("\0")[:-1]
    for n in everything:
        (repo / n).unlink()
    turn(repo, everything)  # the root's last file
    assert git(repo, "ls-tree", "HEAD") == ""
    write(repo, "again.md", "again\n")
    turn(repo, ["again.md"])
    assert_clean(repo)


def test_a_gitlink_in_the_tree_is_left_as_git_leaves_it(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("f\n")
    sub = gitstore.init_repo(other, "other")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sub},mod")
    git(repo, "commit", "-qm", "a submodule")
    (repo / "mod").mkdir()
    write(repo, "m.md", "beside it\n")
    turn(repo, ["m.md"])
    assert git(repo, "ls-tree", "HEAD", "mod").startswith("160000 commit " + sub)
    assert_clean(repo)


@pytest.mark.parametrize("entries", [1, 40, 9000])
def test_trees_of_every_size_are_packed_as_git_reads_them(repo: Path, entries: int) -> None:
    """Pack entry sizes past 2^4, 2^11 and 2^18 bytes: the hand-made pack's size varint."""
    blob = git(repo, "hash-object", "-w", "README.md").strip()
    listing = "".join(f"100644 blob {blob}\tf{i:05d}-{'x' * 20}.md\n" for i in range(entries))
    big = git(repo, "mktree", input=listing).strip()
    root = git(repo, "mktree", input=f"100644 blob {blob}\tREADME.md\n040000 tree {big}\tbig\n")
    parent = git(repo, "commit-tree", root.strip(), "-p", "HEAD", "-m", "big").strip()
    entry = {"big/new.md": ("100644", blob)}
    tree = gitstore._edit_tree(repo, parent, entry)
    assert tree is not None
    assert int(git(repo, "cat-file", "-s", f"{tree}:big")) > 30 * entries
    env = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "adversarial-index")}
    subprocess.run(["git", "-C", str(repo), "read-tree", parent], env=env, check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "update-index",
            "--add",
            "--cacheinfo",
            f"100644,{blob},big/new.md",
        ],
        env=env,
        check=True,
    )
    made = subprocess.run(
        ["git", "-C", str(repo), "write-tree"], env=env, capture_output=True, text=True
    )
    assert made.stdout.strip() == tree
    git(repo, "fsck", "--strict", "--no-progress")


def test_a_gitattributes_change_in_the_same_turn_governs_its_files(repo: Path) -> None:
    write(repo, ".gitattributes", "*.txt text eol=lf\n*.id ident\n")
    write(repo, "n.txt", "plain\n")
    write(repo, "v.id", "$Id: whatever $\n")
    turn(repo, [".gitattributes", "n.txt", "v.id"])
    assert git(repo, "cat-file", "-p", "HEAD:v.id") == "$Id$\n"
    write(repo, "o.id", "$Id: other $\n")
    turn(repo, ["o.id"])
    assert git(repo, "cat-file", "-p", "HEAD:o.id") == "$Id$\n"


def test_a_persons_commit_racing_the_turn_is_its_parent(repo: Path) -> None:
    """HEAD moved between the parent read and update-ref: the turn lands on top, both kept,
    at once (update-ref's "cannot lock ref 'HEAD': is at X but expected Y" was taken for a
    lock a live git holds, and the turn waited LOCK_WAIT_SECONDS, 10 s, before retrying)."""
    write(repo, "turn.md", "the turn's\n")
    write(repo, "mine.md", "the person's\n")
    parent = gitstore.head(repo)
    git(repo, "add", "mine.md")
    git(repo, "commit", "-qm", "person")
    started = time.monotonic()
    gitstore.commit(repo, "turn(arya): late", paths=["turn.md"], parent=parent)
    assert time.monotonic() - started < gitstore.LOCK_WAIT_SECONDS / 2
    names = git(repo, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert {"turn.md", "mine.md"} <= set(names)
    assert git(repo, "log", "-1", "--format=%s", "HEAD~1").strip() == "person"
    assert_clean(repo)


# -- found and fixed: the index lagged HEAD until a background sync landed ----------------------


def test_a_persons_commit_right_after_the_turn_keeps_the_turns_files(
    repo: Path, tmp_path: Path
) -> None:
    """The person's `git add` holds index.lock as the turn commits: the turn waits for it and
    puts its files in the index before HEAD moves, so the person's `git commit` that follows
    carries them (it used to record the turn's new file as deleted)."""
    write(repo, "notes.md", "mine\n")
    git(repo, "add", "notes.md")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # their git at work, done a moment later
    threading.Timer(0.5, lock.unlink).start()
    with gitstore.agent_lock(tmp_path / "arya.lock"):
        write(repo, "outbox/2026-11/r.md", "reply\n")
        gitstore.commit(repo, "turn(arya): reply", paths=["outbox/2026-11/r.md"])
        git(repo, "commit", "-qm", "person: notes")
    assert "outbox/2026-11/r.md" in git(repo, "ls-tree", "-r", "--name-only", "HEAD")
    assert "notes.md" in git(repo, "ls-tree", "-r", "--name-only", "HEAD")


def test_the_index_holds_the_turns_files_before_head_moves(repo: Path, tmp_path: Path) -> None:
    """So a kill between the index and HEAD leaves the index ahead (a person's `git commit -a`
    then commits the turn's record), never behind (where it deleted it)."""
    seen: list[str] = []
    write(repo, "outbox/2026-11/r.md", "reply\n")
    with gitstore.agent_lock(tmp_path / "arya.lock"):
        gitstore.commit(
            repo,
            "turn(arya): reply",
            paths=["outbox/2026-11/r.md"],
            on_object=lambda _sha: seen.append(git(repo, "ls-files", "outbox")),
        )
    assert seen and "outbox/2026-11/r.md" in seen[0]
    git(repo, "reset", "-q", "--soft", "HEAD~1")  # killed after the index, before HEAD moved
    write(repo, "notes.md", "v2, by hand\n")
    git(repo, "add", "notes.md")
    git(repo, "commit", "-qam", "person: notes")
    assert "outbox/2026-11/r.md" in git(repo, "ls-tree", "-r", "--name-only", "HEAD")


def test_a_gitattributes_removed_in_the_same_turn_no_longer_governs(repo: Path) -> None:
    """A turn removes .gitattributes and writes a file it governed: git add -A hashes the file
    without them, and so do the tree edit and the index sync. The sync hashed the file while
    the index still held .gitattributes (git falls back to it when the work tree has none) and
    recorded `$Id$`; a file older than the index is trusted by its stat, so the next hand-edit
    check committed that blob as a person's edit (seen in CI, where the turn ran slower).
    The sync now records removals first."""
    write(repo, ".gitattributes", "*.id ident\n")
    turn(repo, [".gitattributes"])
    (repo / ".gitattributes").unlink()
    write(repo, "v.id", "$Id: kept as written $\n")  # dated in the past: see write()
    sha = turn(repo, ["v.id", ".gitattributes"])
    assert git(repo, "cat-file", "-p", "HEAD:v.id") == "$Id: kept as written $\n"
    assert gitstore.commit_external(repo) is None
    assert gitstore.head(repo) == sha
    assert_clean(repo)
