"""Plots of a search as small inline SVG strings, drawn by hand so that a site of 5,000 candidates stays light.

Every plot bounds its own size: point clouds are drawn as one path, and above `MAX_POINTS` they are
aggregated per pixel column (min-max bar and mean) or per grid cell. Tested by tests/test_site.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

MAX_POINTS = 1500            # above this, clouds are aggregated instead of drawn point by point
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 26, 34
PALETTE = ("#1b6ca8", "#d1495b", "#2e9e6a", "#e09f3e", "#7b4fa8", "#3a8d9e", "#8c564b", "#5c5c5c")


@dataclass
class Mark:
    """A highlighted point with a link and a tooltip (best-so-far improvements, named candidates)."""
    x: float
    y: float
    href: str
    label: str


@dataclass
class Bar:
    """One bar of a grouped bar chart: a value with its uncertainty."""
    value: float
    err: float = 0.0


@dataclass
class BarSeries:
    name: str
    bars: list[Bar | None] = field(default_factory=list)   # one per group; None where there is no score


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = max((hi - lo) / n, 1.0) if integer else (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in ((1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, t = [], first
    while t <= hi + 1e-9 * step:
        out.append(round(t, 10))
        t += step
    return out


def _tick_label(t: float) -> str:
    if t == int(t) and abs(t) >= 1:
        return str(int(t))
    return f"{t:.3g}"


class Frame:
    """Maps data coordinates to pixels and draws the axes of one plot."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float],
                 width: int = WIDTH, height: int = HEIGHT, legend: int = 0):
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1
        self.w, self.h = width, height
        self.pw, self.ph = width - LEFT - RIGHT - legend, height - TOP - BOTTOM

    def px(self, x: float) -> float:
        return round(LEFT + (x - self.x0) / (self.x1 - self.x0) * self.pw, 1)

    def py(self, y: float) -> float:
        y = min(max(y, self.y0), self.y1)
        return round(TOP + (1 - (y - self.y0) / (self.y1 - self.y0)) * self.ph, 1)

    def axes(self, title: str, x_label: str, y_label: str, x_ticks: bool = True, x_whole: bool = False) -> list[str]:
        """Background, grid, tick labels and titles; `x_whole` keeps x ticks on whole numbers (candidate ids)."""
        out = [f'<rect x="{LEFT}" y="{TOP}" width="{self.pw}" height="{self.ph}" class="pl-bg"/>']
        for t in _ticks(self.y0, self.y1):
            y = self.py(t)
            out.append(f'<line x1="{LEFT}" x2="{LEFT + self.pw}" y1="{y}" y2="{y}" class="pl-grid"/>'
                       f'<text x="{LEFT - 4}" y="{y + 3}" text-anchor="end">{_tick_label(t)}</text>')
        if x_ticks:
            for t in _ticks(self.x0, self.x1, 6, integer=x_whole):
                x = self.px(t)
                out.append(f'<line x1="{x}" x2="{x}" y1="{TOP + self.ph}" y2="{TOP + self.ph + 4}" class="pl-axis"/>'
                           f'<text x="{x}" y="{TOP + self.ph + 15}" text-anchor="middle">{_tick_label(t)}</text>')
        out.append(f'<text x="{LEFT}" y="{TOP - 9}" class="pl-title">{escape(title)}</text>')
        out.append(f'<text x="{LEFT + self.pw}" y="{self.h - 4}" text-anchor="end" class="pl-label">{escape(x_label)}</text>')
        out.append(f'<text x="12" y="{TOP + self.ph / 2}" text-anchor="middle" class="pl-label" '
                   f'transform="rotate(-90 12 {TOP + self.ph / 2})">{escape(y_label)}</text>')
        return out

    def svg(self, parts: list[str], label: str) -> str:
        return (f'<svg class="plot" viewBox="0 0 {self.w} {self.h}" width="{self.w}" height="{self.h}" '
                f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
                + "".join(parts) + "</svg>")


def _empty(title: str, note: str) -> str:
    f = Frame((0, 1), (0, 1), height=90)
    return f.svg([f'<text x="{LEFT}" y="{TOP - 9}" class="pl-title">{escape(title)}</text>',
                  f'<text x="{LEFT}" y="{TOP + 24}" class="pl-note">{escape(note)}</text>'], title)


def _score_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    lo = max(0.0, math.floor(lo * 10 - 1e-9) / 10)
    hi = min(1.0, math.ceil(hi * 10 + 1e-9) / 10) if hi <= 1 else hi
    return (lo, hi) if hi > lo else (max(0.0, lo - 0.1), hi + 0.1)


