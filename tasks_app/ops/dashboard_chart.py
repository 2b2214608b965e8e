"""The dashboard's throughput chart as inline SVG, drawn on the server: no JavaScript, no CDN.

Stacked bars, one per minute (completed, failed, cancelled), with a y axis of round numbers, a
time label every ten minutes, and a tooltip (<title>) per bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from django.utils.safestring import SafeString, mark_safe

from tasks_app.ops.dashboard_selectors import FINISHED, Minute

COLORS = {"completed": "#3a9b5c", "failed": "#ba2121", "cancelled": "#8c8c8c"}


def nice_step(peak: int, ticks: int = 4) -> int:
    """A round step (1, 2, 5 x 10^k) so that about `ticks` steps cover `peak`."""
    if peak <= ticks:
        return 1
    raw = peak / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return int(m * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def throughput_svg(minutes: Sequence[Minute], *, width: int = 760, height: int = 230) -> SafeString:
    left, right, top, bottom = 48, 10, 26, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((m.total for m in minutes), default=0)
    step = nice_step(peak)
    ymax = max(step, step * math.ceil(peak / step))
    total = sum(m.total for m in minutes)
    desc = f"{total} task(s) finished in the last {len(minutes)} minutes; at most {peak} in one minute."
    out = [
        f'<svg class="th-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-labelledby="th-chart-title th-chart-desc">',
        '<title id="th-chart-title">Tasks finished per minute</title>',
        f'<desc id="th-chart-desc">{escape(desc)}</desc>',
    ]
    # Horizontal grid lines and the y axis labels.
    for value in range(0, ymax + 1, step):
        y = top + plot_h - value / ymax * plot_h
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="ylabel" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    # One stacked bar per minute.
    slot = plot_w / max(1, len(minutes))
    bar_w = max(1.0, slot * 0.78)
    for i, minute in enumerate(minutes):
        x = left + i * slot + (slot - bar_w) / 2
        label = f"{minute.start:%H:%M} UTC: " + (
            ", ".join(f"{minute.counts.get(s, 0)} {s}" for s in FINISHED) if minute.total else "none finished"
        )
        out.append(f"<g><title>{escape(label)}</title>")
        # A transparent full-height target, so the tooltip shows on empty minutes too.
        out.append(f'<rect class="hit" x="{x:.1f}" y="{top}" width="{bar_w:.1f}" height="{plot_h}"/>')
        base = float(top + plot_h)
        for status in FINISHED:
            n = minute.counts.get(status, 0)
            if not n:
                continue
            h = n / ymax * plot_h
            base -= h
            out.append(
                f'<rect class="bar {status}" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[status]}"/>'
            )
        out.append("</g>")
        if i % 10 == 0 or i == len(minutes) - 1:
            cx = left + i * slot + slot / 2
            text = "now" if i == len(minutes) - 1 else f"{minute.start:%H:%M}"
            anchor = "end" if i == len(minutes) - 1 else "middle"
            out.append(f'<text class="xlabel" x="{cx:.1f}" y="{height - 8}" text-anchor="{anchor}">{text}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    # Legend, top right.
    lx = left + plot_w
    for status in reversed(FINISHED):
        width_text = 8 + 7 * len(status)
        lx -= width_text + 16
        out.append(f'<rect x="{lx}" y="6" width="10" height="10" fill="{COLORS[status]}"/>')
        out.append(f'<text class="legend" x="{lx + 14}" y="15">{status}</text>')
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308  # numbers, fixed words, and escape()d labels only
