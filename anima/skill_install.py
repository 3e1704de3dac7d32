"""Agent Skills installed from git: `anima skills add URL[#ref][:path]` and `anima skills update`.

Each installed skill is pinned in a lock file beside the skills/ folder it went into
(`$ANIMA_HOME/skills.lock`, or `agents/NAME/skills.lock`, committed with the skill): the URL, the
ref asked for, the commit fetched and the sha of the skill's tree. Nothing moves until `update`.

A skill is fetched (one commit, into a scratch bare repository), its tree checked from the listing
(gitsource.check_tree), written to a scratch folder and validated like any skill (anima.skills);
only then is it shown to the caller as a Candidate, and installed by a rename. A skill carrying
scripts (or an update adding or changing one) needs consent. Nothing of it is ever run here.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from anima import front_matter, gitsource, skills
from anima.errors import BadFrontMatter, BadSource, NeedsConsent
from anima.fsutil import write_atomic
from anima.home import Home

LOCK_FILE = "skills.lock"
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
"""A skill's name (the spec's rule): only such a name becomes a folder here."""


@dataclass(frozen=True)
class Pin:
    """A skill's line in the lock file."""

    name: str
    url: str
    ref: str
    path: str
    commit: str
    tree: str


@dataclass(frozen=True)
class File:
    path: str
    size: int
    script: bool


@dataclass
class Candidate:
    """A fetched, checked and validated skill waiting to be installed (or an installed one's
    update): what it holds, where it goes, and for an update what changes."""

    pin: Pin
    root: Path
    """Where skills/ and the lock file are: $ANIMA_HOME, or an agent's directory."""
    agent: str | None
    files: list[File]
    staged: Path
    previous: Pin | None = None
    stat: str = ""
    skill_md_diff: str = ""
    new_scripts: list[str] = field(default_factory=list)
    """Scripts added or changed (for a new skill: all of them)."""

    @property
    def name(self) -> str:
        return self.pin.name

    @property
    def target(self) -> Path:
        return self.root / "skills" / self.name

    @property
    def scripts(self) -> list[str]:
        return [f.path for f in self.files if f.script]

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.tree != self.pin.tree


def _root(home: Home, agent: str | None) -> Path:
    if agent is None:
        home.require()
        return home.root
    from anima.agent import Agent

    return Agent.open(home, agent).path


def read_lock(root: Path) -> dict[str, Pin]:
    """The pins in `root`/skills.lock ({} when there is none)."""
    path = root / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadSource(f"{path} is not valid TOML: {exc}") from exc
    pins = {}
    for name, entry in data.get("skills", {}).items():
        values = {k: str(entry.get(k, "")) for k in ("url", "ref", "path", "commit", "tree")}
        pins[name] = Pin(name, **values)
    return pins


def _write_lock(root: Path, pins: dict[str, Pin]) -> None:
    from anima.market import quote_toml

    lines = ["# Skills installed from git, each pinned to a commit (anima skills add / update)."]
    for name in sorted(pins):
        pin = pins[name]
        lines += ["", f"[skills.{name}]"]
        for key in ("url", "ref", "path", "commit", "tree"):
            lines.append(f"{key} = {quote_toml(getattr(pin, key))}")
    write_atomic(root / LOCK_FILE, "\n".join(lines) + "\n")


@contextmanager
def _scratch(home: Home) -> Iterator[Path]:
    """A scratch folder on the home's file system (installs are renames), always removed."""
    base = home.run_dir / "skill-fetch"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        yield Path(tmp)


def _stage(scratch: Path, source: gitsource.Source, ref: str) -> tuple[Pin, list[File], Path]:
    """Fetch, check, write out and validate the skill at `source`; its pin, files and folder."""
    repo = gitsource.init_bare(scratch / "repo.git")
    try:
        commit = gitsource.fetch(repo, source.url, ref or "HEAD", depth=1)
    except BadSource as exc:
        raise _not_a_repository(source) or exc from None
    where = f"skill {source}"
    treeish = f"{commit}:{source.path}" if source.path else f"{commit}^{{tree}}"
    tree = gitsource.git(repo, "rev-parse", "--verify", "-q", treeish, ok=(0, 1)).strip()
    if not tree or gitsource.git(repo, "cat-file", "-t", tree).strip() != "tree":
        raise BadSource(f"{where}: no folder {source.path or '/'} at {commit[:12]}")
    entries = gitsource.list_tree(repo, tree)
    gitsource.check_tree(entries, where)
    top = {e.path: e for e in entries}
    head = top.get(skills.SKILL_FILE)
    if head is None:
        raise BadSource(
            f"{where} has no {skills.SKILL_FILE} at its top: it is not a skill"
            + _skills_inside(source, entries)
        )
    if head.size > skills.SKILL_MAX_BYTES:
        raise BadSource(
            f"{where}: {skills.SKILL_FILE} is {head.size} bytes (limit {skills.SKILL_MAX_BYTES})"
        )
    name = _declared_name(gitsource.blob(repo, head.sha))
    if source.path:  # a skill's folder bears its name (the spec's rule)
        name = PurePosixPath(source.path).name
    folder = scratch / "skills" / name
    fields = skills.inspect_text(gitsource.blob(repo, head.sha), name)
    if fields.problem is None:
        gitsource.export(repo, tree, folder)
        found = [s for s in skills.discover(Home(scratch)) if s.name == name]
        fields = found[0].fields if found else skills.Fields(problem="not found once written")
    if fields.problem is not None:
        raise BadSource(f"{where} is not a valid skill: {fields.problem}")
    files = [File(e.path, e.size, _is_script(e, folder)) for e in entries]
    return Pin(name, source.url, source.ref, source.path, commit, tree), files, folder


