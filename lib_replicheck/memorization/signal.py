"""The index-free memorization signal of Wen et al. (ICLR 2024), computed during sampling.

Signal: the L2 norm, over the whole latent, of the text-conditional noise prediction before
guidance scaling, eps(x_t, c) - eps(x_t, empty), per image and step, averaged over the first N
steps. Prompts that make Stable Diffusion reproduce a training image give large values from the
first step on.

What the web UI hands to its CFG callbacks, and how it is turned into that signal:
- the rows of x are the cond rows of each image in turn (one per AND sub-prompt), then one uncond
  row per image; when the web UI skips the uncond pass (its "skip uncond below sigma" option),
  there are no uncond rows and the step is not counted;
- k-diffusion samplers output denoised estimates x0, so eps_c - eps_u = (x0_u - x0_c) / sigma;
  the timestep samplers (DDIM, PLMS, UniPC) output eps itself;
- with AND sub-prompts the guidance direction is sum_j w_j (eps_cj - eps_u), as the web UI
  combines them; its norm is the signal.
- Forge never calls the CFG callbacks: it hands the batch's cond and uncond x0 estimates to the
  functions registered with `set_model_sampler_post_cfg_function`, where the same difference is
  taken (forge_guidance_difference, lib_replicheck/memorization/forge.py).
- Comparable across resolutions: the norm is scaled by sqrt(4*64*64 / elements), so values for
  a 512x512 SD 1.x generation (a 4x64x64 latent) are exactly Wen et al.'s, and a latent with more
  elements is not reported higher merely for being larger.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

REFERENCE_ELEMENTS = 4 * 64 * 64
#: Default threshold, calibrated for SD 1.x only: the magnitude above which Chen et al.'s released
#: code (CVPR 2025, built on Wen et al.'s pipeline: SD v1, DDIM, guidance 7.5, first step) treats a
#: generation as memorized (`--mag_thres_pr 5`). Wen et al.'s own mitigation lowers it to 3.
DEFAULT_THRESHOLD = 5.0
#: Somepalli et al. (NeurIPS 2023): Gaussian noise on the text embedding, lambda 0.1.
MITIGATION_NOISE = 0.1

_AND = re.compile(r"\bAND\b(?!_PERP|_SALT|_TOPK)")
_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def subprompt_weights(prompt: str) -> list[float]:
    """The weight of each AND sub-prompt, parsed as the web UI's prompt_parser does ('a AND b :0.5')."""
    weights = []
    for part in _AND.split(prompt):
        m = _WEIGHT.search(part)
        weights.append(float(m.group(2)) if m and m.group(2) is not None else 1.0)
    return weights


def guidance_difference(x_out, batch_weights: Sequence[Sequence[float]], sigma=None, denoised: bool = True):
    """Per image, sum_j w_j (eps_cj - eps_u) as a tensor [B, ...]; None when the uncond rows are missing.

    `x_out`: the denoiser output [sum(len(w)) + B, C, H, W]; `sigma`: per-row sigmas (k-diffusion),
    indexed like x_out; `denoised`: True when x_out holds x0 estimates, False when it holds eps.
    """
    batch = len(batch_weights)
    conds = sum(len(w) for w in batch_weights)
    if x_out.shape[0] != conds + batch:
        return None  # no uncond pass at this step
    x = x_out.float()
    uncond = x[conds:]
    out, row = [], 0
    for i, weights in enumerate(batch_weights):
        diff = None
        for w in weights:
            d = (uncond[i] - x[row]) / _sigma_of(sigma, row) if denoised else (x[row] - uncond[i])
            diff = d * w if diff is None else diff + d * w
            row += 1
        out.append(diff)
    import torch

    return torch.stack(out)


