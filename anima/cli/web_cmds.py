"""anima web: the local dashboard (a view over the agents' files and git history)."""

from __future__ import annotations

import click

from anima.cli.app import log_to_stderr, pass_home
from anima.home import Home

DEFAULT_PORT = 8377
TOKEN_ENV = "ANIMA_WEB_TOKEN"


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; beyond loopback a token is required.",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free one).",
)
@click.option(
    "--token-env",
    default=TOKEN_ENV,
    show_default=True,
    help="Variable holding the access token (environment or credentials.env). Unset and bound "
    "beyond loopback: a token is made and printed once.",
)
@click.option(
    "--allow-host",
    multiple=True,
    help="Another Host name the dashboard answers to (a proxy's, a LAN name).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@pass_home
def web(
    home: Home, host: str, port: int, token_env: str, allow_host: tuple[str, ...], verbose: bool
) -> None:
    """Serve the dashboard: agents live, conversations, the audit timeline, memory, approvals."""
    import asyncio
    import errno
    import secrets
    import signal

    from anima.errors import AnimaError

    try:
        from anima.web.app import serve
        from anima.web.security import Guard, is_loopback
    except ImportError as exc:
        if exc.name != "aiohttp":
            raise
        raise AnimaError("anima web needs aiohttp: pip install 'anima[web]'") from None

    log_to_stderr(verbose)
    home.require()
    token = _configured_token(home, token_env)
    made = token is None and not is_loopback(host)
    if made:
        token = secrets.token_urlsafe(24)
    guard = Guard(bind=host, token=token, extra_hosts=allow_host, port=port)

    def ready(url: str) -> None:
        click.echo(f"anima web: serving {url}", nl=True)
        if made:
            click.echo(f"anima web: open {url}?token={token} (a new token, shown only now)")
        elif token:
            click.echo(f"anima web: the token is in ${token_env}; open {url}?token=…")
        if not is_loopback(host):
            click.echo(
                "anima web: plain HTTP beyond loopback: use it on a trusted network or behind TLS"
            )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(home, guard, ready, stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise AnimaError(
            f"cannot listen on {host}:{port}: {exc.strerror} (choose --host/--port)"
        ) from None


def _configured_token(home: Home, name: str) -> str | None:
    """The token from $NAME or credentials.env; None when neither sets it. A credentials file
    others can read is refused (BadConfig), as for every other secret."""
    import os

    from anima import credentials
    from anima.errors import BadConfig

    if not name:
        return None
    if os.environ.get(name):
        return os.environ[name]
    path = home.root / credentials.FILE
    if not path.exists():
        return None
    try:
        return credentials.secret(home, name, "anima web's token")
    except BadConfig:
        if path.stat().st_mode & 0o077:
            raise
        return None
