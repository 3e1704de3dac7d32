"""Agent Skills (agentskills.io): discover, validate, catalogue for context, load on demand.

A skill is a folder `NAME/` holding `SKILL.md` (YAML front matter `name`, `description`, optional
`license`, `compatibility`, `metadata`, `allowed-tools`; a Markdown body) and any of `scripts/`,
`references/`, `assets/`. An agent's own skills live in `skills/` of its repository; shared ones in
`$ANIMA_HOME/skills/`; the agent's own wins a name clash.

Progressive disclosure: every turn the context lists each valid skill's name and description
(`catalogue`, bounded); the `skill` tool (offered by `SkillSource` only when there is a valid
skill) returns a skill's body and file list, or one of its files. The catalogue is read every
turn, so only front matter is read, and it is cached by the file's identity (path, inode, size,
mtime, ctime). An invalid skill is skipped everywhere and explained by `anima skills check`.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from anima import front_matter
from anima.config import AgentConfig, load_agent_config
from anima.errors import AnimaError, BadFrontMatter, BadSkill, ToolError
from anima.home import Home
from anima.tools.base import Tool, ToolContext

if TYPE_CHECKING:
    from anima.agent import Agent

SKILL_FILE = "SKILL.md"
NAME_MAX = 64
DESCRIPTION_MAX = 1024
COMPATIBILITY_MAX = 500
SKILL_MAX_BYTES = 128 * 1024
"""A larger SKILL.md is invalid: the spec asks for a body under ~5,000 tokens."""
HEAD_MAX_BYTES = 16 * 1024
"""Front matter is read in pieces until it closes; one that runs on past this is invalid."""
DESCRIPTION_MIN_SHOWN = 80
"""A description is never cut shorter than this to fit more skills: fewer are listed instead."""
BODY_CHARS = 24000
"""The most of a SKILL.md body the tool returns (tool results are capped at 30,000)."""
FILE_CHARS = 24000
FILE_MAX_BYTES = 1024 * 1024
"""A skill's file the tool reads: at most this big on disk, and this much shown."""
LIST_FILES = 100
WALK_MAX = 5000
INTERPRETERS = {".py": "python3", ".sh": "bash", ".js": "node", ".rb": "ruby", ".pl": "perl"}
"""How the `skill` tool suggests running a script (a script may not be executable)."""
LISTING_CHARS = 24000
"""`skill()` without a name: the whole list of skills, within one tool result."""
SANDBOX_ROOT = PurePosixPath("/run/skills")
"""Where the shell sandbox shows skills (read-only): SANDBOX_ROOT/agent/NAME, .../shared/NAME."""

Scope = Literal["agent", "shared"]
ShellMode = Literal["sandboxed", "unsafe", "off"]

_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_CLOSE = re.compile(rb"\n-{3,}[ \t\r]*(?:\n|$)")


@dataclass(frozen=True)
class Fields:
    """What a SKILL.md head says, validated (the cached part of a Skill); `problem` says why a
    skill is invalid, and then the other fields are empty."""

    description: str = ""
    problem: str | None = None
    license: str = ""
    compatibility: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    allowed_tools: tuple[str, ...] = ()
    """Informational (the spec calls it experimental): the agent's tool policy decides."""


@dataclass(frozen=True)
class Skill:
    """One skill folder as found, valid or not."""

    name: str
    """The folder's name (equal to the front matter's `name` when valid)."""
    scope: Scope
    folder: Path
    fields: Fields
    shadowed: bool = False
    """A shared skill hidden by the agent's own skill of the same name."""

    @property
    def description(self) -> str:
        return self.fields.description

    @property
    def problem(self) -> str | None:
        return self.fields.problem

    @property
    def valid(self) -> bool:
        return self.problem is None

    @property
    def usable(self) -> bool:
        return self.valid and not self.shadowed

    @property
    def skill_file(self) -> Path:
        return self.folder / SKILL_FILE


def _invalid(scope: Scope, folder: Path, why: str) -> Skill:
    return Skill(folder.name, scope, folder, Fields(problem=why))


def roots(home: Home, agent: str | None) -> list[tuple[Scope, Path]]:
    """Where skills are looked for, the winner of a name clash first."""
    out: list[tuple[Scope, Path]] = []
    if agent is not None:
        out.append(("agent", home.agents_dir / agent / "skills"))
    out.append(("shared", home.root / "skills"))
    return out