def _dots(frame: Frame, xs: list[float], ys: list[float], color: str, width: float = 4) -> str:
    d = "".join(f"M{frame.px(x)} {frame.py(y)}h0" for x, y in zip(xs, ys))
    return f'<path d="{d}" stroke="{color}" stroke-width="{width}" stroke-linecap="round" opacity="0.65"/>'


def _columns(frame: Frame, xs: list[float], ys: list[float], color: str) -> tuple[str, int]:
    """Aggregate a cloud per 3-pixel column: a min-max bar and a mean dot each. Returns (svg, bins)."""
    bins: dict[int, list[float]] = {}
    for x, y in zip(xs, ys):
        bins.setdefault(int(frame.px(x) // 3), []).append(y)
    bars, means = [], []
    for b in sorted(bins):
        vals = bins[b]
        x = b * 3 + 1.5
        bars.append(f"M{x} {frame.py(min(vals))}V{frame.py(max(vals))}")
        means.append(f"M{x} {frame.py(sum(vals) / len(vals))}h0")
    return (f'<path d="{"".join(bars)}" stroke="{color}" stroke-width="2.2" opacity="0.25"/>'
            f'<path d="{"".join(means)}" stroke="{color}" stroke-width="3.2" stroke-linecap="round" opacity="0.7"/>',
            len(bins))


def improvements(ys: list[float]) -> list[int]:
    """Indices where the running best rises: the first point and every new best after it."""
    out, best = [], None
    for i, y in enumerate(ys):
        if best is None or y > best:
            out.append(i)
            best = y
    return out


def search_progress(title: str, xs: list[float], ys: list[float], marks: list[Mark],
                    baseline: float | None = None, color: str = PALETTE[0]) -> str:
    """A score over the course of the search: every candidate, the best so far, the baseline level.

    xs are candidate ids in search order, ys their scores; `marks` are the best-so-far improvements.
    """
    if not xs:
        return _empty(title, "no scored candidates yet")
    lo, hi = _score_range(ys + ([baseline] if baseline is not None else []))
    f = Frame((min(xs), max(xs)), (lo, hi))
    parts = f.axes(title, "candidate id", "score", x_whole=True)
    note = ""
    if len(xs) <= MAX_POINTS:
        parts.append(_dots(f, xs, ys, color))
    else:
        svg, nbins = _columns(f, xs, ys, color)
        parts.append(svg)
        note = f"{len(xs)} candidates in {nbins} columns: bar min-max, dot mean"
    if baseline is not None:
        y = f.py(baseline)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + f.pw}" y1="{y}" y2="{y}" class="pl-base"/>'
                     f'<text x="{LEFT + f.pw - 2}" y="{y - 3}" text-anchor="end" class="pl-note">baseline</text>')
    step = []
    for i in improvements(ys):
        x, y = f.px(xs[i]), f.py(ys[i])
        step.append(f"H{x}V{y}" if step else f"M{x} {y}")
    step.append(f"H{f.px(max(xs))}")
    parts.append(f'<path d="{"".join(step)}" class="pl-best"/>')
    for m in marks:
        parts.append(f'<a href="{escape(m.href)}"><circle cx="{f.px(m.x)}" cy="{f.py(m.y)}" r="3.5" class="pl-mark">'
                     f'<title>{escape(m.label)}</title></circle></a>')
    if note:
        parts.append(f'<text x="{LEFT + 4}" y="{TOP + f.ph - 4}" class="pl-note">{escape(note)}</text>')
    return f.svg(parts, title)


def grouped_bars(title: str, groups: list[str], series: list[BarSeries]) -> str:
    """Bars per group (task) for each series (model or candidate), with ±err whiskers and a legend."""
    values = [b.value + b.err for s in series for b in s.bars if b is not None]
    if not values or not groups:
        return _empty(title, "no scores to compare yet")
    f = Frame((0, len(groups)), (0.0, max(1.0, max(values))), width=WIDTH + 180, height=HEIGHT + 30, legend=170)
    parts = f.axes(title, "", "score", x_ticks=False)
    slot = f.pw / len(groups)
    bw = slot * 0.8 / max(1, len(series))
    for gi, g in enumerate(groups):
        parts.append(f'<text x="{round(LEFT + slot * (gi + 0.5), 1)}" y="{TOP + f.ph + 15}" '
                     f'text-anchor="middle">{escape(g)}</text>')
        for si, s in enumerate(series):
            b = s.bars[gi] if gi < len(s.bars) else None
            if b is None:
                continue
            x = round(LEFT + slot * gi + slot * 0.1 + bw * si, 1)
            top, base = f.py(b.value), f.py(0.0)
            color = PALETTE[si % len(PALETTE)]
            parts.append(f'<rect x="{x}" y="{top}" width="{round(bw - 1, 1)}" height="{round(base - top, 1)}" '
                         f'fill="{color}"><title>{escape(s.name)} · {escape(g)}: {b.value:.3f} ± {b.err:.3f}</title></rect>')
            if b.err > 0:
                cx = round(x + (bw - 1) / 2, 1)
                parts.append(f'<path d="M{cx} {f.py(b.value - b.err)}V{f.py(b.value + b.err)}'
                             f'M{cx - 2.5} {f.py(b.value - b.err)}h5M{cx - 2.5} {f.py(b.value + b.err)}h5" class="pl-err"/>')
    for si, s in enumerate(series):
        y = TOP + 10 + si * 15
        parts.append(f'<rect x="{LEFT + f.pw + 8}" y="{y - 8}" width="10" height="10" fill="{PALETTE[si % len(PALETTE)]}"/>'
                     f'<text x="{LEFT + f.pw + 22}" y="{y}" class="pl-legend">{escape(s.name[:26])}'
                     f'<title>{escape(s.name)}</title></text>')
    return f.svg(parts, title)


