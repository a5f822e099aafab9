"""The audit of a folder as one self-contained HTML file, and as CSV.

The HTML file opens from disk and requests nothing: thumbnails are embedded as data: URIs
(downscaled to at most THUMB_SIDE pixels, JPEG, at most THUMB_BYTES each), the histogram is inline
SVG, and a Content-Security-Policy forbids every fetch (only data: images, the inline style and the
one inline script, pinned by its hash, which filters rows by tier). Pack text (captions, URLs,
sources, licenses) is scraped data: it is escaped everywhere, cut to a bounded length, and only
plain http(s) URLs become links. Remote thumbnails are never loaded.

Size bound: a report of n images of which f are flagged is at most `max_report_bytes(n, f)`:
BASE_BYTES + n * ROW_BYTES + f * FLAGGED_TEXT_BYTES + min(f, MAX_IMAGE_ROWS) * IMAGE_ROW_BYTES
(1 + MAX_MATCHES_SHOWN thumbnails per flagged image, for the MAX_IMAGE_ROWS most similar ones):
about 4 MB for 1,000 images plus 180 KB per flagged one, whatever the packs' text holds.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import math
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lib_replicheck.atomic import write_atomic
from lib_replicheck.errors import ReplicheckError, name_text
from lib_replicheck.report import NOT_CHECKED, Match, Report
from lib_replicheck.thresholds import NORMALISED_REGION_TIERS, REGION_TIERS, TIER_NAMES, Tiers, Verdict

THUMB_SIDE = 256  # pixels, the longer side of every thumbnail
THUMB_BYTES = 24_000  # JPEG bytes of one thumbnail at most (quality lowered, then size, to fit)
MAX_MATCHES_SHOWN = 3  # nearest training images shown beside each flagged image
MAX_IMAGE_ROWS = 500  # flagged images shown with thumbnails (the most similar); the rest as text rows
MAX_CAPTION = 300
MAX_FIELD = 200
MAX_ERROR = 300
HIST_BINS = 50

#: Bytes of the page around the rows (style, script, summary, histogram), at most.
BASE_BYTES = 96_000
#: Bytes of one image's text row (name, verdict, nearest caption, or its error), at most.
ROW_BYTES = 4_000
#: Bytes of the text of one flagged image's row (name, verdict, the matches' captions, links, licenses), at most.
FLAGGED_TEXT_BYTES = 40_000
MAX_URL = 1000
#: Bytes of the thumbnails of one flagged image (base64 of 1 + MAX_MATCHES_SHOWN JPEGs), at most.
IMAGE_ROW_BYTES = (1 + MAX_MATCHES_SHOWN) * (4 * (THUMB_BYTES + 2) // 3 + 400)

TIER_CLASS = {Verdict.NONE: "t-none", Verdict.POSSIBLE: "t-possible", Verdict.LIKELY: "t-likely",
              Verdict.DUPLICATE: "t-duplicate"}


def max_report_bytes(n_images: int, n_flagged: int) -> int:
    """The most bytes the HTML report of `n_images` images, `n_flagged` of them flagged, can take."""
    return (BASE_BYTES + n_images * ROW_BYTES + n_flagged * FLAGGED_TEXT_BYTES
            + min(n_flagged, MAX_IMAGE_ROWS) * IMAGE_ROW_BYTES)


# -- safe text -------------------------------------------------------------------------------------

def clip(text, limit: int = MAX_FIELD) -> str:
    """One line of at most `limit` characters: control and format characters (bidi overrides,
    zero-width marks) dropped, whitespace runs collapsed."""
    s = "" if text is None else name_text(str(text)[: limit * 4])  # a file name that is not UTF-8 stays writable
    s = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in s
                if unicodedata.category(ch) != "Cf")
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def esc(text, limit: int = MAX_FIELD) -> str:
    """Clipped, then escaped for HTML text and attribute values."""
    return html.escape(clip(text, limit), quote=True)


def safe_url(url, limit: int = MAX_URL) -> str | None:
    """The URL if it is a plain http(s) URL with a host and nothing that could end an attribute
    (the web UI panel uses it too, with its own length limit)."""
    if not isinstance(url, str) or not url or len(url) > limit:
        return None
    url = url.strip()
    if any(ord(c) < 33 or c in "\"'<>`\\" for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def link(url, text) -> str:
    """An <a> for a safe http(s) URL, else the text alone."""
    u = safe_url(url)
    if u is None:
        return esc(text)
    return (f'<a href="{html.escape(u, quote=True)}" target="_blank" rel="noopener noreferrer nofollow" '
            f'referrerpolicy="no-referrer">{esc(text)}</a>')


def record_link(report: Report) -> str:
    """A link to the signed copy that holds the record of the image's check (check --sign), opened
    from disk like the report; empty when the image was not signed."""
    if not report.record:
        return ""
    try:
        uri = Path(report.record).resolve().as_uri()
    except (OSError, ValueError):
        return ""
    if len(uri) > MAX_URL:
        return ""
    return (f' <a class="record" href="{html.escape(uri, quote=True)}" title="{esc(report.record, 300)}">'
            "signed record</a>")


# -- thumbnails ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Thumb:
    uri: str  # data:image/jpeg;base64,...
    width: int  # of the thumbnail
    height: int
    source_width: int  # of the image it was made from
    source_height: int


def thumbnail(path: str | Path, side: int = THUMB_SIDE, max_bytes: int = THUMB_BYTES) -> Thumb | None:
    """A JPEG data: URI of the image at `path`, at most `side` pixels and `max_bytes` bytes; None when
    it cannot be read. Decoded by images.decode (the pixel cap and formats of every check)."""
    from PIL import Image

    from lib_replicheck.errors import ImageError
    from lib_replicheck.images import decode

    try:
        im = decode(Path(path))
    except (ImageError, OSError):
        return None
    w0, h0 = im.size
    for s in (side, side * 3 // 4, side // 2):
        small = im.copy()
        small.thumbnail((s, s), Image.Resampling.LANCZOS)
        for quality in (80, 65, 50, 35):
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=quality, optimize=True)
            if buf.tell() <= max_bytes:
                uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
                return Thumb(uri, small.width, small.height, w0, h0)
    return None


# -- the page --------------------------------------------------------------------------------------

STYLE = """
:root { --fg: #1d1d1f; --muted: #666; --line: #ddd; --possible: #b26b00; --likely: #c2410c; --duplicate: #b91c1c;
        --none: #2f7d32; }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); margin: 20px auto; max-width: 1180px; padding: 0 12px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 24px 0 8px; }
.muted { color: var(--muted); }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid var(--line); padding: 3px 10px 3px 0;
  text-align: left; vertical-align: top; }
