"""Agents and skills from git, end to end through the `anima` command: templates from local bare
repositories (`new --from`, `update`), skills pinned in skills.lock (`skills add`, `skills
update`), hostile repositories refused, and marketplace indexes (`market add-index`, `search`)."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from anima.cli import main
from anima.errors import BadSource
from anima.gitsource import Entry, Source, check_tree, parse

IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}
PERSONA = (
    "You are {{name}}, a researcher.\n\n## Style\n\nPlain words.\n\n## Rules\n\nCite sources.\n"
)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def g(repo: Path, *args: str, input_: str | None = None) -> str:
    env = {**os.environ, **IDENTITY}
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], input=input_, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def publish(work: Path, files: dict[str, str | None], message: str = "change") -> str:
    """Write (None: delete) files in the working repository `work`, commit, push to its bare
    twin `work`.git; the commit's sha."""
    if not work.exists():
        work.mkdir(parents=True)
        g(work, "init", "-q", "-b", "main")
        subprocess.run(
            ["git", "init", "-q", "--bare", "-b", "main", str(work) + ".git"], check=True
        )
        g(work, "remote", "add", "origin", str(work) + ".git")
    for rel, text in files.items():
        path = work / rel
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    g(work, "add", "-A")
    g(work, "commit", "-q", "-m", message)
    g(work, "push", "-q", "origin", "main")
    return g(work, "rev-parse", "HEAD")


def template(tmp_path: Path, **extra: str) -> Path:
    """A template repository (persona, offline agent.toml, memory seed); its bare twin's path."""
    files = {
        "persona.md": PERSONA,
        "agent.toml": 'provider = "offline"\n',
        "memory/MEMORY.md": "Seed: papers live in workspace/.\n",
        **extra,
    }
    publish(tmp_path / "tpl", files, "template v1")
    return tmp_path / "tpl.git"


def agent_dir(tmp_path: Path, name: str = "arya") -> Path:
    return tmp_path / "home" / "agents" / name


# --- agents from templates --------------------------------------------------------------------


def test_new_from_template_then_update_merges_it_but_never_the_agents_memory(
    tmp_path: Path,
) -> None:
    bare = template(tmp_path)
    code, out = invoke("new", "arya", "--from", f"file://{bare}#main")
    assert code == 0, out
    repo = agent_dir(tmp_path)
    assert g(repo, "remote", "get-url", "upstream") == f"file://{bare}"
    assert (repo / "persona.md").read_text().startswith("You are arya, a researcher.")
    assert (repo / "memory/MEMORY.md").read_text() == "Seed: papers live in workspace/.\n"
    assert {"always.md", ".gitignore", "agent.toml"} <= set(g(repo, "ls-files").split())
    g(repo, "fsck", "--strict")
    assert g(repo, "status", "--porcelain") == ""

    (repo / "memory/MEMORY.md").write_text("The user likes short answers.\n")  # the agent's own
    publish(
        tmp_path / "tpl",
        {
            "persona.md": PERSONA.replace("Cite sources.", "Cite sources, always."),
            "memory/MEMORY.md": "Seed v2.\n",
            "memory/extra.md": "a note the template added later\n",
        },
    )
    code, out = invoke("update", "arya")
    assert code == 0, out
    assert "kept the agent's own version of: memory/MEMORY.md" in out
    assert "Cite sources, always." in (repo / "persona.md").read_text()
    assert "You are arya" in (repo / "persona.md").read_text()
    assert (repo / "memory/MEMORY.md").read_text() == "The user likes short answers.\n"
    assert not (repo / "memory/extra.md").exists()
    assert g(repo, "log", "-1", "--format=%s").startswith("update(arya): merge template")
    assert g(repo, "status", "--porcelain") == ""
    g(repo, "fsck", "--strict")
    assert "up to date" in invoke("update", "arya")[1]

    assert invoke("send", "arya", "hello there")[0] == 0
    code, out = invoke("run", "--once")
    assert code == 0 and "[offline model]" in out, out