def forge_guidance_difference(cond_denoised, uncond_denoised, sigma, strengths: Sequence[float]):
    """The same difference from what Forge hands to its post-CFG functions; None without an uncond pass.

    Forge's `calc_cond_uncond_batch` returns, per image, the strength-weighted mean of the sub-prompts'
    x0 estimates, sum_j w_j x0_cj / sum_j w_j (`cond_denoised`), and guides with that minus
    `uncond_denoised`, times sum_j w_j. So sum_j w_j (eps_cj - eps_u) is the rows [cond, uncond] with
    weight sum_j w_j, computed by guidance_difference as for the other web UIs. At guidance scale 1
    Forge skips the uncond pass and `uncond_denoised` is all zeros: the step is not counted.
    """
    if uncond_denoised is None or not bool(uncond_denoised.any()):
        return None
    weight = float(sum(strengths))
    if abs(weight) < 1e-6:
        return None  # sub-prompt weights that cancel: Forge's own mean is undefined then
    batch = cond_denoised.shape[0]
    import torch

    return guidance_difference(torch.cat([cond_denoised, uncond_denoised]), [[weight]] * batch, sigma=sigma,
                               denoised=True)


def _sigma_of(sigma, row: int) -> float:
    if sigma is None:
        raise ValueError("denoised outputs need the sigmas of the step")
    s = sigma[row] if getattr(sigma, "ndim", 0) else sigma
    s = float(s)
    if s <= 0:
        raise ValueError("sigma must be positive")
    return s


def magnitudes(diff) -> list[float]:
    """The resolution-normalised L2 norm of each image's difference."""
    per_image = diff[0].numel()
    scale = math.sqrt(REFERENCE_ELEMENTS / per_image)
    return [float(d.norm(p=2)) * scale for d in diff]


@dataclass
class Signal:
    """The memorization signal of one image."""

    magnitude: float | None = None  # mean over the counted steps
    steps: list[float] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    calibrated: bool = True  # False: the threshold was not calibrated for this model
    mitigated_from: int | None = None  # the step from which the text conditioning was perturbed
    note: str = ""

    @property
    def high(self) -> bool:
        return self.magnitude is not None and self.magnitude >= self.threshold

    @property
    def verdict(self) -> str:
        if self.magnitude is None:
            return "unavailable"
        if not self.calibrated:
            return "not calibrated for this model"
        return "high: the prompt may reproduce a training image" if self.high else "normal"

    def infotext(self) -> str:
        if self.magnitude is None:
            return "unavailable"
        text = f"{self.magnitude:.2f} ({'high' if self.high else 'normal'}"
        text += "; uncalibrated)" if not self.calibrated else ")"  # no comma: no quoting in the infotext
        return text

    def to_dict(self) -> dict:
        return {"magnitude": self.magnitude, "steps": list(self.steps), "threshold": self.threshold,
                "calibrated": self.calibrated, "high": self.high, "verdict": self.verdict,
                "mitigated_from": self.mitigated_from, "note": self.note}


def roc(memorized: Sequence[float], ordinary: Sequence[float], fpr: float = 0.01) -> dict:
    """ROC AUC of the magnitudes, and the threshold keeping the false-positive rate at or below `fpr`
    (with the true-positive rate it gives). AUC counts ties as half, as the Mann-Whitney statistic."""
    pos, neg = [float(x) for x in memorized], [float(x) for x in ordinary]
    if not pos or not neg:
        raise ValueError("both prompt lists need at least one magnitude")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    auc = wins / (len(pos) * len(neg))
    ordered = sorted(neg, reverse=True)
    allowed = int(math.floor(fpr * len(neg)))  # negatives that may lie at or above the threshold
    threshold = ordered[allowed] + 1e-9 if allowed < len(ordered) else min(neg)
    # the smallest threshold with at most `allowed` negatives >= it: just above the next negative
    tpr = sum(p >= threshold for p in pos) / len(pos)
    actual_fpr = sum(n >= threshold for n in neg) / len(neg)
    return {"auc": auc, "threshold": threshold, "tpr": tpr, "fpr": actual_fpr, "n_memorized": len(pos),
            "n_ordinary": len(neg)}
