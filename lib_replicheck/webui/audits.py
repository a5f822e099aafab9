"""The web UI's "Check a folder": folders checked one at a time in a background thread, each ending in
an HTML report that only the route of its job serves.

The check itself is audit.py's, the same as the command line's; what is here is the web UI's
part: the job with its progress and cancel (webui/jobs.py), a checker that goes through the web
UI's one check thread, and the tab's line about the job in hand.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterable

from lib_replicheck.audit import MAX_ENTRIES, MAX_IMAGES, Progress, list_images, run_audit
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.html_report import duration_text, esc, write_html
from lib_replicheck.report import Report
from lib_replicheck.webui.jobs import Job

#: Where a finished job's report is served (webui/api.py), and the tab links to.
REPORT_ROUTE = "/replicheck/v1/audits/{id}/report"


class ServiceChecker:
    """What run_audit needs of a Checker, over the web UI's check service: every batch goes through
    the service's one check thread (`service.check(images, labels, settings)`), so a generation's
    own check waits for one small batch at most, and the packs and model are the ones already loaded."""

    def __init__(self, service, settings, batch: int = 4):
        self.service = service
        self.settings = settings
        checker = service.checker(settings)  # the packs chosen in Settings; NoPackError when there is none
        self.packs = list(checker.packs)
        self.tiers = dict(getattr(settings, "tiers", None) or checker.tiers)
        self.load_seconds = 0.0
        self.batch = max(1, int(batch))

    def check_files(self, paths: Iterable[str | Path], batch: int | None = None) -> Iterable[Report]:
        from lib_replicheck.errors import ImageError
        from lib_replicheck.images import decode

        size = self.batch if batch is None else max(1, min(int(batch), self.batch))
        paths = list(paths)
        for start in range(0, len(paths), size):
            group = []
            for p in paths[start:start + size]:
                try:
                    group.append((str(p), decode(p)))
                except ImageError as e:
                    group.append((str(p), e))
            good = [(label, im) for label, im in group if not isinstance(im, ImageError)]
            checked = iter(self.service.check([im for _, im in good], [label for label, _ in good], self.settings)
                           if good else [])
            for label, im in group:
                yield Report(image=label, error=im.reason) if isinstance(im, ImageError) else next(checked)


@dataclass
class AuditJob(Job):
    """One folder being checked, or checked: what the tab shows and the report route serves."""

    id: str  # 32 hex digits: the report's address, not guessable
    folder: str
    state: str = field(default="listing", kw_only=True)  # listing, checking, writing, done, cancelled, error
    progress: Progress = field(default_factory=lambda: Progress(0, 0, 0, 0, 0.0))
    report: Path | None = None
    left_out: int = 0

    RUNNING: ClassVar[tuple[str, ...]] = ("listing", "checking", "writing")

    def counts(self) -> tuple[int, int]:
        return self.progress.done, self.progress.total

    def to_dict(self) -> dict:
        return {"id": self.id, "folder": self.folder, **super().to_dict(), **self.progress.to_dict()}


class AuditJobs:
    """Folders checked one at a time in a background thread, each ending in an HTML report written
    into `reports_dir` under its job's id. Only reports written here are served (`report_file`)."""

    def __init__(self, reports_dir: str | Path, make_checker: Callable[[], object], *,
                 max_images: int = MAX_IMAGES, max_entries: int = MAX_ENTRIES, keep: int = 20,
                 log: Callable[[str], None] | None = None):
        self.reports_dir = Path(reports_dir)
        self.make_checker = make_checker
        self.max_images = max_images
        self.max_entries = max_entries
        self.keep = keep
        self.log = log or (lambda s: None)
        self.jobs: dict[str, AuditJob] = {}
        self._lock = threading.Lock()

    @staticmethod
    def folder_of(text: str) -> Path:
        """The folder the user typed: an absolute path to an existing folder; ReplicheckError otherwise."""
        text = (text or "").strip()
        if not text:
            raise ReplicheckError("type the path of a folder on the server, e.g. outputs/txt2img-images/2024-05-01")
        if len(text) > 4096 or "\x00" in text:
            raise ReplicheckError("that path is not one a folder can have")
        folder = Path(os.path.expanduser(text))
        if not folder.is_absolute():
            folder = Path.cwd() / folder
        if not folder.is_dir():
            raise ReplicheckError(f"{folder}: no such folder on the server")
        return folder

    def start(self, folder_text: str) -> AuditJob:
        """Start checking a folder in the background; ReplicheckError (shown as it is) when the path is
        no folder or another folder is being checked."""
        import secrets

        folder = self.folder_of(folder_text)
        with self._lock:
            busy = [j for j in self.jobs.values() if j.running]
            if busy:
                raise ReplicheckError(f"{busy[0].folder} is being checked; wait for it, or cancel it")
            job = AuditJob(id=secrets.token_hex(16), folder=str(folder))
            self.jobs[job.id] = job
            self._forget_old()
        job.run(lambda: self._run(job), thread_name="replicheck-audit", what=f"checking {job.folder}", log=self.log)
        return job

    def get(self, job_id: str) -> AuditJob | None:
        return self.jobs.get(job_id) if isinstance(job_id, str) else None

    def cancel(self, job_id: str) -> bool:
        job = self.get(job_id)
        return job is not None and job.request_cancel()

    def report_file(self, job_id: str) -> Path | None:
        """The report of a finished job of this process, or None (an unknown id, or not written)."""
        job = self.get(job_id)
        if job is None or job.report is None or not job.report.is_file():
            return None
        return job.report

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if not j.running]
        for j in finished[: max(0, len(finished) - self.keep)]:
            self.jobs.pop(j.id, None)
            if j.report is not None:
                try:
                    j.report.unlink()
                except OSError:
                    pass

    def _run(self, job: AuditJob) -> None:
        """The folder listed, checked and its report written, in the job's thread (Job.run reports a
        failure)."""
        files, job.left_out = list_images([job.folder], max_images=self.max_images,
                                          max_entries=self.max_entries, confine=True)
        if not files:
            raise ReplicheckError(f"{job.folder}: no image files in it")
        job.progress = Progress(0, len(files), 0, 0, 0.0)
        job.state = "checking"
        checker = self.make_checker()

        def on_progress(p: Progress) -> None:
            job.progress = p

        audit = run_audit(checker, files, roots=[job.folder], on_progress=on_progress, cancel=job.cancel,
                          left_out=job.left_out, batch=4)
        job.state = "writing"
        path = write_html(audit, self.reports_dir / f"{job.id}.html",
                          title=f"Replicheck report: {Path(job.folder).name or job.folder}")
        job.report = path
        job.state = "cancelled" if audit.cancelled else "done"
        job.message = audit.counts().text() + (" (cancelled)" if audit.cancelled else "")


