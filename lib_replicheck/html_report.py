"""The audit of a folder as one self-contained HTML file (the CSV: report_files.py).

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
import hashlib
import html
from pathlib import Path

from lib_replicheck import safe_text
from lib_replicheck.atomic import write_atomic
from lib_replicheck.report import NOT_CHECKED, Match, Report
from lib_replicheck.report_files import REPORT_MARKER
from lib_replicheck.report_histogram import histograms
from lib_replicheck.report_thumbnails import THUMB_BYTES, framed, region_style, region_text, thumbnail
from lib_replicheck.thresholds import TIER_NAMES, Verdict

MAX_MATCHES_SHOWN = 3  # nearest training images shown beside each flagged image
MAX_IMAGE_ROWS = 500  # flagged images shown with thumbnails (the most similar); the rest as text rows
MAX_CAPTION = 300
MAX_FIELD = 200
MAX_ERROR = 300

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


# -- safe text, with this report's limits (lib_replicheck/safe_text.py) ------------------------------

def esc(text, limit: int = MAX_FIELD) -> str:
    """One line of at most `limit` characters, escaped for HTML text and attribute values."""
    return safe_text.escape(text, limit)


def link(url, text) -> str:
    """An <a> for a safe http(s) URL, else the text alone."""
    return safe_text.link(url, text, url_limit=MAX_URL, text_limit=MAX_FIELD)


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
    box = region_text(getattr(m, "region", None))  # digits and commas only
    where_found = ""
    if box:
        x, y, w, h = box.split(",")
        judged = f"; {m.background_text()}" if m.background is not None else ""
        where_found = (f'<div class="found muted">found in the region {w}×{h} at ({x}, {y}) of the checked '
                       f'image{esc(judged)}</div>')
    if getattr(m, "geometry", None) is not None:
        where_found += f'<div class="found muted">{esc(m.geometry.text())}</div>'
    return (f'<figure class="match">{framed(thumb, f"training image {m.id}", missing)}<figcaption>{score}'
            f'<span class="badge {TIER_CLASS.get(m.verdict, "t-none")}">{esc(m.verdict.value)}</span>{distance}'
            f'{caption}{source}{lic}{pack}{where_found}</figcaption></figure>')


def matched_area(best):
    """The box to draw on the checked image: the region the best match was found through, else the area
    geometric verification matched on the training image; None for neither."""
    if best is None:
        return None
    g = getattr(best, "geometry", None)
    return best.region or (g.area if g is not None and g.verified else None)


def flagged_row(report: Report, rank: int, roots: list[str], with_images: bool = True) -> str:
    """One flagged image: the checked image beside its nearest training images, at the same size."""
    name = display_name(report.image, roots)
    thumb = thumbnail(report.image) if with_images else None
    best = report.best
    region = None
    matched = matched_area(best)
    if best is not None and thumb is not None:
        region = region_style(matched, thumb.source_width, thumb.source_height)
    size = f" · {thumb.source_width}×{thumb.source_height}" if thumb else ""
    checked = (f'<figure class="checked">{framed(thumb, name, "the image could not be read again" if with_images else "thumbnails left out", region)}'
               f'<figcaption>checked image{size}'
               + (f' · <span class="muted">boxed: {"the matching region" if best.region else "the area whose features match"}'
                  '</span>' if region else "")
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


def duration_text(s: float) -> str:
    """'12.3 s', '4 min 05 s', '2 h 03 min'."""
    if s < 120:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def render(audit, title: str = "Replicheck report") -> str:
    """The whole report as one HTML string (audit: an audit.Audit)."""
    roots = audit.roots
    flagged = audit.flagged
    unchecked = audit.not_checked
    others = sorted((r for r in audit.reports if r.checked and not r.flagged()),
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
            f'<div class="muted">{roots_text} · started {esc(audit.started)} · took {duration_text(audit.seconds)}'
            f'{rate}' + (f" (of which loading the model {duration_text(audit.load_seconds)})"
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


def write_html(audit, path: str | Path, title: str = "Replicheck report") -> Path:
    """The report written to `path` atomically (report_files.check_overwrite says whether it may be)."""
    return write_atomic(path, render(audit, title).encode("utf-8"))
