"""Who may use the dashboard, and how a page on another site is kept out.

- Bound to loopback by default. A token is required when one is configured or when bound
  beyond loopback (then one is made and printed once if none is configured). It arrives once
  as `?token=` (then lives in an HttpOnly, SameSite=Strict cookie) or as `Authorization: Bearer`.
- Every request's Host must be one this server answers to (DNS rebinding: a hostile name that
  resolves to 127.0.0.1 still sends its own Host).
- Every POST carries a CSRF token tied to the session cookie, and is refused when its Origin or
  Sec-Fetch-Site says it came from another site.
- Every response carries a strict Content-Security-Policy: scripts, styles and images only from
  this server, no inline script, no frames.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_COOKIE = "anima_token"
SESSION_COOKIE = "anima_session"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make form POSTs send Origin: null
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


@dataclass
class Guard:
    """The server's access rules: its token (None: none needed), the Host names it answers to,
    and the secret CSRF tokens are derived from."""

    bind: str
    token: str | None
    extra_hosts: Iterable[str] = ()
    port: int = 0
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def hosts(self) -> set[str]:
        """Host header values accepted (name or name:port)."""
        names = {h.lower() for h in self.extra_hosts}
        if is_loopback(self.bind) or _wildcard(self.bind):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        if _wildcard(self.bind):
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        else:
            names.add(f"[{self.bind}]" if ":" in self.bind else self.bind.lower())
        return names | {f"{n}:{self.port}" for n in names}

    def csrf_for(self, session: str) -> str:
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def token_ok(self, offered: str | None) -> bool:
        return self.token is None or (
            offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())
        )


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=HEADERS)


def _same_origin(request: web.Request, origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


def middleware(guard: Guard) -> Middleware:
    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host.lower() not in guard.hosts():
            return _refuse(421, f"this dashboard does not answer to Host {request.host[:100]!r}")
        query_token = request.query.get("token")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or None
        offered = query_token or bearer or request.cookies.get(TOKEN_COOKIE)
        if not guard.token_ok(offered):
            return _refuse(401, "token required: open the address `anima web` printed (…/?token=…)")
        if query_token is not None and request.method == "GET":
            url = request.rel_url.with_query(
                [(k, v) for k, v in request.query.items() if k != "token"]
            )  # keep it out of history and logs
            see = web.HTTPSeeOther(str(url), headers=HEADERS)
            see.set_cookie(TOKEN_COOKIE, query_token, httponly=True, samesite="Strict", path="/")
            return see
        session = request.cookies.get(SESSION_COOKIE) or ""
        fresh = not session
        session = session or secrets.token_urlsafe(24)
        request["csrf"] = guard.csrf_for(session)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                return _refuse(403, "cross-site request refused")
            if origin is not None and not _same_origin(request, origin):
                return _refuse(403, f"request from origin {origin[:100]!r} refused")
            form = await request.post()
            offered_csrf = str(form.get("csrf", "")) or request.headers.get("X-CSRF-Token", "")
            if fresh or not hmac.compare_digest(offered_csrf.encode(), request["csrf"].encode()):
                return _refuse(403, "missing or stale CSRF token: reload the page and try again")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(HEADERS)
            raise
        if not response.prepared:
            response.headers.update(HEADERS)
            if fresh:
                response.set_cookie(
                    SESSION_COOKIE, session, httponly=True, samesite="Strict", path="/"
                )
        return response

    return guarded
