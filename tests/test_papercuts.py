"""What a new user trips over (issue 12), each through the CLI as a person would use it."""

from __future__ import annotations

from click.testing import CliRunner

from anima.cli import main
from anima.home import Home
from anima.testing import FakeModelServer, Fault, Reply
from tests.conftest import LiveRuntime, make_agent, send, wait_for


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return r.exit_code, r.output


def test_run_once_shows_each_retry_with_reason_and_wait(home: Home, fake: FakeModelServer) -> None:
    send(make_agent(home), "hello")
    fake.add(Reply(fault=Fault(status=503, message="overloaded")), Reply("hi there"))
    code, out = invoke("run", "--once")
    assert code == 0 and "hi there" in out
    assert "arya:" in out and "overloaded" in out and "retry 1 in 0.0 s" in out


def test_run_logs_retries_and_keeps_http_requests_for_verbose(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    fake.add(Reply(fault=Fault(status=503, message="overloaded")), Reply("one"), Reply("two"))
    with LiveRuntime(home) as rt:
        send(agent, "hello")
        wait_for(lambda: len(list(agent.outbox.rglob("*.md"))) == 1, what="the reply")
        rt.stop()
    out = rt.output()
    (retry,) = [line for line in out.splitlines() if "retry 1 of 2 in" in line]
    assert "overloaded" in retry and retry.endswith(" s")
    assert "HTTP Request" not in out, out

    class Verbose(LiveRuntime):
        args = ("run", "-v")

    with Verbose(home) as rt:
        send(agent, "again")
        wait_for(lambda: len(list(agent.outbox.rglob("*.md"))) == 2, what="the reply")
        rt.stop()
    assert "HTTP Request" in rt.output()
