"""Plots as inline SVG strings, drawn here so the report needs no plotting library, no
script and nothing from the network.

Every builder returns one ``<svg class="plot" data-plot="NAME" ...>`` element with a
``<title>``, a viewBox (it scales with the page) and coordinates printed with fixed
precision, so the same numbers give the same bytes. All text is escaped."""
from __future__ import annotations

import math
from html import escape
from typing import Sequence

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#1b9e77", "#7570b3", "#d95f02", "#66a61e")
WIDTH = 760
FONT = 11
CHAR_W = 6.2          # average glyph width at FONT, for layout (no font metrics without a browser)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _n(x: float) -> str:
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def fmt_num(v: float) -> str:
    """A short tick label: 1.5M, 20k, 0.25."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{round(v, 6):g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * mag) <= n)
    start = math.floor(lo / step + 1e-9) * step
    ticks, t = [], start
    while t < hi - 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    ticks.append(round(t, 12))
    return ticks


def _svg(name: str, w: float, h: float, title: str, body: list[str]) -> str:
    return (f'<svg class="plot" data-plot="{escape(name)}" viewBox="0 0 {_n(w)} {_n(h)}" '
            f'width="{_n(w)}" height="{_n(h)}" role="img" aria-label="{escape(title)}" '
            f'font-family="sans-serif" font-size="{FONT}"><title>{escape(title)}</title>'
            + "".join(body) + "</svg>")


def _text(x, y, s, anchor="start", extra="") -> str:
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{escape(str(s))}</text>'


def _rect(x, y, w, h, fill, tip: str | None = None, extra="") -> str:
    t = f"<title>{escape(tip)}</title>" if tip else ""
    return (f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" height="{_n(max(h, 0))}" '
            f'fill="{fill}"{extra}>{t}</rect>')


def _legend(items: Sequence[tuple[str, str]], x0: float, y0: float, width: float) -> tuple[list[str], float]:
    """Swatches and labels in rows that wrap at `width`; returns (elements, height)."""
    out, x, y = [], x0, y0
    for label, fill in items:
        w = 16 + CHAR_W * len(label) + 14
        if x > x0 and x + w > x0 + width:
            x, y = x0, y + 16
        out.append(_rect(x, y, 10, 10, fill))
        out.append(_text(x + 14, y + 9, label))
        x += w
    return out, (y - y0 + 16) if items else 0


def _left_margin(labels: Sequence[str], cap: float = 280) -> float:
    return min(cap, 12 + CHAR_W * max((len(s) for s in labels), default=4))


def _y_axis(ticks, y_of, x0, x1, label_fmt=fmt_num) -> list[str]:
    out = []
    for t in ticks:
        y = y_of(t)
        out.append(f'<line x1="{_n(x0)}" y1="{_n(y)}" x2="{_n(x1)}" y2="{_n(y)}" stroke="#ddd"/>')
        out.append(_text(x0 - 4, y + 4, label_fmt(t), "end"))
    return out


def bar_chart(name: str, labels: Sequence[str], values: Sequence[float], *, title: str,
              xlabel: str = "", ylabel: str = "") -> str:
    """Vertical bars, one per label."""
    w, h, left, top, bottom = WIDTH, 260, 56, 28, 44
    ticks = nice_ticks(0, max(values, default=1) or 1)
    plot_w, plot_h = w - left - 16, h - top - bottom
    y_of = lambda v: top + plot_h * (1 - v / ticks[-1])  # noqa: E731
    body = [_text(left, 16, title, extra=' font-weight="bold"')]
    body += _y_axis(ticks, y_of, left, w - 16)
    n = max(len(values), 1)
    slot = plot_w / n
    for i, (lab, v) in enumerate(zip(labels, values)):
        x = left + i * slot + slot * 0.15
        body.append(_rect(x, y_of(v), slot * 0.7, top + plot_h - y_of(v), color(0), f"{lab}: {v:,}"))
        body.append(_text(x + slot * 0.35, top + plot_h + 14, lab, "middle"))
    body.append(_text(left + plot_w / 2, h - 8, xlabel, "middle"))
    body.append(_text(12, top + plot_h / 2, ylabel, "middle",
                      f' transform="rotate(-90 12 {_n(top + plot_h / 2)})"'))
    return _svg(name, w, h, title, body)


def hbar_chart(name: str, labels: Sequence[str], values: Sequence[float], *, title: str,
               xlabel: str = "") -> str:
    """Horizontal bars, one row per label, the value printed at the bar's end."""
    left = _left_margin(labels)
    row, top = 20, 28
    w, h = WIDTH, top + row * max(len(labels), 1) + 40
    ticks = nice_ticks(0, max(values, default=1) or 1)
    plot_w = w - left - 60
    x_of = lambda v: left + plot_w * v / ticks[-1]  # noqa: E731
    body = [_text(8, 16, title, extra=' font-weight="bold"')]
    for t in ticks:
        body.append(f'<line x1="{_n(x_of(t))}" y1="{top}" x2="{_n(x_of(t))}" '
                    f'y2="{_n(h - 36)}" stroke="#ddd"/>')
        body.append(_text(x_of(t), h - 22, fmt_num(t), "middle"))
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = top + i * row
        body.append(_text(left - 6, y + 13, lab, "end"))
        body.append(_rect(left, y + 3, x_of(v) - left, row - 6, color(0), f"{lab}: {v:,}"))
        body.append(_text(x_of(v) + 4, y + 13, f"{v:,}"))
    body.append(_text(left + plot_w / 2, h - 6, xlabel, "middle"))
    return _svg(name, w, h, title, body)