def discover(home: Home, agent: str | None = None) -> list[Skill]:
    """Every skill folder of `agent` (if given) and the shared ones, valid or not, the agent's
    own first, each group by name. A shared skill the agent has one of its own by is `shadowed`."""
    found: list[Skill] = []
    for scope, root in roots(home, agent):
        found += _scan(scope, root)
    own = {s.name for s in found if s.scope == "agent" and s.valid}
    return [
        replace(s, shadowed=True) if s.scope == "shared" and s.name in own else s for s in found
    ]


def usable(agent: Agent) -> list[Skill]:
    """The skills `agent` can use this turn: valid, not shadowed."""
    return [s for s in discover(agent.home, agent.name) if s.usable]


def find(home: Home, agent: str | None, name: str) -> Skill:
    """The skill `agent` gets by `name` (its own first). Raises BadSkill when there is none or
    it is invalid, saying why."""
    found = [s for s in discover(home, agent) if s.name == name and not s.shadowed]
    if not found:
        known = sorted({s.name for s in discover(home, agent) if s.usable})
        raise BadSkill(
            f"no skill named {name!r}; "
            + (f"available: {', '.join(known)}" if known else "there are no skills")
        )
    if found[0].problem:
        raise BadSkill(f"skill {name!r} is invalid: {found[0].problem}")
    return found[0]


def _scan(scope: Scope, root: Path) -> list[Skill]:
    """The skill folders in one root. The root and each folder must be real folders: a symlink
    could lead the sandbox and the tool to anything the runtime can read."""
    if root.is_symlink():
        return [_invalid(scope, root, f"{root} is a symlink; skills/ must be a real folder")]
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        return [_invalid(scope, root, f"cannot read {root}: {exc.strerror}")]
    out = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            why = "the folder is a symlink; copy the skill in"
            out.append(_invalid(scope, Path(entry.path), why))
        elif entry.is_dir():
            out.append(_inspect(scope, entry.path))
    return out


