"""A long-lived check service for the web UI and the HTTP API.

It keeps the packs and the model loaded between generations (or unloads them, as the user sets),
reloads when the chosen packs change, and never lets a failure escape: a missing pack, a corrupt
pack, missing weights, an exception in the embedder or running out of memory become reports with
an error message and one log line, and the next generation tries again.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .check import Checker, Report
from .errors import ReplicheckError
from .settings import Settings

log = logging.getLogger("replicheck")


class NoPackError(ReplicheckError):
    pass


@dataclass
class LiveJob:
    """The results of one generation, filled in image by image as they are checked."""

    id: int
    tab: str
    expected: int
    state: str = "checking"  # checking, done, error, no-pack, disabled
    message: str = ""
    reports: dict[int, Report] = field(default_factory=dict)
    input_reports: list[Report] = field(default_factory=list)
    signals: dict = field(default_factory=dict)  # image index -> memorization.Signal
    started: float = field(default_factory=time.time)


class LiveResults:
    """The latest job per tab, with a sequence number the page polls to see that something changed."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._seq = 0
        self.jobs: dict[str, LiveJob] = {}

    @property
    def seq(self) -> int:
        return self._seq

    def _touch(self) -> None:
        self._seq += 1

    def start(self, tab: str, expected: int, state: str = "checking", message: str = "") -> LiveJob:
        with self._lock:
            job = LiveJob(next(self._ids), tab, expected, state, message)
            self.jobs[tab] = job
            self._touch()
            return job

    def add(self, job: LiveJob, index: int, report: Report) -> None:
        with self._lock:
            job.reports[index] = report
            self._touch()

    def update(self, job: LiveJob, **changes) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(job, k, v)
            self._touch()

    def get(self, tab: str) -> LiveJob | None:
        return self.jobs.get(tab)


class CheckService:
    def __init__(self, packs_dir: str | Path, models_dir: str | Path, logger: logging.Logger | None = None):
        self.packs_dir = Path(packs_dir)
        self.models_dir = Path(models_dir)
        self.log = logger or log
        self.live = LiveResults()
        self._lock = threading.RLock()
        self._checker: Checker | None = None
        self._key: tuple | None = None
        self._logged: set[str] = set()
        self.last_error: str | None = None
        self.checked = 0

    # -- packs ----------------------------------------------------------------------------------

    def installed(self) -> list[Path]:
        from . import packs

        return packs.installed(self.packs_dir)

    def pack_paths(self, settings: Settings) -> list[Path]:
        installed = {p.name: p for p in self.installed()}
        if not settings.packs:
            return list(installed.values())
        missing = [n for n in settings.packs if n not in installed]
        if missing:
            raise NoPackError(f"pack(s) chosen in Settings are not installed: {', '.join(missing)}")
        return [installed[n] for n in settings.packs]

    def checker(self, settings: Settings) -> Checker:
        """The Checker for these settings, reused while packs and device stay the same."""
        from .packs.pack import Pack

        with self._lock:
            paths = self.pack_paths(settings)
            if not paths:
                raise NoPackError(f"no pack installed in {self.packs_dir}: put a pack folder there, or build one "
                                  "with `python -m lib_replicheck build FOLDER --out PACK`")
            stamp = tuple((str(p), (p / "manifest.json").stat().st_mtime_ns) for p in paths)
            key = (stamp, settings.device)
            if self._checker is None or self._key != key:
                self.unload()
                self._checker = Checker([Pack(p) for p in paths], device=settings.device, models_dir=self.models_dir,
                                        offline=True, progress=False)
                self._key = key
            self._checker.top_k = settings.top_k
            self._checker.tiers = dict(settings.tiers)
            return self._checker

    def unload(self) -> None:
        with self._lock:
            if self._checker is not None:
                self._checker.unload()
                for p in self._checker.packs:
                    p.close()
            self._checker = None
            self._key = None

    # -- checking -------------------------------------------------------------------------------

    def check(self, images: Sequence, labels: Sequence[str], settings: Settings) -> list[Report]:
        """Check images; never raises. Errors become reports and one log line per distinct message."""
        try:
            with self._lock:
                reports = self.checker(settings).check(list(images), list(labels))
            self.last_error = None
            self.checked += len(reports)
            return reports
        except ReplicheckError as e:
            message = str(e)
        except MemoryError:
            self.unload()
            message = "out of memory while checking; the model was unloaded and will be loaded again next time"
        except Exception as e:  # noqa: BLE001 - the generation must never see our failure
            message = f"unexpected error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            self.unload()
        self.last_error = message
        if message not in self._logged:
            self._logged.add(message)
            self.log.warning("replicheck: %s", message)
        return [Report(image=label, error=message) for label in labels]

    def new_job(self) -> None:
        """Forget which errors were logged, so each generation logs its failure once."""
        self._logged.clear()

    def release(self, settings: Settings) -> None:
        if not settings.keep_loaded:
            self.unload()

    def status(self) -> dict:
        with self._lock:
            loaded = self._checker is not None
            return {
                "packs_dir": str(self.packs_dir),
                "models_dir": str(self.models_dir),
                "installed_packs": [p.name for p in self.installed()],
                "loaded": loaded,
                "loaded_packs": [p.name for p in self._checker.packs] if loaded else [],
                "embedders": self._checker.loaded_embedders if loaded else [],
                "checked_images": self.checked,
                "last_error": self.last_error,
            }

