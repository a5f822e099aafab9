"""The folder report's histograms: the score each image was judged on, with the tier cuts drawn.

Inline SVG (the report requests nothing), one histogram per kind of score (whole image, region,
region above the pack's background), each with its own cuts. Labels are our own numbers and the
families' names, escaped all the same.
"""

from __future__ import annotations

import math

from lib_replicheck.safe_text import escape, one_line
from lib_replicheck.thresholds import NORMALISED_REGION_TIERS, REGION_TIERS, TIER_NAMES, Tiers

HIST_BINS = 50
#: Characters of a histogram's caption, at most.
MAX_LABEL = 200


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
    parts = [f'<svg id="{escape(svg_id, 60)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(caption, MAX_LABEL)}">',
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
                     + (' text-anchor="end"' if at_end else "") + f">{escape(label, 60)}</text>")
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 2}" text-anchor="middle">{escape(caption, MAX_LABEL)}'
                 '</text></svg>')
    return "".join(parts)


def _label_rows(cuts: list[tuple[str, float]], left: float, pw: float, width: int):
    """Where each cut's label goes: (label, x of its line, row above the plot, whether it ends at the
    line), rows filled left to right so no two labels of a row overlap; and the number of rows."""
    placed, row_ends = [], []  # row_ends[r]: the right end of the last label in row r
    for label, cut in sorted(cuts, key=lambda c: c[1]):
        x = left + max(0.0, min(1.0, cut)) * pw
        span = LABEL_CHAR_PX * len(one_line(label, 60)) + 3
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
            parts.append(f"<h3>{len(values[kind])} image(s) judged on a region: {escape(caption, MAX_LABEL)}</h3>")
        parts.append(histogram_svg(values[kind], _cuts(audit, kind), svg_id=svg_id, caption=caption))
    return "".join(parts)
