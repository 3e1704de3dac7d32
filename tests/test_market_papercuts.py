"""A newcomer's walk through "Agents and skills from git": what `anima skills add` says when a
path is a folder of a repository, when a repository holds skills only in its folders, and when
a skill's scripts could not run because the shell tool is off."""

from __future__ import annotations

from pathlib import Path

from tests.test_market import agent_dir, g, invoke, publish, skill_md


def _enable_shell(agent: Path) -> None:
    toml = agent / "agent.toml"
    text = toml.read_text()
    toml.write_text(text.replace("enabled = false          # shell", "enabled = true  # shell"))
    assert "enabled = true  # shell" in toml.read_text()


def test_a_folder_inside_a_repository_is_named_as_repo_colon_folder(tmp_path: Path) -> None:
    publish(tmp_path / "skrepo", {"notes/SKILL.md": skill_md("notes")})
    invoke("init")
    code, out = invoke("skills", "add", str(tmp_path / "skrepo/notes"))
    assert code == 1, out
    flat = " ".join(out.split())
    assert f"{tmp_path}/skrepo/notes is a folder of the repository {tmp_path}/skrepo" in flat
    assert f"anima skills add {tmp_path}/skrepo:notes" in flat
    assert "does not appear to be a git repository" not in flat and "fatal" not in flat
    code, out = invoke("skills", "add", f"{tmp_path}/skrepo:notes")  # the suggestion works
    assert code == 0, out
    assert (tmp_path / "home/skills/notes/SKILL.md").is_file()


def test_a_folder_outside_any_repository_says_it_is_not_one(tmp_path: Path) -> None:
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose/SKILL.md").write_text(skill_md("loose"))
    invoke("init")
    code, out = invoke("skills", "add", str(tmp_path / "loose"))
    flat = " ".join(out.split())
    assert code == 1 and f"{tmp_path}/loose is not a git repository" in flat, out
    assert "fatal" not in flat


def test_a_repository_of_skill_folders_lists_them(tmp_path: Path) -> None:
    files = {f"skills/s{i:02}/SKILL.md": skill_md(f"s{i:02}") for i in range(12)}
    publish(tmp_path / "many", {"README.md": "skills\n", "docs/guide.md": "x\n", **files})
    invoke("init")
    code, out = invoke("skills", "add", f"{tmp_path}/many.git#main")
    flat = " ".join(out.split())
    assert code == 1 and "has no SKILL.md at its top" in flat, out
    assert "skills/s00, skills/s01" in flat and "skills/s09" in flat and "and 2 more" in flat
    assert "skills/s10" not in flat and "docs" not in flat
    assert f"anima skills add {tmp_path}/many.git#main:skills/s00" in flat
    # inside a folder given after ':', the suggestion names the full path
    code, out = invoke("skills", "add", f"{tmp_path}/many.git:skills")
    flat = " ".join(out.split())
    assert code == 1 and f"anima skills add {tmp_path}/many.git:skills/s00" in flat, out
    assert not (tmp_path / "home/skills.lock").exists()


def test_a_repository_without_any_skill_still_says_it_is_not_one(tmp_path: Path) -> None:
    publish(tmp_path / "none", {"README.md": "nothing\n"})
    invoke("init")
    code, out = invoke("skills", "add", f"{tmp_path}/none.git")
    assert code == 1 and "it is not a skill" in out and "anima skills add" not in out, out


def _script_skill(tmp_path: Path) -> str:
    publish(
        tmp_path / "pdf",
        {"SKILL.md": skill_md("pdf-forms"), "scripts/fill.py": "print('hi')\n"},
    )
    return f"{tmp_path}/pdf.git"


def test_scripts_for_an_agent_without_shell_are_flagged_at_add_check_and_list(
    tmp_path: Path,
) -> None:
    url = _script_skill(tmp_path)
    invoke("new", "ada")
    code, out = invoke("skills", "add", url, "--agent", "ada", "--yes")
    flat = " ".join(out.split())
    assert code == 0, out
    assert "warning: skill pdf-forms's scripts need the shell tool, which is off for ada" in flat
    assert "[tools.shell] enabled = true" in flat
    code, out = invoke("skills", "check", "--agent", "ada")
    flat = " ".join(out.split())
    assert code == 0 and "scripts need the shell tool, which is off for ada" in flat, out
    code, out = invoke("skills", "list", "ada")
    assert "note pdf-forms (agent ada): its scripts need the shell tool" in " ".join(out.split())

    _enable_shell(agent_dir(tmp_path, "ada"))
    for args in (["skills", "check", "--agent", "ada"], ["skills", "list", "ada"]):
        code, out = invoke(*args)
        assert code == 0 and "shell" not in out, out


def test_shared_scripts_are_flagged_while_no_agent_has_shell(tmp_path: Path) -> None:
    url = _script_skill(tmp_path)
    invoke("new", "ada")
    invoke("new", "bob")
    code, out = invoke("skills", "add", url, "--yes")
    flat = " ".join(out.split())
    assert code == 0 and "scripts need the shell tool, which no agent has on" in flat, out
    assert "no agent has on" in " ".join(invoke("skills", "check")[1].split())
    _enable_shell(agent_dir(tmp_path, "bob"))
    code, out = invoke("skills", "check")
    assert code == 0 and "shell" not in out, out
    # for ada in particular, the shared skill's scripts still cannot run
    assert "which is off for ada" in " ".join(
        invoke("skills", "check", "--agent", "ada")[1].split()
    )


def test_a_skill_without_scripts_needs_no_shell(tmp_path: Path) -> None:
    publish(tmp_path / "plain", {"SKILL.md": skill_md("plain")})
    invoke("new", "ada")
    code, out = invoke("skills", "add", f"{tmp_path}/plain.git", "--agent", "ada")
    assert code == 0 and "shell" not in out, out
    assert "shell" not in invoke("skills", "check")[1]


def test_an_index_url_may_name_a_ref_and_a_folder(tmp_path: Path) -> None:
    """What the README says of an index's `url`: URL#ref:folder, as on the command line."""
    publish(tmp_path / "sk", {"notes/SKILL.md": skill_md("notes", body="v1")})
    g(tmp_path / "sk", "push", "-q", "origin", "main:v1")
    publish(tmp_path / "sk", {"notes/SKILL.md": skill_md("notes", body="v2")})
    index = f'[skills.notes]\nurl = "{tmp_path}/sk.git#v1:notes"\ndescription = "Notes"\n'
    publish(tmp_path / "idx", {"index.toml": index})
    invoke("init")
    assert invoke("market", "add-index", f"{tmp_path}/idx.git")[0] == 0
    code, out = invoke("skills", "add", "notes")
    assert code == 0, out
    assert "v1" in (tmp_path / "home/skills/notes/SKILL.md").read_text()
