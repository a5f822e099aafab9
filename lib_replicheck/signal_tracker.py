"""Follows one generation's sampling through the web UI's CFG callbacks and measures, per image,
the memorization signal of lib_replicheck.memorization over the first N steps.

The web UI calls `on_denoiser` before and `on_denoised` after each model evaluation. Work happens
only while the first N counted steps of a batch are being measured (and, with the experimental
mitigation on, when the text conditioning of a flagged image is perturbed); after that, and when
no generation is tracked, both return at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .memorization import (MITIGATION_NOISE, Signal, guidance_difference, magnitudes, subprompt_weights)


@dataclass
class _Batch:
    first_index: int
    weights: list[list[float]]
    counted: int = 0
    done: bool = False
    sigma: object = None
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
            return
        if b.flagged_rows:
            self._perturb(params, b)

    def on_denoised(self, params) -> None:
        b = self.batch
        if b is None or b.done:
            return
        timesteps = "Timesteps" in type(getattr(params, "inner_model", None)).__name__
        diff = guidance_difference(params.x, b.weights, sigma=b.sigma, denoised=not timesteps)
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
                    s.mitigated_from = int(getattr(params, "sampling_step", 0)) + 1
                    start = sum(len(w) for w in b.weights[:i])
                    b.flagged_rows.extend(range(start, start + len(b.weights[i])))
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
