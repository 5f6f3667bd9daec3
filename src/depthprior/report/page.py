"""The report's HTML: one file, inline CSS and a few lines of vanilla JS, nothing fetched.

Series plots are inlined (base64 PNG); per-frame pictures are relative links into the assets
folder beside the page, loaded lazily.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import quote

from .. import __version__
from .data import STATUSES, Frame, SceneData
from .plots import SeriesPlot

#: the grid's sort keys: data attribute -> label
SORT_KEYS = {
    "rank": "problems first", "frame": "frame order", "scale": "scale", "offset": "offset",
    "inliers": "inlier ratio", "residual": "residual", "points": "SfM points", "levels": "levels",
    "excluded": "excluded fraction",
}


FIT_CAPTION = ('fit: <span class="in">&bull; inliers</span> <span class="out">&times; '
               'outliers</span> &mdash; line')


@dataclass
class FrameView:
    """What the page shows of a frame beyond its data: picture links (relative) and notes."""

    photo: str | None = None
    prior: str | None = None
    overlay: str | None = None
    exclusion: str | None = None  # the photo tinted where the exclusion mask leaves it out
    scatter: str | None = None
    size: tuple[int, int] = (240, 180)  # thumbnail width, height
    mask_trusted: float | None = None
    scatter_ranges: tuple[tuple[float, float], tuple[float, float]] | None = None
    notes: list[str] = field(default_factory=list)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 100:.3g}%"


def render(scene: SceneData, views: dict[int, FrameView], plots: list[SeriesPlot]) -> str:
    frames = sorted(scene.frames, key=lambda f: (f.rank, f.index))
    body = "\n".join([
        f"<h1>depthprior report: {esc(scene.out.name or scene.out)}</h1>",
        _summary(scene),
        _plots(plots),
        _problems(frames),
        _controls(scene),
        '<div id="grid" class="grid">',
        *(_card(frame, views.get(frame.index, FrameView())) for frame in frames),
        "</div>",
    ])
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return PAGE.format(title=esc(f"depthprior report: {scene.out}"), style=STYLE, body=body,
                       script=SCRIPT, footer=esc(f"depthprior {__version__}, {created}"))


# ---------------------------------------------------------------- summary

def _table(rows: Iterable[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


def _summary(scene: SceneData) -> str:
    counts = scene.counts()
    manifest = scene.manifest
    records = [r for r in manifest.images.values() if r.ok] if manifest is not None else []
    bits = [r.precision_bits for r in records]
    identity, backend = (manifest.identity, manifest.backend) if manifest is not None else ({}, {})
    generated = [
        ("folder", scene.out), ("images", counts["images"]), ("done", counts["done"]),
        ("failed", counts["failed"]), ("flagged", counts["flagged"]),
        ("precision", f"{min(bits):.1f}-{max(bits):.1f} bits" if bits else "-"),
        ("model", identity.get("model") or backend.get("model") or "-"),
        ("backend", identity.get("backend") or backend.get("name") or "-"),
    ]
    generated += [(key, identity[key]) for key in ("revision", "input_size", "dtype", "device",
                                                   "format", "preprocessing")
                  if identity.get(key) not in (None, "")]
    parts = ['<section class="summary"><div><h2>Priors</h2>', _table(generated), "</div>"]
    parts.append(_fit_summary(scene))
    if scene.consistency:
        parts += ["<div><h2>Consistency</h2>", _table(scene.consistency.items()), "</div>"]
    parts.append("</section>")
    return "".join(parts)


def _fit_summary(scene: SceneData) -> str:
    fits = scene.fit_counts()
    if fits is None:
        return ("<div><h2>Fit</h2><p>No SfM model given (--sparse): no fits, plots or "
                "scatters.</p></div>")
    rows = [("params", scene.params), ("method", scene.method or "-"),
            ("median scale", number(scene.median_scale)), *fits.items()]
    return "<div><h2>Fit</h2>" + _table(rows) + "</div>"


def _plots(plots: list[SeriesPlot]) -> str:
    if not plots:
        return ""
    parts = ['<section class="plots"><h2>Over frame order</h2>']
    for number_, plot in enumerate(plots):
        data = base64.b64encode(plot.png).decode("ascii")
        areas = "".join(
            f'<area shape="circle" coords="{x:.0f},{y:.0f},7" href="#frame-{i}" '
            f'alt="frame {i}">' for i, x, y in plot.marks)
        parts.append(f'<figure><img src="data:image/png;base64,{data}" usemap="#plot{number_}" '
                     f'width="{plot.width}" height="{plot.height}" alt="{esc(plot.title)}">'
                     f'<map name="plot{number_}">{areas}</map></figure>')
    parts.append("</section>")
    return "".join(parts)


def _frame_link(frame: Frame) -> str:
    return f'<a href="#frame-{frame.index}">{esc(frame.name)}</a>'


def _problems(frames: list[Frame]) -> str:
    rows = [f for f in frames if f.status != "ok" or f.marks]
    if not rows:
        return '<section><h2>Problems</h2><p>None: every frame is ok.</p></section>'
    items = "".join(
        f'<li class="{f.status}"><b>{f.status}</b> {_frame_link(f)}: '
        f'{esc("; ".join(f.reasons + f.marks))}</li>' for f in rows)
    return f'<section><h2>Problems ({len(rows)})</h2><ul id="problems">{items}</ul></section>'


def _controls(scene: SceneData) -> str:
    counts = scene.status_counts()
    options = f'<option value="all">all ({len(scene.frames)})</option>' + "".join(
        f'<option value="{s}">{s} ({counts[s]})</option>' for s in STATUSES)
    sorts = "".join(f'<option value="{k}">{esc(v)}</option>' for k, v in SORT_KEYS.items())
    return (f'<section class="controls"><h2>Frames</h2>'
            f'<label>status <select id="filter">{options}</select></label> '
            f'<label>sort by <select id="sort">{sorts}</select></label> '
            f'<label><input type="checkbox" id="descending"> descending</label> '
            f'<span id="shown"></span></section>')


# ---------------------------------------------------------------- cards

def _card(frame: Frame, view: FrameView) -> str:
    figures = frame.figures()
    figures["rank"] = float(frame.rank)
    data = " ".join(f'data-{k}="{"" if v is None or not math.isfinite(v) else repr(v)}"'
                    for k, v in figures.items())
    pictures = "".join(_picture(src, label, view.size) for src, label in (
        (view.photo, "photo"), (view.prior, "prior"), (view.exclusion, "excluded"),
        (view.overlay, "mask")) if src)
    if view.scatter:
        pictures += _picture(view.scatter, "fit", (260, 200), _ranges(view.scatter_ranges))
    reasons = "".join(f"<li>{esc(r)}</li>" for r in frame.reasons + frame.marks + view.notes)
    return (f'<article class="card {frame.status}" id="frame-{frame.index}" '
            f'data-status="{frame.status}" {data}>'
            f'<header><span class="badge">{frame.status}</span> #{frame.index} '
            f'<span class="name">{esc(frame.name)}</span></header>'
            f'{f"<ul class=reasons>{reasons}</ul>" if reasons else ""}'
            f'<div class="pics">{pictures}</div>{_numbers(frame, view)}</article>')


def _ranges(ranges: tuple[tuple[float, float], tuple[float, float]] | None) -> str:
    if ranges is None:
        return FIT_CAPTION
    (x_low, x_high), (y_low, y_high) = ranges
    return (f"{FIT_CAPTION}<br>prior {number(x_low)} to {number(x_high)}, "
            f"1/z {number(y_low)} to {number(y_high)}")


def _picture(src: str, label: str, size: tuple[int, int], caption: str | None = None) -> str:
    width, height = size
    caption = caption or label
    return (f'<figure><img loading="lazy" src="{esc(quote(src))}" width="{width}" '
            f'height="{height}" alt="{label}"><figcaption>{caption}</figcaption></figure>')


def _numbers(frame: Frame, view: FrameView) -> str:
    record, fit = frame.record, frame.fit
    rows: list[tuple[str, str]] = []
    if record is not None and record.ok:
        rows += [("size", f"{record.width}x{record.height}"), ("levels", str(record.levels)),
                 ("bits", f"{record.precision_bits:.1f}"), ("source", record.source)]
    if fit is not None:
        rows += [("fit", fit.status), ("scale", number(fit.scale)), ("offset", number(fit.offset)),
                 ("points", "-" if fit.points is None else str(fit.points)),
                 ("inliers", percent(fit.inlier_ratio)), ("rejected", percent(fit.rejected)),
                 ("residual", percent(fit.residual))]
    if view.mask_trusted is not None:
        rows.append(("mask trusted", percent(view.mask_trusted)))
    if frame.excluded is not None:
        rows.append(("excluded", percent(frame.excluded)))
    return _table(rows)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title><style>{style}</style></head>
<body>{body}
<footer>{footer}</footer>
<script>{script}</script></body></html>
"""

