"""The timeline of a run: what the cluster looked like over virtual time, drawn as SVG by hand.

Three panels share one time axis, under a lane of the faults that were active:

* **availability**: the share of client operations completed in each second that succeeded;
* **membership**: one row per node, coloured by how many of the other members that node
  believed alive (green: all, through yellow, to red: none), grey while the node was down;
* **divergence**: how many keys had replicas holding different records.

No plotting library: the SVG is a few hundred rectangles, polylines and labels.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from p2pindex.sim.history import History, OpF, OpType

WIDTH: Final = 1100
LEFT: Final = 90
RIGHT: Final = 20
ROW: Final = 14
LABEL_CHAR_WIDTH: Final = 5.3
"""Approximate width of one 9-pixel sans-serif character, to keep fault labels in their bar."""
KIND_COLOURS: Final = {
    "partition": "#d62728",
    "crash": "#7f7f7f",
    "pause": "#9467bd",
    "loss": "#ff7f0e",
    "duplicate": "#bcbd22",
    "reorder": "#17becf",
    "delay": "#8c564b",
    "clock_skew": "#e377c2",
    "clock_jump": "#e377c2",
    "slow": "#1f77b4",
    "disk_full": "#2ca02c",
    "fsync_error": "#98df8a",
    "join": "#1f77b4",
    "leave": "#aec7e8",
    "remove": "#393b79",
}


@dataclass(frozen=True, slots=True)
class FaultSpan:
    label: str
    kind: str
    start: float
    end: float


@dataclass(slots=True)
class Timeline:
    """Samples taken while a run goes; times are seconds since the run's origin."""

    title: str
    nodes: list[str] = field(default_factory=list)
    membership: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)
    """node -> (time, share of other members it sees alive, or None while it is down)."""
    divergence: list[tuple[float, int]] = field(default_factory=list)
    faults: list[FaultSpan] = field(default_factory=list)
    end: float = 0.0
    heal: float | None = None
    divergence_label: str = "keys whose replicas differ"

    def add_view(self, time: float, node: str, alive_share: float | None) -> None:
        if node not in self.membership:
            self.membership[node] = []
            self.nodes.append(node)
        self.membership[node].append((time, alive_share))
        self.end = max(self.end, time)

    def add_divergence(self, time: float, keys: int) -> None:
        self.divergence.append((time, keys))
        self.end = max(self.end, time)

    def add_fault(self, label: str, kind: str, start: float, end: float) -> None:
        self.faults.append(FaultSpan(label, kind, start, end))
        self.end = max(self.end, end)


def availability(
    history: History, origin: float, bucket: float = 1.0
) -> list[tuple[float, float, int]]:
    """(bucket start, share of completed ops that succeeded, ops completed) per bucket."""
    done: dict[int, list[int]] = {}
    for op in history.ops:
        if op.type is OpType.INVOKE or op.f is OpF.FINAL:
            continue
        index = int((op.time - origin) // bucket)
        counts = done.setdefault(index, [0, 0])
        counts[1] += 1
        if op.type is OpType.OK:
            counts[0] += 1
    return [
        (index * bucket, ok / total, total) for index, (ok, total) in sorted(done.items()) if total
    ]


def _natural(name: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\D*)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def _colour(share: float | None) -> str:
    if share is None:
        return "#c8c8c8"
    share = min(1.0, max(0.0, share))
    if share >= 0.5:
        red = int(255 * (1 - share) * 2)
        return f"#{red:02x}b040"
    green = int(176 * share * 2)
    return f"#e0{green:02x}30"


class _Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, fill: str, **extra: str) -> None:
        attributes = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in extra.items())
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{h:.1f}" '
            f'fill="{fill}"{attributes}/>'
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        size: int = 11,
        anchor: str = "start",
        weight: str = "normal",
        fill: str = "#222",
    ) -> None:
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{html.escape(content)}</text>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        stroke: str = "#999",
        width: float = 1.0,
        dash: str = "",
    ) -> None:
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
            f'stroke-width="{width}"{dashed}/>'
        )

    def polyline(self, points: Iterable[tuple[float, float]], stroke: str) -> None:
        coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        if coordinates:
            self.parts.append(
                f'<polyline points="{coordinates}" fill="none" stroke="{stroke}" '
                f'stroke-width="1.5"/>'
            )


