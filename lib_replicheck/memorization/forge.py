"""The memorization signal on Forge.

Forge never calls the CFG callbacks the other web UIs measure in: its own sampling function
(backend/sampling/sampling_function.py) guides, then hands the conditional and unconditional
predictions to every function registered with `set_model_sampler_post_cfg_function`, as its SAG
and PAG extensions use them. Like those, replicheck registers one on a clone of the UNet patcher
before each sampling (Forge resets `p.sd_model.forge_objects` just before calling
`process_before_every_sampling`), and the function only reads: it returns the guided result it
was given, unchanged. Where no script hook runs before sampling (a calibration run) or the model
was loaded after it (Forge loads it lazily, inside the first generation), the CFG denoiser
callback, which Forge calls at every step before guiding, registers it on the UNet that sampling
uses. Any failure, when registering or while sampling, stops the measurement (the images say
why), leaves one log line, and never reaches the generation.
"""

from __future__ import annotations

import logging
from lib_replicheck.memorization.tracker import SignalTracker

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

    def __deepcopy__(self, memo):
        """Forge deep-copies model_options whenever a patcher is cloned (a later extension's clone
        included): the copy must still measure into this generation's tracker."""
        return self

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
    return _register(lambda: p.sd_model.forge_objects, tracker, log)


def attach_at_step(params, tracker: SignalTracker | None, log: logging.Logger) -> bool:
    """At the CFG denoiser callback of a step (`params.denoiser` is Forge's CFGDenoiser, whose UNet
    the sampling function reads after the callback): register the measurement there unless that
    UNet carries it already. Returns whether it was registered now."""
    return _register(lambda: params.denoiser.inner_model.inner_model.forge_objects, tracker, log)


def _register(objects_of, tracker: SignalTracker | None, log: logging.Logger) -> bool:
    """On a clone of the UNet patcher, as Forge's own extensions do, unless it carries it already."""
    if tracker is None or not tracker.measuring:
        return False
    try:
        objects = objects_of()
        registered = objects.unet.model_options.get("sampler_post_cfg_function", [])
        if any(isinstance(f, PostCfgMeasure) and f.tracker is tracker for f in registered):
            return False
        unet = objects.unet.clone()
        unet.set_model_sampler_post_cfg_function(PostCfgMeasure(tracker, log))
        objects.unet = unet
        return True
    except Exception as e:  # noqa: BLE001 - an unexpected Forge: no signal, the generation goes on
        tracker.stop(UNAVAILABLE.format(error=_log_once(log, "when registering", e)))
        return False