def _not_a_repository(source: gitsource.Source) -> BadSource | None:
    """For a local folder git could not fetch from: that it is a folder of a repository (and
    the `REPO:folder` spec that names it), or no repository at all. None for anything else."""
    path = Path(source.url)
    if not path.is_absolute() or not path.is_dir():
        return None
    top = gitsource.enclosing_repository(path)
    if top is None:
        if (path / ".git").exists():
            return None  # a repository: git's own words say what is wrong with it
        return BadSource(
            f"{path} is not a git repository: skills are installed from git "
            "(git init, git add and git commit it first)"
        )
    folder = PurePosixPath(path.relative_to(top).as_posix(), source.path)
    spec = gitsource.Source(str(top), source.ref, str(folder))
    return BadSource(
        f"{path} is a folder of the repository {top}, not a repository itself "
        f"(what is committed there is installed): anima skills add {spec}"
    )


SKILLS_SHOWN = 10


def _skills_inside(source: gitsource.Source, entries: Sequence[gitsource.Entry]) -> str:
    """For a tree with no SKILL.md at its top: the folders below that hold one, shallowest
    first, and how to name one (empty when there is none)."""
    found = sorted(
        (
            str(PurePosixPath(e.path).parent)
            for e in entries
            if PurePosixPath(e.path).name == skills.SKILL_FILE and "/" in e.path
        ),
        key=lambda folder: (folder.count("/"), folder),
    )
    if not found:
        return ""
    shown = ", ".join(found[:SKILLS_SHOWN])
    more = f" and {len(found) - SKILLS_SHOWN} more" if len(found) > SKILLS_SHOWN else ""
    first = gitsource.Source(source.url, source.ref, str(PurePosixPath(source.path, found[0])))
    return (
        f". Skills in its folders: {shown}{more}; name one after ':', e.g. anima skills add {first}"
    )


def _declared_name(raw: bytes) -> str:
    """The `name` a SKILL.md declares ("-" when it has none: validation then says why)."""
    try:
        meta, _ = front_matter.parse(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, BadFrontMatter):
        return "-"
    name = meta.get("name")
    return name if isinstance(name, str) and _NAME.fullmatch(name) else "-"


