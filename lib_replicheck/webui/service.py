"""A long-lived check service for the web UI and the HTTP API.

It keeps the packs and the model loaded between generations (or unloads them, as the user sets),
reloads when the chosen packs change, and never lets a failure escape: a missing pack, a corrupt
pack, missing weights, an exception in the embedder or running out of memory become reports with
an error message and one log line, and the next generation tries again.

Checks run one at a time in the service's own thread; a caller waits at most `check_seconds` for
its answer, so a check that hangs (a pack's query that never ends, a stuck device) costs a
generation that long once: the caller gets an error report, and later callers get one at once
until the stuck check ends, instead of queueing behind it.

A CLIP pack's model is large (bench/clip_memory.py: 1.2 GB for ViT-L-14's image tower), so it is
freed, alone, when it has not been used for the minutes Settings give (a watcher thread runs while
one is loaded), and at the start of a generation when it sits on a GPU; the next check loads it again.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Sequence

from lib_replicheck.checker import Checker
from lib_replicheck.report import Report
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.verification import verify_reports
from lib_replicheck.verification.step import webui_verifier
from lib_replicheck.webui.live import LiveResults
from lib_replicheck.webui.settings import Settings

log = logging.getLogger("replicheck")
#: The longest a caller waits for a check, loading the packs and the model included.
CHECK_SECONDS = 60.0


class NoPackError(ReplicheckError):
    pass


class CheckService:
    def __init__(self, packs_dir: str | Path, models_dir: str | Path, logger: logging.Logger | None = None,
                 check_seconds: float = CHECK_SECONDS):
        self.packs_dir = Path(packs_dir)
        self.models_dir = Path(models_dir)
        self.log = logger or log
        self.live = LiveResults()
        self.check_seconds = float(check_seconds)
        self._lock = threading.RLock()  # the checker; held by the check thread while it checks
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replicheck-check")
        self._busy_since: float | None = None  # monotonic start of the check running now
        self._checker: Checker | None = None
        self._key: tuple | None = None
        self._logged: set[str] = set()
        self.last_error: str | None = None
        self.pack_errors: dict[str, str] = {}  # pack folder name -> why it could not be opened
        self.skipped: list[str] = []  # notes for the reports: the damaged packs the loaded checker left out
        self.checked = 0
        self._verifier = None  # verification/: CLIP candidates fetched and compared, when the setting asks
        self._clip_idle = 0.0  # seconds a CLIP model may stay unused (Settings.clip_idle_minutes); 0: kept
        self._last_used = time.monotonic()
        self._watch_lock = threading.Lock()
        self._watching = False  # the idle watcher runs

    # -- packs ----------------------------------------------------------------------------------

    def installed(self) -> list[Path]:
        from lib_replicheck import packs

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
        with self._lock:
            paths = self.pack_paths(settings)
            if not paths:
                raise NoPackError(f"no pack installed in {self.packs_dir}: put a pack folder there, or build one "
                                  "with `python -m lib_replicheck build FOLDER --out PACK`")
            stamp = tuple((str(p), (p / "manifest.json").stat().st_mtime_ns) for p in paths)
            key = (stamp, settings.device)
            if self._checker is None or self._key != key:
                self.unload()
                opened = self._open(paths)
                self._checker = Checker(opened, embedder=settings.embedder_options(self.models_dir))
                self._key = key
            return self._checker

    def _open(self, paths: list[Path]) -> list:
        """Open each pack; a damaged one is skipped (its error kept for the pack list and put into
        every report as a note, logged once), the others are searched. When none opens, the first
        error is the check's error."""
        from lib_replicheck.packs.pack import Pack

        opened, skipped = [], []
        for p in paths:
            try:
                opened.append(Pack(p))
                self.pack_errors.pop(p.name, None)
            except Exception as e:  # noqa: BLE001 - whatever stops a pack opening is that pack's error
                known = isinstance(e, ReplicheckError)
                self.pack_errors[p.name] = str(e) if known else f"pack {p}: cannot be opened ({type(e).__name__})"
                skipped.append(self.pack_errors[p.name])
        if not opened:
            raise ReplicheckError(skipped[0])
        for why in skipped:
            if why not in self._logged:
                self._logged.add(why)
                self.log.warning("replicheck: pack skipped: %s", why)
        self.skipped = [f"pack skipped: {why}" for why in skipped]
        return opened

    @property
    def loaded_checker(self) -> Checker | None:
        """The Checker now loaded, read without the lock (a stuck check never blocks the reader)."""
        return self._checker

    def unload(self) -> None:
        """Let go of the packs and the model. Never waits long: while a stuck check holds them,
        they are dropped here and closed by that check's thread when (if) it ends."""
        if not self._lock.acquire(timeout=2.0):
            self._checker, self._key = None, None
            return
        try:
            if self._checker is not None:
                self._checker.unload()
                for p in self._checker.packs:
                    p.close()
            self._checker = None
            self._key = None
            self._verifier = None
        finally:
            self._lock.release()

    def packs_changed(self) -> None:
        """A pack was installed, replaced or removed: unload, and forget errors about the old packs."""
        self.unload()
        self.pack_errors.clear()
        self.last_error = None

    # -- checking -------------------------------------------------------------------------------

    def check(self, images: Sequence, labels: Sequence[str], settings: Settings) -> list[Report]:
        """Check images; never raises, never waits more than `check_seconds`. Errors become reports
        and one log line per distinct message."""
        started = self._busy_since
        if started is not None and time.monotonic() - started > self.check_seconds:
            return self._failed(f"not checked: a previous check has been running for more than {self.check_seconds:g} s "
                                "(stuck?); checks resume when it ends, or after restarting the web UI", labels)
        future = self._worker.submit(self._check_now, list(images), list(labels), settings)
        try:
            return future.result(timeout=self.check_seconds)
        except FutureTimeout:
            future.cancel()  # still queued behind another check: never run it
            return self._failed(f"the check took longer than {self.check_seconds:g} s and was abandoned "
                                "(a damaged pack, or a device that does not answer?)", labels)

    def _check_now(self, images: list, labels: list[str], settings: Settings) -> list[Report]:
        self._busy_since = time.monotonic()
        try:
            with self._lock:
                reports = self.checker(settings).check(images, labels, top_k=settings.top_k, tiers=settings.tiers,
                                                      regions=settings.regions)
                self._verifier = webui_verifier(self._verifier, online=settings.verify_online,
                                                checker=self._checker, models_dir=self.models_dir,
                                                device=settings.device, tiers=settings.tiers)
                verify_reports(reports, self._verifier, images)  # the step after the search
            for report in reports:
                report.notes.extend(self.skipped)
            self._watch_idle(settings)
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
        finally:
            self._busy_since = None
        return self._failed(message, labels)

    def _failed(self, message: str, labels: Sequence[str]) -> list[Report]:
        self.last_error = message
        if message not in self._logged:
            self._logged.add(message)
            self.log.warning("replicheck: %s", message)
        return [Report(image=label, error=message) for label in labels]

    def new_job(self) -> None:
        """A generation starts: forget which errors were logged, so that it logs its failure once, and
        free a CLIP model that sits on a GPU, since sampling needs the memory (never waiting for a check)."""
        self._logged.clear()
        if any(e.device != "cpu" for e in self._semantic_loaded()):
            self.free_clip("a generation is starting and needs the GPU's memory", wait=0)

    # -- a CLIP model's memory ------------------------------------------------------------------

    def _semantic_loaded(self) -> list:
        """The semantic (CLIP) embedders the loaded checker holds; read without the lock."""
        checker = self._checker
        try:
            return [e for e in checker.loaded_embedder_objects() if e.semantic] if checker else []
        except RuntimeError:  # the checker's embedders changed while read: nothing is certain, free nothing
            return []

    def free_clip(self, why: str, wait: float = 2.0) -> bool:
        """Free the loaded CLIP models, and only them: the packs stay open and the other embedders
        (SSCD, PDQ) loaded; the next check loads CLIP again. Never frees during a check: waits at
        most `wait` seconds for one to end, else frees nothing. True when something was freed."""
        acquired = self._lock.acquire(timeout=wait) if wait > 0 else self._lock.acquire(blocking=False)
        if not acquired:
            return False
        try:
            clip = self._semantic_loaded()
            if not clip:
                return False
            held = self._clip_bytes()
            self._checker.unload(lambda e: e.semantic)  # the verifier's SSCD embedder stays loaded too
            self.log.info("replicheck: CLIP model freed (%s): %.0f MB", why, held / 1e6)
            return True
        finally:
            self._lock.release()

    def _clip_bytes(self) -> int:
        """What the loaded CLIP models hold (parameters and buffers); 0 while one is being freed."""
        try:
            return sum(e.memory_bytes() for e in self._semantic_loaded())
        except RuntimeError:  # the checker's embedders changed while read
            return 0

    def _watch_idle(self, settings: Settings) -> None:
        """After a check: note the time, and start the idle watcher if a CLIP model is loaded."""
        self._last_used = time.monotonic()
        self._clip_idle = settings.clip_idle_minutes * 60.0
        if self._clip_idle <= 0 or not self._semantic_loaded():
            return
        with self._watch_lock:
            if self._watching:
                return
            self._watching = True
        threading.Thread(target=self._idle_loop, name="replicheck-clip-idle", daemon=True).start()

    def _idle_loop(self) -> None:
        """Free the CLIP model once it has been unused for the idle time; end when none is loaded."""
        while True:
            while self._clip_idle > 0 and self._semantic_loaded():
                left = self._last_used + self._clip_idle - time.monotonic()
                if left > 0:
                    time.sleep(min(left, 30.0))
                elif not self.free_clip(f"unused for {self._clip_idle / 60:g} min"):
                    time.sleep(1.0)  # a check holds it: it is in use
            with self._watch_lock:
                if not (self._clip_idle > 0 and self._semantic_loaded()):
                    self._watching = False
                    return

    def release(self, settings: Settings) -> None:
        if not settings.keep_loaded:
            self.unload()

    def status(self) -> dict:
        """What is loaded; read without the lock, so a stuck check never blocks it."""
        checker = self._checker
        loaded = checker is not None
        return {
            "packs_dir": str(self.packs_dir),
            "models_dir": str(self.models_dir),
            "installed_packs": [p.name for p in self.installed()],
            "loaded": loaded,
            "loaded_packs": [p.name for p in checker.packs] if loaded else [],
            "embedders": list(checker.loaded_embedders) if loaded else [],
            "clip_model_bytes": self._clip_bytes(),
            "checked_images": self.checked,
            "last_error": self.last_error,
        }

