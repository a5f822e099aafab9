"""The memorization signal on Forge.

Forge never calls the CFG callbacks the other web UIs measure in: its own sampling function
(backend/sampling/sampling_function.py) guides, then hands the conditional and unconditional
predictions to every function registered with `set_model_sampler_post_cfg_function`, as its SAG
and PAG extensions use them. Like those, replicheck registers one on a clone of the UNet patcher
before each sampling (Forge resets `p.sd_model.forge_objects` just before calling
`process_before_every_sampling`), and the function only reads: it returns the guided result it
was given, unchanged. Any failure, when registering or while sampling, stops the measurement
(the images say why), leaves one log line, and never reaches the generation.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from .signal_tracker import SignalTracker

UNAVAILABLE = "Forge's sampling function did not accept the measurement ({error}); images are generated as usual"
_logged: set[str] = set()


def _log_once(log: logging.Logger, what: str, e: BaseException) -> str:
    error = f"{type(e).__name__}: {e}"
    if what not in _logged:
        _logged.add(what)
        log.warning("replicheck: the memorization signal on Forge failed %s: %s (logged once)", what, error)
    return error


class PostCfgMeasure:
    """The function registered with `set_model_sampler_post_cfg_function`: measures, never changes."""

    def __init__(self, tracker: SignalTracker, log: logging.Logger):
        self.tracker = tracker
        self.log = log
        self.failed = False

    def __call__(self, args: dict):
        denoised = args["denoised"]
        if self.failed or not self.tracker.measuring:
            return denoised
        try:
            self.tracker.on_post_cfg(args)
        except Exception as e:  # noqa: BLE001 - the measurement must never break sampling
            self.failed = True
            self.tracker.stop(UNAVAILABLE.format(error=_log_once(self.log, "while sampling", e)))
        return denoised


def attach(p, tracker: SignalTracker | None, log: logging.Logger) -> bool:
    """Register the measurement for the sampling about to start (Forge's process_before_every_sampling).
    Nothing is done when no batch is being measured (the feature is off, or its first steps are
    measured already, e.g. the hires pass). Returns whether it was registered."""
    if tracker is None or not tracker.measuring:
        return False
    try:
        objects = p.sd_model.forge_objects
        unet = objects.unet.clone()
        unet.set_model_sampler_post_cfg_function(PostCfgMeasure(tracker, log))
        objects.unet = unet
        return True
    except Exception as e:  # noqa: BLE001 - an unexpected Forge: no signal, the generation goes on
        tracker.stop(UNAVAILABLE.format(error=_log_once(log, "when registering", e)))
        return False


@contextmanager
def calibrating(sd_model, tracker: SignalTracker, log: logging.Logger) -> Iterator[None]:
    """For a calibration run, which has no scripts to call process_before_every_sampling: the
    measurement goes onto the UNet that each sampling starts from, and is taken off afterwards."""
    objects = getattr(sd_model, "forge_objects_after_applying_lora", None)
    original = getattr(objects, "unet", None)
    if original is not None:
        try:
            unet = original.clone()
            unet.set_model_sampler_post_cfg_function(PostCfgMeasure(tracker, log))
            objects.unet = unet
        except Exception as e:  # noqa: BLE001
            tracker.stop(UNAVAILABLE.format(error=_log_once(log, "when registering", e)))
            original = None
    try:
        yield
    finally:
        if original is not None:
            objects.unet = original