def job_html(job) -> str:
    """The tab's status of a folder check (AuditJob): a progress bar with count, rate and time
    left while it runs, then a link that opens the report in a new tab."""
    p = job.progress
    if job.state == "error":
        return f"<p class='rc-error-text' data-state='error'>{esc(job.message, 600)}</p>"
    if job.running:
        pct = 100.0 * p.done / p.total if p.total else 0.0
        left = "" if p.seconds_left is None else f", about {duration_text(p.seconds_left)} left"
        rate = f", {p.rate:.1f} images/s" if p.rate else ""
        what = {"listing": "listing the folder", "writing": "writing the report"}.get(
            job.state, f"{p.done} of {p.total} images checked{rate}{left}; {p.flagged} flagged")
        return (f"<div class='rc-audit' data-state='{esc(job.state)}' data-done='{p.done}' data-total='{p.total}'>"
                f"<div>Checking {esc(job.folder, 300)}: {esc(what, 300)}</div>"
                f"<progress max='100' value='{pct:.1f}' style='width:100%'></progress></div>")
    url = REPORT_ROUTE.format(id=job.id)
    left_out = f" {job.left_out} more image file(s) were past the limit." if job.left_out else ""
    return (f"<div class='rc-audit' data-state='{esc(job.state)}' data-done='{p.done}' data-total='{p.total}'>"
            f"<p>{esc(job.folder, 300)}: {esc(job.message, 300)}.{esc(left_out)} "
            f"<a class='rc-report-link' href='{url}' target='_blank' rel='noopener noreferrer'>Open the report</a></p></div>")
