"""Charts as inline SVG, drawn on the server: the console needs no JavaScript and no chart library.

A score over windows is a line; the threshold is a dashed line; a window that crossed it is a filled red
point, and a window an alert started in carries a red ring. Each point links to its window (its
Evidently report) and names its window and value in a tooltip.

>>> svg = score_chart([(0, 0.5, False), (5_000_000, 0.0001, True)], threshold=0.001, log_scale=True,
...                   alerts={5_000_000}, link=lambda start: f"/report/{start}")
>>> svg.count("<circle"), 'class="alert"' in svg, 'href="/report/5000000"' in svg
(3, True, True)
>>> "no scores" in score_chart([], threshold=None)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from html import escape

__all__ = ["score_chart"]

WIDTH, HEIGHT = 560, 150
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 8, 22
LOG_FLOOR = 1e-12
"""p-values below this are drawn at it."""


def score_chart(
    points: Sequence[tuple[int, float | None, bool]],
    *,
    threshold: float | None,
    log_scale: bool = False,
    alerts: Collection[int] = (),
    link: Callable[[int], str | None] | None = None,
    label: str = "score",
) -> str:
    """An SVG of ``(window_start_us, score, crossed)`` points; None scores leave a gap."""
    drawn = [(x, y, crossed) for x, y, crossed in points if y is not None]
    if not drawn:
        return '<p class="muted">no scores yet</p>'
    values = [y for _, y, _ in drawn] + ([threshold] if threshold is not None else [])

    def scale(value: float) -> float:
        return math.log10(max(value, LOG_FLOOR)) if log_scale else value

    low, high = min(map(scale, values)), max(map(scale, values))
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    xs = [x for x, _, _ in points]
    first, last = min(xs), max(xs)
    span = max(last - first, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: int) -> float:
        return LEFT + (x - first) / span * plot_w if last > first else LEFT + plot_w / 2

    def py(value: float) -> float:
        return TOP + (high - scale(value)) / (high - low) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" preserveAspectRatio="none" '
        f'aria-label="{escape(label)}">',
        f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>',
        _axis_label(LEFT - 4, TOP + 9, _tick(high, log_scale), "end"),
        _axis_label(LEFT - 4, TOP + plot_h, _tick(low, log_scale), "end"),
        _axis_label(LEFT, HEIGHT - 6, _clock(first), "start"),
        _axis_label(WIDTH - RIGHT, HEIGHT - 6, _clock(last), "end"),
    ]
    if threshold is not None:
        y = py(threshold)
        parts.append(f'<line class="threshold" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
    segment: list[str] = []
    for x, y_value, _ in points:  # a window without a score breaks the line
        if y_value is None:
            parts.append(_polyline(segment))
            segment = []
        else:
            segment.append(f"{px(x):.1f},{py(y_value):.1f}")
    parts.append(_polyline(segment))
    for x, y_value, crossed in drawn:
        cx, cy = px(x), py(y_value)
        tip = f"window {_clock(x)}: {label} {y_value:.4g}" + (" (crossed)" if crossed else "")
        dot = f'<circle class="{"crossed" if crossed else "point"}" cx="{cx:.1f}" cy="{cy:.1f}" r="3">'
        dot += f"<title>{escape(tip)}</title></circle>"
        if x in alerts:
            dot += f'<circle class="alert" cx="{cx:.1f}" cy="{cy:.1f}" r="7"><title>alert</title></circle>'
        target = link(x) if link else None
        parts.append(f'<a href="{escape(target)}">{dot}</a>' if target else dot)
    parts.append("</svg>")
    return "".join(parts)


def _polyline(points: list[str]) -> str:
    return f'<polyline class="line" points="{" ".join(points)}"/>' if len(points) > 1 else ""


def _axis_label(x: float, y: float, text: str, anchor: str) -> str:
    return f'<text class="axis" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _tick(value: float, log_scale: bool) -> str:
    return f"1e{value:.0f}" if log_scale else f"{value:.3g}"


def _clock(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%H:%M:%S")
