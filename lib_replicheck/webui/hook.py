"""What happens around a generation, independent of the web UI's classes.

`scripts/replicheck.py` calls these from the web UI's hooks: `begin` when processing starts,
`image` for each finished image (before the web UI saves it and builds its infotext), `end` when
the generation is done. Results go to the live store as each image is checked, so the page can
show them while later images are still being generated.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

from lib_replicheck.report import Report, infotext
from lib_replicheck.memorization.signal import DEFAULT_THRESHOLD, MITIGATION_NOISE
from lib_replicheck.webui.live import LiveJob
from lib_replicheck.webui.service import CheckService, NoPackError
from lib_replicheck.webui.settings import Settings
from lib_replicheck.memorization.tracker import SignalTracker
from lib_replicheck.memorization import prompts as known_prompts

log = logging.getLogger("replicheck")

INFOTEXT_KEY = "Replicheck"
SIGNAL_KEY = "Replicheck memorization"
MITIGATION_KEY = "Replicheck mitigation"
INFOTEXT_KEYS = (INFOTEXT_KEY, SIGNAL_KEY, MITIGATION_KEY)
#: known memorized prompt: set once per generation, before sampling (not per checked image)
PROMPT_KEY = "Replicheck prompt"
NO_PACK = "no pack installed"
PACK_MISSING = "pack not installed"
INTERRUPTED = ("The generation ended before every image was checked (it failed or was interrupted); the images "
               "checked so far are shown.")


def _in_grid_infotext(depth: int = 6) -> bool:
    """Whether the text is being written by SD.Next's `create_infotext(..., grid=...)`, which builds
    the grid's infotext after the last image's with the values as plain text (it calls no value)."""
    f = sys._getframe(2)
    for _ in range(depth):
        if f is None:
            return False
        if f.f_code.co_name == "create_infotext" and f.f_locals.get("grid") is not None:
            return True
        f = f.f_back
    return False


class PerImageValue(str):
    """An infotext value that differs from image to image.

    The web UI (AUTOMATIC1111 1.10, Forge) calls a callable value of `p.extra_generation_params`
    with create_infotext's locals: it answers the value of the image asked for, and None for the
    grid (`use_main_prompt`), which is not checked, so the grid never carries an image's verdict.
    As a str it reads as the current image's value where values are not called (Processed.js,
    SD.Next), except in SD.Next's grid infotext, which says `not checked (grid)`. `index` is the
    position in the batch when the web UI builds an image's infotext from the batch's prompts, and
    the position in the job when it passes all prompts.
    """

    def __new__(cls, current: str, values: dict | None = None, key: str = ""):
        obj = super().__new__(cls, current)
        obj.values = values if values is not None else {}
        obj.key = key
        return obj

    #: What the grid's infotext says where the web UI cannot be given None for it (SD.Next).
    GRID = "not checked (grid)"

    def __str__(self) -> str:
        return self.GRID if _in_grid_infotext() else str.__str__(self)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __call__(self, p=None, index=None, use_main_prompt=False, all_prompts=None, **kwargs):
        if use_main_prompt:
            return None
        i = int(index or 0)
        job_prompts = getattr(p, "all_prompts", None)
        if p is not None and all_prompts is not None and job_prompts is not None and len(all_prompts) != len(job_prompts):
            i += int(getattr(p, "iteration", 0) or 0) * int(getattr(p, "batch_size", 1) or 1)
        return self.values.get(i, {}).get(self.key)


@dataclass
class JobState:
    """Per-generation state, kept on the processing object."""

    job: LiveJob
    settings: Settings
    input_copies: set[tuple[str, int]] = field(default_factory=set)
    flagged: set[int] = field(default_factory=set)  # indices of images flagged as copies
    skip: bool = False  # no pack: nothing to check, the panel says why
    reason: str = ""  # why the images are not checked (infotext wording, no local names)
    tracker: SignalTracker | None = None
    values: dict[int, dict[str, str]] = field(default_factory=dict)  # image index -> infotext values
    prompt_hits: dict = field(default_factory=dict)  # position in the job -> known_prompts.PromptMatch


class Hook:
    def __init__(self, service: CheckService, settings: Callable[[], Settings]):
        self.service = service
        self.settings = settings
        #: the tracker of the generation being sampled (the web UI samples one at a time); the CFG
        #: callbacks return at once while it is None
        self.tracker: SignalTracker | None = None

    def begin(self, tab: str, enabled: bool, expected: int, init_images: Sequence | None = None, *,
              signal: str | None = None, sd1: bool = True, seed: int = 0,
              prompts: Sequence[str] = ()) -> JobState | None:
        """`signal`: None when the memorization signal can be measured here, else why it cannot;
        `sd1`: whether the loaded model is SD 1.x, the family the default threshold is calibrated for;
        `prompts`: the job's prompts (p.all_prompts), compared with the known memorized prompts."""
        settings = self.settings()
        live = self.service.live
        if not enabled:
            live.start(tab, expected, state="disabled")
            self.tracker = None
            return None
        self.service.new_job()
        try:
            paths = self.service.pack_paths(settings)
            state = None
        except NoPackError as e:
            state = JobState(live.start(tab, expected, state="error", message=str(e)), settings, skip=True,
                             reason=PACK_MISSING)
        if state is None and not paths:
            message = (f"No pack installed. Download one in the Replicheck tab (the demo pack to try it), or put "
                       f"a pack folder into {self.service.packs_dir}. Then generate again.")
            state = JobState(live.start(tab, expected, state="no-pack", message=message), settings, skip=True,
                             reason=NO_PACK)
        if state is None:
            state = JobState(live.start(tab, expected), settings)
        self._start_signal(state, tab, signal, sd1, seed)
        self._check_prompts(state, prompts)
        if state.skip:
            return state
        if init_images and settings.check_input:
            labels = [f"input image {i + 1}" if len(init_images) > 1 else "input image" for i in range(len(init_images))]
            reports = self.service.check(list(init_images), labels, settings)
            live.update(state.job, input_reports=reports)
            state.input_copies = {(m.pack, m.id) for r in reports for m in r.matches if m.verdict.is_copy}
        return state

    def _start_signal(self, state: JobState, tab: str, unavailable: str | None, sd1: bool, seed: int) -> None:
        s = state.settings
        self.tracker = None
        if not s.mem_enabled:
            return
        if tab != "txt2img":
            unavailable = unavailable or "measured for txt2img only: img2img starts from the input image"
        calibrated = sd1 or s.mem_threshold != DEFAULT_THRESHOLD
        job = state.job

        def publish(signals):
            self.service.live.update(job, signals=signals)

        tracker = SignalTracker(s.mem_steps, s.mem_threshold, calibrated, mitigate=s.mem_mitigate, seed=seed,
                                publish=publish, unavailable=unavailable)
        state.tracker = tracker
        if not unavailable:
            self.tracker = tracker  # the CFG callbacks measure only for this one

    def _check_prompts(self, state: JobState, prompts: Sequence[str]) -> None:
        """Known memorized prompts, before sampling: the hits go to the panel at once. A failure (an
        unreadable list) is one panel line and one log line; the generation goes on."""
        if not state.settings.prompt_check or not prompts:
            return
        try:
            state.prompt_hits = known_prompts.default_index().match_job(list(prompts))
            hits = list({(m.list_name, m.row): m for m in state.prompt_hits.values()}.values())
            self.service.live.update(state.job, prompt_hits=hits)
        except Exception as e:  # noqa: BLE001 - the prompt check must never stop a generation
            log.warning("replicheck: the known-prompt check failed: %s: %s", type(e).__name__, e)
            self.service.live.update(state.job, prompt_error=f"The known-prompt check failed: {e}")

    def prompt_infotext(self, state: JobState | None) -> "PerImageValue | None":
        """The infotext value of the known-prompt hits: each image whose prompt matches says which list
        ('known memorized prompt (SD 1.x, verbatim): Webster 2023'); None when none does."""
        if state is None or not state.prompt_hits or not state.settings.infotext:
            return None
        values = {i: {PROMPT_KEY: m.summary()} for i, m in state.prompt_hits.items()}
        first = state.prompt_hits[min(state.prompt_hits)]
        return PerImageValue(first.summary(), values, PROMPT_KEY)

    def batch(self, state: JobState | None, batch_number: int, prompts: list[str]) -> None:
        """A batch starts sampling (the web UI's process_batch)."""
        if state is not None and state.tracker is not None:
            state.tracker.start_batch(batch_number, list(prompts))

    def signal_infotext(self, state: JobState | None, index: int) -> dict[str, str]:
        if state is None or state.tracker is None or not state.settings.infotext:
            return {}
        sig = state.tracker.signals.get(index)
        if sig is None or sig.magnitude is None:  # not measured: nothing worth writing into the image
            return {}
        out = {SIGNAL_KEY: sig.infotext()}
        if sig.mitigated_from is not None:
            out[MITIGATION_KEY] = f"text noise {MITIGATION_NOISE} from step {sig.mitigated_from}"
        return out

    def image(self, state: JobState, image, index: int, label: str | None = None) -> Report | None:
        if state is None or state.skip:
            return None
        report = self.service.check([image], [label or f"image {index + 1}"], state.settings)[0]
        if report.best is not None and report.is_copy and (report.best.pack, report.best.id) in state.input_copies:
            report.from_input = True
            report.notes.append("this training image is already in the img2img input image: the match comes "
                                "from the input, not from the model")
        if report.flagged():
            state.flagged.add(index)
        self.service.live.add(state.job, index, report)
        return report

    def infotext(self, state: JobState, report: Report | None) -> str | None:
        """The infotext value for this image ('no copy (best 0.310, demo)', 'not checked (no pack
        installed)', ...), or None when replicheck or the setting is off."""
        if state is None or not state.settings.infotext:
            return None
        if state.skip:
            return infotext(None, state.reason)
        if report is None:
            return None
        return infotext(report)

    def image_values(self, state: JobState | None, index: int, report: Report | None) -> dict[str, str]:
        """Every infotext value of image `index` (verdict, memorization signal), remembered per image."""
        if state is None:
            return {}
        values = {}
        verdict = self.infotext(state, report)
        if verdict:
            values[INFOTEXT_KEY] = verdict
        values.update(self.signal_infotext(state, index))
        state.values[index] = values
        return values

    def settle(self, generating: bool) -> None:
        """A generation that fails never reaches `end`: once no generation is running, a job still
        'checking' is closed, so the panel does not wait for images that will never come."""
        if generating:
            return
        for job in list(self.service.live.jobs.values()):
            if job.state == "checking":
                self.service.live.update(job, state="interrupted", message=INTERRUPTED)
                self.tracker = None

    def should_delete_saved(self, state: JobState | None, index: int) -> bool:
        return bool(state and state.settings.dont_save_copies and index in state.flagged)

    def end(self, state: JobState | None) -> None:
        if state is None:
            return
        if state.tracker is not None:
            if state.tracker is self.tracker:
                state.tracker.finish()
            self.tracker = None
        job = state.job
        if not state.skip:
            errors = [r.error for r in job.reports.values() if r.error]
            self.service.live.update(job, state="error" if errors and len(errors) == len(job.reports) else "done",
                                     message=errors[0] if errors else "")
        else:
            self.service.live.update(job)  # the generation is over: its cards say 'not checked'
        self.service.release(state.settings)
