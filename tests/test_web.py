"""`anima web` over real HTTP: a live `anima web` subprocess on a tmp home with real git, turns
made by the real `anima run --once` on the fake model. What a hostile page or client may try
(no token, no CSRF token, another Origin or Host, `..` and symlinks, HTML in the data) is
refused or escaped, and nothing is written when a request is refused."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from anima import mailbox
from anima.agent import Agent
from anima.channels import access
from anima.home import Home
from anima.message import Message, render
from anima.spool import Spool
from anima.testing import FakeModelServer, Reply
from tests.conftest import AnimaProcess, make_agent, send, wait_for

pytest.importorskip("aiohttp")

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class WebServer(AnimaProcess):
    """`anima web` on a free port; `url` once it has said where it serves."""

    ready = "anima web: serving"

    def __init__(self, home: Home, *extra: str, env: dict[str, str] | None = None):
        super().__init__(home, env)
        self.args = ("web", "--port", "0", *extra)

    @property
    def url(self) -> str:
        found = re.search(r"serving (http://\S+/)", self.output())
        assert found, self.output()
        return found.group(1)

    def client(self, host: str = "127.0.0.1") -> Client:
        return Client(host, urlsplit(self.url).port or 80)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    text: str


@dataclass
class Client:
    """A browser's part of HTTP: keeps cookies, sends what it is told (no redirects followed)."""

    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        sent = dict(headers or {})
        if self.cookies:
            sent.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=sent)
        r = conn.getresponse()
        text = r.read().decode("utf-8", errors="replace")
        for value in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";")[0]
        conn.close()
        return Response(r.status, r.headers, text)

    def get(self, path: str, **headers: str) -> Response:
        return self.request("GET", path, headers=headers)

    def csrf(self, path: str = "/agents/arya/chat") -> str:
        page = self.get(path)
        assert page.status == 200, page.text
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert found, page.text
        return found.group(1)

    def post(self, path: str, form: dict[str, str], **headers: str) -> Response:
        return self.request("POST", path, form=form, headers=headers)


