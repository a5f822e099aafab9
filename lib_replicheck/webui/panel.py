"""The warning panel as HTML: one card per image, its verdict badge and its nearest training images.

Captions and URLs are scraped from the web and must stay data: every text goes through
html.escape, links are made only from http(s) URLs (with rel="noopener noreferrer" and
referrerpolicy="no-referrer"), no attribute or handler is ever built from pack data, and remote
thumbnails are shown only when the user allows requests to leave the machine.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from lib_replicheck import safe_text
from lib_replicheck.report import NOT_CHECKED, Match, Report, verdict_label
from lib_replicheck.safe_text import escape as esc
from lib_replicheck.verification_status import MAX_HULL

BADGE = {"no copy": "rc-none", "possible copy": "rc-possible", "likely copy": "rc-likely", "duplicate": "rc-duplicate"}
MAX_CAPTION = 300
MAX_URL = 2000
MAX_FIELD = 200  # license, source, host: one line each
MAX_THUMB_BYTES = 200_000


def clip(text, limit: int = MAX_FIELD) -> str:
    """One line of at most `limit` characters (safe_text.one_line): pack fields are untrusted and may
    be megabytes long."""
    return safe_text.one_line(text, limit)


def safe_url(url) -> str | None:
    """The URL if it is a plain http(s) URL with a host, else None."""
    return safe_text.safe_url(url, MAX_URL)


def link(url, text) -> str:
    return safe_text.link(url, text, url_limit=MAX_URL)


def _thumbnail(m: Match, remote: bool) -> str:
    if m.thumbnail:
        p = Path(m.thumbnail)
        try:
            if p.is_file() and p.stat().st_size <= MAX_THUMB_BYTES:
                data = base64.b64encode(p.read_bytes()).decode("ascii")
                return f'<img class="rc-thumb" alt="" src="data:image/jpeg;base64,{data}">'
        except OSError:
            pass
    u = safe_url(m.url) if remote else None
    if u:
        return f'<img class="rc-thumb" alt="" loading="lazy" referrerpolicy="no-referrer" src="{esc(u)}">'
    return '<div class="rc-thumb rc-nothumb" aria-hidden="true"></div>'


def region_figure(m: Match) -> str:
    """Where in the checked image a match was found: an SVG of the image's outline with the region's
    box drawn in it (numbers only, all of them ints of our own computing), and the box in words.
    Empty for a match of the whole image."""
    r = m.region
    if r is None:
        return ""
    W, H = max(1, int(r.image_w)), max(1, int(r.image_h))
    x, y, w, h = int(r.x), int(r.y), int(r.w), int(r.h)
    stroke = max(2, round(max(W, H) / 100))
    words = f"found in the region {w}x{h} at ({x}, {y}) of the {W}x{H} image"
    caption = f"{words}; {m.background_text()}" if m.background is not None else words
    return (f'<figure class="rc-region" data-box="{x},{y},{w},{h}">'
            f'<svg class="rc-region-map" viewBox="0 0 {W} {H}" width="96" height="{max(1, round(96 * H / W))}" '
            f'role="img" aria-label="{esc(words)}"><title>{esc(words)}</title>'
            f'<rect class="rc-region-image" x="0" y="0" width="{W}" height="{H}" fill="#8884" stroke="#888" '
            f'stroke-width="{stroke}"/>'
            f'<rect class="rc-region-box" x="{x}" y="{y}" width="{w}" height="{h}" fill="#f003" stroke="#e00" '
            f'stroke-width="{stroke}"/></svg>'
            f'<figcaption class="rc-note">{esc(caption)}</figcaption></figure>')


def geometry_figure(m: Match) -> str:
    """What geometric verification found: the area of the checked image whose features map onto the
    training image, as an SVG of the image's outline with the inliers' hull drawn in it (ints of our own
    computing), and in words; only the words when it found too few or did not run. Empty when it did
    not look at the match."""
    g = m.geometry
    if g is None:
        return ""
    words = g.text()
    a = g.area
    if not g.verified or a is None or len(g.hull) < 3:
        return f'<div class="rc-note rc-geometry">{esc(words)}</div>'
    W, H = max(1, int(a.image_w)), max(1, int(a.image_h))
    stroke = max(2, round(max(W, H) / 100))
    points = " ".join(f"{int(x)},{int(y)}" for x, y in g.hull[:MAX_HULL])
    return (f'<figure class="rc-region rc-geometry" data-box="{int(a.x)},{int(a.y)},{int(a.w)},{int(a.h)}">'
            f'<svg class="rc-region-map" viewBox="0 0 {W} {H}" width="96" height="{max(1, round(96 * H / W))}" '
            f'role="img" aria-label="{esc(words)}"><title>{esc(words)}</title>'
            f'<rect class="rc-region-image" x="0" y="0" width="{W}" height="{H}" fill="#8884" stroke="#888" '
            f'stroke-width="{stroke}"/>'
            f'<polygon class="rc-geometry-hull" points="{points}" fill="#0a03" stroke="#080" '
            f'stroke-width="{stroke}"/></svg>'
            f'<figcaption class="rc-note">{esc(words)}</figcaption></figure>')


def _match(m: Match, remote: bool) -> str:
    caption = clip(m.caption, MAX_CAPTION)
    source = m.url or m.source or f"#{m.id}"
    host = clip(urlsplit(m.url).netloc if safe_url(m.url) else (m.source or f"#{m.id}"))
    score = f"similarity {m.score_label()}" + (f" (Hamming distance {m.distance})" if m.distance is not None else "")
    license_ = clip(m.license)
    return (
        f'<li class="rc-match {BADGE.get(m.verdict.value, "rc-none")}">'
        f"{_thumbnail(m, remote)}"
        f'<div class="rc-match-text">'
        f'<div class="rc-score">{esc(score)} · {esc(m.verdict_text())}</div>'
        f'<div class="rc-caption">{esc(caption) or "<i>no caption</i>"}</div>'
        f'<div class="rc-source">{link(source, host)} · pack {esc(clip(m.pack))}'
        f'{" · " + esc(license_) if license_ else ""}</div>'
        f"{region_figure(m)}{geometry_figure(m)}</div></li>"
    )


def signal_line(sig) -> str:
    """The memorization signal of one image (lib_replicheck.memorization.signal.Signal)."""
    if sig is None:
        return ""
    if sig.magnitude is None:
        return f'<div class="rc-signal rc-signal-na">Memorization signal: unavailable ({esc(sig.note)})</div>'
    cls = "rc-signal-high" if sig.high and sig.calibrated else "rc-signal-normal"
    text = (f"Memorization signal: {sig.magnitude:.2f} (threshold {sig.threshold:g}) · {sig.verdict}"
            + (f" · prompt perturbed from step {sig.mitigated_from}" if sig.mitigated_from is not None else ""))
    return f'<div class="rc-signal {cls}">{esc(text)}</div>'


def prompt_block(hits: Sequence = (), error: str = "") -> str:
    """Known memorized prompts the generation's prompts match (memorization.prompts.PromptMatch), shown
    as soon as the generation starts: before any image exists, and with no pack installed."""
    if error:
        return f'<div class="rc-message rc-error-text rc-prompt-error">{esc(clip(error, 500))}</div>'
    parts = []
    for m in hits:
        how = m.how_text()
        what = ("it reproduces a whole training image" if m.type_label == "verbatim" else
                "it reproduces the layout or parts of a training image" if m.type_label == "template" else
                "it reproduces a training image")
        parts.append(
            f'<div class="rc-message rc-prompt-hit" data-type="{esc(clip(m.type, 16))}">'
            f'<div class="rc-prompt-summary">{esc(clip(m.summary(), MAX_FIELD))}</div>'
            f'<div class="rc-note">The prompt matches {esc(how)} a prompt {esc(clip(m.model, 40))} is known to copy '
            f'a training image for ({esc(what)}); change it to avoid a copy.</div>'
            f'<div class="rc-caption">Listed prompt: {esc(clip(m.prompt, MAX_CAPTION))}</div></div>')
    return "".join(parts)


def card(report: Report | None, index: int, remote: bool = False, signal=None, pending: bool = True) -> str:
    """One image's card; without a report it is 'generating…' while `pending`, else 'not checked'."""
    if report is None:  # still being generated (the signal may already be known), or never checked
        badge = ('<span class="rc-badge rc-pending">generating…</span>' if pending
                 else f'<span class="rc-badge rc-error">{NOT_CHECKED}</span>')
        return (f'<section class="rc-card" data-index="{int(index)}" data-verdict="{"pending" if pending else "not-checked"}">'
                f'<header><span class="rc-image">image {int(index) + 1}</span> '
                f'{badge}</header>{signal_line(signal)}</section>')
    verdict = verdict_label(report)
    if report.error:
        badge = f'<span class="rc-badge rc-error">{NOT_CHECKED}</span>'
        body = f'<div class="rc-message rc-error-text">{esc(report.error)}</div>'
    else:
        # the number the verdict was judged on, and what it is: 'best 0.81', 'region 0.42 above background; raw 0.67'
        best = f" · {esc(report.best.judged_text())}" if report.best and report.checked else ""
        css = BADGE.get(verdict, "rc-none") if not report.from_input else "rc-input-match"
        text = (verdict if report.checked else report.summary()) + (" (in the input image)" if report.from_input else "")
        badge = f'<span class="rc-badge {"rc-error" if not report.checked else css}">{esc(text)}</span>{best}'
        body = "".join(f'<div class="rc-note">{esc(n)}</div>' for n in report.notes)
        copies = [m for m in report.matches if m.verdict.is_copy]
        others = [m for m in report.matches if not m.verdict.is_copy]
        if copies:
            body += '<ol class="rc-matches">' + "".join(_match(m, remote) for m in copies) + "</ol>"
        if others:
            below = "below the thresholds" if report.checked else "shown without a verdict"
            body += (f'<details class="rc-others"><summary>{len(others)} nearest training image(s) {below}'
                     '</summary><ol class="rc-matches">' + "".join(_match(m, remote) for m in others)
                     + "</ol></details>")
    data = verdict if report.checked else "not-checked"
    return (f'<section class="rc-card" data-index="{int(index)}" data-verdict="{esc(data)}">'
            f'<header><span class="rc-image">{esc(report.image)}</span> {badge}</header>{signal_line(signal)}'
            f'{body}</section>')