def _inspect(scope: Scope, folder: str) -> Skill:
    """The skill in `folder`. Strings, not Paths, on this path: it runs for every skill on
    every turn, and a cached skill costs one lstat."""
    path = os.path.join(folder, SKILL_FILE)
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if not Path(path).resolve().is_relative_to(Path(folder).resolve()):
                why = f"{SKILL_FILE} is a symlink leading outside the skill's folder"
                return _invalid(scope, Path(folder), why)
            st = os.stat(path)
    except FileNotFoundError:
        return _invalid(scope, Path(folder), f"no {SKILL_FILE} in the folder")
    except OSError as exc:
        return _invalid(scope, Path(folder), f"cannot read {SKILL_FILE}: {exc.strerror}")
    return _load(scope, folder, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


@functools.lru_cache(maxsize=4096)
def _load(
    scope: Scope, folder: str, ino: int, size: int, mtime_ns: int, ctime_ns: int, mode: int
) -> Skill:
    """The skill in `folder`, read once per version of its SKILL.md (the stat fields are the
    cache key: any write changes mtime and ctime). Only the front matter is read."""
    name = os.path.basename(folder)
    if not stat.S_ISREG(mode):
        fields = Fields(problem=f"{SKILL_FILE} is not a regular file")
    elif size > SKILL_MAX_BYTES:
        fields = Fields(problem=f"{SKILL_FILE} is {size} bytes; the limit is {SKILL_MAX_BYTES}")
    else:
        try:
            fields = inspect_text(_read_head(os.path.join(folder, SKILL_FILE)), name)
        except OSError as exc:
            fields = Fields(problem=f"cannot read {SKILL_FILE}: {exc.strerror or exc}")
    return Skill(name, scope, Path(folder), fields)


def _read_head(path: str) -> bytes:
    """The start of a file up to the line closing its front matter (or HEAD_MAX_BYTES + 1)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{SKILL_FILE} is not a regular file")
        raw = b""
        while len(raw) <= HEAD_MAX_BYTES:
            chunk = os.read(fd, 4096)
            raw += chunk
            if not chunk or _CLOSE.search(raw, 3):
                break
        return raw
    finally:
        os.close(fd)


def inspect_text(raw: bytes | str, folder: str) -> Fields:
    """Validate the start of a SKILL.md (the front matter and anything after it) found in a
    folder named `folder`. Never raises: an invalid skill comes back with its `problem`."""
    if isinstance(raw, bytes):
        close = _CLOSE.search(raw, 3)
        if close is None and len(raw) > HEAD_MAX_BYTES:
            return Fields(problem=f"front matter is longer than {HEAD_MAX_BYTES} bytes")
        try:
            text = raw[: close.end() if close else len(raw)].decode("utf-8-sig")
        except UnicodeDecodeError:
            return Fields(problem=f"{SKILL_FILE} is not UTF-8 text")
    else:
        text = raw
    parts = front_matter.split(text)
    if parts.head is None:
        return Fields(
            problem=f"{SKILL_FILE} must start with YAML front matter between '---' lines"
            if parts.closed
            else "front matter starts with '---' but is never closed by a '---' line"
        )
    try:
        meta = front_matter.load(parts.head)
    except BadFrontMatter as exc:
        return Fields(problem=str(exc))
    return validate(meta, folder)


def _name_problem(name: Any, folder: str) -> str | None:
    if not isinstance(name, str) or not name:
        return "`name` is missing or not text"
    if len(name) > NAME_MAX or not _NAME.fullmatch(name):
        return (
            f"name {_cut(name, 80)!r} is not valid: 1-{NAME_MAX} lower-case letters, "
            "digits and single hyphens, not starting or ending with a hyphen"
        )
    if name != folder:
        return f"name {name!r} differs from its folder's name {folder!r}"
    return None


def validate(meta: dict[str, Any], folder: str) -> Fields:
    """The spec's rules for the front matter of the skill in folder `folder`; every rule it
    breaks is named (one fix at a time would take as many tries)."""
    problems = [p for p in (_name_problem(meta.get("name"), folder),) if p]
    desc = meta.get("description")
    if not isinstance(desc, str) or not desc.strip():
        problems.append("`description` is missing, empty or not text (say what it does and when)")
        desc = ""
    elif len(desc) > DESCRIPTION_MAX:
        problems.append(f"description is {len(desc)} characters; the limit is {DESCRIPTION_MAX}")
    texts = {}
    for key, limit in (("license", None), ("compatibility", COMPATIBILITY_MAX)):
        value = meta.get(key)
        value = "" if value is None else value
        if not isinstance(value, str):
            problems.append(f"`{key}` must be text")
            value = ""
        elif limit is not None and len(value) > limit:
            problems.append(f"`{key}` is {len(value)} characters; the limit is {limit}")
        texts[key] = value
    metadata = meta.get("metadata") or {}
    if not isinstance(metadata, dict) or any(
        isinstance(v, (dict, list)) for v in metadata.values()
    ):
        problems.append("`metadata` must be a mapping of keys to text values")
    tools = meta.get("allowed-tools") or ""
    if isinstance(tools, str):
        tools = tools.split()
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        problems.append("`allowed-tools` must be a space-separated list of tool names")
    if problems:
        return Fields(problem="; ".join(problems))
    return Fields(
        " ".join(desc.split()),
        None,
        texts["license"],
        texts["compatibility"],
        tuple((k, "" if v is None else str(v)) for k, v in metadata.items()),
        tuple(tools),
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def catalogue(agent: Agent) -> str:
    """The skills section of the context: each usable skill's name and description, within the
    agent's budget (descriptions cut, then skills left out with a line saying how many and how to
    list them). Empty when the agent has no usable skill: zero bytes in the request."""
    return render_catalogue(usable(agent), agent.config.budget.skills_chars)


def render_catalogue(skills: list[Skill], budget: int) -> str:
    """The catalogue text for `skills`, at most `budget` characters (below ~300, only the head
    and the count line are kept)."""
    head = (
        "## Skills (before a task one of these fits, load its instructions with the skill "
        "tool: skill(name=...))"
    )
    return _bounded(skills, budget, head, "call skill() with no name to list them all")


def _bounded(skills: list[Skill], budget: int, head: str, more: str) -> str:
    """`head` and a line per skill within `budget`: descriptions share the room (cut, never
    below DESCRIPTION_MIN_SHOWN), and the skills that still do not fit are counted."""
    if not skills:
        return ""
    tail_room = 30 + len(more)  # the "- … and N more: ..." line
    share = (budget - len(head) - tail_room) // len(skills)
    lines = [head]
    used = len(head)
    for i, s in enumerate(skills):
        room = max(DESCRIPTION_MIN_SHOWN, share - len(s.name) - 5)
        line = f"- {s.name}: {_cut(s.description, room)}"
        last = i == len(skills) - 1
        if used + 1 + len(line) > budget - (0 if last else tail_room):
            lines.append(f"- … and {len(skills) - i} more: {more}")
            break
        lines.append(line)
        used += 1 + len(line)
    return "\n".join(lines)


# --- the skill tool -------------------------------------------------------------------------


def inside(folder: Path, relative: str) -> Path:
    """`relative` resolved inside a skill's `folder`, or ToolError saying why not: no absolute
    paths, no `..`, no symlink leading out."""
    if "\x00" in relative:
        raise ToolError("path contains a NUL byte")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~") or ".." in pure.parts:
        raise ToolError(
            f"{_cut(relative, 200)!r}: paths are relative to the skill's folder, without '..' "
            "(e.g. references/guide.md)"
        )
    root = folder.resolve()
    try:
        target = (root / pure).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ToolError(f"{_cut(relative, 200)!r}: cannot be resolved ({exc})") from exc
    if not target.is_relative_to(root):
        raise ToolError(f"{_cut(relative, 200)!r}: refused, a symlink leads outside the skill")
    return target


def read_text(path: Path, shown_as: str, limit: int, max_bytes: int) -> str:
    """A skill's text file, at most `limit` characters (with a notice when cut). ToolError for
    what is not a readable regular text file no bigger than `max_bytes`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise ToolError(f"{shown_as}: no such file") from None
    except OSError as exc:
        raise ToolError(f"{shown_as}: cannot be read ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{shown_as}: not a file (a folder, or something else)")
        if st.st_size > max_bytes:
            raise ToolError(
                f"{shown_as} is {st.st_size} bytes; files up to {max_bytes} can be read"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(max_bytes + 1)
    finally:
        os.close(fd)
    if b"\x00" in raw[:8192]:
        raise ToolError(f"{shown_as} is a binary file; only text files can be read")
    text = raw.decode("utf-8", errors="replace")
    if len(text) > limit:
        text = text[:limit] + f"\n[cut: {len(text)} characters, showing the first {limit}]"
    return text


def files(skill: Skill) -> tuple[list[str], int]:
    """A skill's files other than SKILL.md, relative to its folder (hidden ones left out, symlinked
    folders not entered), at most LIST_FILES; and how many more there were (counted up to
    WALK_MAX: a folder of a million files costs no more than one of WALK_MAX)."""
    found = [rel for rel in itertools.islice(_walk(skill.folder), WALK_MAX) if rel != SKILL_FILE]
    return found[:LIST_FILES], len(found) - len(found[:LIST_FILES])


def _walk(folder: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(folder)
        for name in sorted(filenames):
            if not name.startswith("."):
                yield str(PurePosixPath(base, name)) if str(base) != "." else name


def sandbox_path(skill: Skill) -> PurePosixPath:
    """Where the shell sandbox shows `skill`'s folder (read-only)."""
    return SANDBOX_ROOT / skill.scope / skill.name


def sandbox_binds(agent_dir: Path) -> list[tuple[Path, PurePosixPath]]:
    """The skills folders the shell sandbox shows read-only, and where. Only real folders: a
    symlinked skills/ could lead the bind to anything the runtime can read, secrets included."""
    home = Home(agent_dir.parent.parent)
    out = []
    for scope, root in roots(home, agent_dir.name):
        if root.is_dir() and not root.is_symlink():
            out.append((root, SANDBOX_ROOT / scope))
    return out


def load(skill: Skill, *, shell: ShellMode) -> str:
    """What `skill(name)` returns: the body of SKILL.md, its files, how to read and run them."""
    body = front_matter.split(
        read_text(skill.skill_file, SKILL_FILE, BODY_CHARS + HEAD_MAX_BYTES, SKILL_MAX_BYTES)
    ).body
    if len(body) > BODY_CHARS:
        body = body[:BODY_CHARS] + f"\n[cut: the body has {len(body)} characters]"
    where = f"skills/{skill.name}/" if skill.scope == "agent" else "shared skills"
    lines = [f'<skill name="{skill.name}" from="{where}">', body.strip(), "</skill>"]
    listed, more = files(skill)
    if listed:
        lines += ["", f"Files of this skill (read one with skill(name={skill.name!r}, path=...)):"]
        lines += [f"- {f}" for f in listed]
        if more:
            lines.append(f"- … and {more} more")
    scripts = [f for f in listed if f.startswith("scripts/")]
    if scripts and shell == "off":
        lines += [
            "",
            "This skill's scripts cannot run: shell is disabled for you "
            "([tools.shell] enabled = false in agent.toml).",
        ]
    elif scripts:
        folder = sandbox_path(skill) if shell == "sandboxed" else skill.folder
        example = f"{folder}/{scripts[0]}"
        runner = INTERPRETERS.get(PurePosixPath(example).suffix)
        lines += [
            "",
            f"Run its scripts with the shell tool from {folder}/ (read-only), e.g. "
            f"`{runner + ' ' if runner else ''}{example}`; they run in your workspace, the only "
            "place they can write.",
        ]
    return "\n".join(lines)


def listing(skills: list[Skill]) -> str:
    """Every usable skill, descriptions cut to fit one tool result: `skill()` without a name."""
    if not skills:
        return "There are no skills."
    more = "too many to list; a person can prune skills/ and $ANIMA_HOME/skills/"
    return _bounded(skills, LISTING_CHARS, f"{len(skills)} skills:", more)


def shell_mode(config: AgentConfig) -> ShellMode:
    """How this agent's shell would run a skill's script: in the sandbox, unsandboxed, or not."""
    from anima.tools import sandbox

    if not _shell_on(config):
        return "off"
    return "sandboxed" if sandbox.unavailable() is None else "unsafe"


def _shell_on(config: AgentConfig) -> bool:
    return config.tools.shell.enabled and "shell" not in config.tools.disabled


def shell_off(home: Home, agent: str | None) -> str | None:
    """Why scripts could not run for `agent` (None: for any agent, as a shared skill's), as
    "which is off for ada (how to turn it on)"; None when a shell can run them, or when an
    agent.toml cannot be read (the run and `anima doctor` say why)."""
    if agent is None:
        configs = [_config(home, name) for name in home.agent_names()]
        if any(c is None or _shell_on(c) for c in configs):
            return None
        return "which no agent has on ([tools.shell] enabled = true in an agent.toml turns it on)"
    config = _config(home, agent)
    if config is None or _shell_on(config):
        return None
    where = f"agents/{agent}/agent.toml"
    if "shell" in config.tools.disabled:
        return f'which is off for {agent} ("shell" is in [tools] disabled in {where})'
    return f"which is off for {agent} ([tools.shell] enabled = true in {where} turns it on)"


def _config(home: Home, agent: str) -> AgentConfig | None:
    try:
        return load_agent_config(home.agents_dir / agent / "agent.toml")
    except AnimaError:
        return None


def scripts_note(home: Home, skill: Skill, agent: str | None = None) -> str | None:
    """For `anima skills check` and `list`: that this skill's scripts (files under scripts/,
    as the skill tool tells) need the shell tool, off for the agent that has the skill (for a
    shared one: for `agent`, or for every agent when None). None when they can run."""
    if not any(f.startswith("scripts/") for f in files(skill)[0]):
        return None
    owner = skill.folder.parent.parent.name if skill.scope == "agent" else agent
    off = shell_off(home, owner)
    return f"its scripts need the shell tool, {off}" if off else None


def _skill(ctx: ToolContext, name: str = "", path: str = "") -> str:
    home = Home(ctx.agent_dir.parent.parent)
    if not name:
        if path:
            raise ToolError("give the skill's name with its path")
        return listing([s for s in discover(home, ctx.agent_name) if s.usable])
    try:
        skill = find(home, ctx.agent_name, name)
    except BadSkill as exc:
        raise ToolError(str(exc)) from exc
    if not path:
        return load(skill, shell=shell_mode(ctx.config))
    target = inside(skill.folder, path)
    return read_text(target, f"{name}/{path}", FILE_CHARS, FILE_MAX_BYTES)


SKILL_TOOL = Tool(
    "skill",
    "Load a skill: its instructions (SKILL.md) and the list of its files. With path, read one "
    "of its files (e.g. references/guide.md). Without a name, list every skill.",
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "the skill's name", "default": ""},
            "path": {
                "type": "string",
                "description": "a file inside the skill's folder, e.g. references/guide.md",
                "default": "",
            },
        },
        "required": [],
        "additionalProperties": False,
    },
    _skill,
)


class SkillSource:
    """Offers the `skill` tool to an agent that has at least one usable skill (else nothing)."""

    name = "skills"

    def tools(self, agent: Agent) -> list[Tool]:
        return [SKILL_TOOL] if usable(agent) else []
