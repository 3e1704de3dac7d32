"""Escaped HTML by construction: `Html` is markup already safe to emit; `render` escapes every
argument that is not `Html`. Pages are plain server-side strings, no template engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape


class Html(str):
    """Markup that is already safe (built by `render` or `join`)."""


def esc(value: object) -> Html:
    """`value` as text inside HTML (attributes included: quotes are escaped too)."""
    if isinstance(value, Html):
        return value
    return Html(escape("" if value is None else str(value), quote=True))


def render(template: str, *args: object, **kwargs: object) -> Html:
    """`template.format(...)` with every argument escaped unless it is `Html`."""
    return Html(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))


def join(parts: Iterable[Html], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


NAV = (
    ("/", "Agents"),
    ("/timeline", "Timeline"),
    ("/charts", "Charts"),
    ("/approvals", "Approvals"),
)


def nav_items(links: Iterable[tuple[str, str]], is_current: Callable[[str, str], bool]) -> Html:
    """`<li>` links, the current one marked for screen readers and styles (aria-current)."""
    return join(
        render(
            '<li><a href="{}"{}>{}</a></li>',
            href,
            Html(' aria-current="page"') if is_current(href, label) else Html(""),
            label,
        )
        for href, label in links
    )


def page(title: str, body: Html, *, current: str = "", data: dict[str, str] | None = None) -> Html:
    """A whole page: skip link, navigation, main landmark; scripts and styles only from /static
    (the Content-Security-Policy allows nothing else)."""
    nav = nav_items(NAV, lambda href, _label: href == current)
    attrs = join(render(' data-{}="{}"', k, v) for k, v in (data or {}).items())
    return render(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{} · Anima</title>"
        '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/style.css">'
        '<script src="/static/app.js" defer></script></head>'
        "<body{}>"
        '<a class="skip" href="#main">Skip to content</a>'
        '<header><nav aria-label="Main"><span class="brand">Anima</span><ul>{}</ul></nav></header>'
        '<main id="main" tabindex="-1"><h1>{}</h1>{}</main></body></html>\n',
        title,
        attrs,
        nav,
        title,
        body,
    )


def csrf_field(token: str) -> Html:
    return render('<input type="hidden" name="csrf" value="{}">', token)


def post_button(url: str, label: str, csrf: str, **fields: str) -> Html:
    """A one-button form: every state change is a POST carrying the CSRF token."""
    hidden = join(
        render('<input type="hidden" name="{}" value="{}">', k, v) for k, v in fields.items()
    )
    return render(
        '<form method="post" action="{}" class="inline">{}{}<button type="submit">{}</button></form>',
        url,
        csrf_field(csrf),
        hidden,
        label,
    )
