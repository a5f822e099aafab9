"""The text form of a report, for `check` and the demo (which import it, never each other)."""

from __future__ import annotations


def format_report(report, max_matches: int = 3) -> str:
    """A few readable lines: the verdict in the words of Report.summary ('no copy (best 0.31 in
    demo)'), then the nearest training images with their similarity. Everything that came
    from a pack (URL, source, caption, notes) or a file name is cleaned of control characters."""
    from lib_replicheck.errors import clean_text

    head = report.verdict.value.upper() if report.is_copy else "no copy"
    best = (f"(best {report.best.score_label()} in {clean_text(report.best.pack, 64)})" if report.best
            else "(no training image near)")
    lines = [f"{clean_text(report.image)}\n  {head:<14} {best}"]
    for i, m in enumerate(report.matches[:max_matches], 1):
        caption = _clip_text(m.caption or "", 60)
        where = clean_text(m.url or m.source or f"#{m.id}", 200)
        region = getattr(m, "region", None)
        lines.append(f"  {i}. {m.score_label():>5}  {m.verdict.value:<13} {where}" + (f'  "{caption}"' if caption else "")
                     + (f"  (in the region {region.text()})" if region is not None else ""))
    lines.extend(f"  note: {clean_text(n, 500)}" for n in report.notes)
    return "\n".join(lines)


def _clip_text(s: str, n: int) -> str:
    """A caption on one line, its control characters dropped (not shown), at most `n` characters."""
    s = " ".join(s[: n * 4].split())
    s = "".join(ch for ch in s if ch.isprintable())
    return s if len(s) <= n else s[: n - 1] + "…"
