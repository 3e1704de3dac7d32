"""Proposals: an agent changes itself on a branch, checked, and a person decides (issue 15)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from anima import gitstore, history, proposals
from anima.agent import Agent
from anima.cli.proposals_cmds import proposals as proposals_cli
from anima.errors import BadProposal
from anima.home import Home
from anima.message import Message
from anima.testing import FakeModelServer, Reply
from anima.turn import process_agent
from tests.conftest import add_channel, make_agent, replies, send
from tests.test_chat import spawn, until  # noqa: F401 (the chat fixture)

SKILL = "---\nname: greet\ndescription: Greet people warmly when they arrive.\n---\nSay hello.\n"


@pytest.fixture
def agent(home: Home) -> Agent:
    made = make_agent(home)
    gitstore.commit_external(made.path)  # the test's own agent.toml edits, as a turn would first
    return made


def git(agent: Agent, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=agent.path, capture_output=True, text=True, check=True
    ).stdout


def cli(home: Home, *args: str) -> Any:
    return CliRunner().invoke(proposals_cli, list(args), obj=home, catch_exceptions=False)


def propose_by_model(home: Home, agent: Agent, fake: FakeModelServer, **call: object) -> str:
    """The model calls `propose` in a real turn; returns the tool's result text."""
    fake.add(Reply("", tool_calls=[{"name": "propose", "input": call}]), Reply("Filed."))
    send(agent, "improve yourself")
    process_agent(home, agent.name)
    results = [
        b["content"]
        for m in fake.requests[-1].body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    ]
    return str(results[-1])


def only(agent: Agent) -> proposals.Proposal:
    (p,) = proposals.proposals(agent)
    return p


def test_proposal_is_made_checked_shown_and_approved_from_the_cli(
    home: Home, agent: Agent, fake: FakeModelServer
) -> None:
    out = propose_by_model(
        home,
        agent,
        fake,
        reason="long answers tire the owner",
        summary="brevity",
        files={"always.md": "Be brief.\n", "skills/greet/SKILL.md": SKILL},
        config={"heartbeat.every": "2h"},
    )
    p = only(agent)
    assert f"proposal {p.id} filed" in out and "checks passed" in out
    assert p.state == "open" and p.passed
    assert set(p.files) == {"always.md", "skills/greet/SKILL.md", "agent.toml"}
    assert "Be brief." not in agent.always  # main is untouched until approval
    assert not (agent.path / "skills/greet").exists()
    turn_body = git(agent, "log", "-1", "--format=%B")
    assert f"proposed {p.id}" in turn_body and "long answers tire the owner" in turn_body
    on = git(agent, "rev-parse", f"proposals/{p.id}^", "HEAD^").split()
    assert on[0] == on[1]  # on main as it was when the turn started
    assert git(agent, "worktree", "list").count("\n") == 1  # no worktree was left behind

    shown = cli(home, "show", agent.name, p.id)
    assert shown.exit_code == 0 and "checks when proposed: passed" in shown.output
    assert "checks now (as approval would run them): passed" in shown.output
    assert "+Be brief." in shown.output and '+every = "2h"' in shown.output
    bad = agent.path / "skills" / "broken" / "SKILL.md"  # a person's change since, elsewhere
    bad.parent.mkdir(parents=True)
    bad.write_text("---\nname: broken\n---\nno description\n")
    gitstore.commit_external(agent.path)  # as the runtime's next pass does
    shown = cli(home, "show", agent.name, p.id)  # says what approval would say, before it
    assert "checks when proposed: passed" in shown.output
    assert "checks now (as approval would run them): FAILED" in shown.output
    assert "broken" in shown.output.split("checks now")[1]
    bad.unlink()
    bad.parent.rmdir()
    gitstore.commit_external(agent.path)

    done = cli(home, "approve", agent.name, p.id)
    assert done.exit_code == 0, done.output
    assert agent.always == "Be brief.\n"
    assert (agent.path / "skills/greet/SKILL.md").read_text() == SKILL
    assert Agent(home, agent.name).config.heartbeat.every == "2h"
    assert "# {{name}}" not in agent.read("agent.toml") and "# arya: agent configuration" in (
        agent.read("agent.toml")
    )  # comments kept
    message = git(agent, "log", "-1", "--format=%B")
    assert f"apply {p.id}" in message and "Reason: long answers tire the owner" in message
    assert "Approved by:" in message and "Anima-Proposal: " + p.id in message
    assert git(agent, "status", "--porcelain") == ""  # committed, nothing left over
    assert only(agent).state == "approved"
    assert "proposals/" not in git(agent, "branch", "--list")


