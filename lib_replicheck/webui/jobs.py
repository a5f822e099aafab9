"""What every background job of the web UI shares: its state in words, a message, progress as
done of total, a cancel flag, the thread it runs in, and its JSON form.

The three kinds (a generation's live check, webui/live.py; a folder check, webui/audits.py; a pack
download or build) each add their own fields and name their own states; the rules that a job's
thread reports how it ended instead of dying silently, and that only a running job can be
cancelled, are written once here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, ClassVar

from lib_replicheck.errors import ReplicheckError


@dataclass(kw_only=True)
class Job:
    """A job's shared part; subclasses name their states in RUNNING and FAILED."""

    state: str = ""
    message: str = ""
    cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    #: the states in which the job is still going on
    RUNNING: ClassVar[tuple[str, ...]] = ()
    #: the state a job ends in when its work raised
    FAILED: ClassVar[str] = "error"

    @property
    def running(self) -> bool:
        return self.state in self.RUNNING

    def counts(self) -> tuple[int, int]:
        """Done and total so far, in the job's own unit (images, bytes); (0, 0) when it has none."""
        return 0, 0

    @property
    def fraction(self) -> float:
        """How far the job is, in [0, 1]; 0 while its total is unknown."""
        done, total = self.counts()
        return round(min(1.0, done / total), 4) if total else 0.0

    def request_cancel(self) -> bool:
        """Ask a running job to stop at its next check of `cancel`; False when it is not running."""
        if not self.running:
            return False
        self.cancel.set()
        return True

    def fail(self, message: str) -> None:
        self.state, self.message = self.FAILED, message

    def run(self, work: Callable[[], None], *, thread_name: str, what: str,
            log: Callable[[str], None] | None = None) -> threading.Thread:
        """Run `work` in a daemon thread. However it ends, the job says so: a ReplicheckError's message
        as it is, anything else as 'unexpected ...' and one log line naming `what` was being done."""

        def guarded() -> None:
            try:
                work()
            except ReplicheckError as e:
                self.fail(str(e))
            except Exception as e:  # noqa: BLE001 - a background job: the page shows it, nothing is raised
                self.fail(f"unexpected {type(e).__name__}: {str(e)[:300]}")
                if log is not None:
                    log(f"replicheck: {what} failed: {self.message}")

        thread = threading.Thread(target=guarded, name=thread_name, daemon=True)
        thread.start()
        return thread

    def to_dict(self) -> dict:
        done, total = self.counts()
        return {"state": self.state, "message": self.message, "running": self.running, "done": done,
                "total": total, "fraction": self.fraction}