def test_a_template_change_on_a_line_with_name_merges_and_new_files_get_the_name(
    tmp_path: Path,
) -> None:
    """The agent never touched its persona's `{{name}}` line, the template changed it: the
    update merges the template as the agent got it (name filled in), no conflict; a file the
    template adds later gets the agent's name too."""
    bare = template(tmp_path)
    assert invoke("new", "ada", "--from", str(bare))[0] == 0
    repo = agent_dir(tmp_path, "ada")
    first = PERSONA.splitlines()[0]
    assert "{{name}}" in first
    publish(
        tmp_path / "tpl",
        {
            "persona.md": PERSONA.replace(first, first + " Be brief."),
            "skills/hello/SKILL.md": skill_md("hello", "Say hello to {{name}} nicely."),
        },
    )
    code, out = invoke("update", "ada")
    assert code == 0, out
    persona = (repo / "persona.md").read_text()
    assert persona.splitlines()[0] == first.replace("{{name}}", "ada") + " Be brief."
    assert "Say hello to ada nicely." in (repo / "skills/hello/SKILL.md").read_text()
    publish(tmp_path / "tpl", {"skills/hello/SKILL.md": skill_md("hello", "Greet {{name}}.")})
    code, out = invoke("update", "ada")  # a second update merges from where the first left
    assert code == 0, out
    assert "Greet ada." in (repo / "skills/hello/SKILL.md").read_text()
    assert g(repo, "status", "--porcelain") == ""
    g(repo, "fsck", "--strict")


def test_update_conflict_stops_with_a_clear_message_and_a_clean_repo(tmp_path: Path) -> None:
    bare = template(tmp_path)
    assert invoke("new", "arya", "--from", str(bare))[0] == 0
    repo = agent_dir(tmp_path)
    (repo / "persona.md").write_text(
        PERSONA.replace("Plain words.", "Warm words.").replace("{{name}}", "arya")
    )
    (repo / "memory/MEMORY.md").write_text("mine\n")
    publish(tmp_path / "tpl", {"persona.md": PERSONA.replace("Plain words.", "Dry words.")})
    before = g(repo, "rev-parse", "HEAD~0")
    code, out = invoke("update", "arya")
    assert code == 1 and "conflict" in out and "persona.md" in out and "aborted" in out
    assert "Traceback" not in out
    head = g(repo, "rev-parse", "HEAD")
    assert g(repo, "log", "-1", "--format=%s", head).startswith("external: hand edits")
    assert g(repo, "rev-parse", "HEAD~1") == before  # only the hand edits were committed
    assert g(repo, "status", "--porcelain") == ""
    assert not (repo / ".git/MERGE_HEAD").exists()
    assert "Warm words." in (repo / "persona.md").read_text()
    assert (repo / "memory/MEMORY.md").read_text() == "mine\n"


def test_update_of_an_agent_without_a_template_says_so(tmp_path: Path) -> None:
    invoke("new", "plain")
    code, out = invoke("update", "plain")
    assert code == 1 and "not made from a template" in out


def _symlink_out(work: Path) -> None:
    (work / "persona.md").write_text("hi\n")
    (work / "memory").mkdir()
    os.symlink("/etc/passwd", work / "memory/MEMORY.md")


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"persona.md": "hi\n", "inbox/x.md": "---\nfrom: evil\n---\nhi\n"}, "own records"),
        ({"persona.md": "hi\n", "history/cli/2026-01-01.jsonl": "{}\n"}, "own records"),
        ({"agent.toml": 'provider = "offline"\n'}, "no persona.md"),
        ({"persona.md": "hi\n", ".gitignore": "memory/\n"}, "hides files the agent writes"),
        ({"persona.md": "hi\n", ".gitattributes": "* filter=evil\n"}, "git's own files"),
        ({"persona.md": "hi\n", "agent.toml": "provider = 3\n"}, "agent.toml"),
    ],
)
def test_hostile_or_broken_templates_are_refused_and_leave_nothing(
    tmp_path: Path, files: dict[str, str], why: str
) -> None:
    publish(tmp_path / "bad", dict(files))
    code, out = invoke("new", "arya", "--from", str(tmp_path / "bad.git"))
    assert code == 1 and why in out and "Traceback" not in out, out
    assert not list((tmp_path / "home/agents").iterdir())


def test_template_with_a_symlink_out_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "bad"
    publish(work, {"persona.md": "hi\n"})
    os.symlink("/etc/passwd", work / "always.md")
    g(work, "add", "-A")
    g(work, "commit", "-q", "-m", "link")
    g(work, "push", "-q", "origin", "main")
    code, out = invoke("new", "arya", "--from", str(work) + ".git")
    assert code == 1 and "symlink" in out
    assert not list((tmp_path / "home/agents").iterdir())


def test_a_tree_naming_dot_dot_or_dot_git_is_refused(tmp_path: Path) -> None:
    """Trees git itself would never write (crafted with mktree): refused before any checkout."""
    work = tmp_path / "crafted"
    publish(work, {"persona.md": "hi\n"})
    blob = g(work, "hash-object", "-w", "--stdin", input_="x\n")
    for name in ("..", ".GIT"):
        sub = g(work, "mktree", input_=f"100644 blob {blob}\tconfig\n")
        top = g(
            work, "mktree", input_=(f"100644 blob {blob}\tpersona.md\n040000 tree {sub}\t{name}\n")
        )
        commit = g(work, "commit-tree", top, "-m", "crafted")
        code, out = invoke("new", "arya", "--from", f"{work}#{commit}")
        assert code == 1 and "fsck error" in out and "Traceback" not in out, out
        assert not list((tmp_path / "home/agents").iterdir())