def test_a_proposal_breaking_agent_toml_fails_and_needs_force(
    home: Home, agent: Agent, fake: FakeModelServer
) -> None:
    out = propose_by_model(
        home, agent, fake, reason="beat more often", config={"heartbeat.every": 5}
    )
    p = only(agent)
    assert "checks FAILED" in out and "agent.toml does not load" in out
    assert not p.passed and "heartbeat.every must be str" in p.problems[0]
    listed = cli(home, "list", agent.name)
    assert p.id in listed.output and "FAILED" in listed.output
    toml = agent.read("agent.toml")
    refused = CliRunner().invoke(proposals_cli, ["approve", agent.name, p.id], obj=home)
    assert refused.exit_code == 1 and "fails its checks" in refused.output
    assert agent.read("agent.toml") == toml and only(agent).state == "open"
    forced = cli(home, "approve", agent.name, p.id, "--force")
    assert forced.exit_code == 0 and "every = 5" in agent.read("agent.toml")
    assert "--force" in git(agent, "log", "-1", "--format=%B")


@pytest.mark.parametrize(
    ("files", "config"),
    [
        ({"agent.toml": "owner = 'mallory'\n"}, {}),
        ({"memory/MEMORY.md": "x"}, {}),
        ({"../outside.md": "x"}, {}),
        ({"skills/../../outside.md": "x"}, {}),
        ({"skills/x/.git/config": "x"}, {}),
        ({"skills/SKILL.md": "x"}, {}),
        ({"/etc/passwd": "x"}, {}),
        ({"workspace/x.md": "x"}, {}),
        ({}, {"tools.shell.enabled": True}),
        ({}, {"owner": "mallory"}),
        ({}, {"trusted_channels": ["telegram"]}),
        ({}, {"proposals.auto_apply": ["config"]}),
        ({}, {"mcp.evil.command": "sh"}),
        ({}, {"heartbeat": {"every": "1m"}}),
    ],
)
def test_a_path_or_key_outside_the_whitelist_is_refused(
    agent: Agent, files: dict[str, str], config: dict[str, object]
) -> None:
    head = gitstore.head(agent.path)
    with pytest.raises(BadProposal, match="may not be proposed|cannot propose|not a value"):
        proposals.create(agent, "because", files=files, config=config)
    assert proposals.proposals(agent) == [] and gitstore.head(agent.path) == head


def test_the_model_gets_a_clear_error_for_a_refused_key(
    home: Home, agent: Agent, fake: FakeModelServer
) -> None:
    out = propose_by_model(
        home, agent, fake, reason="more power", config={"tools.shell.enabled": True}
    )
    assert "may not be proposed" in out and proposals.proposals(agent) == []


def test_owner_decides_from_a_channel_and_nobody_else_can(
    home: Home, agent: Agent, fake: FakeModelServer
) -> None:
    add_channel(home, "telegram", owner="42")
    make_agent(home, "bob")
    first = proposals.create(agent, "be brief", files={"always.md": "Be brief.\n"})
    second = proposals.create(agent, "be kind", files={"persona.md": "Kind.\n"})
    intruders = [
        Message.create(
            sender="telegram:666", to=agent.name, body=f"approve {first.id}", channel="telegram"
        ),
        Message.create(sender="bob", to=agent.name, body=f"approve {first.id}", channel="agent"),
        Message.create(sender=agent.name, to=agent.name, body=f"approve {first.id}"),
    ]
    for msg in intruders:
        fake.add(Reply("I cannot approve that."))
        from anima import mailbox

        mailbox.deliver(agent.path, msg)
        process_agent(home, agent.name)
    assert len(fake.requests) == 3  # each went to the model as an ordinary message
    assert {p.id: p.state for p in proposals.proposals(agent)} == {
        first.id: "open",
        second.id: "open",
    }

    send(agent, f"approve {first.id}")  # the owner, on the local cli channel
    send(agent, f"reject {second.id}", sender="telegram:42", channel="telegram", conversation="tg")
    process_agent(home, agent.name)
    assert len(fake.requests) == 3  # decided without a model call
    states = {p.id: p.state for p in proposals.proposals(agent)}
    assert states == {first.id: "approved", second.id: "rejected"}
    assert agent.always == "Be brief.\n" and agent.persona != "Kind.\n"
    said = " ".join(m.body for m in replies(agent))
    assert f"Approved proposal {first.id}" in said and f"Rejected proposal {second.id}" in said
    record = git(agent, "log", "-1", "--format=%B", f"refs/anima/proposals-rejected/{second.id}")
    assert "Rejected by: telegram:42" in record
    assert agent.inbox.is_dir() and not list(agent.inbox.glob("*.md"))  # archived
    (last,) = history.recent(agent.path, "cli", 1)  # the thread shows the decision and answer
    assert f">\napprove {first.id}\n</message>" in last[0]["content"][0]["text"]
    assert last[1]["content"][0]["text"].startswith(f"Approved proposal {first.id}")