def run_once(home: Home) -> None:
    """Answer everything pending with the real `anima run --once`."""
    env = {**os.environ, "ANIMA_HOME": str(home.root)}
    done = subprocess.run(
        [sys.executable, "-m", "anima", "run", "--once"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def arya(home: Home) -> Agent:
    return make_agent(home)


@pytest.fixture
def web(home: Home, arya: Agent) -> WebServer:
    with WebServer(home) as server:
        yield server


def test_pages_answer_and_carry_a_strict_policy(web: WebServer) -> None:
    c = web.client()
    for path in (
        "/",
        "/timeline",
        "/charts",
        "/approvals",
        "/agents/arya/chat",
        "/agents/arya/memory",
    ):
        r = c.get(path)
        assert r.status == 200, (path, r.text)
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert 'href="#main"' in r.text  # the skip link


def test_html_in_messages_replies_and_memory_is_escaped(
    home: Home, arya: Agent, fake: FakeModelServer
) -> None:
    fake.add(Reply(f"Here you are: {HOSTILE}"))
    send(arya, f"Please echo {HOSTILE}", conversation=f"c{'x' * 3}")
    (arya.memory_dir / "MEMORY.md").write_text(f"- note {HOSTILE}\n")
    run_once(home)
    with WebServer(home) as server:
        c = server.client()
        pages = [
            c.get("/agents/arya/chat?c=cxxx").text,
            c.get("/agents/arya/memory").text,
            c.get("/timeline").text,
        ]
        sha = re.search(r"/agents/arya/commit/([0-9a-f]{40})", pages[2])
        assert sha
        pages.append(c.get(f"/agents/arya/commit/{sha.group(1)}").text)
    assert "Here you are: &lt;script&gt;alert(&quot;x&quot;)" in pages[0]
    assert "Please echo &lt;script&gt;" in pages[0]
    assert "note &lt;script&gt;" in pages[1]
    for text in pages:
        assert "<script>alert" not in text and "<img src=x" not in text


def test_token_is_required_beyond_loopback(home: Home, arya: Agent) -> None:
    with WebServer(home, "--host", "0.0.0.0", env={"ANIMA_WEB_TOKEN": "s3cret-token"}) as server:
        c = server.client()
        assert c.get("/").status == 401
        assert c.get("/agents/arya/chat").status == 401
        assert c.get("/?token=wrong").status == 401
        assert "s3cret-token" not in server.output()  # a configured token is never printed
        entered = c.get("/?token=s3cret-token")
        assert entered.status == 303 and "token" not in entered.headers["Location"]
        assert c.get("/").status == 200  # the cookie carries it from now on
        bearer = server.client().get("/", Authorization="Bearer s3cret-token")
        assert bearer.status == 200


def test_a_token_is_made_and_printed_once_when_none_is_configured(home: Home, arya: Agent) -> None:
    with WebServer(home, "--host", "0.0.0.0", "--token-env", "NO_SUCH_VAR_FOR_WEB") as server:
        wait_for(lambda: "?token=" in server.output(), 10, "the token line")  # after "serving"
        token = re.search(r"\?token=(\S+) ", server.output())
        assert token, server.output()
        assert server.client().get("/").status == 401
        assert server.client().get("/", Authorization=f"Bearer {token.group(1)}").status == 200


def test_loopback_needs_no_token(web: WebServer) -> None:
    assert web.client().get("/").status == 200
    assert "token" not in web.output()


def test_post_without_csrf_token_is_refused_and_delivers_nothing(
    web: WebServer, arya: Agent
) -> None:
    c = web.client()
    c.get("/")  # a session cookie, as a browser tab would have
    r = c.post("/agents/arya/send", {"c": "cli", "body": "forged"})
    assert r.status == 403
    wrong = c.post("/agents/arya/send", {"c": "cli", "body": "forged", "csrf": "0" * 64})
    assert wrong.status == 403
    other = web.client()  # a token from another session does not carry over
    stolen = other.post("/agents/arya/send", {"c": "cli", "body": "forged", "csrf": c.csrf()})
    assert stolen.status == 403
    assert not list(arya.inbox.glob("*.md"))


def test_cross_site_post_is_refused_even_with_a_csrf_token(web: WebServer, arya: Agent) -> None:
    c = web.client()
    token = c.csrf()
    form = {"c": "cli", "body": "hello", "csrf": token}
    assert c.post("/agents/arya/send", form, Origin="http://evil.example").status == 403
    assert c.post("/agents/arya/send", form, **{"Sec-Fetch-Site": "cross-site"}).status == 403
    assert not list(arya.inbox.glob("*.md"))
    ok = c.post("/agents/arya/send", form, Origin=web.url.rstrip("/"))
    assert ok.status == 303
    (delivered,) = arya.inbox.glob("*.md")
    msg = mailbox.read_message(delivered, "arya")
    assert (msg.body.strip(), msg.sender, msg.channel, msg.conversation) == (
        "hello",
        "you",
        "cli",
        "cli",
    )


def test_a_foreign_host_header_is_refused(web: WebServer) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 still sends Host: evil.example."""
    port = urlsplit(web.url).port
    assert web.client().get("/", Host=f"evil.example:{port}").status == 421
    assert web.client().get("/", Host=f"localhost:{port}").status == 200


def test_paths_leaving_memory_are_refused(web: WebServer, arya: Agent, home: Home) -> None:
    secret = home.root / "credentials.env"
    secret.write_text("ANTHROPIC_API_KEY=very-secret-value\n")
    (arya.memory_dir / "link.md").symlink_to(secret)
    (arya.memory_dir / "dir").symlink_to(home.root, target_is_directory=True)
    c = web.client()
    for rel in (
        "../agent.toml",
        "../../credentials.env",
        str(secret),
        "link.md",
        "dir/credentials.env",
        "people/../../agent.toml",
    ):
        r = c.get("/agents/arya/memory/note?" + urlencode({"path": rel}))
        assert r.status == 400, rel
        assert "very-secret-value" not in r.text and "provider" not in r.text
    assert c.get("/agents/arya/memory/note?path=MEMORY.md").status == 200
    assert c.get("/agents/..%2F..%2Fetc/chat").status in (400, 404)
    assert c.get("/static/..%2F..%2Fanima.toml").status == 404
    for rev in ("HEAD~1", "--output=x", "main"):
        assert c.get(f"/agents/arya/commit/{rev}").status == 400


def test_timeline_pages_filters_and_opens_the_diff(home: Home, arya: Agent) -> None:
    for i in range(30):
        send(arya, f"message {i}", conversation=f"topic{i}")
    run_once(home)
    with WebServer(home) as server:
        c = server.client()
        first = c.get("/timeline?agent=arya").text
        assert first.count("/agents/arya/commit/") == 25 and 'rel="next"' in first
        second = c.get("/timeline?agent=arya&page=1").text
        assert second.count("/agents/arya/commit/") == 5 and 'rel="prev"' in second
        only = c.get("/timeline?agent=arya&conversation=topic7").text
        assert only.count("/agents/arya/commit/") == 1 and "topic7" in only
        none = c.get("/timeline?agent=arya&since=2999-01-01").text
        assert "No turns match" in none
        assert c.get("/timeline?agent=arya&since=yesterday").status == 400
        sha = re.search(r"/agents/arya/commit/([0-9a-f]{40})", only).group(1)  # type: ignore[union-attr]
        diff = c.get(f"/agents/arya/commit/{sha}").text
        assert "Anima-Conversation: topic7" in diff and "message 7" in diff


def test_undo_needs_a_confirmed_post(home: Home, arya: Agent) -> None:
    send(arya, "remember this turn")
    run_once(home)
    from anima import audit

    turn = audit.resolve(arya, None)
    with WebServer(home) as server:
        c = server.client()
        confirm = c.get(f"/agents/arya/undo/{turn.sha}")
        assert confirm.status == 200 and "Yes, undo this turn" in confirm.text
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm.text).group(1)  # type: ignore[union-attr]
        assert c.post(f"/agents/arya/undo/{turn.sha}", {"csrf": token}).status == 400
        assert audit.turns(arya, limit=1)[0].sha == turn.sha
        done = c.post(f"/agents/arya/undo/{turn.sha}", {"csrf": token, "confirm": "yes"})
        assert done.status == 303
    from anima import gitstore

    assert gitstore.log(arya.path, limit=1)[0].subject.startswith('Revert "turn(')


def test_pairing_request_is_approved_from_the_page(web: WebServer, home: Home) -> None:
    code, _ = access.Access(home, "telegram").request("tg:42", f"Mallory {HOSTILE}")
    c = web.client()
    page = c.get("/approvals").text
    assert code in page and "Mallory &lt;script&gt;" in page and "<script>alert" not in page
    r = c.post(
        "/approvals/pairing",
        {"csrf": c.csrf(), "channel": "telegram", "code": str(code), "decision": "approve"},
    )
    assert r.status == 303
    assert access.Access(home, "telegram").allowed("tg:42")
    again = c.post(
        "/approvals/pairing",
        {"csrf": c.csrf(), "channel": "telegram", "code": str(code), "decision": "approve"},
    )
    assert again.status == 400 and "no open pairing request" in again.text


def _dead_letter(
    home: Home, body: str, reason: str = f"Bad Request: chat not found {HOSTILE}"
) -> str:
    spool = Spool(home, "telegram")
    msg = Message.create(sender="arya", to="telegram:42", body=body, channel="telegram")
    path = spool.new / f"{msg.id}.md"
    path.write_text(render(msg))
    spool.mark_failed(path, reason)
    return msg.id


def test_dead_letters_are_retried_or_dropped(web: WebServer, home: Home) -> None:
    retry, drop = _dead_letter(home, "first"), _dead_letter(home, "second")
    c = web.client()
    page = c.get("/approvals").text
    assert retry in page and drop in page and "chat not found &lt;script&gt;" in page
    assert (
        c.post(
            "/approvals/dead-letter",
            {"csrf": c.csrf(), "channel": "telegram", "id": retry, "action": "retry"},
        ).status
        == 303
    )
    assert (
        c.post(
            "/approvals/dead-letter",
            {"csrf": c.csrf(), "channel": "telegram", "id": drop, "action": "drop"},
        ).status
        == 303
    )
    spool = Spool(home, "telegram")
    assert (spool.new / f"{retry}.md").exists() and not (
        spool.failed / f"{retry}.error.md"
    ).exists()
    assert (spool.root / "dropped" / f"{drop}.md").exists()
    assert not list(spool.failed.glob("*.md"))
    bad = c.post(
        "/approvals/dead-letter", {"csrf": c.csrf(), "channel": "..", "id": "x", "action": "drop"}
    )
    assert bad.status == 400


def test_a_dead_letter_outside_a_spool_is_refused(home: Home) -> None:
    """The spool's retry/drop take names from a form: nothing outside failed/ moves, no
    directory is made for a channel that has no spool."""
    from anima import spool
    from anima.errors import BadName

    kept = _dead_letter(home, "kept")
    outside = home.root / "secret.md"
    outside.write_text("not a dead letter")
    Spool(home, "telegram")
    (home.spool_dir / "telegram" / "failed" / "link.md").symlink_to(outside)
    for channel, msg_id in (
        ("..", kept),
        ("nochannel", kept),
        ("telegram", "link"),
        ("telegram", "../x"),
    ):
        for act in (spool.retry, spool.drop):
            with pytest.raises(BadName):
                act(home, channel, msg_id)
    assert (
        not (home.spool_dir / "nochannel").exists() and outside.read_text() == "not a dead letter"
    )
    assert spool.retry(home, "telegram", kept) == Spool(home, "telegram").new / f"{kept}.md"
    with pytest.raises(BadName):  # retried already: no longer a dead letter
        spool.drop(home, "telegram", kept)


def _proposal_ids(text: str) -> set[str]:
    return set(re.findall(r"/agents/arya/proposals/([0-9a-f]{6})", text))


@pytest.fixture
def settled(arya: Agent) -> Agent:
    """arya with the test's agent.toml edits committed, as the first turn would (an approval
    commits hand edits first: HEAD then moves only for the proposal)."""
    from anima import gitstore

    gitstore.commit_external(arya.path)
    return arya


def _decide(c: Client, pid: str, **form: str) -> Response:
    return c.post(f"/agents/arya/proposals/{pid}", {"csrf": c.csrf(), **form})


def test_an_open_proposal_is_shown_and_approved_with_a_csrf_post(
    web: WebServer, settled: Agent
) -> None:
    from anima import gitstore, proposals

    p = proposals.create(
        settled,
        f"be brief {HOSTILE}",
        files={"always.md": f"Be brief.\n{HOSTILE}\n\x1b[2Jcleared\u202eevil\n"},
    )
    c = web.client()
    listed = c.get("/approvals").text
    section = listed.split('id="proposals"')[1].split('id="pairing"')[0]
    assert _proposal_ids(section) == {p.id}
    assert "be brief &lt;script&gt;" in section and "always.md" in section and "passed" in section
    assert _proposal_ids(c.get("/agents/arya/proposals").text) == {p.id}
    assert "1 open proposal to decide" in c.get("/agents/arya/chat").text
    page = c.get(f"/agents/arya/proposals/{p.id}").text
    assert "+&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "\\x1b[2Jcleared" in page and "\x1b" not in page  # control characters made visible
    assert "\\u{202e}evil" in page and "\u202e" not in page
    for text in (listed, page):
        assert "<script>alert" not in text and "<img src=x" not in text
    head = gitstore.head(settled.path)
    c.get("/")
    forged = c.post(f"/agents/arya/proposals/{p.id}", {"decision": "approve"})
    assert forged.status == 403
    assert gitstore.head(settled.path) == head and proposals.get(settled, p.id).state == "open"
    done = _decide(c, p.id, decision="approve", back="approvals")
    assert done.status == 303 and done.headers["Location"] == "/approvals#proposals"
    top = gitstore.log(settled.path, limit=1)[0]
    assert top.subject.startswith(f"proposal(arya): apply {p.id}")
    assert top.trailers["Anima-Approved-By"].endswith("(anima web)")
    assert settled.read("always.md").startswith("Be brief.")
    assert proposals.get(settled, p.id).state == "approved"
    assert not _proposal_ids(c.get("/approvals").text.split('id="pairing"')[0])
    assert "open proposal" not in c.get("/agents/arya/chat").text
    shown = c.get(f"/agents/arya/proposals/{p.id}").text
    assert f"/agents/arya/commit/{top.sha}" in shown and "Approve " not in shown
    again = _decide(c, p.id, decision="approve")
    assert again.status == 409 and "Proposal not decided" in again.text
    assert f"proposal {p.id} is approved, not open" in again.text
    assert f'href="/agents/arya/proposals/{p.id}"' in again.text


def test_a_rejected_proposal_loses_its_branch(web: WebServer, settled: Agent) -> None:
    from anima import gitstore, proposals

    p = proposals.create(settled, "be kind", files={"persona.md": "Kind.\n"})
    branch = f"refs/heads/proposals/{p.id}"
    assert gitstore._git(settled.path, "for-each-ref", branch).strip()
    head = gitstore.head(settled.path)
    r = _decide(web.client(), p.id, decision="reject", why=f"not now {HOSTILE}")
    assert r.status == 303 and r.headers["Location"] == f"/agents/arya/proposals/{p.id}"
    assert not gitstore._git(settled.path, "for-each-ref", branch).strip()
    assert gitstore.head(settled.path) == head
    assert proposals.get(settled, p.id).state == "rejected"
    record = gitstore._git(
        settled.path, "log", "-1", "--format=%B", f"refs/anima/proposals-rejected/{p.id}"
    )
    assert "(anima web)" in record and f"Why: not now {HOSTILE}" in record
    page = web.client().get("/agents/arya/proposals").text
    assert "rejected" in page and "<script>alert" not in page


def test_a_failing_proposal_needs_the_force_box(web: WebServer, settled: Agent) -> None:
    from anima import gitstore, proposals

    p = proposals.create(settled, "beat more often", config={"heartbeat.every": 5})
    assert not p.passed
    c = web.client()
    page = c.get(f"/agents/arya/proposals/{p.id}").text
    assert "failed" in page and "heartbeat.every must be str" in page and 'name="force"' in page
    head = gitstore.head(settled.path)
    refused = _decide(c, p.id, decision="approve")
    assert refused.status == 409 and "fails its checks" in refused.text
    assert gitstore.head(settled.path) == head and proposals.get(settled, p.id).state == "open"
    assert _decide(c, p.id, decision="approve", force="yes").status == 303
    top = gitstore.log(settled.path, limit=1)[0]
    assert top.subject.startswith(f"proposal(arya): apply {p.id}") and "--force" in top.body


def test_an_unknown_proposal_or_decision_is_refused(web: WebServer, settled: Agent) -> None:
    from anima import proposals

    p = proposals.create(settled, "be brief", files={"always.md": "Be brief.\n"})
    c = web.client()
    for pid in ("abcdef", "zz<b>", "HEAD"):
        r = c.get(f"/agents/arya/proposals/{pid}")
        assert r.status == 409 and "has no proposal" in r.text and "<b>" not in r.text
    assert _decide(c, p.id, decision="merge").status == 400
    assert proposals.get(settled, p.id).state == "open"


def test_the_overview_says_when_the_next_reflection_comes(home: Home, arya: Agent) -> None:
    with (arya.path / "agent.toml").open("a") as fh:
        fh.write('\n[reflection]\nat = "03:30"\n')
    with WebServer(home) as server:
        page = server.client().get("/").text
    assert "Next reflection" in page
    row = re.search(r'<th scope="row"><a href="/agents/arya/chat">arya</a></th>(.*?)</tr>', page)
    assert row and re.search(r"<td>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}</td>", row.group(1))


def test_charts_are_svg_drawn_by_the_server(home: Home, arya: Agent) -> None:
    for i in range(3):
        send(arya, f"hello {i}", conversation=f"t{i}")
    run_once(home)
    make_agent(home, "bran")
    with WebServer(home) as server:
        page = server.client().get("/agents/arya/stats").text
        agents = server.client().get("/charts").text
    assert page.count("<svg") == 3
    assert re.search(r"<title>\d{4}-\d{2}-\d{2}: 3 turns</title>", page)
    assert "<title>arya: 3 turns</title>" in agents and "<title>bran: 0 turns</title>" in agents


def test_the_overview_event_stream_sends_the_agents(web: WebServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(web.url).port, timeout=10)
    conn.request("GET", "/events/overview")
    r = conn.getresponse()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    first = b""
    while b"\n\n" not in first:
        first += r.read1(4096)
    conn.close()
    assert first.startswith(b"event: overview\n") and b"arya" in first


def test_unknown_agent_is_a_clear_404(web: WebServer) -> None:
    r = web.client().get("/agents/nobody/chat")
    assert r.status == 404 and "nobody" in r.text


def test_sending_from_the_page_is_answered_by_the_runtime(
    web: WebServer, arya: Agent, home: Home
) -> None:
    c = web.client()
    r = c.post(
        "/agents/arya/send",
        {"csrf": c.csrf("/agents/arya/chat"), "c": "plans", "body": "What is on for Friday?"},
    )
    assert r.status == 303 and r.headers["Location"] == "/agents/arya/chat?c=plans"
    assert "waiting for a reply" in c.get("/agents/arya/chat?c=plans").text
    run_once(home)
    page = c.get("/agents/arya/chat?c=plans").text
    assert "What is on for Friday?" in page and "waiting for a reply" not in page


def test_static_assets_are_only_the_listed_files(web: WebServer) -> None:
    c = web.client()
    assert c.get("/static/app.js").status == 200
    assert c.get("/static/pages.py").status == 404


def test_html_module_escapes_attributes() -> None:
    from anima.web.html import render as render_html

    assert render_html('<a title="{}">', '"><script>') == '<a title="&quot;&gt;&lt;script&gt;">'


def test_confined_refuses_what_the_page_never_links(tmp_path: Path) -> None:
    from anima.errors import BadName
    from anima.web.queries import confined

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.md").write_text("x")
    assert confined(tmp_path / "m", "a.md") == tmp_path / "m" / "a.md"
    for rel in ("", ".", "/etc/passwd", "../m/a.md", "b.md", "a.md/.."):
        with pytest.raises(BadName):
            confined(tmp_path / "m", rel)


def test_a_note_shows_the_commits_that_changed_it_and_why(
    home: Home, arya: Agent, fake: FakeModelServer
) -> None:
    edit = {
        "command": "insert",
        "path": "MEMORY.md",
        "insert_text": "- tea without sugar",
        "reason": f"asked to remember {HOSTILE}",
    }
    fake.add(Reply("", tool_calls=[{"name": "memory", "input": edit}]), Reply("noted"))
    send(arya, "Remember that I take my tea without sugar.")
    run_once(home)
    with WebServer(home) as server:
        page = server.client().get("/agents/arya/memory/note?path=MEMORY.md").text
    assert "- tea without sugar" in page
    history = page.split("<h2>History</h2>")[1]
    assert history.count("/agents/arya/commit/") == 1
    assert "memory/MEMORY.md: asked to remember &lt;script&gt;" in history
    assert "<script>alert" not in page


def test_memory_search_uses_the_index_and_links_each_hit(web: WebServer, arya: Agent) -> None:
    (arya.memory_dir / "garden.md").write_text(
        f"---\ndescription: the garden {HOSTILE}\n---\nTomatoes go in after the last frost.\n"
    )
    page = web.client().get("/agents/arya/memory?" + urlencode({"q": "tomatoes frost"})).text
    results = page.split("Results for")[1]
    assert 'href="/agents/arya/memory/note?path=garden.md"' in results
    assert "[Tomatoes]" in results  # the index's own match marks
    assert "the garden &lt;script&gt;" in page and "<script>alert" not in page


def test_a_port_in_use_is_one_clear_line(web: WebServer, home: Home) -> None:
    port = str(urlsplit(web.url).port)
    env = {**os.environ, "ANIMA_HOME": str(home.root)}
    done = subprocess.run(
        [sys.executable, "-m", "anima", "web", "--port", port],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr


def test_the_overview_says_which_agent_is_replying_now(
    web: WebServer, home: Home, arya: Agent
) -> None:
    from anima.llm import TextDelta
    from anima.stream import StreamWriter
    from anima.turn import TurnEnded

    def now_cell() -> str:
        row = re.search(
            r'<th scope="row"><a href="/agents/arya/chat">arya</a></th><td>([^<]*)</td>',
            web.client().get("/").text,
        )
        assert row
        return row.group(1)

    assert now_cell() == "idle"
    msg = send(arya, "hi")
    writer = StreamWriter(home)  # what the runtime appends to while the model streams
    writer(msg, TextDelta("hel"))
    assert now_cell() == "replying…"
    writer(msg, TurnEnded(commit="0" * 40, reply=None))
    assert now_cell() == "idle"


def test_a_message_sent_from_the_page_is_from_the_agents_owner(home: Home, arya: Agent) -> None:
    # The page is the owner's: an owner named otherwise than "you" must still be the sender
    # (their "approve ID" decides a proposal only when it comes from the owner).
    text = (arya.path / "agent.toml").read_text().replace('owner = "you"', 'owner = "sam"')
    (arya.path / "agent.toml").write_text(text)
    with WebServer(home) as web:
        c = web.client()
        r = c.post(
            "/agents/arya/send", {"csrf": c.csrf("/agents/arya/chat"), "c": "cli", "body": "hi"}
        )
        assert r.status == 303
    (msg,) = [mailbox.read_message(p, "arya") for p in arya.inbox.glob("*.md")]
    assert msg.sender == "sam"