.counts { display: flex; gap: 10px; flex-wrap: wrap; margin: 10px 0; }
.count { border: 1px solid var(--line); border-radius: 8px; padding: 6px 12px; min-width: 90px; }
.count b { display: block; font-size: 22px; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 9px; color: #fff; font-weight: 600; font-size: 12px; }
.t-none { background: var(--none); } .t-possible { background: var(--possible); }
.t-likely { background: var(--likely); } .t-duplicate { background: var(--duplicate); } .t-error { background: #555; }
.filters button { border: 1px solid var(--line); background: #f6f6f6; border-radius: 14px; padding: 3px 12px;
  margin-right: 6px; cursor: pointer; font: inherit; }
.filters button[aria-pressed="true"] { background: #1d1d1f; color: #fff; }
.row { border: 1px solid var(--line); border-radius: 10px; padding: 10px 12px; margin: 12px 0; }
.row header { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; margin-bottom: 8px; }
.row .name { font-weight: 600; word-break: break-all; }
.pair { display: flex; gap: 12px; flex-wrap: wrap; }
figure { margin: 0; width: 256px; }
.frame { width: 256px; height: 256px; display: flex; align-items: center; justify-content: center;
  background: #f2f2f2; border-radius: 6px; overflow: hidden; }
.shot { position: relative; display: inline-block; line-height: 0; }
.shot img { display: block; }
.region { position: absolute; border: 3px solid #e11d48; box-shadow: 0 0 0 1px #fff; box-sizing: border-box; }
.nothumb { color: var(--muted); font-size: 12px; padding: 10px; text-align: center; line-height: 1.4; }
figcaption { font-size: 12px; margin-top: 4px; word-break: break-word; }
figcaption .score { font-size: 15px; font-weight: 700; }
.caption { font-style: italic; }
details { margin: 10px 0; } summary { cursor: pointer; font-weight: 600; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
"""

SCRIPT = """
document.querySelectorAll('.filters button').forEach(function (b) {
  b.addEventListener('click', function () {
    var t = b.getAttribute('data-filter');
    document.querySelectorAll('.row').forEach(function (r) {
      r.hidden = t !== 'all' && r.getAttribute('data-tier') !== t;
    });
    document.querySelectorAll('.filters button').forEach(function (x) {
      x.setAttribute('aria-pressed', x === b ? 'true' : 'false');
    });
  });
});
"""


def csp() -> str:
    """The Content-Security-Policy of the report: no fetch at all, only data: images and its own script."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "form-action 'none'; base-uri 'none'")


def display_name(image: str, roots: list[str]) -> str:
    """The image's path relative to the folder the user named, where it lies inside one."""
    p = Path(image)
    for r in roots:
        try:
            rel = p.relative_to(r)
        except ValueError:
            continue
        if str(rel) != ".":
            return str(rel)
    return str(p)


def cut_of(tiers: Tiers, tier: str) -> float | None:
    """A tier's threshold as a similarity (a Hamming distance d of 256 bits reads as 1 - d/256)."""
    t = getattr(tiers, tier)
    if t is None:
        return None
    return 1.0 - float(t) / 256.0 if tiers.measure == "distance" else float(t)


#: What a histogram shows, per kind of score a verdict was judged on (Match.judged_on): its id and
#: the caption of its axis. Each has its own tier cuts, so each score goes on its own histogram.
HISTOGRAMS = {"whole image": ("histogram", "best similarity per image"),
              "region": ("histogram-region", "best region similarity per image (judged by the region tiers)"),
              "region above background": ("histogram-region-background",
                                          "best region score above the pack's background per image")}
#: Width of a character of the histogram's labels (11 px system-ui), in pixels, rounded up.
LABEL_CHAR_PX = 7


def histogram_svg(values: list[float], cuts: list[tuple[str, float]], width: int = 720, height: int = 220,
                  svg_id: str = "histogram", caption: str = "best similarity per image") -> str:
    """Bars of a score per image over [0, 1] (below 0 counts in the first bin), with each tier's
    cut drawn as a labelled vertical line. Labels are laid out in as many rows above the plot as
    they need not to overlap, and one that would run past the right edge ends at its line."""
    counts = [0] * HIST_BINS
    for v in values:
        if v is None or math.isnan(v):
            continue
        counts[min(HIST_BINS - 1, max(0, int(v * HIST_BINS)))] += 1
    left, right, bottom, row_h = 40, 24, 30, 13
    pw = width - left - right
    labels, rows = _label_rows(cuts, left, pw, width)
    top = 12 + row_h * max(1, rows)
    height += top - 30  # the plot keeps its height whatever the labels take
    ph = height - top - bottom
    peak = max(counts) or 1
    bw = pw / HIST_BINS
    parts = [f'<svg id="{esc(svg_id, 60)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(caption)}">',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>',
             f'<text x="{left - 6}" y="{top + ph}" text-anchor="end">0</text>']
    for i, c in enumerate(counts):
        if not c:
            continue
        h = ph * c / peak
        lo = i / HIST_BINS
        parts.append(f'<rect class="bar" data-count="{c}" x="{left + i * bw + 1:.1f}" y="{top + ph - h:.1f}" '
                     f'width="{max(1.0, bw - 2):.1f}" height="{h:.1f}" fill="#6b7280">'
                     f'<title>{c} image(s) at {lo:.2f}–{lo + 1 / HIST_BINS:.2f}</title></rect>')
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{left + t * pw:.1f}" y="{top + ph + 16}" text-anchor="middle">{t:.2f}</text>')
    colours = {"possible": "#b26b00", "likely": "#c2410c", "duplicate": "#b91c1c"}
    for label, x, row, at_end in labels:
        colour = colours.get(label.split()[-2] if len(label.split()) > 1 else "", "#b91c1c")
        y_text = top - 8 - row * row_h
        parts.append(f'<line class="cut" x1="{x:.1f}" y1="{y_text + 3}" x2="{x:.1f}" y2="{top + ph}" '
                     f'stroke="{colour}" stroke-width="2" stroke-dasharray="5 3"/>')
        parts.append(f'<text class="cut-label" x="{x - 3 if at_end else x + 3:.1f}" y="{y_text}" fill="{colour}"'
                     + (' text-anchor="end"' if at_end else "") + f">{esc(label, 60)}</text>")
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 2}" text-anchor="middle">{esc(caption)}'
                 '</text></svg>')
    return "".join(parts)


def _label_rows(cuts: list[tuple[str, float]], left: float, pw: float, width: int):
    """Where each cut's label goes: (label, x of its line, row above the plot, whether it ends at the
    line), rows filled left to right so no two labels of a row overlap; and the number of rows."""
    placed, row_ends = [], []  # row_ends[r]: the right end of the last label in row r
    for label, cut in sorted(cuts, key=lambda c: c[1]):
        x = left + max(0.0, min(1.0, cut)) * pw
        span = LABEL_CHAR_PX * len(clip(label, 60)) + 3
        at_end = x + span > width
        start, stop = (x - span, x) if at_end else (x, x + span)
        row = next((r for r, e in enumerate(row_ends) if start > e + 4), len(row_ends))
        if row == len(row_ends):
            row_ends.append(stop)
        row_ends[row] = stop
        placed.append((label, x, row, at_end))
    return placed, len(row_ends)


def _cuts(audit, judged_on: str = "whole image") -> list[tuple[str, float]]:
    """The tier cuts scores judged `judged_on` (Match.judged_on) are judged by, as (label, cut)."""
    families = []
    for p in audit.packs:
        if p.family not in families:
            families.append(p.family)
    table = {"whole image": audit.tiers, "region": REGION_TIERS,
             "region above background": NORMALISED_REGION_TIERS}[judged_on]
    cuts = []
    for fam in families:
        tiers = table.get(fam)
        if tiers is None:
            continue
        for tier in TIER_NAMES:
            c = cut_of(tiers, tier)
            if c is not None:
                cuts.append((f"{fam} {tier} {math.floor(c * 100 + 1e-6) / 100:.2f}", c))  # as scores read
    return cuts


def histograms(audit) -> str:
    """One histogram per kind of score the verdicts were judged on: the best similarity of the
    whole image (always), and where region search judged some images, their regions' scores, each
    with its own tier cuts. An image counts once, on the histogram of its best match's score."""
    values: dict[str, list[float]] = {kind: [] for kind in HISTOGRAMS}
    for r in audit.reports:
        if r.checked and r.best is not None:
            values[r.best.judged_on].append(r.best.judged_score())
    parts = []
    for kind, (svg_id, caption) in HISTOGRAMS.items():
        if kind != "whole image" and not values[kind]:
            continue
        if kind != "whole image":
            parts.append(f"<h3>{len(values[kind])} image(s) judged on a region: {esc(caption)}</h3>")
        parts.append(histogram_svg(values[kind], _cuts(audit, kind), svg_id=svg_id, caption=caption))
    return "".join(parts)


def _region_style(region, width: int, height: int) -> str | None:
    """CSS for the box of the matching region over the checked image's thumbnail, as percentages.
    `region`: a regions.Region (x, y, w, h in pixels of the checked image, and that image's size
    image_w, image_h), or the same as a dict; without image_w/image_h the box is in pixels of an
    image `width` x `height`, or in fractions of it when all four values are at most 1. None when
    there is no usable region."""
    if region is None:
        return None

    def get(key):
        return region.get(key) if isinstance(region, dict) else getattr(region, key, None)

    try:
        x, y, w, h = (float(get(k)) for k in ("x", "y", "w", "h"))
        iw, ih = get("image_w"), get("image_h")
        iw, ih = (float(iw), float(ih)) if iw is not None and ih is not None else (None, None)
    except (TypeError, ValueError):
        return None
    if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0:
        return None
    if iw is None:
        if max(x, y, w, h) <= 1.0:
            iw = ih = 1.0
        else:
            iw, ih = float(width or 0), float(height or 0)
    if not iw or not ih or not math.isfinite(iw) or not math.isfinite(ih) or iw <= 0 or ih <= 0:
        return None
    x, w, y, h = x / iw, w / iw, y / ih, h / ih
    x, y = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    w, h = min(w, 1.0 - x), min(h, 1.0 - y)
    if w <= 0 or h <= 0:
        return None
    return f"left:{x * 100:.2f}%;top:{y * 100:.2f}%;width:{w * 100:.2f}%;height:{h * 100:.2f}%"


def _img(thumb: Thumb | None, alt: str, missing: str, region_css: str | None = None) -> str:
    if thumb is None:
        return f'<div class="frame"><div class="nothumb">{esc(missing)}</div></div>'
    box = f'<span class="region" style="{region_css}"></span>' if region_css else ""
    return (f'<div class="frame"><span class="shot"><img src="{thumb.uri}" width="{thumb.width}" '
            f'height="{thumb.height}" alt="{esc(alt)}">{box}</span></div>')


def _match_figure(m: Match, with_images: bool) -> str:
    thumb = thumbnail(m.thumbnail) if with_images and m.thumbnail else None
    missing = "no thumbnail in this pack (open the source link)" if with_images else "thumbnails left out"
    score = f'<span class="score">{esc(m.score_label())}</span> '
    distance = f' <span class="muted">(Hamming distance {int(m.distance)} of 256)</span>' if m.distance is not None else ""
    caption = f'<div class="caption">“{esc(m.caption, MAX_CAPTION)}”</div>' if m.caption else ""
    where = m.url or m.source
    source = f'<div class="source">source: {link(m.url, where)}</div>' if where else ""
    lic = f'<div class="license">license: {esc(m.license)}</div>' if m.license else ""
    pack = f'<div class="pack muted">pack {esc(m.pack, 64)} · #{int(m.id)} · {esc(m.embedder, 64)}</div>'
    box = _region_text(getattr(m, "region", None))  # digits and commas only
    where_found = ""
    if box:
        x, y, w, h = box.split(",")
        judged = f"; {m.background_text()}" if m.background is not None else ""
        where_found = (f'<div class="found muted">found in the region {w}×{h} at ({x}, {y}) of the checked '
                       f'image{esc(judged)}</div>')
    return (f'<figure class="match">{_img(thumb, f"training image {m.id}", missing)}<figcaption>{score}'
            f'<span class="badge {TIER_CLASS.get(m.verdict, "t-none")}">{esc(m.verdict.value)}</span>{distance}'
            f'{caption}{source}{lic}{pack}{where_found}</figcaption></figure>')


def flagged_row(report: Report, rank: int, roots: list[str], with_images: bool = True) -> str:
    """One flagged image: the checked image beside its nearest training images, at the same size."""
    name = display_name(report.image, roots)
    thumb = thumbnail(report.image) if with_images else None
    best = report.best
    region = None
    if best is not None and thumb is not None:
        region = _region_style(getattr(best, "region", None), thumb.source_width, thumb.source_height)
    size = f" · {thumb.source_width}×{thumb.source_height}" if thumb else ""
    checked = (f'<figure class="checked">{_img(thumb, name, "the image could not be read again" if with_images else "thumbnails left out", region)}'
               f'<figcaption>checked image{size}'
               + (' · <span class="muted">boxed: the matching region</span>' if region else "")
               + "</figcaption></figure>")
    matches = "".join(_match_figure(m, with_images) for m in report.matches[:MAX_MATCHES_SHOWN])
    notes = "".join(f'<div class="muted">{esc(n, 300)}</div>' for n in report.notes[:3])
    tier = report.verdict.value
    return (f'<section class="row" id="row-{rank}" data-rank="{rank}" data-tier="{esc(tier)}">'
            f'<header><span class="badge {TIER_CLASS.get(report.verdict, "t-none")}">{esc(tier)}</span>'
            f'<span class="name">{esc(name, MAX_FIELD)}</span>'
            f'<span class="muted">{esc(report.summary(), 300)}</span>{record_link(report)}</header>{notes}'
            f'<div class="pair">{checked}{matches}</div></section>')


def _why_not_checked(report: Report) -> str:
    """The error, or the note that explains a withheld verdict (e.g. the flat image's)."""
    return report.error or next((n for n in report.notes if n.startswith(report.withheld or "")), report.withheld)


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def render(audit, title: str = "Replicheck report") -> str:
    """The whole report as one HTML string (audit: an audit.Audit)."""
    roots = audit.roots
    flagged = audit.flagged
    unchecked = audit.not_checked
    others = sorted((r for r in audit.reports if r.checked and not r.is_copy),
                    key=lambda r: r.best.similarity if r.best else -2.0, reverse=True)
    tally = audit.counts()
    n_read = tally.images - tally.errors
    tiers_present = [v for v in (Verdict.DUPLICATE, Verdict.LIKELY, Verdict.POSSIBLE)]
    counts = "".join(f'<div class="count"><b>{tally.of(v)}</b><span class="badge {TIER_CLASS[v]}">'
                     f'{esc(v.value)}</span></div>' for v in tiers_present)
    counts = (f'<div class="count"><b>{tally.images}</b>images</div>{counts}'
              f'<div class="count"><b>{tally.none}</b><span class="badge t-none">{esc(Verdict.NONE.value)}</span></div>'
              f'<div class="count"><b>{tally.not_checked}</b><span class="badge t-error">{NOT_CHECKED}</span></div>')
    rate = f", {n_read / audit.seconds:.1f} images/s" if audit.seconds > 0 and n_read else ""
    notes = []
    if audit.cancelled:
        notes.append(f"Cancelled after {len(audit.reports)} of {audit.total} images.")
    if audit.left_out:
        notes.append(f"{audit.left_out} more image file(s) were past the limit and not checked.")
    pack_rows = "".join(f"<tr><td>{esc(p.name, 64)}</td><td>{esc(p.embedder, 64)}</td><td>{p.count:,}</td>"
                        f"<td>{esc(p.dataset)}</td><td>{esc(p.license)}</td></tr>" for p in audit.packs)
    fams = []
    for p in audit.packs:
        if p.family not in fams:
            fams.append(p.family)
    tier_rows = ""
    for fam in fams:
        t = audit.tiers.get(fam)
        if t is None:
            continue
        measure = "Hamming distance ≤" if t.measure == "distance" else "similarity ≥"
        cells = "".join(f"<td>{esc(name)}: {'off' if getattr(t, name) is None else f'{measure} {getattr(t, name):g}'}</td>"
                        for name in TIER_NAMES)
        tier_rows += f"<tr><td>{esc(fam)}</td>{cells}</tr>"
    with_images = flagged[:MAX_IMAGE_ROWS]
    rows = "".join(flagged_row(r, i + 1, roots, True) for i, r in enumerate(with_images))
    rows += "".join(flagged_row(r, i + 1, roots, False) for i, r in enumerate(flagged[MAX_IMAGE_ROWS:], MAX_IMAGE_ROWS))
    if len(flagged) > MAX_IMAGE_ROWS:
        rows += (f'<p class="muted">Thumbnails are shown for the {MAX_IMAGE_ROWS} most similar flagged images; '
                 f'{len(flagged) - MAX_IMAGE_ROWS} more are listed without them.</p>')
    filters = ('<div class="filters"><button data-filter="all" aria-pressed="true">all flagged '
               f'({len(flagged)})</button>' + "".join(
                   f'<button data-filter="{esc(v.value)}" aria-pressed="false">{esc(v.value)} ({audit.count(v)})</button>'
                   for v in tiers_present if audit.count(v)) + "</div>")
    other_rows = "".join(f'<tr><td>{esc(display_name(r.image, roots))}{record_link(r)}</td><td>{esc(r.summary(), 300)}</td>'
                         f'<td>{esc(r.best.caption, 120) if r.best and r.best.caption else ""}</td></tr>'
                         for r in others)
    unchecked_rows = "".join(f'<tr><td>{esc(display_name(r.image, roots))}</td><td>{esc(r.summary())}</td>'
                             f'<td>{esc(_why_not_checked(r), MAX_ERROR)}</td></tr>' for r in unchecked)
    roots_text = ", ".join(esc(r, 300) for r in roots) or "the images named"
    body = [f"<h1>{esc(title, 120)}</h1>",
            f'<div class="muted">{roots_text} · started {esc(audit.started)} · took {_fmt_seconds(audit.seconds)}'
            f'{rate}' + (f" (of which loading the model {_fmt_seconds(audit.load_seconds)})"
                         if audit.load_seconds >= 0.1 else "") + "</div>",
            *(f"<p><b>{esc(n, 300)}</b></p>" for n in notes),
            f'<p id="count-line">{esc(tally.text(), 300)}</p><div class="counts">{counts}</div>',
            "<h2>Packs searched</h2><table><tr><th>pack</th><th>embedder</th><th>images</th><th>dataset</th>"
            f"<th>license</th></tr>{pack_rows}</table>",
            f"<h2>Thresholds</h2><table>{tier_rows}</table>",
            "<h2>Best similarity per image</h2>", histograms(audit),
            f"<h2>Flagged images, most similar first ({len(flagged)})</h2>",
            filters if flagged else '<p>No image was flagged.</p>', f'<div id="flagged">{rows}</div>',
            f'<details id="unflagged"><summary>{len(others)} image(s) with no copy, closest first</summary>'
            f"<table><tr><th>image</th><th>verdict</th><th>nearest training image</th></tr>{other_rows}"
            "</table></details>"]
    if unchecked:
        body.append(f'<details id="errors" open><summary>{len(unchecked)} image(s) {NOT_CHECKED}</summary>'
                    f"<table><tr><th>file</th><th>verdict</th><th>why</th></tr>{unchecked_rows}</table></details>")
    body.append('<p class="muted">Made by replicheck. Scores are SSCD/CLIP cosine similarities; PDQ distances '
                "read as 1 − d/256. Links lead to the training images' sources; nothing on this page loads "
                "from the network.</p>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">" + REPORT_MARKER +
            f'<meta http-equiv="Content-Security-Policy" content="{csp()}">'
            '<meta name="referrer" content="no-referrer">'
            f'<meta name="viewport" content="width=device-width"><title>{esc(title, 120)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>")


# -- files -----------------------------------------------------------------------------------------

#: In the head of every report: how `is_own_output` recognises a file it may replace.
REPORT_MARKER = '<meta name="generator" content="replicheck">'
#: Bytes read from an existing file to recognise it.
RECOGNISE_BYTES = 4096


def is_own_output(path: str | Path) -> bool:
    """Whether the existing file at `path` is a report or CSV written by replicheck (its marker, the
    title of a report written before the marker, or the CSV's header row), or empty: a file that
    may be replaced without --force."""
    try:
        with open(path, "rb") as f:
            head = f.read(RECOGNISE_BYTES)
    except OSError:
        return False
    text = head.decode("utf-8", "replace")
    if not text.strip():
        return True
    return (REPORT_MARKER in text or text.startswith(",".join(CSV_COLUMNS[:4]) + ",")
            or (text.lower().startswith("<!doctype html>") and "<title>Replicheck report" in text))


def check_overwrite(path: str | Path, option: str, force: bool = False) -> None:
    """ReplicheckError when writing `path` would replace what is not ours: an existing file that is
    not a replicheck report or CSV (unless `force`), or anything but a regular file (a folder, a
    device, a pipe: never, even with `force`)."""
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ReplicheckError(f"{option} {name_text(str(path))}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ReplicheckError(f"{option} {name_text(str(path))}: is a folder; name the file to write")
    if not stat.S_ISREG(st.st_mode):
        raise ReplicheckError(f"{option} {name_text(str(path))}: is not a regular file; name a file to write")
    if not force and not is_own_output(path):
        raise ReplicheckError(f"{option} {name_text(str(path))}: the file exists and is not a replicheck report; "
                              "name another file, or pass --force to replace it")

def write_html(audit, path: str | Path, title: str = "Replicheck report") -> Path:
    return write_atomic(path, render(audit, title).encode("utf-8"))


CSV_COLUMNS = ["image", "verdict", "summary", "best_similarity", "best_distance", "pack", "embedder", "training_id",
               "url", "source", "caption", "license", "region", "error"]


def _cell(text) -> str:
    """A text cell a spreadsheet will not run: one that starts like a formula gets a leading quote."""
    s = clip(text, 2000) if text is not None else ""
    return "'" + s if s[:1] in ("=", "+", "-", "@") else s


def _region_text(region) -> str:
    """'x,y,w,h' in pixels of the checked image, or '' (the whole image)."""
    try:
        return ",".join(str(int(getattr(region, k))) for k in ("x", "y", "w", "h")) if region is not None else ""
    except (TypeError, ValueError, AttributeError):
        return ""


def render_csv(audit) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in audit.reports:
        b = r.best if not r.error else None
        w.writerow([_cell(r.image), r.verdict_text, _cell(r.summary()),
                    f"{b.similarity:.4f}" if b else "", b.distance if b and b.distance is not None else "",
                    _cell(b.pack) if b else "", _cell(b.embedder) if b else "", b.id if b else "",
                    _cell(b.url) if b else "", _cell(b.source) if b else "", _cell(b.caption) if b else "",
                    _cell(b.license) if b else "", _region_text(getattr(b, "region", None)) if b else "",
                    _cell(r.error) if r.error else ""])
    return buf.getvalue()


def write_csv(audit, path: str | Path) -> Path:
    return write_atomic(path, render_csv(audit).encode("utf-8"))


# -- the web UI tab's line about a folder being checked -------------------------------------------------

REPORT_ROUTE = "/replicheck/v1/audits/{id}/report"


def job_html(job) -> str:
    """The tab's status of a folder check (audit.AuditJob): a progress bar with count, rate and time
    left while it runs, then a link that opens the report in a new tab."""
    p = job.progress
    if job.state == "error":
        return f"<p class='rc-error-text' data-state='error'>{esc(job.message, 600)}</p>"
    if job.running:
        pct = 100.0 * p.done / p.total if p.total else 0.0
        left = "" if p.seconds_left is None else f", about {_fmt_seconds(p.seconds_left)} left"
        rate = f", {p.rate:.1f} images/s" if p.rate else ""
        what = {"listing": "listing the folder", "writing": "writing the report"}.get(
            job.state, f"{p.done} of {p.total} images checked{rate}{left}; {p.flagged} flagged")
        return (f"<div class='rc-audit' data-state='{esc(job.state)}' data-done='{p.done}' data-total='{p.total}'>"
                f"<div>Checking {esc(job.folder, 300)}: {esc(what, 300)}</div>"
                f"<progress max='100' value='{pct:.1f}' style='width:100%'></progress></div>")
    url = REPORT_ROUTE.format(id=job.id)
    left_out = f" {job.left_out} more image file(s) were past the limit." if job.left_out else ""
    return (f"<div class='rc-audit' data-state='{esc(job.state)}' data-done='{p.done}' data-total='{p.total}'>"
            f"<p>{esc(job.folder, 300)}: {esc(job.message, 300)}.{esc(left_out)} "
            f"<a class='rc-report-link' href='{url}' target='_blank' rel='noopener noreferrer'>Open the report</a></p></div>")
