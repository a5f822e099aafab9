"""Audit a folder: check every image in it, with progress and cancellation, and keep what the
HTML report and the CSV need (reports, packs, thresholds, timing, errors).

The command line (`check FOLDER --report`) and the web UI's "Check a folder" (webui/audits.py, which
runs it in the background) both run this, so both give the same report for the same folder.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.images import IMAGE_SUFFIXES
from lib_replicheck.report import NOT_CHECKED, Report
from lib_replicheck.thresholds import Tiers, Verdict

#: Most images one audit takes from a folder (the web UI's bound; the command line passes its own).
MAX_IMAGES = 20_000
#: Most folder entries looked at while listing (a folder of millions of files is refused, not walked).
MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class Progress:
    """Where an audit stands: images done of `total`, how many flagged or unreadable so far."""

    done: int
    total: int
    flagged: int
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        """Images per second so far (0 before the first one)."""
        return self.done / self.seconds if self.seconds > 0 and self.done else 0.0

    @property
    def seconds_left(self) -> float | None:
        """Estimated seconds to the end, None until there is a rate."""
        return (self.total - self.done) / self.rate if self.rate else None

    def to_dict(self) -> dict:
        return {"done": self.done, "total": self.total, "flagged": self.flagged, "errors": self.errors,
                "seconds": round(self.seconds, 2), "rate": round(self.rate, 3),
                "seconds_left": None if self.seconds_left is None else round(self.seconds_left, 1)}


@dataclass(frozen=True)
class Counts:
    """How many images got which verdict: what the command line's last line, the HTML report and the
    tab all say, in the same words (`text`)."""

    images: int
    duplicate: int = 0
    likely: int = 0
    possible: int = 0
    none: int = 0
    errors: int = 0  # could not be read
    withheld: int = 0  # read, but no verdict (a flat image)
    from_input: int = 0  # a copy already in the img2img input image: shown, not flagged (Report.flagged)

    @property
    def flagged(self) -> int:
        return self.duplicate + self.likely + self.possible

    @property
    def not_checked(self) -> int:
        return self.errors + self.withheld

    def of(self, verdict: Verdict) -> int:
        return {Verdict.DUPLICATE: self.duplicate, Verdict.LIKELY: self.likely, Verdict.POSSIBLE: self.possible,
                Verdict.NONE: self.none}[verdict]

    def text(self) -> str:
        """'10 images: 5 flagged (2 duplicate, 3 likely copy), 4 no copy, 1 not checked (1 error)'."""
        tiers = ", ".join(f"{self.of(v)} {v.value}" for v in (Verdict.DUPLICATE, Verdict.LIKELY, Verdict.POSSIBLE)
                          if self.of(v))
        why = ", ".join(_plural(n, word) for n, word in ((self.errors, "error"), (self.withheld, "flat image")) if n)
        return (f"{_plural(self.images, 'image')}: {self.flagged} flagged" + (f" ({tiers})" if tiers else "")
                + f", {self.none} {Verdict.NONE.value}, {self.not_checked} {NOT_CHECKED}" + (f" ({why})" if why else "")
                + (f", {self.from_input} already in the input image" if self.from_input else ""))


def count(reports: Iterable[Report]) -> Counts:
    """The Counts of a list of reports."""
    n = {"images": 0, "duplicate": 0, "likely": 0, "possible": 0, "none": 0, "errors": 0, "withheld": 0, "from_input": 0}
    field_of = {Verdict.DUPLICATE: "duplicate", Verdict.LIKELY: "likely", Verdict.POSSIBLE: "possible",
                Verdict.NONE: "none"}
    for r in reports:
        n["images"] += 1
        n["errors" if r.error else "withheld" if r.withheld else
          "from_input" if r.is_copy and not r.flagged() else field_of[r.verdict]] += 1
    return Counts(**n)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class PackUsed:
    """What the report says about a pack it searched."""

    name: str
    embedder: str
    family: str
    count: int
    dataset: str = ""
    license: str = ""


@dataclass
class Audit:
    """The result of checking a list of images: one report each, in order."""

    roots: list[str]
    reports: list[Report] = field(default_factory=list)
    packs: list[PackUsed] = field(default_factory=list)
    tiers: dict[str, Tiers] = field(default_factory=dict)
    started: str = ""  # ISO 8601, UTC
    seconds: float = 0.0  # wall time of the whole check, model loading included
    load_seconds: float = 0.0  # of which loading the models
    total: int = 0  # images listed (more than len(reports) when cancelled)
    cancelled: bool = False
    interrupted: bool = False  # by Ctrl-C
    left_out: int = 0  # image files past the bound, not checked

    @property
    def checked(self) -> list[Report]:
        """Reports with a verdict."""
        return [r for r in self.reports if r.checked]

    @property
    def errors(self) -> list[Report]:
        return [r for r in self.reports if r.error]

    @property
    def not_checked(self) -> list[Report]:
        """Reports without a verdict: the files that could not be read, the flat images."""
        return [r for r in self.reports if not r.checked]

    @property
    def flagged(self) -> list[Report]:
        """Reports with a copy verdict, most similar first."""
        return sorted((r for r in self.reports if r.flagged()),
                      key=lambda r: (r.verdict.rank, r.best.similarity if r.best else 0.0), reverse=True)

    def counts(self) -> Counts:
        return count(self.reports)

    def count(self, verdict: Verdict) -> int:
        return self.counts().of(verdict)


def list_images(paths: Sequence[str | Path], max_images: int = MAX_IMAGES, max_entries: int = MAX_ENTRIES,
                confine: bool = True) -> tuple[list[Path], int]:
    """The image files under `paths` (a named file is taken as it is, image or not, so a wrong
    argument gets an error), sorted, hidden entries skipped, linked folders not walked. With
    `confine` a linked file is taken only when it resolves inside the folder named (a link cannot
    lead out of it: what the web UI needs); without, linked files are taken as the user's own.
    Returns at most `max_images` files and how many more there were; ReplicheckError when a folder
    holds more than `max_entries` entries."""
    files: list[Path] = []
    extra = 0
    for root in map(Path, paths):
        if not root.is_dir():
            found = [root]  # checked as it is: a missing or unreadable file gets its error in its report
        else:
            found = _walk(root, max_entries, confine)
        for f in found:
            if len(files) < max_images:
                files.append(f)
            else:
                extra += 1
    return files, extra


def _walk(root: Path, max_entries: int, confine: bool) -> list[Path]:
    found: list[Path] = []
    real_root = root.resolve()
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        seen += len(dirnames) + len(filenames)
        if seen > max_entries:
            raise ReplicheckError(f"{root}: more than {max_entries} entries; name a smaller folder")
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if p.is_symlink() and confine and not _inside(p, real_root):
                continue
            found.append(p)
    return sorted(found)


def _inside(path: Path, real_root: Path) -> bool:
    """Whether `path`, its links resolved, is a file inside `real_root`."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return target.is_file() and (target == real_root or real_root in target.parents)


