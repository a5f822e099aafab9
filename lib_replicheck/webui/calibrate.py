"""The calibration runner: the memorization signal of one txt2img generation with the loaded model.

`memorization/calibration.py` asks it for one magnitude per prompt and seed. The generation runs as
Wen et al. measure the signal (DDIM, 50 steps, guidance 7.5, 512x512) and stops once the first N
steps are measured. The web UI's modules are handed in, so this imports nothing of the web UI.
"""

from __future__ import annotations

import tempfile

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.memorization.tracker import SignalTracker
from lib_replicheck.webui.hook import Hook
from lib_replicheck.webui.settings import Settings


def measure_signal(prompt: str, seed: int, *, hook: Hook, settings: Settings, shared, processing, lock,
                   unavailable: str | None = None) -> float:
    """`shared`, `processing`: the web UI's modules; `lock`: its call_queue lock, held for the whole
    generation like any other; `unavailable`: why this web UI gives no signal (None: it does)."""
    if unavailable:
        raise ReplicheckError(f"cannot calibrate here: {unavailable}")
    tracker = SignalTracker(settings.mem_steps, settings.mem_threshold, True)
    tracker.publish = lambda signals: shared.state.interrupt()  # measured: stop sampling
    tracker.start_batch(0, [prompt])
    with lock, tempfile.TemporaryDirectory(prefix="replicheck-calibrate-") as out:
        p = processing.StableDiffusionProcessingTxt2Img(
            sd_model=shared.sd_model, prompt=prompt, seed=int(seed), steps=50, cfg_scale=7.5, width=512, height=512,
            sampler_name="DDIM", batch_size=1, n_iter=1, do_not_save_samples=True, do_not_save_grid=True,
            outpath_samples=out, outpath_grids=out)
        shared.state.begin(job="replicheck-calibrate")
        hook.tracker = tracker
        try:
            processing.process_images(p)
        finally:
            hook.tracker = None
            shared.state.interrupted = False
            shared.state.end()
    magnitude = tracker.signals[0].magnitude
    if magnitude is None:
        raise ReplicheckError("no sampling step with an unconditional pass was measured (guidance scale 1?)")
    return magnitude