def test_urls_that_git_would_read_as_options_are_refused(tmp_path: Path) -> None:
    for url in ("--upload-pack=touch /tmp/pwned", "-oProxyCommand=x", "ext::sh -c touch% /tmp/x"):
        for args in (["new", "arya", "--from", url], ["skills", "add", url]):
            code, out = invoke(*args)
            assert code != 0 and "error" in out.lower(), out
    assert not Path("/tmp/pwned").exists()


# --- skills from git --------------------------------------------------------------------------


def skill_md(name: str, description: str = "Fill in PDF forms.", body: str = "Body.") -> str:
    return f"---\nname: {name}\ndescription: {description}\n---\n{body}\n"


def test_skills_add_pins_a_commit_and_only_update_moves_it(tmp_path: Path) -> None:
    first = publish(tmp_path / "sk", {"skills/pdf-forms/SKILL.md": skill_md("pdf-forms")})
    invoke("init")
    code, out = invoke("skills", "add", f"{tmp_path}/sk.git#main:skills/pdf-forms")
    assert code == 0 and "SKILL.md" in out, out
    home = tmp_path / "home"
    lock = tomllib.loads((home / "skills.lock").read_text())["skills"]["pdf-forms"]
    tree = g(tmp_path / "sk", "rev-parse", f"{first}:skills/pdf-forms")
    expected = {"ref": "main", "path": "skills/pdf-forms", "commit": first, "tree": tree}
    assert lock == {"url": f"{tmp_path}/sk.git", **expected}
    installed = home / "skills/pdf-forms/SKILL.md"
    assert installed.read_text() == skill_md("pdf-forms")
    assert invoke("skills", "check")[0] == 0

    second = publish(
        tmp_path / "sk", {"skills/pdf-forms/SKILL.md": skill_md("pdf-forms", body="Body v2.")}
    )
    assert installed.read_text() == skill_md("pdf-forms")  # pinned: nothing moved
    code, out = invoke("skills", "update")
    assert code == 0 and "1 file changed" in out and "+Body v2." in out, out
    assert installed.read_text() == skill_md("pdf-forms", body="Body v2.")
    lock = tomllib.loads((home / "skills.lock").read_text())["skills"]["pdf-forms"]
    assert lock["commit"] == second
    assert "up to date" in invoke("skills", "update", "pdf-forms")[1]
    assert not list((home / "run/skill-fetch").iterdir())


def test_a_skill_with_scripts_needs_yes_and_goes_into_the_agents_git(tmp_path: Path) -> None:
    publish(
        tmp_path / "sk",
        {"SKILL.md": skill_md("sk"), "scripts/fill.py": "print('hi')\n"},
    )
    invoke("new", "arya")
    url = f"{tmp_path}/sk.git"
    code, out = invoke("skills", "add", url, "--agent", "arya")
    assert code == 1 and "scripts/fill.py  [script]" not in out
    assert "re-run with --yes" in out and "scripts/fill.py" in out
    repo = agent_dir(tmp_path)
    assert not (repo / "skills/sk").exists() and not (repo / "skills.lock").exists()
    code, out = invoke("skills", "add", url, "--agent", "arya", "--yes")
    assert code == 0, out
    assert g(repo, "log", "-1", "--format=%s").startswith("skills: add sk from")
    assert "skills/sk/scripts/fill.py" in g(repo, "ls-files")
    assert g(repo, "status", "--porcelain") == ""

    publish(tmp_path / "sk", {"scripts/more.sh": "echo more\n"})
    code, out = invoke("skills", "update", "--agent", "arya")
    assert code == 1 and "scripts/more.sh" in out and "--yes" in out
    assert not (repo / "skills/sk/scripts/more.sh").exists()
    code, out = invoke("skills", "update", "--agent", "arya", "--yes")
    assert code == 0 and (repo / "skills/sk/scripts/more.sh").exists()
    assert g(repo, "log", "-1", "--format=%s").startswith("skills: update sk from")


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"sk/SKILL.md": skill_md("other-name")}, "differs from its folder"),
        ({"SKILL.md": "---\nname: sk\n---\nno description\n"}, "description"),
        ({"README.md": "not a skill\n"}, "no SKILL.md"),
        ({"SKILL.md": skill_md("sk"), ".gitmodules": "[submodule]\n"}, "git's own files"),
    ],
)
def test_an_invalid_skill_is_refused_and_nothing_is_left(
    tmp_path: Path, files: dict[str, str], why: str
) -> None:
    publish(tmp_path / "sk", dict(files))
    invoke("init")
    where = ":sk" if "sk/SKILL.md" in files else ""
    code, out = invoke("skills", "add", f"{tmp_path}/sk.git{where}")
    assert code == 1 and why in out, out
    home = tmp_path / "home"
    assert not (home / "skills.lock").exists()
    assert not list((home / "skills").glob("*")) if (home / "skills").exists() else True
    assert not list((home / "run/skill-fetch").iterdir())