def packs_used(packs: Iterable) -> list[PackUsed]:
    """Name, embedder, size and source of each opened pack (packs.pack.Pack)."""
    out = []
    for p in packs:
        m = p.manifest
        source = m.source if isinstance(m.source, dict) else {}
        out.append(PackUsed(name=p.name, embedder=m.embedder.id, family=str(m.embedder.kind), count=m.count,
                            dataset=str(source.get("dataset") or "")[:200],
                            license=str(source.get("license") or "")[:200]))
    return out


def run_audit(checker, files: Sequence[str | Path], *, roots: Sequence[str | Path] = (),
              on_progress: Callable[[Progress], None] | None = None,
              on_report: Callable[[Report], None] | None = None, cancel: threading.Event | None = None,
              left_out: int = 0, batch: int = 8) -> Audit:
    """Check `files` with `checker` (a Checker), calling `on_report` with each report and
    `on_progress` after it; stops after the image in hand when `cancel` is set, or at Ctrl-C (the
    audit then says `cancelled`, and what was checked is kept for the report)."""
    audit = Audit(roots=[str(r) for r in roots], packs=packs_used(checker.packs), tiers=dict(checker.tiers),
                  started=datetime.now(timezone.utc).isoformat(timespec="seconds"), total=len(files),
                  left_out=left_out)
    start = time.perf_counter()
    load_before = checker.load_seconds
    flagged = errors = 0
    if on_progress:
        on_progress(Progress(0, len(files), 0, 0, 0.0))
    try:
        for report in checker.check_files(files, batch=batch):
            audit.reports.append(report)
            if report.error:
                errors += 1
            elif report.flagged():
                flagged += 1
            if on_report:
                on_report(report)
            if on_progress:
                on_progress(Progress(len(audit.reports), len(files), flagged, errors, time.perf_counter() - start))
            if cancel is not None and cancel.is_set():
                break
    except KeyboardInterrupt:
        audit.interrupted = True
    audit.cancelled = len(audit.reports) < len(files)
    audit.seconds = time.perf_counter() - start
    audit.load_seconds = checker.load_seconds - load_before
    return audit
