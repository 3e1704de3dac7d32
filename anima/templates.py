"""Agents from template repositories: `anima new NAME --from URL[#ref]` and `anima update NAME`.

The template's history becomes the start of the agent's own repository, and the template stays
its `upstream` remote; one commit on top completes it as an agent (Anima's own defaults for any
file the template lacks, `{{name}}` filled in). An update merges the template's new commits, but
never into what the agent writes itself (OWN_STATE): the template's seed of memory/ and
workspace/ is taken once, at `new`. A conflict aborts the merge: the repository is left as it was.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from anima import gitsource
from anima.agent import Agent, template_dir
from anima.errors import AgentExists, AnimaError, BadSource, UpdateConflict
from anima.home import Home, validate_name

UPSTREAM = "upstream"
REF_KEY = "anima.upstreamref"
RENDERED = "refs/anima/template-rendered"
"""The template as this agent got it, `{{name}}` filled in: a chain of commits, each with the
template commit it renders and the previous one as parents, so an update merges the template's
changes from where the agent's own history left it (a line with `{{name}}` is not a conflict)."""
OWN_STATE = ("memory", "history", "inbox", "outbox", "archive", "workspace", ".cache")
"""What the agent writes itself: an update keeps the agent's version of anything under these."""
RECORDS = ("inbox", "outbox", "archive", "history", ".cache")
"""What a template may not carry at all: messages and history are an agent's own record."""
WRITTEN = (
    *("persona.md", "always.md", "agent.toml", "skills.lock", "skills/x/SKILL.md"),
    *("memory/MEMORY.md", "memory/note.md", "memory/people/x.md", "memory/journal/2026-01-01.md"),
    *("history/cli/2026-01/2026-01-01.jsonl", "history/cli/compaction.json"),
    *("outbox/2026-01/x.md", "archive/2026-01/x.md", "workspace/x"),
)
"""Files an agent writes; a template's .gitignore may not hide any of them from git."""


@dataclass(frozen=True)
class Updated:
    """What `anima update` did: the commits before and after, the template commit merged, the
    files changed, and the agent's own files the template changed but that were kept."""

    before: str
    after: str
    template: str
    stat: str = ""
    kept: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return self.before == self.after


def check_template(repo: Path, commit: str, source: str) -> None:
    """Refuse a tree that is not an agent template, or that could hurt (gitsource.check_tree)."""
    what = f"template {source}"
    entries = gitsource.list_tree(repo, commit)
    gitsource.check_tree(entries, what)
    if not any(e.path == "persona.md" for e in entries):
        raise BadSource(f"{what} has no persona.md at its top: it is not an agent template")
    carried = [e.path for e in entries if e.path.split("/", 1)[0] in RECORDS]
    if carried:
        raise BadSource(
            f"{what} carries an agent's own records ({', '.join(carried[:3])}): a template may "
            f"not hold {', '.join(d + '/' for d in RECORDS)}"
        )


def new_from(home: Home, name: str, spec: str) -> Agent:
    """Make agent NAME from the template at `spec` (URL[#ref], or a marketplace name). The agent
    appears whole or not at all. Raises BadSource for a bad URL or template."""
    from anima import market

    validate_name(name)
    home.require()
    target = home.agents_dir / name
    if target.exists():
        raise AgentExists(f"agent {name!r} already exists at {target}")
    source = gitsource.parse(market.resolve(home, "agents", spec))
    staging = home.agents_dir / f".new-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _build(staging, name, source)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Agent(home, name)


def _build(path: Path, name: str, source: gitsource.Source) -> None:
    from anima import gitstore

    git = gitsource.git
    gitstore.init_empty(path, name)
    git(path, "remote", "add", UPSTREAM, "--", source.url)
    if source.ref:
        git(path, "config", REF_KEY, source.ref)
    commit = gitsource.fetch(path, UPSTREAM, source.fetch_ref)
    check_template(path, commit, str(source))
    rendered = _rendered(path, commit, name, None)
    git(path, "update-ref", RENDERED, rendered)
    git(path, "update-ref", "refs/heads/main", rendered)
    git(path, "reset", "-q", "--hard", "main")
    _complete(path, name)
    check_result(path)
    git(path, "add", "-A")
    subject = f"init({name}): new agent from template {source} ({commit[:12]})"
    git(path, "commit", "-q", "--no-verify", "-m", subject)
    gitstore.tune(path)


def _rendered(path: Path, commit: str, name: str, previous: str | None) -> str:
    """A commit of `commit`'s tree with `{{name}}` filled in (in .md and .toml files), whose
    parents are `commit` and `previous` (the last one made)."""
    git = gitsource.git
    index = path / ".git" / "anima-render-index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        git(path, "read-tree", commit, env=env)
        listing = git(path, "ls-tree", "-r", "-z", commit)
        for entry in filter(None, listing.split("\0")):
            meta, _, rel = entry.partition("\t")
            mode, kind, blob = meta.split()
            if kind != "blob" or mode == "120000" or not rel.endswith((".md", ".toml")):
                continue
            raw = git(path, "cat-file", "blob", blob)
            if "{{name}}" not in raw:
                continue
            data = raw.replace("{{name}}", name).encode("utf-8", "surrogateescape")
            sha = git(path, "hash-object", "-w", "--stdin", input=data).strip()
            git(path, "update-index", "--cacheinfo", f"{mode},{sha},{rel}", env=env)
        tree = git(path, "write-tree", env=env).strip()
    finally:
        index.unlink(missing_ok=True)
    parents = ["-p", commit] + (["-p", previous] if previous else [])
    message = f"template {commit[:12]} for {name} ({{{{name}}}} filled in)"
    return git(path, "commit-tree", tree, *parents, "-m", message).strip()