def test_failing_turns_after_an_approved_change_revert_it(
    home: Home, agent: Agent, fake: FakeModelServer
) -> None:
    p = proposals.create(agent, "try a new model", config={"provider": "no-such-endpoint"})
    assert p.passed  # it loads; only a turn finds out
    proposals.approve(agent, p.id, by="you")
    for n in range(2):
        send(agent, f"hello {n}")
        run = process_agent(home, agent.name)
        assert run.failed
    assert agent.read("agent.toml").count('provider = "anthropic"') == 1
    message = git(agent, "log", "-1", "--format=%B")
    assert f"revert {p.id}" in message and "2 failed turns" in message
    assert only(agent).state == "reverted"
    fake.add(Reply("Back to normal."))
    run = process_agent(home, agent.name)
    assert not run.failed and "Back to normal." in [m.body.strip() for m in replies(agent)]


def test_an_approved_change_can_be_reverted_by_hand(home: Home, agent: Agent) -> None:
    p = proposals.create(agent, "be brief", files={"always.md": "Be brief.\n"})
    old = agent.always
    assert cli(home, "approve", agent.name, p.id).exit_code == 0
    out = cli(home, "revert", agent.name, p.id, "--why", "I prefer the old one")
    assert out.exit_code == 0 and agent.always == old
    assert "I prefer the old one" in git(agent, "log", "-1", "--format=%B")


def test_low_risk_proposals_are_applied_automatically_when_configured(
    home: Home, agent: Agent
) -> None:
    with open(agent.path / "agent.toml", "a") as fh:
        fh.write('\n[proposals]\nauto_apply = ["always"]\n')
    agent = Agent(home, agent.name)
    low = proposals.create(agent, "be brief", files={"always.md": "Be brief.\n"})
    high = proposals.create(agent, "new me", files={"persona.md": "New.\n"})
    process_agent(home, agent.name)
    assert {p.id: p.state for p in proposals.proposals(agent)} == {
        low.id: "approved",
        high.id: "open",
    }
    assert "auto-apply" in git(agent, "log", "-1", "--format=%B")