def _is_script(entry: gitsource.Entry, folder: Path) -> bool:
    """Whatever could be run: under scripts/, executable, an interpreter's suffix, or `#!`."""
    rel = PurePosixPath(entry.path)
    if rel.parts[0] == "scripts" or entry.executable or rel.suffix in skills.INTERPRETERS:
        return True
    try:
        with open(folder / rel, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return False


@contextmanager
def fetch_new(home: Home, spec: str, agent: str | None = None) -> Iterator[Candidate]:
    """The skill at `spec` (URL[#ref][:path], or a marketplace name), fetched and validated but
    not installed; the scratch copy is removed on leaving. Raises BadSource."""
    from anima import market

    root = _root(home, agent)
    source = gitsource.parse(market.resolve(home, "skills", spec), with_path=True)
    with _scratch(home) as scratch:
        pin, files, staged = _stage(scratch, source, source.ref)
        installed = read_lock(root).get(pin.name)
        if installed:
            raise BadSource(
                f"skill {pin.name} is already installed from {installed.url}: "
                f"anima skills update {pin.name}" + (f" --agent {agent}" if agent else "")
            )
        target = root / "skills" / pin.name
        if target.exists() or target.is_symlink():
            raise BadSource(
                f"a skill named {pin.name} already exists at {target} (not installed from git): "
                "remove it first"
            )
        candidate = Candidate(pin, root, agent, files, staged)
        candidate.new_scripts = candidate.scripts
        yield candidate


@contextmanager
def fetch_updates(
    home: Home, names: Sequence[str] = (), agent: str | None = None
) -> Iterator[list[Candidate]]:
    """Each pinned skill (or those named) fetched at its ref's newest commit, with what changes
    against the installed folder. Nothing is installed. Raises BadSource for an unknown name."""
    root = _root(home, agent)
    pins = read_lock(root)
    for name in names:
        if name not in pins:
            known = ", ".join(sorted(pins)) or "none"
            raise BadSource(
                f"no skill named {name!r} was installed from git here (pinned: {known})"
            )
    with _scratch(home) as scratch:
        out = []
        for name in names or sorted(pins):
            pin = pins[name]
            source = gitsource.Source(pin.url, pin.ref, pin.path)
            new, files, staged = _stage(scratch / name, source, pin.ref)
            if new.name != name:
                raise BadSource(f"skill {name} at {source} is now named {new.name}: not updated")
            candidate = Candidate(new, root, agent, files, staged, previous=pin)
            if candidate.changed:
                _compare(scratch / name / "repo.git", candidate)
            out.append(candidate)
        yield out


def _compare(repo: Path, candidate: Candidate) -> None:
    """What the update changes on disk: the installed folder (as it is now, hand edits too) is
    hashed into the scratch repository and diffed against the new tree."""
    env = {"GIT_INDEX_FILE": str(repo / "installed.index")}
    work = f"--work-tree={candidate.target}"
    if candidate.target.is_dir():
        gitsource.git(repo, work, "add", "-A", "--", ".", env=env)
    old = gitsource.git(repo, "write-tree", env=env).strip()
    new = candidate.pin.tree
    candidate.stat = gitsource.git(repo, "diff", "--stat", old, new)
    candidate.skill_md_diff = gitsource.git(repo, "diff", old, new, "--", skills.SKILL_FILE)
    before = {(e.path, e.sha, e.mode) for e in gitsource.list_tree(repo, old)}
    news = {(e.path, e.sha, e.mode) for e in gitsource.list_tree(repo, new)} - before
    changed = {path for path, _, _ in news}
    candidate.new_scripts = [f.path for f in candidate.files if f.script and f.path in changed]


def install(home: Home, candidate: Candidate, *, consent: bool) -> str | None:
    """Put a candidate in place (new, or replacing the installed version) and pin it; for an
    agent, commit both. Returns the agent's commit sha, if any. Raises NeedsConsent when it adds
    or changes scripts and `consent` is not given: nothing is changed then."""
    if candidate.new_scripts and not consent:
        shown = ", ".join(candidate.new_scripts[:8])
        more = (
            f" and {len(candidate.new_scripts) - 8} more" if len(candidate.new_scripts) > 8 else ""
        )
        doing = "'s update adds or changes" if candidate.previous else " contains"
        raise NeedsConsent(
            f"skill {candidate.name}{doing} scripts ({shown}{more}): read them, then re-run "
            "with --yes to install it; nothing was installed"
        )
    if candidate.agent is None:
        _swap(candidate)
        return None
    from anima import gitstore

    with gitstore.agent_lock(home.run_dir / "locks" / f"{candidate.agent}.lock", timeout=30):
        _swap(candidate)
        verb = "update" if candidate.previous else "add"
        subject = f"skills: {verb} {candidate.name} from {candidate.pin.url} ({candidate.pin.commit[:12]})"
        paths = [f"skills/{candidate.name}", LOCK_FILE]
        return gitstore.commit(candidate.root, subject, paths=paths)


def shell_warning(home: Home, candidate: Candidate) -> str | None:
    """That the candidate's scripts need the shell tool, off for its agent (for a shared skill:
    for every agent); None when it has no scripts or a shell can run them."""
    if not candidate.scripts:
        return None
    off = skills.shell_off(home, candidate.agent)
    return f"skill {candidate.name}'s scripts need the shell tool, {off}" if off else None


def _swap(candidate: Candidate) -> None:
    """Rename the new folder into place (the old one aside first, removed once the lock says
    the new one), then record the pin."""
    target = candidate.target
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = target.with_name(f".{target.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    if candidate.changed:
        if target.exists():
            target.rename(aside)
        try:
            candidate.staged.rename(target)
        except OSError:
            if aside.exists():
                aside.rename(target)
            raise
    pins = read_lock(candidate.root)
    pins[candidate.name] = candidate.pin
    try:
        _write_lock(candidate.root, pins)
    except OSError:
        if candidate.changed:
            shutil.rmtree(target, ignore_errors=True)
            if aside.exists():
                aside.rename(target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
