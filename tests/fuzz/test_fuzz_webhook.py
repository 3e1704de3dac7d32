"""Fuzzing the webhook over real sockets: whatever a stranger sends (methods, paths, headers,
bodies, credentials, or bytes that are not HTTP at all), the adapter answers without a 5xx,
stays up, and nothing unauthenticated reaches an inbox."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anima.home import Home
from tests.conftest import ChannelProcess
from tests.fuzz import examples
from tests.test_channels_webhook import PATH, TOKEN, inbox, port_of, shared_webhook, signed

FUZZ = settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
ID = "20260101T000000000Z-abcdef"


@dataclass
class Hook:
    home: Home
    process: ChannelProcess
    port: int
    accepted: int = 0
    """Authenticated requests answered 202: each must have left exactly one inbox file."""

    def exchange(self, raw: bytes) -> list[int]:
        """Send `raw` on a fresh connection; the statuses of every answer until the server
        closes it (every bound on slow requests is well under the 5 s read timeout)."""
        got = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            try:
                sock.sendall(raw)
                while chunk := sock.recv(65536):
                    got += chunk
            except (ConnectionResetError, BrokenPipeError):  # closed on a bad request: fine
                pass
        statuses = [int(s) for s in STATUS.findall(got)]
        assert self.process.proc is not None and self.process.proc.poll() is None, (
            self.process.output()
        )
        assert all(s < 500 for s in statuses), (raw[:300], got[:300])
        return statuses


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hook]:
    timeouts = {"header_timeout": 1.0, "body_timeout": 0.5, "keepalive_timeout": 0.5}
    with shared_webhook(tmp_path_factory, max_body=128 * 1024, **timeouts) as (home, process, url):
        hook = Hook(home, process, port_of(url))
        yield hook
        assert process.stop() == 0
    out = process.output()
    assert "Traceback" not in out and "Error handling request" not in out, out
    assert len(inbox(home)) == hook.accepted


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
message_fields = st.fixed_dictionaries(
    {},
    optional={
        "text": json_values | st.text(max_size=200),
        "from": json_values,
        "conversation": json_values,
    },
)
depths = st.sampled_from([999, 1000, 5000, 60_000]) | st.integers(1, 60_000)
deep = depths.map(lambda n: b"[" * n + b"]" * n) | depths.map(
    lambda n: b'{"text": "hi", "x": ' + b"[" * n + b"}"
)
bodies = (
    message_fields.map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | deep
    | st.binary(max_size=300)
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
segments = st.text(st.characters(exclude_categories=["Cs"]), max_size=20).map(
    lambda t: quote(t, safe="")
)
paths = st.one_of(
    st.sampled_from(
        [PATH, "/v1/agents/bran/messages", "/v1/health", f"/v1/messages/{ID}", "/", "/v1/messages/"]
    ),
    segments.map(lambda s: f"/v1/agents/{s}/messages"),
    segments.map(lambda s: f"/v1/messages/{s}"),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(
        lambda t: "/" + t
    ),
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]) | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8
)
header_names = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ-_0123456789"), min_size=1, max_size=20
)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/json; charset=latin-1",
        "text/plain; charset=utf-16",
        "",
        "x/y",
    ]
)
# (credentials for a request, whether they are genuine): None means "sign this request properly".
credentials = st.one_of(
    st.just(({}, False)),
    st.just(({"Authorization": f"Bearer {TOKEN}"}, True)),
    header_values.map(lambda v: ({"Authorization": "Bearer " + v}, False)),
    header_values.map(lambda v: ({"Authorization": v}, False)),
    st.tuples(header_values, header_values).map(
        lambda t: ({"X-Anima-Timestamp": t[0], "X-Anima-Signature": t[1]}, False)
    ),
    st.integers(-(10**12), 10**12).map(
        lambda ts: ({"X-Anima-Timestamp": str(ts), "X-Anima-Signature": "sha256=00"}, False)
    ),
    st.just((None, True)),
)


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: hook",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


@FUZZ
@given(
    method=methods,
    path=paths,
    body=bodies,
    content_type=content_types,
    auth=credentials,
    extra=st.dictionaries(header_names, header_values, max_size=4),
)
def test_any_request_is_answered_without_a_5xx_and_strangers_never_reach_an_inbox(
    hook: Hook,
    method: str,
    path: str,
    body: bytes,
    content_type: str,
    auth: tuple[dict[str, str] | None, bool],
    extra: dict[str, str],
) -> None:
    creds, genuine = auth
    if creds is None:  # a valid signature for exactly this request (fresh: no replay)
        creds = {
            k: v
            for k, v in signed(path, body, method, ts=int(time.time())).items()
            if k != "Content-Type"
        }
    headers = {
        k: v
        for k, v in extra.items()
        if k.lower() not in {"content-length", "transfer-encoding", "connection", "host"}
    }
    headers |= creds | {"Content-Type": content_type}
    before = len(inbox(hook.home))
    statuses = hook.exchange(request_bytes(method, path, headers, body))
    delivered = len(inbox(hook.home)) - before
    if not genuine:
        assert 202 not in statuses and delivered == 0, (method, path, headers)
    hook.accepted += delivered
    assert delivered == statuses.count(202)


@FUZZ
@given(
    body=bodies,
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/json; charset=utf-8"]
    ),
)
def test_any_body_from_a_genuine_client_is_delivered_or_a_clear_400(
    hook: Hook, body: bytes, content_type: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    before = len(inbox(hook.home))
    (status,) = hook.exchange(request_bytes("POST", PATH, headers, body))
    delivered = len(inbox(hook.home)) - before
    assert (status, delivered) in {(202, 1), (400, 0)}, (status, body[:200])
    hook.accepted += delivered


@FUZZ
@given(head=st.binary(max_size=400), tail=st.sampled_from([b"\r\n\r\n", b"\n\n"]))
def test_bytes_that_are_not_http_are_refused_without_a_5xx(
    hook: Hook, head: bytes, tail: bytes
) -> None:
    before = len(inbox(hook.home))
    hook.exchange(head + tail)
    assert len(inbox(hook.home)) == before


def test_signed_requests_reach_the_inbox(hook: Hook) -> None:
    """The fuzz above must be able to see a delivery: a signed request still gets in."""
    body = json.dumps({"text": "hello"}).encode()
    headers = signed(PATH, body)
    assert hook.exchange(request_bytes("POST", PATH, headers, body)) == [202]
    hook.accepted += 1
