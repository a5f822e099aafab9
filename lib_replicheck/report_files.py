"""The folder report's files: the CSV, and which existing files a report may replace.

A report or CSV is written only over a file replicheck wrote (its marker, or the CSV's header row)
or an empty one, unless the user passes --force; never over a folder, a device or a pipe. Cells
that a spreadsheet would run as a formula get a leading quote.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from lib_replicheck.atomic import write_atomic
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.report_thumbnails import region_text
from lib_replicheck.safe_text import name_text, one_line

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


CSV_COLUMNS = ["image", "verdict", "summary", "best_similarity", "best_distance", "pack", "embedder", "training_id",
               "url", "source", "caption", "license", "region", "error"]


def _cell(text) -> str:
    """A text cell a spreadsheet will not run: one that starts like a formula gets a leading quote."""
    s = one_line(text, 2000) if text is not None else ""
    return "'" + s if s[:1] in ("=", "+", "-", "@") else s


def render_csv(audit) -> str:
    """One row per image, its best match's fields beside its verdict (audit: an audit.Audit)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in audit.reports:
        b = r.best if not r.error else None
        w.writerow([_cell(r.image), r.verdict_text, _cell(r.summary()),
                    f"{b.similarity:.4f}" if b else "", b.distance if b and b.distance is not None else "",
                    _cell(b.pack) if b else "", _cell(b.embedder) if b else "", b.id if b else "",
                    _cell(b.url) if b else "", _cell(b.source) if b else "", _cell(b.caption) if b else "",
                    _cell(b.license) if b else "", region_text(getattr(b, "region", None)) if b else "",
                    _cell(r.error) if r.error else ""])
    return buf.getvalue()


def write_csv(audit, path: str | Path) -> Path:
    return write_atomic(path, render_csv(audit).encode("utf-8"))
