"""The memorization signal in ComfyUI (Wen et al., ICLR 2024), measured as on Forge.

ComfyUI's sampling (comfy/samplers.py `cfg_function`) hands the conditional and unconditional
predictions to every function registered with the model patcher's
`set_model_sampler_post_cfg_function`, with the same arguments Forge's sampling function passes.
The `Replicheck Memorization Signal` node registers Forge's measuring function
(memorization/forge.py PostCfgMeasure, which returns the guided result unchanged) on a clone of
the MODEL it is given, as ComfyUI's own model patches do; the Check node later in the prompt reads
what was measured. A new sampling is recognised by its noise level rising again.
"""

from __future__ import annotations

import logging
import threading

from lib_replicheck.memorization.forge import PostCfgMeasure
from lib_replicheck.memorization.signal import DEFAULT_THRESHOLD, Signal
from lib_replicheck.memorization.tracker import SignalTracker
from lib_replicheck.webui.settings import DEFAULTS

log = logging.getLogger("replicheck")

NOT_IN_WORKFLOW = ("not measured: put the Replicheck Memorization Signal node between the model loader and the "
                   "sampler")
NO_POST_CFG = "this ComfyUI's model patcher has no set_model_sampler_post_cfg_function"


class Measurements:
    """The signals of the last sampling, per image of its batch; one per ComfyUI process."""

    def __init__(self):
        self._lock = threading.Lock()
        self.signals: dict[int, Signal] = {}

    def publish(self, signals: dict[int, Signal]) -> None:
        with self._lock:
            self.signals = dict(signals)

    def take(self) -> dict[int, Signal]:
        """What was measured since the last take (each sampling's signals are read once)."""
        with self._lock:
            out, self.signals = self.signals, {}
        return out


MEASUREMENTS = Measurements()


class ComfyMeasure(PostCfgMeasure):
    """Forge's measuring function, starting a new tracker whenever a sampling starts."""

    def __init__(self, steps: int, threshold: float, calibrated: bool, measurements: Measurements = MEASUREMENTS):
        self.settings = (int(steps), float(threshold), bool(calibrated))
        self.measurements = measurements
        self.last_sigma: float | None = None
        super().__init__(self._tracker(), log)

    def _tracker(self) -> SignalTracker:
        steps, threshold, calibrated = self.settings
        return SignalTracker(steps, threshold, calibrated, publish=self.measurements.publish)

    def __call__(self, args: dict):
        try:
            sigma = float(args["sigma"].max())
            batch = int(args["cond_denoised"].shape[0])
        except Exception:  # noqa: BLE001 - arguments of another shape: leave sampling alone
            return args["denoised"]
        if self.last_sigma is None or sigma > self.last_sigma:  # a new sampling (or the first)
            self.tracker, self.failed = self._tracker(), False
            self.tracker.start_batch(0, [""] * batch)
        self.last_sigma = sigma
        return super().__call__(args)


def is_sd1(model) -> bool:
    """Whether ComfyUI detected the checkpoint as SD 1.x, the family the default threshold is set for."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    return type(config).__name__ in ("SD15", "SD15_instructpix2pix")


def attach(model, steps: int, threshold: float) -> tuple[object, str]:
    """A clone of ComfyUI's MODEL (a ModelPatcher) that measures the signal, and '' ; or the model
    itself and why it cannot be measured."""
    if not hasattr(model, "set_model_sampler_post_cfg_function"):
        return model, NO_POST_CFG
    calibrated = is_sd1(model) or float(threshold) != DEFAULT_THRESHOLD
    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(ComfyMeasure(steps, threshold, calibrated))
    return patched, ""


class ReplicheckSignal:
    """MODEL in, the same model out, measuring the memorization signal while it samples."""

    CATEGORY = "replicheck"
    DESCRIPTION = ("Measures, during the first sampling steps, how strongly the prompt pulls the model towards a "
                   "memorized training image (Wen et al., ICLR 2024); the Replicheck Check node shows it. Changes "
                   "nothing in the images.")
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "steps": ("INT", {"default": DEFAULTS["replicheck_mem_steps"], "min": 1, "max": 10, "step": 1,
                              "tooltip": "steps to average (Wen et al.: the first step is enough)"}),
            "threshold": ("FLOAT", {"default": DEFAULTS["replicheck_mem_threshold"], "min": 0.01, "max": 100.0,
                                    "step": 0.01, "tooltip": "calibrated for SD 1.x only (see the README)"}),
        }}

    def patch(self, model, steps=DEFAULTS["replicheck_mem_steps"], threshold=DEFAULTS["replicheck_mem_threshold"]):
        patched, why = attach(model, steps, threshold)
        if why:
            log.warning("replicheck: the memorization signal is unavailable: %s", why)
            MEASUREMENTS.publish({0: Signal(threshold=float(threshold), note=why)})
        return (patched,)