def stacked_hbar(name: str, rows: Sequence[str], segments: Sequence[str],
                 values: Sequence[Sequence[float]], *, title: str, xlabel: str = "share",
                 colors: Sequence[str] | None = None) -> str:
    """One horizontal bar per row, split into segments, each row scaled to 100%."""
    colors = list(colors or [color(i) for i in range(len(segments))])
    left = _left_margin(rows)
    legend, lh = _legend(list(zip(segments, colors)), left, 26, WIDTH - left - 16)
    row, top = 20, 30 + lh
    w, h = WIDTH, top + row * max(len(rows), 1) + 40
    plot_w = w - left - 16
    body = [_text(8, 16, title, extra=' font-weight="bold"'), *legend]
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot_w * t
        body.append(f'<line x1="{_n(x)}" y1="{top}" x2="{_n(x)}" y2="{_n(h - 36)}" stroke="#ddd"/>')
        body.append(_text(x, h - 22, f"{t:.0%}", "middle"))
    for i, (lab, vals) in enumerate(zip(rows, values)):
        y, total = top + i * row, sum(v for v in vals if v > 0)
        body.append(_text(left - 6, y + 13, lab, "end"))
        x = left
        for seg, v, c in zip(segments, vals, colors):
            if v <= 0 or total <= 0:
                continue
            share = v / total
            body.append(_rect(x, y + 3, plot_w * share, row - 6, c, f"{lab}: {seg} {v:,} ({share:.1%})"))
            x += plot_w * share
    body.append(_text(left + plot_w / 2, h - 6, xlabel, "middle"))
    return _svg(name, w, h, title, body)


def line_chart(name: str, series: dict[str, Sequence[tuple[float, float]]], *, title: str,
               xlabel: str = "", ylabel: str = "") -> str:
    """Lines with markers, one per series (a one-point series is a marker)."""
    labels = list(series)
    legend, lh = _legend([(s, color(i)) for i, s in enumerate(labels)], 60, 26, WIDTH - 76)
    w, top, left, bottom = WIDTH, 34 + lh, 60, 44
    h = top + 240 + bottom
    pts = [p for s in series.values() for p in s]
    xt = nice_ticks(min((p[0] for p in pts), default=0), max((p[0] for p in pts), default=1))
    ylo, yhi = min((p[1] for p in pts), default=0), max((p[1] for p in pts), default=1)
    pad = (yhi - ylo) * 0.05 or 0.01
    yt = nice_ticks(ylo - pad, yhi + pad)
    plot_w, plot_h = w - left - 16, 240
    x_of = lambda v: left + plot_w * (v - xt[0]) / (xt[-1] - xt[0])  # noqa: E731
    y_of = lambda v: top + plot_h * (1 - (v - yt[0]) / (yt[-1] - yt[0]))  # noqa: E731
    body = [_text(8, 16, title, extra=' font-weight="bold"'), *legend]
    body += _y_axis(yt, y_of, left, w - 16)
    for t in xt:
        body.append(_text(x_of(t), top + plot_h + 14, fmt_num(t), "middle"))
    for i, (s, ps) in enumerate(series.items()):
        c = color(i)
        if len(ps) > 1:
            d = " ".join(f"{'M' if j == 0 else 'L'}{_n(x_of(x))},{_n(y_of(y))}" for j, (x, y) in enumerate(ps))
            body.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in ps:
            body.append(f'<circle cx="{_n(x_of(x))}" cy="{_n(y_of(y))}" r="3.5" fill="{c}">'
                        f"<title>{escape(f'{s}: {y:.4f} after {x:g} runs')}</title></circle>")
    body.append(_text(left + plot_w / 2, h - 8, xlabel, "middle"))
    body.append(_text(12, top + plot_h / 2, ylabel, "middle",
                      f' transform="rotate(-90 12 {_n(top + plot_h / 2)})"'))
    return _svg(name, w, h, title, body)


