"""MCP tools end to end: real servers written with the `mcp` SDK, over stdio and streamable HTTP
on 127.0.0.1, called by turns driven through the fake model server."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import git
import pytest
from click.testing import CliRunner

from anima import history
from anima.agent import Agent
from anima.errors import BadConfig, ToolError
from anima.home import Home
from anima.mcp_client import McpHub, doctor_checks, tool_name
from anima.testing import FakeModelServer, Reply
from anima.tools import ToolContext
from anima.toolset import BuiltinTools
from anima.turn import AgentRun, process_agent
from tests.conftest import make_agent, send, wait_for

SERVERS = Path(__file__).parent / "mcp_servers"
ECHO = SERVERS / "echo_server.py"

pytestmark = pytest.mark.timeout(60)


def toml_value(v: object) -> str:
    return json.dumps(v) if not isinstance(v, bool) else str(v).lower()


def add_server(path: Path, name: str, **values: object) -> None:
    """Append an [mcp.NAME] table to anima.toml or agent.toml, as a person would."""
    lines = [f"\n[mcp.{name}]"]
    for key, value in values.items():
        if isinstance(value, dict):
            inline = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inline} }}")
        else:
            lines.append(f"{key} = {toml_value(value)}")
    with path.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


def stdio(**extra: object) -> dict[str, object]:
    return {"command": sys.executable, "args": [str(ECHO), "stdio"], **extra}


@pytest.fixture
def http_url() -> Iterator[str]:
    """The echo server over streamable HTTP on a free 127.0.0.1 port."""
    proc = subprocess.Popen([sys.executable, str(ECHO), "http"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("port "), line
    yield f"http://127.0.0.1:{line.split()[1]}/mcp"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def agent(home: Home) -> Agent:
    return make_agent(home)


@pytest.fixture
def hub(home: Home) -> Iterator[McpHub]:
    with McpHub(home) as h:
        yield h


def turn(home: Home, agent: Agent, hub: McpHub, *replies: Reply, fake: FakeModelServer) -> AgentRun:
    fake.add(*replies)
    send(agent, "use your tools")
    return process_agent(home, agent.name, sources=[BuiltinTools(), hub])


def call(name: str, **args: object) -> Reply:
    return Reply("", tool_calls=[{"name": name, "input": args}])


def tool_results(agent: Agent) -> list[dict[str, Any]]:
    lines = [
        json.loads(x)
        for day in history.day_files(agent.path, "cli")
        for x in day.read_text().splitlines()
    ]
    return [b for m in lines for b in m["content"] if b["type"] == "tool_result"]


def head_message(agent: Agent) -> str:
    return str(git.Repo(agent.path).head.commit.message)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_mcp_tool_call_lands_in_the_turn_commit(
    home: Home, agent: Agent, hub: McpHub, fake: FakeModelServer, transport: str, request: Any
) -> None:
    table = stdio() if transport == "stdio" else {"url": request.getfixturevalue("http_url")}
    add_server(home.config_path, "srv", **table)
    run = turn(
        home, agent, hub, call("srv__echo", text="hello over mcp"), Reply("Echoed."), fake=fake
    )
    (result,) = run.results
    assert result.error is None and result.tool_calls == 1
    message = head_message(agent)
    assert "Tools: srv__echo" in message
    assert "Anima-Tool-Calls: 1" in message
    (res,) = tool_results(agent)
    assert res["content"] == "hello over mcp" and res["is_error"] is False
    offered = {t["name"]: t for t in fake.requests[0].body["tools"]}
    assert offered["srv__echo"]["input_schema"]["required"] == ["text"]
    assert "read_file" in offered  # the built-ins are still there


def test_hung_server_costs_the_turn_its_timeout_then_recovers(
    home: Home, agent: Agent, hub: McpHub, fake: FakeModelServer
) -> None:
    add_server(home.config_path, "srv", **stdio(timeout=1.0))
    wait_for(lambda: hub.tools(agent), what="the server to start (slower than its timeout here)")
    run = turn(home, agent, hub, call("srv__hang"), Reply("It hung."), fake=fake)
    (result,) = run.results
    assert result.error is None and result.commit
    (res,) = tool_results(agent)
    assert res["is_error"] is True
    assert "did not answer hang within 1s" in res["content"]
    assert "Tools: srv__hang" in head_message(agent)

    wait_for(lambda: hub.status()[0].state == "running", what="the server's restart")
    run = turn(home, agent, hub, call("srv__echo", text="back"), Reply("Fine."), fake=fake)
    assert run.results[0].error is None
    assert tool_results(agent)[-1] == {**tool_results(agent)[-1], "content": "back"}


def test_server_exiting_mid_call_is_an_error_and_the_next_call_restarts_it(
    home: Home, agent: Agent, hub: McpHub, fake: FakeModelServer
) -> None:
    add_server(home.config_path, "srv", **stdio())
    run = turn(
        home,
        agent,
        hub,
        call("srv__exit_now"),
        call("srv__echo", text="alive again"),
        Reply("Recovered."),
        fake=fake,
    )
    assert run.results[0].error is None and run.results[0].tool_calls == 2
    died, again = tool_results(agent)
    assert died["is_error"] is True and "went away during exit_now" in died["content"]
    assert again == {**again, "content": "alive again", "is_error": False}


def test_http_server_exiting_mid_call_is_an_error_result(
    home: Home, agent: Agent, hub: McpHub, fake: FakeModelServer, http_url: str
) -> None:
    add_server(home.config_path, "web", url=http_url)
    run = turn(home, agent, hub, call("web__exit_now"), Reply("It died."), fake=fake)
    assert run.results[0].error is None and run.results[0].commit
    (died,) = tool_results(agent)
    assert died["is_error"] is True and "went away during exit_now" in died["content"]


def test_shutdown_stops_a_waiting_call(home: Home, agent: Agent, hub: McpHub) -> None:
    add_server(home.config_path, "srv", **stdio())
    hang = {t.name: t for t in hub.tools(agent)}["srv__hang"]
    ctx = ToolContext(agent.name, agent.path, agent.config, [], [], "cli", cancel=threading.Event())
    threading.Timer(0.2, ctx.cancel.set).start()  # type: ignore[union-attr]
    with pytest.raises(ToolError, match="shutting down"):
        hang.run(ctx, {})
    assert hang.run(ctx, {"seconds": 0}) == "woke up"  # the session is still good


def test_hung_server_does_not_block_another_server(home: Home, agent: Agent, hub: McpHub) -> None:
    add_server(home.config_path, "slow", **stdio(timeout=30.0))
    add_server(home.config_path, "fast", **stdio())
    tools = {t.name: t for t in hub.tools(agent)}
    hung: list[BaseException] = []

    def hang() -> None:
        try:
            tools["slow__hang"].run(None, {"seconds": 20})  # type: ignore[arg-type]
        except BaseException as exc:
            hung.append(exc)

    blocked = threading.Thread(target=hang, daemon=True)
    blocked.start()
    assert tools["fast__echo"].run(None, {"text": "not blocked"}) == "not blocked"  # type: ignore[arg-type]
    assert blocked.is_alive() and not hung


def test_allow_offers_only_the_listed_tools(home: Home, agent: Agent, hub: McpHub) -> None:
    add_server(home.config_path, "srv", **stdio(allow=["echo", "add"]))
    assert sorted(t.name for t in hub.tools(agent)) == ["srv__add", "srv__echo"]


def test_agent_table_replaces_or_turns_off_the_global_one(
    home: Home, agent: Agent, hub: McpHub
) -> None:
    add_server(home.config_path, "srv", **stdio())
    add_server(agent.path / "agent.toml", "srv", **stdio(allow=["add"]))
    assert [t.name for t in hub.tools(Agent(home, agent.name))] == ["srv__add"]
    add_server(home.config_path, "other", **stdio())
    off = make_agent(home, "bran")
    add_server(off.path / "agent.toml", "other", command="unused", enabled=False)
    names = {t.name for t in hub.tools(Agent(home, "bran"))}
    assert "srv__echo" in names and not any(n.startswith("other__") for n in names)


def test_an_agent_table_is_a_session_of_its_own(home: Home, agent: Agent, hub: McpHub) -> None:
    bran = make_agent(home, "bran")
    for a in (agent, bran):
        add_server(a.path / "agent.toml", "srv", **stdio(allow=["session_id"]))
    sids = {
        int(t.run(None, {}))  # type: ignore[arg-type]
        for a in ("arya", "bran")
        for t in hub.tools(Agent(home, a))
    }
    assert len(sids) == 2, "two agents' own servers must not share one process"
    assert sorted(r.agents for r in hub.status()) == [["arya"], ["bran"]]
    assert (home.run_dir / "mcp" / "bran.srv.log").exists()


def test_an_edited_table_stops_the_old_server(home: Home, agent: Agent, hub: McpHub) -> None:
    add_server(home.config_path, "srv", **stdio())
    old = {t.name: t for t in hub.tools(agent)}["srv__session_id"]
    pid = int(old.run(None, {}))  # type: ignore[arg-type]  # a session leader: sid == pid
    home.config_path.write_text(home.config_path.read_text() + 'allow = ["session_id"]\n')
    (new,) = hub.tools(Agent(home, agent.name))
    assert int(new.run(None, {})) != pid  # type: ignore[arg-type]

    def gone() -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().split()[2] == "Z"

    wait_for(gone, what="the old server to stop")
    assert [r.tools for r in hub.status()] == [["srv__session_id"]]


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"command": "x", "url": "http://127.0.0.1:1/mcp"}, "not both"),
        ({"args": ["x"]}, "not neither"),
        ({"url": "ftp://example.org"}, "must start with http"),
        ({"command": "x", "timeout": 0}, "timeout must be more than 0"),
    ],
)
def test_bad_server_table_is_a_clear_bad_config(
    home: Home,
    agent: Agent,
    hub: McpHub,
    fake: FakeModelServer,
    table: dict[str, object],
    says: str,
) -> None:
    add_server(agent.path / "agent.toml", "srv", **table)
    with pytest.raises(BadConfig, match=says):
        hub.tools(Agent(home, agent.name))
    run = turn(home, agent, hub, Reply("never asked"), fake=fake)
    assert says in (run.results[0].error or "")
    assert list(agent.inbox.glob("*.md")), "the message stays pending"
    assert not fake.requests


def test_server_that_cannot_start_loses_its_tools_not_the_turn(
    home: Home, agent: Agent, hub: McpHub, fake: FakeModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    add_server(home.config_path, "gone", command="/nonexistent/mcp-server")
    add_server(home.config_path, "dead", url="http://127.0.0.1:9/mcp", timeout=5.0)
    add_server(home.config_path, "srv", **stdio())
    with caplog.at_level(logging.WARNING, logger="anima.mcp_client"):
        names = {t.name for t in hub.tools(agent)}
        run = turn(home, agent, hub, Reply("Fine without them."), fake=fake)
    assert "srv__echo" in names and not any(n.startswith(("gone", "dead")) for n in names)
    assert run.results[0].error is None and run.results[0].commit
    status = {s.name: s for s in hub.status()}
    assert status["gone"].state == "failed"
    assert "command not found: /nonexistent/mcp-server" in status["gone"].error
    assert status["dead"].state == "failed" and "could not start" in status["dead"].error
    assert status["srv"].state == "running"
    gone_lines = [r for r in caplog.records if "/nonexistent" in r.getMessage()]
    assert len(gone_lines) == 1, "logged once, not every turn"


def test_server_that_never_answers_its_start_costs_a_turn_at_most_its_timeout(
    home: Home, agent: Agent
) -> None:
    sleeper = ["-c", "import time; time.sleep(60)"]
    add_server(home.config_path, "mute", command=sys.executable, args=sleeper, timeout=0.5)
    with McpHub(home, start_timeout=1.5) as hub:
        assert hub.tools(agent) == []  # waited its timeout; the start goes on
        wait_for(lambda: hub.status()[0].state == "failed", what="the start to fail")
        (row,) = hub.status()
        assert row.error == "could not start: did not answer within 1.5s"
        assert hub.tools(agent) == []  # backing off: no second start, no wait
        assert hub.status()[0].state == "failed"


def test_close_stops_a_server_still_starting(home: Home, agent: Agent, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    add_server(home.config_path, "mute", command=sys.executable, args=["-c", code], timeout=0.5)
    hub = McpHub(home)
    assert hub.tools(agent) == []
    pid = int(str(wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="the pid")))
    hub.close()
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z", "the server outlived close()"


def test_results_errors_content_and_names_as_the_model_sees_them(
    home: Home, agent: Agent, hub: McpHub
) -> None:
    add_server(home.config_path, "srv", **stdio())
    tools = {t.name: t for t in hub.tools(agent)}
    assert tool_name("srv", "bad name!") == "srv__bad_name_" and "srv__bad_name_" in tools
    assert tools["srv__bad_name_"].run(None, {}) == "renamed ok"  # type: ignore[arg-type]
    picture = tools["srv__picture"].run(None, {})  # type: ignore[arg-type]
    assert picture.startswith("[image: image/png, ") and "not shown" in picture
    with pytest.raises(ToolError, match="nope"):
        tools["srv__fail"].run(None, {"why": "nope"})  # type: ignore[arg-type]
    with pytest.raises(ToolError, match="JSON object"):
        tools["srv__echo"].run(None, ["text"])  # type: ignore[arg-type]
    with pytest.raises(ToolError, match="valid string"):  # the server validates the rest
        tools["srv__echo"].run(None, {"text": 3})  # type: ignore[arg-type]
    long = tool_name("s", "x" * 100)
    assert len(long) == 64 and long != tool_name("s", "x" * 99)


def test_a_stray_line_on_stdout_does_not_cost_the_session(
    home: Home, agent: Agent, hub: McpHub
) -> None:
    noisy = f"echo 'starting up, not JSON'; exec {sys.executable} {ECHO} stdio"
    add_server(home.config_path, "srv", command="/bin/sh", args=["-c", noisy])
    tools = {t.name: t for t in hub.tools(agent)}
    sid = tools["srv__session_id"].run(None, {})  # type: ignore[arg-type]
    assert tools["srv__session_id"].run(None, {}) == sid  # type: ignore[arg-type]
    assert hub.status()[0].state == "running"


def test_tool_list_changed_is_seen_by_the_next_listing(
    home: Home, agent: Agent, hub: McpHub
) -> None:
    add_server(home.config_path, "srv", **stdio())
    tools = {t.name: t for t in hub.tools(agent)}
    assert "srv__extra" not in tools
    tools["srv__grow"].run(None, {})  # type: ignore[arg-type]
    tools = {t.name: t for t in hub.tools(agent)}
    assert tools["srv__extra"].run(None, {}) == "extra here"  # type: ignore[arg-type]


def test_stdio_server_gets_a_minimal_environment_its_own_session_and_a_log(
    home: Home, agent: Agent, hub: McpHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "tok-3f9a8b7c6d5e4f"
    monkeypatch.setenv("MCP_TEST_PASS", token)
    monkeypatch.setenv("MCP_TEST_OTHER", "not for servers")
    add_server(home.config_path, "srv", **stdio(env={"PLAIN": "yes"}, pass_env=["MCP_TEST_PASS"]))
    tools = {t.name: t for t in hub.tools(agent)}

    def env(name: str) -> str:
        return str(tools["srv__env"].run(None, {"name": name}))  # type: ignore[arg-type]

    assert env("PLAIN") == "yes"
    assert env("MCP_TEST_OTHER") == "<unset>"
    assert env("MCP_TEST_PASS") == "[redacted: MCP_TEST_PASS]"  # it arrived, and is not shown
    assert env("PATH") == os.environ["PATH"]
    with pytest.raises(ToolError, match=r"\[redacted: MCP_TEST_PASS\]") as raised:
        tools["srv__fail"].run(None, {"why": f"bad token {token}"})  # type: ignore[arg-type]
    assert token not in str(raised.value)
    sid = int(tools["srv__session_id"].run(None, {}))  # type: ignore[arg-type]
    assert sid != os.getsid(0), "a Ctrl-C to the runtime's terminal must not reach the server"
    hub.close()
    log = home.run_dir / "mcp" / "srv.log"
    assert "echo server starting (stdio)" in log.read_text()
    assert "[redacted: MCP_TEST_PASS]" in log.read_text()  # the server logged the bad token
    for path in home.root.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path
    assert not Path(f"/proc/{sid}").exists() or "Z" in Path(f"/proc/{sid}/stat").read_text()


def test_http_headers_come_from_the_environment(
    home: Home, agent: Agent, hub: McpHub, http_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_server(home.config_path, "web", url=http_url, headers_env={"X-Token": "MCP_WEB_TOKEN"})
    assert hub.tools(agent) == []
    (row,) = hub.status()
    assert "MCP_WEB_TOKEN" in row.error
    monkeypatch.setenv("MCP_WEB_TOKEN", "header-secret-value")
    hub2 = McpHub(home)
    try:
        assert "web__echo" in {t.name for t in hub2.tools(agent)}
    finally:
        hub2.close()


def test_no_servers_means_no_sdk_import(home: Home) -> None:
    code = (
        "import sys; from anima.home import Home; from anima.agent import Agent;"
        "from anima.mcp_client import McpHub; import anima.turn, anima.cli.mcp_cmds;"
        f"h = McpHub(Home.locate({str(home.root)!r})); assert h.tools(Agent(h.home, 'arya')) == [];"
        "h.close(); assert 'mcp' not in sys.modules, 'mcp imported'"
    )
    make_agent(home)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_mcp_list_connects_and_shows_servers(home: Home, agent: Agent) -> None:
    from anima.cli.mcp_cmds import mcp

    add_server(home.config_path, "srv", **stdio(allow=["echo"]))
    add_server(home.config_path, "gone", command="/nonexistent/mcp-server")
    runner = CliRunner()
    out = runner.invoke(mcp, ["list", "--json"], obj=home)
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["srv"]["state"] == "running" and rows["srv"]["tools"] == ["srv__echo"]
    assert rows["srv"]["agents"] == ["arya"] and rows["srv"]["transport"] == "stdio"
    assert rows["gone"]["state"] == "failed" and "command not found" in rows["gone"]["error"]

    out = runner.invoke(mcp, ["list", "srv"], obj=home)
    assert out.exit_code == 0 and "srv__echo" in out.output and "gone" not in out.output
    out = runner.invoke(mcp, ["list", "nosuch"], obj=home)
    assert out.exit_code == 1 and "no MCP server named nosuch" in out.output


def test_doctor_checks_each_server(home: Home, agent: Agent) -> None:
    add_server(home.config_path, "srv", **stdio())
    add_server(home.config_path, "gone", command="/nonexistent/mcp-server")
    checks = {c.name: c for c in doctor_checks(home)}
    assert checks["mcp srv"].ok and "tool(s)" in checks["mcp srv"].detail
    assert not checks["mcp gone"].ok and "command not found" in checks["mcp gone"].detail
