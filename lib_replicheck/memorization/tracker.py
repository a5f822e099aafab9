"""Follows one generation's sampling through the web UI's CFG callbacks and measures, per image,
the memorization signal of lib_replicheck.memorization.signal over the first N steps.

The web UI calls `on_denoiser` before and `on_denoised` after each model evaluation; Forge calls
`on_denoiser` and, instead of `on_denoised`, `on_post_cfg` from its sampling function
(lib_replicheck/memorization/forge.py). Work happens
only while the first N counted steps of a batch are being measured (and, with the experimental
mitigation on, when the text conditioning of a flagged image is perturbed); after that, and when
no generation is tracked, both return at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from lib_replicheck.memorization.signal import (MITIGATION_NOISE, Signal, forge_guidance_difference, guidance_difference, magnitudes,
                           subprompt_weights)


@dataclass
class _Batch:
    first_index: int
    weights: list[list[float]]
    counted: int = 0
    done: bool = False
    sigma: object = None
    step: int = 0  # the sampling step the web UI last reported
    flagged_rows: list[int] = field(default_factory=list)


class SignalTracker:
    def __init__(self, steps: int, threshold: float, calibrated: bool, mitigate: bool = False, seed: int = 0,
                 publish: Callable[[dict[int, Signal]], None] | None = None, unavailable: str | None = None):
        """`unavailable`: why the signal cannot be measured here; images are then listed with that note."""
        self.unavailable = unavailable
        self.steps = max(1, int(steps))
        self.threshold = float(threshold)
        self.calibrated = calibrated
        self.mitigate = mitigate
        self.seed = int(seed)
        self.publish = publish or (lambda signals: None)
        self.signals: dict[int, Signal] = {}
        self.batch: _Batch | None = None

    def start_batch(self, batch_number: int, prompts: list[str]) -> None:
        first = batch_number * len(prompts)
        for i in range(len(prompts)):
            self.signals[first + i] = Signal(threshold=self.threshold, calibrated=self.calibrated,
                                             note=self.unavailable or "")
        if self.unavailable:
            self.publish(dict(self.signals))
            return
        self.batch = _Batch(first, [subprompt_weights(p) for p in prompts])

    def on_denoiser(self, params) -> None:
        b = self.batch
        if b is None:
            return
        if not b.done:
            b.sigma = params.sigma
            b.step = int(getattr(params, "sampling_step", 0))
            return
        if b.flagged_rows:
            self._perturb(params, b)

    @property
    def measuring(self) -> bool:
        """Whether a batch's first steps are still to be measured."""
        return self.batch is not None and not self.batch.done

    def on_denoised(self, params) -> None:
        b = self.batch
        if b is None or b.done:
            return
        timesteps = "Timesteps" in type(getattr(params, "inner_model", None)).__name__
        diff = guidance_difference(params.x, b.weights, sigma=b.sigma, denoised=not timesteps)
        self._count(b, diff, int(getattr(params, "sampling_step", 0)))

    def on_post_cfg(self, args: dict) -> None:
        """Forge's post-CFG arguments (backend/sampling/sampling_function.py): the batch's cond and
        uncond x0 estimates, the sigmas, and the compiled conditions with their strengths."""
        b = self.batch
        if b is None or b.done:
            return
        strengths = [c.get("strength", 1) for c in args["cond"]]
        diff = forge_guidance_difference(args["cond_denoised"], args["uncond_denoised"], args["sigma"], strengths)
        self._count(b, diff, b.step)

    def _count(self, b: _Batch, diff, sampling_step: int) -> None:
        if diff is None:  # the web UI skipped the uncond pass at this step: not counted
            return
        for i, m in enumerate(magnitudes(diff)):
            self.signals[b.first_index + i].steps.append(m)
        b.counted += 1
        if b.counted >= self.steps:
            b.done = True
            for i in range(len(b.weights)):
                s = self.signals[b.first_index + i]
                s.magnitude = sum(s.steps) / len(s.steps)
                if self.mitigate and s.high:
                    s.mitigated_from = sampling_step + 1
                    start = sum(len(w) for w in b.weights[:i])
                    b.flagged_rows.extend(range(start, start + len(b.weights[i])))
            self.publish(dict(self.signals))

    def stop(self, note: str) -> None:
        """The signal cannot be measured after all (the sampling hook failed): this batch's images not
        yet measured, and later batches, get `note`; sampling goes on untouched."""
        self.unavailable = note
        b, self.batch = self.batch, None
        if b is not None:
            for i in range(len(b.weights)):
                s = self.signals[b.first_index + i]
                if s.magnitude is None:
                    s.steps.clear()
                    s.note = note
        self.publish(dict(self.signals))

    def _perturb(self, params, b: _Batch) -> None:
        """Somepalli et al. (NeurIPS 2023): Gaussian noise, lambda 0.1, on the text embedding of the
        flagged images' cond rows, for the rest of sampling."""
        import torch

        cond = params.text_cond
        tensor = cond["crossattn"] if isinstance(cond, dict) else cond
        gen = torch.Generator(device="cpu").manual_seed(self.seed + int(getattr(params, "sampling_step", 0)))
        noise = torch.randn(tensor[b.flagged_rows].shape, generator=gen).to(tensor.device, tensor.dtype)
        perturbed = tensor.clone()
        perturbed[b.flagged_rows] = perturbed[b.flagged_rows] + MITIGATION_NOISE * noise
        if isinstance(cond, dict):
            cond = dict(cond)
            cond["crossattn"] = perturbed
            params.text_cond = cond
        else:
            params.text_cond = perturbed

    def finish(self, note: str = "") -> None:
        """Mark the images whose signal could not be measured."""
        for s in self.signals.values():
            if s.magnitude is None and not s.note:
                s.note = note or "no sampling step with an unconditional pass was seen"
        self.publish(dict(self.signals))
