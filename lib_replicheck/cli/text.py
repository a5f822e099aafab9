"""The text form of a report, for `check` and the demo (which import it, never each other)."""

from __future__ import annotations


def format_report(report, max_matches: int = 3) -> str:
    """A few readable lines: the verdict in the words of Report.summary ('no copy (best 0.31 in
    demo)', 'LIKELY COPY (region 0.42 above background; raw 0.67 in demo)', 'not checked (flat
    image)'), then the nearest training images with their similarity, at most `max_matches` of
    each pack, each with its pack when they come from several (scores of different packs are not
    comparable). Everything that came from a
    pack (URL, source, caption, notes) or a file name is cleaned of control characters."""
    from lib_replicheck.errors import clean_text

    head = report.verdict.value.upper() if report.flagged() else report.verdict_text
    if report.checked and report.best is not None and (report.best.unverified or report.best.verified):
        head = report.best.verdict_text()  # a candidate, not evidence: 'possible copy (unverified: CLIP 0.93)'

    if report.error:
        detail = "(error)"
    elif report.withheld:
        detail = f"({report.withheld})"
    else:
        detail = f"({clean_text(report.detail(), 300)})" if report.best else "(no training image near)"
    lines = [f"{clean_text(report.image)}\n  {head:<14} {detail}"]
    several = len({m.pack for m in report.matches}) > 1
    shown = [m for n, m in enumerate(report.matches)
             if sum(1 for o in report.matches[:n] if o.pack == m.pack) < max_matches]  # at most max_matches a pack
    for i, m in enumerate(shown, 1):
        caption = _clip_text(m.caption or "", 60)
        where = clean_text(m.url or m.source or f"#{m.id}", 200)
        region = getattr(m, "region", None)
        found = ""
        if region is not None:
            above = f"; {m.background_text()}" if m.background is not None else ""
            found = f"  (in the region {region.text()}{above})"
        pack = f"  [{clean_text(m.pack, 64)}, {clean_text(m.embedder, 32)}]" if several else ""
        lines.append(f"  {i}. {m.score_label():>5}  {m.verdict_text():<13} {where}" + (f'  "{caption}"' if caption else "")
                     + found + pack)
    lines.extend(f"  note: {clean_text(n, 500)}" for n in report.notes)
    if report.record:
        lines.append(f"  signed record: {clean_text(report.record, 500)}")
    return "\n".join(lines)


def _clip_text(s: str, n: int) -> str:
    """A caption on one line, its control characters dropped (not shown), at most `n` characters."""
    s = " ".join(s[: n * 4].split())
    s = "".join(ch for ch in s if ch.isprintable())
    return s if len(s) <= n else s[: n - 1] + "…"
