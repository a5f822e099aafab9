"""The pack manager behind the web UI's Replicheck tab and the /replicheck/v1/packs routes.

Registries are read, and packs downloaded, only when the user asks (a click or an API call);
downloads run in background threads with progress and cancel, one per pack at a time, each through
registry/get_pack.py as on the command line. A recipe is built the same way, by the `build_recipe`
the web UI hands in (builder.build_recipe.build_for_manager), with its stage in the job; it embeds only
when `gate()` lets it (the web UI makes it wait while a generation runs).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from lib_replicheck.download import Cancelled, Policy
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.packs import installed as installed_packs
from lib_replicheck.registry.get_pack import GotPack, check_buildable, find_listed, get_pack
from lib_replicheck.registry.pack_install import Installer
from lib_replicheck.registry.recipe_choices import RecipeChoices
from lib_replicheck.registry.registry import RegistryPack, load_all
from lib_replicheck.webui.jobs import Job


@dataclass
class DownloadJob(Job):
    """A pack's download, or a recipe's build, on the common job base (webui/jobs.py)."""

    name: str
    total: int
    done: int = 0
    # queued, downloading, verifying, weights, building, installed, failed, cancelled
    state: str = field(default="queued", kw_only=True)
    error: str | None = None
    kind: str = "pack"  # or "recipe": built here, in stages
    stage: str = ""  # a recipe's stage: list, fetch, embed, index
    # message (from Job): a recipe's progress in words, then its result (images fetched, failed)

    RUNNING: ClassVar[tuple[str, ...]] = ("queued", "downloading", "verifying", "weights", "building")
    FAILED: ClassVar[str] = "failed"

    @property
    def active(self) -> bool:
        return self.running

    def counts(self) -> tuple[int, int]:
        return self.done, self.total

    def fail(self, message: str) -> None:
        self.state, self.error = self.FAILED, message

    def to_dict(self) -> dict:
        return {**super().to_dict(), "name": self.name, "error": self.error, "active": self.active,
                "kind": self.kind, "stage": self.stage}


#: the tab's fields for RecipeChoices (registry/recipe_choices.py), named in its errors
UNPINNED_LABEL = "Accept files without a published sha256"
SAMPLE_LABEL = "Sample: the first N rows (embedding recipes: files); 0 for all"
LIST_LABEL = "Your own list (a folder or file on the server)"
TAB_LABELS = {"accept_unpinned": UNPINNED_LABEL, "sample": SAMPLE_LABEL, "list_path": LIST_LABEL}


class PackManager:
    def __init__(self, packs_dir: str | Path, models_dir: str | Path, registries: Callable[[], list[str]], *,
                 policy: Policy | None = None, on_change: Callable[[], None] | None = None,
                 build_recipe: Callable | None = None, gate: Callable[[], None] | None = None):
        self.packs_dir = Path(packs_dir)
        self.models_dir = Path(models_dir)
        self.registries = registries
        self.installer = Installer(self.packs_dir, policy=policy)
        self.on_change = on_change or (lambda: None)
        self.available: list[RegistryPack] = []
        self.errors: list[str] = []
        self.refreshed: float | None = None
        self.jobs: dict[str, DownloadJob] = {}
        self.build_recipe = build_recipe
        self.gate = gate
        self._lock = threading.Lock()

    def refresh(self) -> list[RegistryPack]:
        """Read every registry now (network); keep what was read and one error per registry that
        could not be read. Never raises: the tab and the API show the errors next to the packs."""
        urls = []
        try:
            urls = list(self.registries())
            self.available, self.errors = load_all(urls)
        except Exception as e:  # noqa: BLE001 - one bad registry must not hide the others, nor raise
            self.available, self.errors = [], [f"the registries ({', '.join(urls) or 'none'}) could not be read: "
                                               f"{type(e).__name__}: {str(e)[:300]}"]
        self.refreshed = time.time()
        return self.available

    def read_local(self) -> None:
        """Until the registries are read, read those that are files (the one shipped with replicheck):
        no network, so the tab lists the demo and the recipes before any click. Never raises."""
        from urllib.parse import urlsplit

        if self.refreshed is not None or self.available:
            return
        try:
            local = [u for u in self.registries() if urlsplit(u).scheme not in ("http", "https")]
            if local:
                self.available, _ = load_all(local, offline=True)
        except Exception:  # noqa: BLE001 - the tab shows the registries' errors after Refresh list
            self.available = []

    def installed(self) -> list[Path]:
        return installed_packs(self.packs_dir)

    @staticmethod
    def problem(pack_dir: str | Path) -> str | None:
        """Why an installed pack cannot be used, from its files' presence and sizes against the
        manifest (a stat each, no reading): None when they match."""
        from lib_replicheck.packs.manifest import read

        pack_dir = Path(pack_dir)
        try:
            m = read(pack_dir)
        except ReplicheckError as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - a manifest shape the parser did not foresee
            return f"manifest.json cannot be read ({type(e).__name__})"
        from lib_replicheck.packs.pack import files_problem

        problem = files_problem(pack_dir, m)
        return f"{problem} (damaged: verify or download again)" if problem else None

    def start_download(self, name: str, choices: RecipeChoices | None = None) -> DownloadJob:
        """Start getting `name` in the background: a pack's download, or a recipe's build with the
        user's `choices` (from the tab or the route's body; RecipeChoices.applied_to refuses, naming
        the field, one that is needed and missing or given and not taken)."""
        if self.refreshed is None:
            self.refresh()
        rp = find_listed(name, self.available, self.errors)
        check_buildable(rp, self.build_recipe)
        chosen = (choices or RecipeChoices()).applied_to(rp)
        if rp.kind == "recipe":
            rp.check_packages()  # MissingPackages, before anything starts
        with self._lock:
            job = self.jobs.get(name)
            if job is not None and job.active:
                raise ReplicheckError(f"pack {name!r} is already being downloaded or built")
            if rp.kind == "recipe" and any(j.active and j.kind == "recipe" for j in self.jobs.values()):
                raise ReplicheckError("another recipe is being built; one at a time")
            job = self.jobs[name] = DownloadJob(name, rp.size, kind=rp.kind)
        target = (lambda: self._build(job, rp, chosen)) if rp.kind == "recipe" else (lambda: self._run(job, rp))
        job.run(target, thread_name=f"replicheck-download-{name}", what=f"getting {name}")
        return job

    @contextmanager
    def _reported(self, job: DownloadJob, cancelled: str = ""):
        """How a download or build thread ended goes to its job, whatever it was: a background thread must
        report, never die silently."""
        try:
            yield
        except Cancelled:
            job.state = "cancelled"
            self._stopped(job, cancelled)
        except ReplicheckError as e:
            job.fail(str(e))
            self._stopped(job)
        except Exception as e:  # noqa: BLE001 - a background thread must report, never die silently
            job.fail(f"{type(e).__name__}: {e}")
            self._stopped(job)
        finally:
            self.on_change()

    @staticmethod
    def _stopped(job: DownloadJob, message: str = "") -> None:
        """A build that did not end installed shows no stage progress: its bar is not left full
        under the words of a stage that finished ("list ready")."""
        if job.kind == "recipe":
            job.done, job.message = 0, message or (f"stopped in the {job.stage} stage" if job.stage else "")
        elif message:
            job.message = message

    def _build(self, job: DownloadJob, recipe, chosen: dict) -> None:
        """A recipe built in this thread with the user's choices (RecipeChoices.applied_to): the stage
        and its counts go to the job as they change."""

        def progress(p) -> None:
            job.stage, job.done, job.total, job.message = p.stage, p.done, p.total, p.message

        def installed(got: GotPack) -> None:
            self.on_change()
            job.state = "weights"
            r = got.built
            job.message = f"{r.count:,} images in the pack: {r.fetched:,} of {r.listed:,} fetched, {r.failed:,} failed"

        with self._reported(job, cancelled="cancelled: what was fetched is kept for the next build"):
            job.state = "building"
            self._get(recipe, job, progress, installed, chosen)

    def _run(self, job: DownloadJob, rp: RegistryPack) -> None:
        def progress(step) -> None:
            job.done = step.done
            if job.state == "queued":
                job.state = "downloading"
            if job.done >= job.total and job.state == "downloading":
                job.state = "verifying"

        def installed(got: GotPack) -> None:
            job.state = "weights"

        with self._reported(job):
            job.state = "downloading"
            self.on_change()  # let go of open packs before one is replaced
            self._get(rp, job, progress, installed)

    def _get(self, entry, job: DownloadJob, progress, installed, chosen: dict | None = None) -> None:
        """The pack or recipe got as the command line gets it; then the job says it is installed."""
        build = None
        if self.build_recipe is not None:
            def build(recipe, packs_dir, **kw):
                return self.build_recipe(recipe, packs_dir, gate=self.gate, models_dir=str(self.models_dir),
                                         **(chosen or {}), **kw)
        get_pack(entry, self.installer, models_dir=self.models_dir, build=build, progress=progress, cancel=job.cancel,
                 on_installed=installed, weights_progress=False)
        job.state = "installed"

    def cancel(self, name: str) -> DownloadJob:
        job = self.jobs.get(name)
        if job is None or not job.request_cancel():
            raise ReplicheckError(f"no download or build of {name!r} is running")
        return job

    def verify(self, name: str) -> None:
        self.installer.verify(name)

    def remove(self, name: str) -> list[Path]:
        """The installed pack and what unfinished downloads or builds of it left (Installer.remove)."""
        job = self.jobs.get(name)
        if job is not None and job.active:
            raise ReplicheckError(f"{name} is being downloaded or built: cancel it first")
        self.on_change()
        removed = self.installer.remove(name)
        self.on_change()
        return removed

    def wait(self, name: str, timeout: float = 600.0) -> DownloadJob:
        """Block until the download of `name` ends (for the command line and tests)."""
        end = time.time() + timeout
        while time.time() < end and self.jobs[name].active:
            time.sleep(0.05)
        return self.jobs[name]