def predicted_vs_measured(title: str, pairs: dict[str, list[tuple[float, float]]]) -> str:
    """Predicted (x) against measured (y) per task, with the diagonal; a count grid above MAX_POINTS pairs."""
    flat = [p for ps in pairs.values() for p in ps]
    if not flat:
        return _empty(title, "no candidate with both a prediction and a score yet")
    size = HEIGHT + 60
    f = Frame((0.0, 1.0), (0.0, 1.0), width=size - TOP - BOTTOM + LEFT + RIGHT + 130, height=size, legend=130)
    parts = f.axes(title, "predicted", "measured")
    parts.append(f'<line x1="{f.px(0)}" y1="{f.py(0)}" x2="{f.px(1)}" y2="{f.py(1)}" class="pl-base"/>')
    if len(flat) <= MAX_POINTS:
        for ti, (task, ps) in enumerate(pairs.items()):
            if ps:
                parts.append(_dots(f, [p[0] for p in ps], [p[1] for p in ps], PALETTE[ti % len(PALETTE)], 5))
        for ti, task in enumerate(pairs):
            y = TOP + 10 + ti * 15
            parts.append(f'<rect x="{LEFT + f.pw + 8}" y="{y - 8}" width="10" height="10" fill="{PALETTE[ti % len(PALETTE)]}"/>'
                         f'<text x="{LEFT + f.pw + 22}" y="{y}" class="pl-legend">{escape(task)}</text>')
    else:
        n = 40
        grid: dict[tuple[int, int], int] = {}
        for x, y in flat:
            key = (min(n - 1, max(0, int(x * n))), min(n - 1, max(0, int(y * n))))
            grid[key] = grid.get(key, 0) + 1
        top = math.log1p(max(grid.values()))
        cw, ch = f.pw / n, f.ph / n
        for (i, j), c in sorted(grid.items()):
            parts.append(f'<rect x="{round(LEFT + i * cw, 1)}" y="{round(TOP + (n - 1 - j) * ch, 1)}" '
                         f'width="{round(cw, 1)}" height="{round(ch, 1)}" fill="{PALETTE[0]}" '
                         f'opacity="{round(0.15 + 0.85 * math.log1p(c) / top, 2)}"><title>{c}</title></rect>')
        parts.append(f'<text x="{LEFT + f.pw + 8}" y="{TOP + 10}" class="pl-note">{len(flat)} pairs,</text>'
                     f'<text x="{LEFT + f.pw + 8}" y="{TOP + 24}" class="pl-note">all tasks: darker = more</text>')
    return f.svg(parts, title)


def per_candidate(title: str, xs: list[float], ys: list[float], unit: str, total: str,
                  color: str = PALETTE[3]) -> str:
    """A non-negative quantity per candidate (cost, time), with the total (as the caller words it) in the title."""
    if not xs or max(ys, default=0.0) <= 0:
        return _empty(title, f"nothing recorded ({unit})")
    f = Frame((min(xs), max(xs)), (0.0, max(ys) * 1.05))
    parts = f.axes(f"{title} · total {total}", "candidate id", unit, x_whole=True)
    if len(xs) <= MAX_POINTS:
        parts.append(_dots(f, xs, ys, color))
    else:
        svg, nbins = _columns(f, xs, ys, color)
        parts.append(svg)
        parts.append(f'<text x="{LEFT + 4}" y="{TOP + 12}" class="pl-note">'
                     f'{len(xs)} candidates in {nbins} columns: bar min-max, dot mean</text>')
    return f.svg(parts, title)