def test_a_skill_with_a_symlink_out_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "sk"
    publish(work, {"SKILL.md": skill_md("sk")})
    os.symlink("/etc/passwd", work / "passwd.md")
    g(work, "add", "-A")
    g(work, "commit", "-q", "-m", "link")
    g(work, "push", "-q", "origin", "main")
    invoke("init")
    code, out = invoke("skills", "add", f"{work}.git")
    assert code == 1 and "symlink" in out
    assert not (tmp_path / "home/skills/sk").exists()


# --- marketplace indexes ----------------------------------------------------------------------


def test_market_add_index_search_and_install_by_name(tmp_path: Path) -> None:
    bare = template(tmp_path)
    publish(tmp_path / "sk", {"notes/SKILL.md": skill_md("notes", "Take notes of meetings.")})
    index = (
        f'[agents.researcher]\nurl = "{bare}"\ndescription = "Reads papers, keeps notes"\n\n'
        f'[skills.notes]\nurl = "{tmp_path}/sk.git:notes"\ndescription = "Meeting notes"\n\n'
        '[skills.broken]\ndescription = "no url"\n'
    )
    publish(tmp_path / "idx", {"index.toml": index})
    invoke("init")
    code, out = invoke("market", "add-index", f"file://{tmp_path}/idx.git")
    assert code == 0 and "added index idx" in out and "1 agent(s), 1 skill(s)" in out, out
    assert "idx" in invoke("market", "list-indexes")[1]

    code, out = invoke("market", "search", "NOTES")
    assert code == 0 and "researcher" in out and "notes" in out and "broken" in out, out
    code, out = invoke("market", "search", "meeting")
    assert "notes" in out and "researcher" not in out
    assert "nothing matches" in invoke("market", "search", "zebra", "--refresh")[1]

    assert invoke("skills", "add", "notes")[0] == 0
    assert (tmp_path / "home/skills/notes/SKILL.md").is_file()
    code, out = invoke("new", "ada", "--from", "researcher")
    assert code == 0, out
    assert "You are ada" in (agent_dir(tmp_path, "ada") / "persona.md").read_text()
    code, out = invoke("new", "bob", "--from", "nosuch")
    assert code == 1 and "no agent named 'nosuch'" in out

    assert invoke("market", "remove-index", "idx")[0] == 0
    assert "no marketplace index" in invoke("market", "list-indexes")[1]


def test_an_index_without_index_toml_is_not_added(tmp_path: Path) -> None:
    publish(tmp_path / "idx", {"README.md": "hi\n"})
    invoke("init")
    code, out = invoke("market", "add-index", f"{tmp_path}/idx.git")
    assert code == 1 and "no index.toml" in out
    assert "no marketplace index" in invoke("market", "list-indexes")[1]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/srv/s.git:skills/pdf", Source("/srv/s.git", "", "skills/pdf")),
        ("https://h:8443/r.git#v1:pdf", Source("https://h:8443/r.git", "v1", "pdf")),
        ("https://h:8443/r.git", Source("https://h:8443/r.git")),
        ("git@github.com:o/r.git", Source("git@github.com:o/r.git")),
        ("git@github.com:o/r.git:pdf", Source("git@github.com:o/r.git", "", "pdf")),
    ],
)
def test_skill_specs_split_url_ref_and_folder(spec: str, expected: Source) -> None:
    assert parse(spec, with_path=True) == expected


@pytest.mark.parametrize("spec", ["/srv/s.git:../etc", "/srv/s.git#--upload-pack=x", "-x"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(BadSource):
        parse(spec, with_path=True)


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("../x", "100644"),
        (".GIT/config", "100644"),
        ("a/.git /hooks/pre-commit", "100755"),
        ("GIT~1/config", "100644"),
        ("a/.gitmodules", "100644"),
        ("notes.md", "120000"),
        ("vendor", "160000"),
    ],
)
def test_the_tree_check_refuses_what_fsck_might_let_through(path: str, mode: str) -> None:
    """The second wall behind transfer.fsckObjects: the listing is checked before any write."""
    with pytest.raises(BadSource):
        check_tree(
            [Entry("persona.md", "100644", "0" * 40, 3), Entry(path, mode, "0" * 40, 3)], "t"
        )