def render_svg(
    timeline: Timeline,
    served: Sequence[tuple[float, float, int]],
    subtitle: str = "",
    availability_label: str = "share of operations that succeeded",
) -> str:
    """The whole picture as an SVG document; ``served`` comes from :func:`availability`."""
    end = max(timeline.end, max((t for t, _, _ in served), default=0.0), 1.0)
    plot = WIDTH - LEFT - RIGHT

    def x_of(t: float) -> float:
        return LEFT + plot * min(max(t, 0.0), end) / end

    svg = _Svg()
    y = 24.0
    svg.text(LEFT, y, timeline.title, size=15, weight="bold")
    if subtitle:
        svg.text(LEFT, y + 16, subtitle, size=11, fill="#555")
    y += 34

    # Fault lane: one row per fault, stacked greedily so overlaps stay readable.
    rows: list[float] = []
    placed: list[tuple[FaultSpan, int]] = []
    for span in sorted(timeline.faults, key=lambda s: (s.start, s.end)):
        for index, free_at in enumerate(rows):
            if free_at <= span.start:
                rows[index] = max(span.end, span.start + end * 0.06)
                placed.append((span, index))
                break
        else:
            rows.append(max(span.end, span.start + end * 0.06))
            placed.append((span, len(rows) - 1))
    svg.text(8, y + 10, "faults", weight="bold")
    for span, index in placed:
        top = y + index * ROW
        colour = KIND_COLOURS.get(span.kind, "#555")
        width = max(x_of(span.end) - x_of(span.start), 2.0)
        svg.rect(x_of(span.start), top, width, ROW - 2, colour, opacity="0.75")
        room = int((width - 3) / LABEL_CHAR_WIDTH)
        if room >= 3:
            label = span.label if len(span.label) <= room else span.label[: room - 1] + "…"
            svg.text(x_of(span.start) + 2, top + ROW - 4, label, size=9, fill="#000")
    fault_rows = max(len(rows), 1)
    band_top = y
    y += fault_rows * ROW + 14

    # Availability panel.
    height = 90.0
    svg.text(8, y + 12, "availability", weight="bold")
    svg.rect(LEFT, y, plot, height, "#f7f7f7")
    svg.text(LEFT + plot, y - 3, availability_label, size=9, anchor="end", fill="#555")
    for fraction in (0.0, 0.5, 1.0):
        level = y + height * (1 - fraction)
        svg.line(LEFT, level, LEFT + plot, level, "#ddd")
        svg.text(LEFT - 4, level + 4, f"{fraction:.0%}", size=9, anchor="end")
    svg.polyline(((x_of(t + 0.5), y + height * (1 - share)) for t, share, _ in served), "#2a7")
    busiest = max((n for _, _, n in served), default=1)
    for t, _, count in served:
        bar = 20 * count / busiest
        svg.rect(x_of(t), y + height - bar, max(plot / end * 0.8, 0.5), bar, "#9cc", opacity="0.5")
    y += height + 18

    # Membership panel.
    nodes = sorted(timeline.nodes, key=_natural)
    svg.text(8, y - 4, "membership view", weight="bold")
    for index, node in enumerate(nodes):
        top = y + index * ROW
        svg.text(LEFT - 4, top + ROW - 4, node, size=10, anchor="end")
        samples = timeline.membership[node]
        for position, (t, share) in enumerate(samples):
            following = samples[position + 1][0] if position + 1 < len(samples) else end
            svg.rect(x_of(t), top, x_of(following) - x_of(t) + 0.3, ROW - 2, _colour(share))
    y += max(len(nodes), 1) * ROW + 18

    # Divergence panel.
    svg.text(8, y + 12, "divergence", weight="bold")
    svg.rect(LEFT, y, plot, height, "#f7f7f7")
    worst = max((n for _, n in timeline.divergence), default=0)
    scale = max(worst, 1)
    svg.text(LEFT - 4, y + 8, str(scale), size=9, anchor="end")
    svg.text(LEFT - 4, y + height, "0", size=9, anchor="end")
    svg.polyline(((x_of(t), y + height * (1 - n / scale)) for t, n in timeline.divergence), "#c33")
    svg.text(LEFT + plot, y - 3, timeline.divergence_label, size=9, anchor="end", fill="#555")
    y += height + 8

    # Time axis, and the heal line across every panel.
    step = _tick_step(end)
    ticks = int(end // step) + 1
    for tick in range(ticks):
        t = tick * step
        svg.line(x_of(t), band_top, x_of(t), y, "#eee")
        svg.text(x_of(t), y + 14, f"{t:g}s", size=9, anchor="middle")
    if timeline.heal is not None:
        svg.line(x_of(timeline.heal), band_top, x_of(timeline.heal), y, "#333", 1.2, "4,3")
        svg.text(x_of(timeline.heal) + 3, band_top - 4, "heal all", size=9)
    y += 24
    body = "\n".join(svg.parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0f}" '
        f'viewBox="0 0 {WIDTH} {y:.0f}" font-family="sans-serif">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'
    )


def _tick_step(end: float) -> float:
    raw = end / 12
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def write_svg(
    path: Path,
    timeline: Timeline,
    served: Sequence[tuple[float, float, int]],
    subtitle: str = "",
    availability_label: str = "share of operations that succeeded",
) -> None:
    path.write_text(render_svg(timeline, served, subtitle, availability_label), encoding="utf-8")
