"""Calibrating the memorization threshold for a model: magnitudes of known-memorized and ordinary
prompts, their ROC AUC, and the threshold at a chosen false-positive rate.

`measure(prompt, seed)` is whatever produces the signal of one generation: in the web UI, the first
steps of a txt2img run with the loaded model (webui/calibrate.py); in tests, a simulated sampler.
"""

from __future__ import annotations

from typing import Callable, Sequence

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.memorization.signal import roc

MAX_PROMPTS = 2000


def calibrate(memorized: Sequence[str], ordinary: Sequence[str], measure: Callable[[str, int], float], *,
              fpr: float = 0.01, seed: int = 0, generations: int = 1) -> dict:
    """Measure every prompt (`generations` seeds each, averaged, as Wen et al. do with 4) and summarise."""
    memorized = [p for p in memorized if p.strip()]
    ordinary = [p for p in ordinary if p.strip()]
    if not memorized or not ordinary:
        raise ReplicheckError("calibration needs at least one memorized and one ordinary prompt")
    if len(memorized) + len(ordinary) > MAX_PROMPTS:
        raise ReplicheckError(f"at most {MAX_PROMPTS} prompts per calibration")
    if not 0 <= fpr < 1:
        raise ReplicheckError("fpr must lie in [0, 1)")

    def signal(prompt: str) -> float:
        values = [measure(prompt, seed + g) for g in range(max(1, generations))]
        return sum(values) / len(values)

    mem = [signal(p) for p in memorized]
    ordi = [signal(p) for p in ordinary]
    result = roc(mem, ordi, fpr=fpr)
    result.update({"requested_fpr": fpr, "generations": generations,
                   "memorized": [{"prompt": p, "magnitude": m} for p, m in zip(memorized, mem)],
                   "ordinary": [{"prompt": p, "magnitude": m} for p, m in zip(ordinary, ordi)]})
    return result