def scatter(name: str, points: Sequence[tuple[float, float, str, bool]], *, title: str,
            xlabel: str = "", ylabel: str = "") -> str:
    """(x, y, label, highlighted) points; a highlighted one is drawn larger and labelled."""
    w, top, left, bottom = WIDTH, 34, 60, 44
    plot_w, plot_h = w - left - 16, 260
    h = top + plot_h + bottom
    xs, ys = [p[0] for p in points] or [0, 1], [p[1] for p in points] or [0, 1]
    xpad, ypad = (max(xs) - min(xs)) * 0.05 or 0.01, (max(ys) - min(ys)) * 0.05 or 0.01
    xt, yt = nice_ticks(min(xs) - xpad, max(xs) + xpad), nice_ticks(min(ys) - ypad, max(ys) + ypad)
    x_of = lambda v: left + plot_w * (v - xt[0]) / (xt[-1] - xt[0])  # noqa: E731
    y_of = lambda v: top + plot_h * (1 - (v - yt[0]) / (yt[-1] - yt[0]))  # noqa: E731
    body = [_text(8, 16, title, extra=' font-weight="bold"')]
    body += _y_axis(yt, y_of, left, w - 16)
    for t in xt:
        body.append(_text(x_of(t), top + plot_h + 14, fmt_num(t), "middle"))
    for x, y, label, hi in sorted(points, key=lambda p: p[3]):     # highlighted ones on top
        c = color(0) if hi else "#888888"
        body.append(f'<circle cx="{_n(x_of(x))}" cy="{_n(y_of(y))}" r="{5.5 if hi else 3.5}" '
                    f'fill="{c}"><title>{escape(f"{label}: {x:.4f}, {y:.4f}")}</title></circle>')
        if hi:
            body.append(_text(x_of(x) + 8, y_of(y) - 6, label))
    body.append(_text(left + plot_w / 2, h - 8, xlabel, "middle"))
    body.append(_text(12, top + plot_h / 2, ylabel, "middle",
                      f' transform="rotate(-90 12 {_n(top + plot_h / 2)})"'))
    return _svg(name, w, h, title, body)


def _log_ticks(top: float) -> list[int]:
    """1, 10, 100, ... up to the first power of ten at or above top (the baseline is 0)."""
    ticks, t = [1], 1
    while t < top:
        t *= 10
        ticks.append(t)
    return ticks


def log_counts(counts: Sequence[int]) -> bool:
    """Whether a histogram needs a log count axis: its tallest bin holds more than half
    of its documents (and at least 10), which flattens the other bins on a linear axis."""
    peak = max(counts, default=0)
    return peak > sum(counts) / 2 and peak >= 10