STYLE = """
body{font:13px system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px}h2{font-size:15px;margin:14px 0 6px}
.summary{display:flex;gap:32px;flex-wrap:wrap}
table.kv th{text-align:left;font-weight:normal;color:#666;padding-right:10px}
.plots{display:flex;flex-wrap:wrap;gap:6px}.plots h2{width:100%}.plots figure{margin:0}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ddd;border-left:5px solid #4caf50;padding:6px;
 max-width:1040px}
.card.failed{border-left-color:#d62728}.card.flagged{border-left-color:#ff9800}
.card.unreliable{border-left-color:#e6c229}
.card[hidden]{display:none}
.card:target{outline:3px solid #1f77b4}
.badge{font-weight:bold;text-transform:uppercase;font-size:11px}
.name{font-family:monospace}
.pics{display:flex;gap:6px;flex-wrap:wrap}
.pics figure{margin:0}.pics img{background:#eee;display:block;height:auto;max-width:260px}
figcaption{font-size:11px;color:#666}.in{color:#1f77b4}.out{color:#d62728}
ul.reasons{margin:4px 0;padding-left:18px;color:#a00}
#problems li.failed b{color:#d62728}#problems li.flagged b{color:#ff9800}
footer{margin-top:20px;color:#888;font-size:11px}
"""