def _complete(path: Path, name: str) -> None:
    """Anima's defaults for what the template lacks; `{{name}}` filled in; the runtime's
    folders; Anima's .gitignore lines added to the template's."""
    for file in path.rglob("*"):
        rel = file.relative_to(path)
        if rel.parts[0] != ".git" and file.is_file() and file.suffix in (".md", ".toml"):
            text = file.read_text(encoding="utf-8", errors="surrogateescape")
            if "{{name}}" in text:
                file.write_text(text.replace("{{name}}", name), "utf-8", "surrogateescape")
    defaults = template_dir()
    for file in sorted(defaults.rglob("*")):
        rel = file.relative_to(defaults)
        mine = path / rel
        if file.is_file() and not mine.exists() and rel.name != ".gitignore":
            mine.parent.mkdir(parents=True, exist_ok=True)
            mine.write_text(file.read_text(encoding="utf-8").replace("{{name}}", name), "utf-8")
    ignore = path / ".gitignore"
    theirs = ignore.read_text(encoding="utf-8") if ignore.is_file() else ""
    have = {line.strip() for line in theirs.splitlines()}
    ours = (defaults / ".gitignore").read_text(encoding="utf-8").splitlines()
    missing = [line for line in ours if line.strip() not in have]
    if missing:
        joined = theirs + ("\n" if theirs and not theirs.endswith("\n") else "")
        ignore.write_text(joined + "\n".join(missing) + "\n", encoding="utf-8")
    for sub in ("inbox", "outbox", "archive", "history", "workspace"):
        (path / sub).mkdir(exist_ok=True)


def check_result(path: Path) -> None:
    """The agent a template made must load (agent.toml valid) and keep its records in git."""
    from anima.config import load_agent_config

    load_agent_config(path / "agent.toml")
    out = gitsource.git(path, "check-ignore", "--no-index", "--", *WRITTEN, ok=(0, 1))
    hidden = out.split()
    if hidden:
        raise BadSource(
            f"the template's .gitignore hides files the agent writes ({', '.join(hidden[:3])}): "
            "its memory and history would never be committed"
        )


def _own(path: str) -> bool:
    return path.split("/", 1)[0] in OWN_STATE


def update(home: Home, name: str) -> Updated:
    """Merge the template's new commits into agent NAME, keeping the agent's own state. Raises
    UpdateConflict (merge aborted, nothing changed) when the agent's changes and the template's
    meet, BadSource when the template's new tree is refused or the result would not load."""
    from anima import gitstore

    agent = Agent.open(home, name)
    path = agent.path
    git = gitsource.git
    url = git(path, "config", "--get", f"remote.{UPSTREAM}.url", ok=(0, 1)).strip()
    if not url:
        raise BadSource(
            f"{name} was not made from a template (its repository has no {UPSTREAM!r} remote): "
            "nothing to update from"
        )
    ref = git(path, "config", "--get", REF_KEY, ok=(0, 1)).strip() or "HEAD"
    with gitstore.agent_lock(home.run_dir / "locks" / f"{name}.lock", timeout=30):
        gitstore.commit_external(path)  # a person's hand edits first, as a turn does
        theirs = gitsource.fetch(path, UPSTREAM, ref)
        check_template(path, theirs, f"{url}#{ref}")
        before = git(path, "rev-parse", "HEAD").strip()
        if _is_ancestor(path, theirs, before):
            return Updated(before, before, theirs)
        previous = git(path, "rev-parse", "-q", "--verify", RENDERED, ok=(0, 1)).strip()
        merged = _rendered(path, theirs, name, previous) if previous else theirs
        git(path, "merge", "-q", "--no-commit", "--no-ff", merged, ok=(0, 1))
        try:
            kept = _keep_own_state(path)
            conflicts = _unmerged(path)
            if conflicts:
                raise UpdateConflict(
                    f"{name}'s own changes conflict with its template's in "
                    f"{', '.join(conflicts[:5])}: nothing was changed (the merge was aborted). "
                    f"To merge by hand: cd {path} && git fetch {UPSTREAM} {ref} && "
                    "git merge FETCH_HEAD"
                )
            check_result(path)
        except AnimaError:
            git(path, "merge", "--abort")
            raise
        message = f"update({name}): merge template {url}#{ref} ({theirs[:12]})"
        if kept:
            message += "\n\nKept the agent's own: " + ", ".join(kept[:20])
        git(path, "commit", "-q", "--no-verify", "-m", message)
        if previous:
            git(path, "update-ref", RENDERED, merged, previous)
        after = git(path, "rev-parse", "HEAD").strip()
        stat = git(path, "diff", "--stat", before, after)
    return Updated(before, after, theirs, stat, tuple(kept))


def _is_ancestor(path: Path, ancestor: str, of: str) -> bool:
    try:
        gitsource.git(path, "merge-base", "--is-ancestor", ancestor, of)
    except BadSource:
        return False
    return True


def _unmerged(path: Path) -> list[str]:
    out = gitsource.git(path, "diff", "--name-only", "--diff-filter=U", "-z")
    return sorted({p for p in out.split("\0") if p})


def _keep_own_state(path: Path) -> list[str]:
    """Put back the agent's version of every file under OWN_STATE the merge touched."""
    git = gitsource.git
    out = git(path, "diff", "--cached", "--name-only", "-z", "HEAD")
    touched = sorted({p for p in [*out.split("\0"), *_unmerged(path)] if p and _own(p)})
    for rel in touched:
        if git(path, "ls-tree", "HEAD", "--", rel).strip():
            git(path, "checkout", "HEAD", "--", rel)
        else:
            git(path, "rm", "-q", "-f", "--cached", "--ignore-unmatch", "--", rel)
            (path / rel).unlink(missing_ok=True)
    return touched
