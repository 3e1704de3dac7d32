"""Agent Skills through real turns: a skill is catalogued, loaded on demand by the `skill` tool,
its references read and its scripts run in the shell sandbox; invalid ones are skipped by turns
and explained by `anima skills check`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from anima import skills
from anima.agent import Agent
from anima.cli.skills_cmds import skills as skills_cli
from anima.home import Home
from anima.testing import FakeModelServer, Reply
from anima.tools import ToolContext, registry, run_tool
from anima.toolset import BuiltinTools
from anima.turn import process_agent
from tests.conftest import make_agent, send
from tests.test_tools_hostile import configure

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (CI installs it)"
)

PDF_BODY = "# Filling PDF forms\n\nRead references/forms.md first, then fill the form."


def write_skill(
    root: Path,
    name: str,
    description: str = "Fill in PDF forms. Use when the user sends a PDF form.",
    body: str = PDF_BODY,
    *,
    head: str | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    head = head if head is not None else f"name: {name}\ndescription: {json.dumps(description)}"
    (folder / "SKILL.md").write_text(f"---\n{head}\n---\n{body}\n")
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def turn(home: Home, name: str = "arya") -> None:
    (result,) = process_agent(home, name, sources=[BuiltinTools(), skills.SkillSource()]).results
    assert result.error is None, result.error


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t["name"] for t in body.get("tools", [])]


def tool_results(body: dict[str, Any]) -> list[str]:
    """The text of every tool result the model was sent, in order."""
    out = []
    for msg in body["messages"]:
        for block in msg["content"] if isinstance(msg["content"], list) else []:
            if block.get("type") == "tool_result":
                content = block["content"]
                out.append(content if isinstance(content, str) else content[0]["text"])
    return out


def call_skill(agent: Agent, **args: object) -> tuple[str, bool]:
    ctx = ToolContext(agent.name, agent.path, agent.config, [], [], "cli")
    return run_tool({"skill": skills.SKILL_TOOL}, ctx, "skill", args)


@pytest.fixture
def agent(home: Home) -> Agent:
    return make_agent(home)


def test_skill_is_offered_loaded_on_demand_and_its_reference_read(
    home: Home, agent: Agent, fake: FakeModelServer
) -> None:
    write_skill(
        agent.path / "skills",
        "pdf-forms",
        files={"references/forms.md": "Field names are case-sensitive.", "assets/blank.txt": ""},
    )
    fake.add(
        Reply("", tool_calls=[{"name": "skill", "input": {"name": "pdf-forms"}}]),
        Reply(
            "",
            tool_calls=[
                {"name": "skill", "input": {"name": "pdf-forms", "path": "references/forms.md"}}
            ],
        ),
        Reply("Done."),
    )
    send(agent, "please fill this PDF form")
    turn(home)
    first, second, third = fake.requests
    assert "skill" in tool_names(first.body)
    assert "Fill in PDF forms" not in json.dumps(first.body["messages"])  # no body until asked
    loaded = tool_results(second.body)[-1]
    assert PDF_BODY.splitlines()[-1] in loaded and "name:" not in loaded  # body, no head
    assert "- references/forms.md" in loaded and "- assets/blank.txt" in loaded
    assert tool_results(third.body)[-1] == "Field names are case-sensitive."
    tracked = subprocess.run(
        ["git", "ls-files", "skills/pdf-forms"], cwd=agent.path, capture_output=True, text=True
    ).stdout.split()
    assert "skills/pdf-forms/SKILL.md" in tracked  # versioned like the rest of the agent


def test_catalogue_is_in_the_request(home: Home, agent: Agent, fake: FakeModelServer) -> None:
    write_skill(agent.path / "skills", "pdf-forms")
    fake.add(Reply("ok"))
    send(agent, "hi")
    turn(home)
    body = fake.requests[0].body
    system = body.get("system", [])
    blocks = [system] if isinstance(system, str) else [b["text"] for b in system]
    blocks += [b.get("text", "") for m in body["messages"] for b in m["content"]]
    catalogue = skills.catalogue(agent)
    assert catalogue.startswith("## Skills") and any(catalogue in text for text in blocks)


def test_catalogue_lists_name_and_description(agent: Agent) -> None:
    write_skill(agent.path / "skills", "pdf-forms")
    text = skills.catalogue(agent)
    assert "- pdf-forms: Fill in PDF forms. Use when the user sends a PDF form." in text
    assert PDF_BODY not in text


def test_no_skills_means_no_tool_and_no_catalogue(
    home: Home, agent: Agent, fake: FakeModelServer
) -> None:
    write_skill(agent.path / "skills", "Bad_Name")  # only an invalid one: still none usable
    fake.add(Reply("ok"))
    send(agent, "hi")
    turn(home)
    assert "skill" not in tool_names(fake.requests[0].body)
    assert skills.catalogue(agent) == ""
    assert skills.SkillSource().tools(agent) == []


def test_catalogue_stays_within_budget_and_says_how_many_more(agent: Agent) -> None:
    for i in range(100):
        write_skill(agent.path / "skills", f"skill-{i:03d}", "A long description. " * 50)
    text = skills.catalogue(agent)
    assert len(text) <= agent.config.budget.skills_chars == 2000
    shown = [line for line in text.splitlines() if line.startswith("- skill-")]
    assert 0 < len(shown) < 100
    assert f"… and {100 - len(shown)} more: call skill() with no name" in text
    listing, is_error = call_skill(agent)
    assert not is_error and listing.count("\n- skill-") == 100  # the tool lists them all


def test_few_skills_get_their_whole_description(agent: Agent) -> None:
    long = "word " * 200  # 1,000 characters: the spec allows 1,024
    write_skill(agent.path / "skills", "one", long)
    assert long.strip() in skills.catalogue(agent)


def test_agent_skill_wins_over_shared_one(home: Home, agent: Agent) -> None:
    write_skill(home.root / "skills", "notes", "shared version")
    write_skill(home.root / "skills", "other", "only shared")
    write_skill(agent.path / "skills", "notes", "the agent's own version")
    names = [(s.name, s.scope) for s in skills.usable(agent)]
    assert names == [("notes", "agent"), ("other", "shared")]
    assert "shared version" not in skills.catalogue(agent)
    out, _ = call_skill(agent, name="notes")
    assert 'from="skills/notes/"' in out


def test_edited_skill_is_read_again(agent: Agent) -> None:
    folder = write_skill(agent.path / "skills", "pdf-forms", "first")
    assert "first" in skills.catalogue(agent)
    write_skill(agent.path / "skills", "pdf-forms", "second, longer")
    os.utime(folder / "SKILL.md", ns=(1, 1))  # even with its old mtime back, ctime moved
    assert "second, longer" in skills.catalogue(agent)


INVALID = {
    "Bad_Name": ("name: Bad_Name\ndescription: x", "is not valid"),
    "double--hyphen": ("name: double--hyphen\ndescription: x", "is not valid"),
    "elsewhere": ("name: other-name\ndescription: x", "differs from its folder's name"),
    "no-desc": ("name: no-desc\nlicense:", "`description` is missing"),
    "number-name": ("name: 12\ndescription: x", "`name` is missing or not text"),
    "long-desc": ("name: long-desc\ndescription: " + "x" * 1025, "1025 characters"),
    "hostile": ("name: hostile\ndescription: !!python/object/apply:os.system [id]", "tag"),
    "alias": ("name: &a alias\ndescription: *a", "alias"),
    "not-yaml": ("name: [unclosed\ndescription: x", "not valid YAML"),
    "bad-meta": ("name: bad-meta\ndescription: x\nmetadata: [1, 2]", "`metadata`"),
    "long-compat": ("name: long-compat\ndescription: x\ncompatibility: " + "c" * 501, "501"),
}


@pytest.mark.parametrize("folder", sorted(INVALID))
def test_invalid_skill_is_skipped_and_check_says_why(home: Home, agent: Agent, folder: str) -> None:
    head, reason = INVALID[folder]
    write_skill(agent.path / "skills", folder, head=head)
    write_skill(agent.path / "skills", "fine")
    assert [s.name for s in skills.usable(agent)] == ["fine"]
    assert folder not in skills.catalogue(agent)
    out = CliRunner().invoke(skills_cli, ["check", "--agent", "arya"], obj=home)
    assert out.exit_code == 1, out.output
    line = next(ln for ln in out.output.splitlines() if ln.startswith("invalid"))
    assert folder in line and reason in " ".join(out.output.split()), out.output
    assert "2 checked, 1 invalid" in out.output


def test_unsafe_files_make_a_skill_invalid(home: Home, agent: Agent, tmp_path: Path) -> None:
    root = agent.path / "skills"
    outside = write_skill(tmp_path / "elsewhere", "linked")
    (root / "linked").mkdir(parents=True)
    (root / "linked" / "SKILL.md").symlink_to(outside / "SKILL.md")
    (root / "folder-link").symlink_to(outside)
    write_skill(root, "huge", body="x" * skills.SKILL_MAX_BYTES)
    (root / "empty").mkdir()
    os.mkfifo(write_skill(root, "fifo").joinpath("SKILL.md").with_name("SKILL.md.tmp"))
    (root / "fifo" / "SKILL.md").unlink()
    (root / "fifo" / "SKILL.md.tmp").rename(root / "fifo" / "SKILL.md")
    (root / "binary").mkdir()
    (root / "binary" / "SKILL.md").write_bytes(b"---\nname: binary\ndescription: \xff\xfe\n---\n")
    problems = {s.name: s.problem for s in skills.discover(home, "arya")}
    assert "symlink leading outside" in str(problems["linked"])
    assert "symlink" in str(problems["folder-link"])
    assert "bytes; the limit is" in str(problems["huge"])
    assert "no SKILL.md" in str(problems["empty"])
    assert "not a regular file" in str(problems["fifo"])
    assert "not UTF-8" in str(problems["binary"])
    assert skills.usable(agent) == [] and skills.catalogue(agent) == ""


def test_a_turn_survives_invalid_skills(home: Home, agent: Agent, fake: FakeModelServer) -> None:
    write_skill(agent.path / "skills", "hostile", head="name: hostile\ndescription: !!binary x")
    write_skill(agent.path / "skills", "good")
    fake.add(Reply("", tool_calls=[{"name": "skill", "input": {"name": "hostile"}}]), Reply("ok"))
    send(agent, "hi")
    turn(home)
    result = tool_results(fake.requests[1].body)[-1]
    assert "skill 'hostile' is invalid" in result and "tag" in result


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../other/SKILL.md", "without '..'"),
        ("/etc/passwd", "without '..'"),
        ("~/x", "without '..'"),
        ("references/out.md", "leads outside the skill"),
        ("references/missing.md", "no such file"),
        ("references", "not a file"),
        ("assets/logo.png", "binary file"),
        ("references/\x00", "NUL"),
    ],
)
def test_skill_paths_stay_inside_the_skill(
    home: Home, agent: Agent, tmp_path: Path, path: str, why: str
) -> None:
    write_skill(home.root / "skills", "other", files={"secret.md": "other skill"})
    folder = write_skill(agent.path / "skills", "pdf-forms", files={"references/ok.md": "fine"})
    (tmp_path / "secret.txt").write_text("outside")
    (folder / "references" / "out.md").symlink_to(tmp_path / "secret.txt")
    (folder / "assets").mkdir()
    (folder / "assets" / "logo.png").write_bytes(b"\x89PNG\x00\x00")
    out, is_error = call_skill(agent, name="pdf-forms", path=path)
    assert is_error and why in out, out
    assert call_skill(agent, name="pdf-forms", path="references/ok.md") == ("fine", False)


def test_unknown_skill_lists_the_available_ones(agent: Agent) -> None:
    write_skill(agent.path / "skills", "pdf-forms")
    out, is_error = call_skill(agent, name="nope")
    assert is_error and "no skill named 'nope'; available: pdf-forms" in out


def test_scripts_cannot_run_when_shell_is_off(agent: Agent) -> None:
    write_skill(agent.path / "skills", "tool", files={"scripts/run.sh": "echo hi"})
    out, _ = call_skill(agent, name="tool")
    assert "cannot run: shell is disabled" in out


@needs_bwrap
def test_skill_script_runs_read_only_in_the_shell_sandbox(
    home: Home, fake: FakeModelServer
) -> None:
    agent = configure(make_agent(home), "tools.shell", enabled=True, timeout=10.0)
    script = 'echo "hello from $(basename $(dirname $(dirname $0)))"; echo x > "$(dirname $0)/w"\n'
    write_skill(agent.path / "skills", "greet", files={"scripts/hello.sh": script})
    write_skill(home.root / "skills", "shared-one", files={"scripts/s.sh": "echo shared ok"})
    command = (
        "bash /run/skills/agent/greet/scripts/hello.sh > out.txt 2>&1;"
        " bash /run/skills/shared/shared-one/scripts/s.sh >> out.txt"
    )
    fake.add(
        Reply("", tool_calls=[{"name": "skill", "input": {"name": "greet"}}]),
        Reply("", tool_calls=[{"name": "shell", "input": {"command": command}}]),
        Reply("Done."),
    )
    send(agent, "greet me")
    turn(home)
    loaded = tool_results(fake.requests[1].body)[-1]
    assert "`bash /run/skills/agent/greet/scripts/hello.sh`" in loaded, loaded
    out = (agent.workspace / "out.txt").read_text()
    assert "hello from greet" in out and "Read-only file system" in out, out
    assert "shared ok" in out
    assert not (agent.path / "skills" / "greet" / "scripts" / "w").exists()


@needs_bwrap
def test_symlinked_skills_folder_is_not_shown_to_the_sandbox(home: Home) -> None:
    agent = configure(make_agent(home), "tools.shell", enabled=True, timeout=10.0)
    (home.root / "credentials.env").write_text("TOKEN=secret-value\n")
    shutil.rmtree(agent.path / "skills")
    (agent.path / "skills").symlink_to(home.root)  # would show credentials.env
    ctx = ToolContext(agent.name, agent.path, agent.config, [], [], "cli")
    out, _ = run_tool(registry(), ctx, "shell", {"command": "ls -A /run/skills/*; true"})
    assert "credentials.env" not in out and "anima.toml" not in out, out
    assert [s.problem for s in skills.discover(home, "arya") if s.scope == "agent"] == [
        f"{agent.path / 'skills'} is a symlink; skills/ must be a real folder"
    ]


def test_cli_list_and_show(home: Home, agent: Agent) -> None:
    head = "name: pdf-forms\ndescription: Fill forms.\nlicense: MIT\nmetadata: {version: 1.0}"
    write_skill(agent.path / "skills", "pdf-forms", head=head, files={"references/forms.md": "x"})
    write_skill(home.root / "skills", "pdf-forms", "shared copy")
    write_skill(home.root / "skills", "Nope")
    runner = CliRunner()
    out = runner.invoke(skills_cli, ["list", "arya"], obj=home)
    assert out.exit_code == 0, out.output
    rows = [" ".join(line.split()) for line in out.output.splitlines()]
    assert any("pdf-forms" in r and "agent arya" in r and "yes" in r for r in rows), out.output
    assert any("shadowed" in r for r in rows) and any("no: name 'Nope'" in r for r in rows)
    shown = runner.invoke(skills_cli, ["show", "pdf-forms", "--agent", "arya"], obj=home)
    assert (
        shown.exit_code == 0 and PDF_BODY in shown.output and "references/forms.md" in shown.output
    )
    assert "license: MIT\nmetadata.version: 1.0\n" in shown.output
    missing = runner.invoke(skills_cli, ["show", "nope"], obj=home)
    assert missing.exit_code == 1 and "no skill named 'nope'" in missing.output
    ok = runner.invoke(skills_cli, ["check", "pdf-forms", "--agent", "arya"], obj=home)
    assert ok.exit_code == 0, ok.output


def test_new_agent_has_a_skills_folder_that_explains_itself(agent: Agent) -> None:
    readme = (agent.path / "skills" / "README.md").read_text()
    assert "anima skills check --agent arya" in readme
    assert skills.discover(agent.home, "arya") == [] and skills.catalogue(agent) == ""


def test_catalogue_budget_comes_from_agent_toml(home: Home) -> None:
    agent = configure(make_agent(home), "budget", skills_chars=600)
    for i in range(10):
        write_skill(agent.path / "skills", f"s-{i}", "Does a thing. " * 20)
    text = skills.catalogue(Agent(home, "arya"))
    assert len(text) <= 600 and "more: call skill()" in text


def test_skill_file_list_is_bounded(agent: Agent) -> None:
    names = {f"references/r{i:03d}.md": "x" for i in range(150)}
    write_skill(agent.path / "skills", "big", files={**names, ".hidden/x": "", "scripts/.x": ""})
    out, _ = call_skill(agent, name="big")
    assert out.count("\n- references/") == skills.LIST_FILES and "- … and 50 more" in out
    assert ".hidden" not in out and "scripts/.x" not in out


def test_run_once_offers_skills_by_default(home: Home, agent: Agent, fake: FakeModelServer) -> None:
    from anima.runtime import run_once

    write_skill(home.root / "skills", "pdf-forms")
    fake.add(Reply("", tool_calls=[{"name": "skill", "input": {"name": "pdf-forms"}}]), Reply("ok"))
    send(agent, "fill this form")
    (result,) = run_once(home)
    assert result.error is None and result.tool_calls == 1
    assert "skill" in tool_names(fake.requests[0].body)
    assert PDF_BODY.splitlines()[0] in tool_results(fake.requests[1].body)[-1]


def test_every_broken_rule_of_a_skill_is_named_at_once() -> None:
    """`anima skills check` named one problem at a time: a newcomer fixed and ran it again."""
    from anima.skills import validate

    fields = validate({"name": "Bad_Name", "description": "", "license": 3}, "bad-name")
    assert fields.problem is not None
    assert "name 'Bad_Name' is not valid" in fields.problem
    assert "`description` is missing" in fields.problem and "`license` must be text" in fields.problem
    assert validate({"name": "ok", "description": "Does things."}, "ok").problem is None