def render(reports: Sequence[Report] | Mapping[int, Report], *, state: str = "done", message: str = "",
           input_reports: Sequence[Report] = (), remote: bool = False, signals: Mapping | None = None,
           expected: int = 0, prompt_hits: Sequence = (), prompt_error: str = "", sign_error: str = "") -> str:
    """The whole panel. `state`: 'done', 'checking', 'no-pack', 'error', 'interrupted', 'disabled',
    'idle'. Once the generation is over, each of the `expected` images without a report gets a
    'not checked' card. `prompt_hits`: known memorized prompts the prompt matches, shown first."""
    head = {
        "checking": "Checking for copies of training images…",
        "no-pack": "No pack installed",
        "error": "Replicheck could not check these images",
        "interrupted": "The generation ended before every image was checked",
        "disabled": "Replicheck is off for this generation",
        "idle": "Replicheck: no generation checked yet",
    }.get(state)
    reports = dict(reports) if isinstance(reports, Mapping) else dict(enumerate(reports))
    signals = dict(signals or {})
    n_flagged = sum(1 for r in reports.values() if r is not None and r.flagged())
    if head is None:
        head = (f"{n_flagged} of {len(reports)} image(s) flagged as possible copies" if n_flagged
                else f"No copy found in {len(reports)} image(s)")
    parts = [f'<div class="rc-panel" data-state="{esc(state)}" data-flagged="{n_flagged}">',
             f'<div class="rc-head">{esc(head)}</div>', prompt_block(prompt_hits, prompt_error)]
    if message:
        css = "rc-message rc-error-text" if state in ("error", "interrupted") else "rc-message"
        parts.append(f'<div class="{css}">{esc(message)}</div>')
    if sign_error:
        parts.append(f'<div class="rc-message rc-error-text rc-sign-error">{esc(clip(sign_error, 500))}</div>')
    for r in input_reports:
        parts.append('<div class="rc-input">Input image: ' + card(r, -1, remote) + "</div>")
    high = sum(1 for sig in signals.values() if sig.high and sig.calibrated)
    if high:
        parts.append(f'<div class="rc-message rc-signal-high">{high} image(s) with a high memorization signal: '
                     "the prompt may make the model reproduce a training image</div>")
    pending = state == "checking"
    indices = set(reports) | set(signals)
    if not pending and state != "disabled":
        indices |= set(range(int(expected)))
    parts.extend(card(reports.get(i), i, remote, signals.get(i), pending) for i in sorted(indices))
    parts.append("</div>")
    return "".join(parts)
