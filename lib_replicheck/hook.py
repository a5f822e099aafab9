"""What happens around a generation, independent of the web UI's classes.

`scripts/replicheck.py` calls these from the web UI's hooks: `begin` when processing starts,
`image` for each finished image (before the web UI saves it and builds its infotext), `end` when
the generation is done. Results go to the live store as each image is checked, so the page can
show them while later images are still being generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .check import Report
from .service import CheckService, LiveJob, NoPackError
from .settings import Settings

INFOTEXT_KEY = "Replicheck"


@dataclass
class JobState:
    """Per-generation state, kept on the processing object."""

    job: LiveJob
    settings: Settings
    input_copies: set[tuple[str, int]] = field(default_factory=set)
    flagged: set[int] = field(default_factory=set)  # indices of images flagged as copies
    skip: bool = False  # no pack: nothing to check, the panel says why


class Hook:
    def __init__(self, service: CheckService, settings: Callable[[], Settings]):
        self.service = service
        self.settings = settings

    def begin(self, tab: str, enabled: bool, expected: int, init_images: Sequence | None = None) -> JobState | None:
        settings = self.settings()
        live = self.service.live
        if not enabled:
            live.start(tab, expected, state="disabled")
            return None
        self.service.new_job()
        try:
            paths = self.service.pack_paths(settings)
        except NoPackError as e:
            return JobState(live.start(tab, expected, state="error", message=str(e)), settings, skip=True)
        if not paths:
            message = (f"No pack installed. Put a pack folder into {self.service.packs_dir}, or build one from a "
                       f"folder of images: python -m lib_replicheck build FOLDER --out {self.service.packs_dir}/NAME "
                       "--embedder sscd. Then generate again.")
            return JobState(live.start(tab, expected, state="no-pack", message=message), settings, skip=True)
        state = JobState(live.start(tab, expected), settings)
        if init_images and settings.check_input:
            labels = [f"input image {i + 1}" if len(init_images) > 1 else "input image" for i in range(len(init_images))]
            reports = self.service.check(list(init_images), labels, settings)
            live.update(state.job, input_reports=reports)
            state.input_copies = {(m.pack, m.id) for r in reports for m in r.matches if m.verdict.is_copy}
        return state

    def image(self, state: JobState, image, index: int, label: str | None = None) -> Report | None:
        if state is None or state.skip:
            return None
        report = self.service.check([image], [label or f"image {index + 1}"], state.settings)[0]
        if report.best is not None and report.is_copy and (report.best.pack, report.best.id) in state.input_copies:
            report.from_input = True
            report.notes.append("this training image is already in the img2img input image: the match comes "
                                "from the input, not from the model")
        if report.is_copy and not report.from_input:
            state.flagged.add(index)
        self.service.live.add(state.job, index, report)
        return report

    def infotext(self, state: JobState, report: Report | None) -> str | None:
        """The infotext value for this image, or None when the setting is off or nothing was checked."""
        if state is None or report is None or not state.settings.infotext:
            return None
        return report.summary()

    def should_delete_saved(self, state: JobState | None, index: int) -> bool:
        return bool(state and state.settings.dont_save_copies and index in state.flagged)

    def end(self, state: JobState | None) -> None:
        if state is None:
            return
        job = state.job
        if not state.skip:
            errors = [r.error for r in job.reports.values() if r.error]
            self.service.live.update(job, state="error" if errors and len(errors) == len(job.reports) else "done",
                                     message=errors[0] if errors else "")
        self.service.release(state.settings)
