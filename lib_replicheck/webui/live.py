"""The live panel's store: per tab, the latest generation's reports as they are checked, and a
sequence number the page polls to see that something changed."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field, fields
from typing import ClassVar

from lib_replicheck.report import Report
from lib_replicheck.webui.jobs import Job


@dataclass
class LiveJob(Job):
    """The results of one generation, filled in image by image as they are checked (the hook's
    callbacks do the work, in the web UI's threads: this job has none of its own)."""

    id: int
    tab: str
    expected: int
    state: str = field(default="checking", kw_only=True)  # checking, done, error, interrupted, no-pack, disabled
    reports: dict[int, Report] = field(default_factory=dict)
    input_reports: list[Report] = field(default_factory=list)
    signals: dict = field(default_factory=dict)  # image index -> memorization.Signal
    prompt_hits: list = field(default_factory=list)  # memorization.prompts.PromptMatch, distinct
    prompt_error: str = ""  # why the known-prompt check could not run
    sign_error: str = ""  # why a saved image was not signed (webui/signing.py)

    RUNNING: ClassVar[tuple[str, ...]] = ("checking",)

    def counts(self) -> tuple[int, int]:
        """Images checked of those the generation makes."""
        return len(self.reports), self.expected


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
            job = LiveJob(next(self._ids), tab, expected, state=state, message=message)
            self.jobs[tab] = job
            self._touch()
            return job

    def add(self, job: LiveJob, index: int, report: Report) -> None:
        with self._lock:
            job.reports[index] = report
            self._touch()

    def update(self, job: LiveJob, **changes) -> None:
        """Set declared fields of `job` (a misspelt name raises instead of being stored unseen)."""
        unknown = set(changes) - {f.name for f in fields(LiveJob)}
        if unknown:
            raise AttributeError(f"LiveJob has no field {', '.join(sorted(unknown))}")
        with self._lock:
            for k, v in changes.items():
                setattr(job, k, v)
            self._touch()

    def get(self, tab: str) -> LiveJob | None:
        return self.jobs.get(tab)