def test_a_symlink_never_leads_a_write_outside_the_repository(
    home: Home, agent: Agent, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    p = proposals.create(agent, "a skill", files={"skills/greet/SKILL.md": SKILL})
    (agent.path / "skills" / "greet").symlink_to(outside)  # appears just before the write
    with pytest.raises(BadProposal, match="not a plain folder"):
        proposals.approve_locked(agent, p.id, by="you")
    shutil.rmtree(agent.path / "skills")
    (agent.path / "skills").symlink_to(outside)  # committed as a hand edit by approve
    with pytest.raises(BadProposal, match="do not fit"):
        proposals.approve(agent, p.id, by="you")
    with pytest.raises(BadProposal, match="do not fit"):  # nor can a new proposal go through it
        proposals.create(agent, "again", files={"skills/greet/SKILL.md": SKILL})
    assert list(outside.iterdir()) == [] and only(agent).state == "open"


def test_an_invalid_skill_or_oversized_persona_fails_the_checks(agent: Agent) -> None:
    bad = proposals.create(agent, "skill", files={"skills/greet/SKILL.md": "no front matter"})
    assert not bad.passed and "skill greet" in bad.problems[0]
    big = proposals.create(agent, "more me", files={"persona.md": "x" * 20001})
    assert not big.passed and "persona.md is 20001 characters" in big.problems[0]


def test_a_file_changed_on_main_since_the_proposal_is_not_overwritten(
    home: Home, agent: Agent
) -> None:
    p = proposals.create(agent, "be brief", files={"always.md": "Be brief.\n"})
    (agent.path / "always.md").write_text("The owner's own words.\n")
    with pytest.raises(BadProposal, match="changed on main"):
        proposals.approve(agent, p.id, by="you")
    assert agent.always == "The owner's own words.\n"


def test_chat_lists_shows_and_approves_proposals(
    home: Home,
    agent: Agent,
    spawn: Any,  # noqa: F811 (the chat fixture, imported)
) -> None:
    p = proposals.create(agent, "be brief", files={"always.md": "Be brief.\n"})
    c = spawn()
    c.sendline("/proposals")
    until(c, f"{p.id} open")
    c.sendline(f"/proposals show {p.id}")
    until(c, "+Be brief.")
    c.sendline(f"/proposals approve {p.id}")
    until(c, f"approved {p.id}")
    c.sendline("/quit")
    assert agent.always == "Be brief.\n" and only(agent).state == "approved"


def test_the_last_recorded_turns_are_replayed_with_the_proposed_files(
    home: Home, agent: Agent, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anima import context

    fake.add(Reply("Noted."))
    send(agent, "plans for friday", conversation="plans")
    process_agent(home, agent.name)

    def fragile(turn: context.Turn) -> list[str]:  # a prompt section that cannot take a persona
        if "BOOM" in turn.agent.persona:
            raise ValueError(f"cannot render for {[m.body.strip() for m in turn.incoming]}")
        return []

    sections = [*context.SECTIONS, context.Section("fragile", "system", fragile)]
    monkeypatch.setattr(context, "SECTIONS", sections)
    fine = proposals.create(agent, "calmer", files={"persona.md": "Calm.\n"})
    broken = proposals.create(agent, "louder", files={"persona.md": "BOOM\n"})
    assert fine.passed and agent.persona != "BOOM\n"
    assert broken.problems == (
        "replaying a turn of plans fails: ValueError: cannot render for ['plans for friday']",
    )


def test_config_keys_are_set_again_on_an_agent_toml_edited_since(home: Home, agent: Agent) -> None:
    from anima.agent_model import set_model

    p = proposals.create(agent, "beat", config={"heartbeat.every": "2h", "budget.recall_hits": 3})
    set_model(agent, "offline")  # a person's edit of agent.toml meanwhile, committed
    proposals.approve(agent, p.id, by="you")
    cfg = Agent(home, agent.name).config
    assert (cfg.provider, cfg.heartbeat.every, cfg.budget.recall_hits) == ("offline", "2h", 3)


def test_a_change_undone_with_git_revert_is_not_reverted_twice(home: Home, agent: Agent) -> None:
    p = proposals.create(agent, "be brief", files={"always.md": "Be brief.\n"})
    old = agent.always
    sha = proposals.approve(agent, p.id, by="you")
    assert proposals.applied_commit(agent, p.id) == sha
    gitstore.revert(agent.path, sha)  # what `anima undo` runs
    assert agent.always == old
    head = gitstore.head(agent.path)
    assert proposals.revert(agent, p.id, why="undone by hand") == head  # no empty commit
    assert only(agent).state == "reverted"
    with pytest.raises(BadProposal, match="is reverted, not open"):
        proposals.approve(agent, p.id, by="you")


def test_nothing_outside_the_agents_repository_changes(
    home: Home, agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    make_agent(home, "bob")

    def outside() -> dict[str, bytes]:
        return {
            str(p.relative_to(tmp_path)): p.read_bytes()
            for p in tmp_path.rglob("*")
            if p.is_file() and not p.is_relative_to(agent.path) and "run" not in p.parts
        }

    before = outside()
    p = proposals.create(
        agent, "grow", files={"skills/greet/SKILL.md": SKILL}, config={"budget.recall_hits": 3}
    )
    proposals.approve(agent, p.id, by="you")
    proposals.revert(agent, p.id, why="test")
    assert outside() == before and list(scratch.iterdir()) == []  # no throwaway home left


def test_anima_undo_reverts_an_approved_change_by_its_sha(home: Home, agent: Agent) -> None:
    from anima.cli import main

    p = proposals.create(agent, "be brief", files={"always.md": "Be brief.\n"})
    old = agent.always
    sha = proposals.approve(agent, p.id, by="you")
    out = CliRunner().invoke(
        main, ["--home", str(home.root), "undo", agent.name, sha[:10], "--yes"]
    )
    assert out.exit_code == 0, out.output
    assert agent.always == old
    assert gitstore.log(agent.path, limit=1)[0].subject.startswith("Revert")


def test_a_proposal_is_named_under_its_own_heading_in_the_turn_commit(
    home: Home, agent: Agent, fake: FakeModelServer
) -> None:
    propose_by_model(home, agent, fake, reason="be brief", files={"always.md": "Be brief.\n"})
    body = git(agent, "log", "-1", "--format=%B")
    assert "\nProposals:\n- proposed " in body and "Memory:" not in body
