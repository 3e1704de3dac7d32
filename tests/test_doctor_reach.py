"""`anima doctor` on what reaches outside: invalid skills and MCP servers that cannot start."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

from anima.cli import main
from anima.home import Home
from anima.testing import FakeModelServer
from tests.conftest import make_agent

ECHO = Path(__file__).parent / "mcp_servers" / "echo_server.py"


def _doctor(home: Home) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(main, ["--home", str(home.root), "doctor", "--json"])
    return {c["name"]: c for c in json.loads(result.output)}


def test_doctor_names_invalid_skills_and_says_how_to_check(home: Home) -> None:
    agent = make_agent(home)
    bad = agent.path / "skills" / "Bad_Name"
    bad.mkdir(parents=True)
    (bad / "SKILL.md").write_text("---\nname: Bad_Name\ndescription: x\n---\nbody\n")
    checks = _doctor(home)
    assert checks["skills"]["ok"] is False
    assert "Bad_Name" in str(checks["skills"]["detail"])
    assert "anima skills check" in str(checks["skills"]["fix"])


def test_doctor_starts_each_mcp_server_and_reports_one_that_cannot(home: Home) -> None:
    make_agent(home)
    home.config_path.write_text(
        home.config_path.read_text()
        + f'\n[mcp.echo]\ncommand = "{sys.executable}"\nargs = ["{ECHO}", "stdio"]\n'
        + '\n[mcp.broken]\ncommand = "/nonexistent/mcp-server"\ntimeout = 5\n'
    )
    checks = _doctor(home)
    assert checks["mcp echo"]["ok"] is True, checks["mcp echo"]
    assert "tool" in str(checks["mcp echo"]["detail"])
    assert checks["mcp broken"]["ok"] is False
    assert "/nonexistent/mcp-server" in str(checks["mcp broken"]["detail"])


def test_doctor_without_servers_or_skills_says_nothing_of_them(home: Home) -> None:
    make_agent(home)
    checks = _doctor(home)
    assert not any(name == "skills" or name.startswith("mcp ") for name in checks)


def test_doctor_asks_each_named_endpoints_server(home: Home, fake: FakeModelServer) -> None:
    """`[providers.local]` (a llama.cpp or vLLM with no key) was not probed at all."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    home.config_path.write_text(
        home.config_path.read_text()
        + f'\n[providers.local]\nkind = "openai"\nbase_url = "{fake.url}/v1"\napi_key_env = ""\n'
        + f'\n[providers.gone]\nkind = "openai"\nbase_url = "http://127.0.0.1:{closed}/v1"\n'
        + 'api_key_env = ""\n'
    )
    checks = _doctor(home)
    assert checks["local server"]["ok"] and "accepts connections" in str(checks["local server"])
    assert not checks["gone server"]["ok"] and "[providers.gone]" in str(checks["gone server"])
