"""Charts drawn on the server as SVG: no chart library, no CDN, works offline; every label is
escaped text and each bar carries a <title> for screen readers and hover."""

from __future__ import annotations

from collections.abc import Sequence

from anima.web.html import Html, join, render

WIDTH = 720
HEIGHT = 180
PAD_LEFT = 48
PAD_BOTTOM = 28
PAD_TOP = 12


def _nice(top: float) -> float:
    """A round axis maximum at or above `top`."""
    if top <= 0:
        return 1.0
    step = 10 ** len(str(int(top))) / 10
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= top:
            return m * step
    return 10 * step


def _n(value: float) -> str:
    return f"{value:.1f}"


def bar_chart(title: str, points: Sequence[tuple[str, float]], unit: str = "") -> Html:
    """A bar per point (label, value), labels every few bars, a round y-axis maximum."""
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    top = _nice(max((v for _, v in points), default=0))
    n = max(len(points), 1)
    slot = plot_w / n
    every = max(1, n // 8)
    bars = []
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = PAD_LEFT + i * slot
        bars.append(
            render(
                '<rect class="bar" x="{}" y="{}" width="{}" height="{}">'
                "<title>{}: {} {}</title></rect>",
                _n(x + slot * 0.1),
                _n(PAD_TOP + plot_h - h),
                _n(max(slot * 0.8, 1)),
                _n(h),
                label,
                f"{value:g}",
                unit,
            )
        )
        if i % every == 0:
            bars.append(
                render(
                    '<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>',
                    _n(x + slot / 2),
                    HEIGHT - 8,
                    label[5:] if len(label) == 10 else label,
                )
            )
    axis = render(
        '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
        '<text class="tick" x="{tx}" y="{ty}" text-anchor="end">{top}</text>'
        '<text class="tick" x="{tx}" y="{b}" text-anchor="end">0</text>',
        l=PAD_LEFT,
        b=PAD_TOP + plot_h,
        r=WIDTH - 8,
        tx=PAD_LEFT - 6,
        ty=PAD_TOP + 10,
        top=f"{top:g}",
    )
    return render(
        '<figure class="chart"><figcaption>{}</figcaption>'
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        "{}{}</svg></figure>",
        title,
        WIDTH,
        HEIGHT,
        title,
        axis,
        join(bars),
    )