def histograms(name: str, panels: Sequence[tuple[str, Sequence[int], float | None]], *,
               title: str, per_row: int = 3) -> str:
    """Small multiples of histograms over [0, 1] (equal-width bins), each with a count
    axis and a dashed line at its threshold when it has one. A panel whose tallest bin
    holds more than half its documents gets a log count axis (position log10(1 + count),
    said in its label), so the bins beside the tall one stay readable."""
    pw, ph, gap = (WIDTH - 16) / per_row, 150, 10
    nrows = max(1, math.ceil(len(panels) / per_row))
    w, h = WIDTH, 26 + nrows * (ph + gap)
    body = [_text(8, 16, title, extra=' font-weight="bold"')]
    for k, (label, counts, thr) in enumerate(panels):
        x0, y0 = 8 + (k % per_row) * pw, 26 + (k // per_row) * (ph + gap)
        ix, iy, iw, ih = x0 + 36, y0 + 22, pw - 48, ph - 44
        peak, total = max(counts, default=0), sum(counts)
        log = log_counts(counts)
        if log:
            ticks = _log_ticks(peak)
            scale = math.log10(1 + ticks[-1])
            y_of = lambda v: iy + ih * (1 - math.log10(1 + v) / scale)  # noqa: E731
        else:
            ticks = nice_ticks(0, peak or 1, 3)
            y_of = lambda v: iy + ih * (1 - v / ticks[-1])  # noqa: E731
        body.append(_text(x0 + 6, y0 + 12, f"{label} (n={total:,}" + (", log count axis)" if log else ")")))
        axis = [f'<line x1="{_n(ix)}" y1="{_n(iy)}" x2="{_n(ix)}" y2="{_n(iy + ih)}" stroke="#999"/>']
        for t in ticks:
            axis.append(f'<line x1="{_n(ix - 3)}" y1="{_n(y_of(t))}" x2="{_n(ix + iw)}" y2="{_n(y_of(t))}" '
                        f'stroke="#eee"/>')
            axis.append(_text(ix - 5, y_of(t) + 4, fmt_num(t), "end"))
        body.append(f'<g class="count-axis" data-scale="{"log" if log else "linear"}">' + "".join(axis) + "</g>")
        body.append(f'<line x1="{_n(ix)}" y1="{_n(iy + ih)}" x2="{_n(ix + iw)}" '
                    f'y2="{_n(iy + ih)}" stroke="#999"/>')
        bw = iw / max(len(counts), 1)
        for i, c in enumerate(counts):
            bh = iy + ih - y_of(c)
            lo = i / len(counts)
            body.append(_rect(ix + i * bw + 0.5, iy + ih - bh, bw - 1, bh, color(0),
                              f"{label}: {c:,} in [{lo:.2f}, {lo + 1 / len(counts):.2f})"))
        for t in (0, 0.5, 1):
            body.append(_text(ix + iw * t, iy + ih + 12, f"{t:g}", "middle"))
        if thr is not None:
            x = ix + iw * min(max(thr, 0), 1)
            body.append(f'<line x1="{_n(x)}" y1="{_n(iy - 4)}" x2="{_n(x)}" y2="{_n(iy + ih)}" '
                        f'stroke="#d62728" stroke-width="1.5" stroke-dasharray="4 3">'
                        f"<title>{escape(f'threshold {thr:.4f}')}</title></line>")
    return _svg(name, w, h, title, body)


def dot_errorbars(name: str, categories: Sequence[str],
                  series: Sequence[tuple[str, Sequence[float], Sequence[float], bool]], *,
                  title: str, ylabel: str = "") -> str:
    """Per category, one dot per series at its mean with a bar of plus or minus one
    standard deviation; emphasised series get a larger, outlined dot."""
    legend, lh = _legend([(s[0], color(i)) for i, s in enumerate(series)], 60, 26, WIDTH - 76)
    w, top, left, bottom, plot_h = WIDTH, 34 + lh, 60, 40, 240
    h = top + plot_h + bottom
    vals = [m + sgn * sd for _, ms, sds, _ in series for m, sd in zip(ms, sds) for sgn in (-1, 1)
            if math.isfinite(m)]
    lo, hi = min(vals, default=0), max(vals, default=1)
    pad = (hi - lo) * 0.05 or 0.01
    yt = nice_ticks(lo - pad, hi + pad)
    plot_w = w - left - 16
    y_of = lambda v: top + plot_h * (1 - (v - yt[0]) / (yt[-1] - yt[0]))  # noqa: E731
    body = [_text(8, 16, title, extra=' font-weight="bold"'), *legend]
    body += _y_axis(yt, y_of, left, w - 16)
    slot = plot_w / max(len(categories), 1)
    k = max(len(series), 1)
    for ci, cat in enumerate(categories):
        cx = left + slot * ci
        body.append(_text(cx + slot / 2, top + plot_h + 14, cat, "middle"))
        for si, (label, means, sds, emph) in enumerate(series):
            m, sd = means[ci], sds[ci]
            if not math.isfinite(m):
                continue
            x = cx + slot * (0.2 + 0.6 * (si + 0.5) / k)
            c = color(si)
            body.append(f'<line x1="{_n(x)}" y1="{_n(y_of(m - sd))}" x2="{_n(x)}" '
                        f'y2="{_n(y_of(m + sd))}" stroke="{c}" stroke-width="1.5"/>')
            outline = ' stroke="#000" stroke-width="1.5"' if emph else ""
            body.append(f'<circle cx="{_n(x)}" cy="{_n(y_of(m))}" r="{5 if emph else 3.5}" '
                        f'fill="{c}"{outline}><title>{escape(f"{label}, {cat}: {m:.4f} ± {sd:.4f}")}'
                        f"</title></circle>")
    body.append(_text(12, top + plot_h / 2, ylabel, "middle",
                      f' transform="rotate(-90 12 {_n(top + plot_h / 2)})"'))
    return _svg(name, w, h, title, body)