SCRIPT = """
(function () {
  var grid = document.getElementById('grid');
  var cards = Array.prototype.slice.call(grid.children);
  var filter = document.getElementById('filter');
  var sort = document.getElementById('sort');
  var descending = document.getElementById('descending');
  var shown = document.getElementById('shown');
  function value(card, key) {
    var text = card.dataset[key];
    return text === undefined || text === '' ? NaN : parseFloat(text);
  }
  function apply() {
    var status = filter.value, key = sort.value, sign = descending.checked ? -1 : 1, count = 0;
    cards.forEach(function (card) {
      card.hidden = status !== 'all' && card.dataset.status !== status;
      if (!card.hidden) { count += 1; }
    });
    cards.slice().sort(function (a, b) {
      var x = value(a, key), y = value(b, key);
      var tie = value(a, 'frame') - value(b, 'frame');
      if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y) || tie; }
      return sign * (x - y) || tie;
    }).forEach(function (card) { grid.appendChild(card); });
    shown.textContent = count + ' shown';
  }
  function reveal() {
    var card = location.hash ? document.getElementById(location.hash.slice(1)) : null;
    if (card && card.hidden) { filter.value = 'all'; apply(); card.scrollIntoView(); }
  }
  filter.addEventListener('change', apply);
  sort.addEventListener('change', apply);
  descending.addEventListener('change', apply);
  window.addEventListener('hashchange', reveal);
  apply();
})();
"""
