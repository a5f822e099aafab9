"""The memorization signal on Forge, measured in Forge's sampling function.

Forge's sampling function (tests/webui/backend: the real signatures and arithmetic of
backend/sampling/sampling_function.py at Forge dfdcbab) runs with a small linear model whose x0
estimates are x - sigma * eps(x, text); the same tensors then go through the other web UIs' CFG
callback layout (one row per sub-prompt, then the uncond rows) into the tracker's CFG path. Both
must give the same signal, equal to eps_c - eps_u computed by hand. The last tests run
scripts/replicheck.py in a process dressed as Forge and drive its hooks in Forge's order.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from conftest import REPO

WEBUI = str(REPO / "tests" / "webui")
if WEBUI not in sys.path:
    sys.path.insert(0, WEBUI)

from backend.diffusion_engine.base import ForgeObjects  # noqa: E402
from backend.patcher.unet import UnetPatcher  # noqa: E402
from backend.sampling.sampling_function import sampling_function  # noqa: E402

from lib_replicheck.memorization import forge as forge_signal  # noqa: E402
from lib_replicheck.memorization.signal import subprompt_weights  # noqa: E402
from lib_replicheck.memorization.tracker import SignalTracker  # noqa: E402

C, H, W, TOKENS, DIM = 4, 8, 8, 77, 768


class LinearUnet:
    """Stands in for Forge's KModel: eps = text features @ M + 0.1 x, returned as x0 = x - sigma * eps."""

    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.m = torch.randn(DIM, C * H * W, generator=gen) * 0.05
        self.calls = 0

    def eps(self, x, text):
        return (text.mean(1) @ self.m).view(x.shape) + 0.1 * x

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        self.calls += 1
        return x - t.view(-1, 1, 1, 1) * self.eps(x, c_crossattn)


class Denoiser:
    """What sampling_function reads of its `self` (Forge's CFGDenoiser)."""

    def __init__(self, p, sd_model):
        self.p = p
        self.inner_model = type("Wrapped", (), {"inner_model": sd_model})()


class CompVisDenoiser:  # the other web UIs' k-diffusion wrapper: its outputs are x0 estimates
    pass


def _params(x, sigma, step, steps, text_cond, text_uncond, denoiser=None):
    from modules.script_callbacks import CFGDenoiserParams

    return CFGDenoiserParams(x, None, sigma, step, steps, text_cond, text_uncond, denoiser)


def _composition(prompts):
    """prompt_parser.reconstruct_multicond_batch: each image's (row, weight) pairs, rows in image order."""
    out, row = [], 0
    for pr in prompts:
        pairs = []
        for w in subprompt_weights(pr):
            pairs.append((row, w))
            row += 1
        out.append(pairs)
    return out


def _case(prompts, seed=1):
    gen = torch.Generator().manual_seed(seed)
    comp = _composition(prompts)
    rows = sum(len(c) for c in comp)
    return comp, torch.randn(rows, TOKENS, DIM, generator=gen), torch.randn(len(prompts), TOKENS, DIM, generator=gen)


def _run_both(prompts, steps=3, cfg_at=lambda step: 7.5, register=True, tracker_steps=None, threshold=5.0,
              mitigate=False):
    """Sample `steps` steps in Forge's loop with the measurement registered, and feed the same
    tensors to a second tracker through the CFG-callback path. Returns both trackers, the model
    and Forge's denoised outputs."""
    comp, text_cond, text_uncond = _case(prompts)
    n = tracker_steps or steps
    forge_t, cfg_t = SignalTracker(n, threshold, True, mitigate=mitigate), SignalTracker(n, threshold, True)
    forge_t.start_batch(0, prompts)
    cfg_t.start_batch(0, prompts)
    model = LinearUnet()
    sd_model = type("SDModel", (), {})()
    sd_model.forge_objects = ForgeObjects(UnetPatcher(model, "cpu", "cpu"), None, None, None)
    p = type("P", (), {"seeds": [7] * len(prompts), "sd_model": sd_model})()
    if register:
        assert forge_signal.attach(p, forge_t, logging.getLogger("test"))
    denoiser = Denoiser(p, sd_model)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(len(prompts), C, H, W, generator=gen)
    sigmas = torch.linspace(14.6, 0.5, steps)
    outputs = []
    for step in range(steps):
        sigma = sigmas[step].repeat(len(prompts))
        params = _params(x, sigma, step, steps, text_cond, text_uncond, denoiser)
        forge_t.on_denoiser(params)
        cfg = cfg_at(step)
        denoised, _, _ = sampling_function(denoiser, denoiser_params=params, cond_scale=cfg, cond_composition=comp)
        outputs.append(denoised)
        # the same step as the other web UIs lay it out: cond rows, then (unless skipped) uncond rows
        cond_rows = [(i, r) for i, pairs in enumerate(comp) for r, _ in pairs]
        x_in = torch.stack([x[i] for i, _ in cond_rows] + ([] if cfg == 1.0 else list(x)))
        texts = torch.cat([text_cond[[r for _, r in cond_rows]]] + ([] if cfg == 1.0 else [text_uncond]))
        sigma_in = sigmas[step].repeat(x_in.shape[0])
        cfg_t.on_denoiser(_params(x_in, sigma_in, step, steps, text_cond, text_uncond))
        x_out = model.apply_model(x_in, sigma_in, c_crossattn=texts)
        from modules.script_callbacks import CFGDenoisedParams

        cfg_t.on_denoised(CFGDenoisedParams(x_out, step, steps, CompVisDenoiser()))
        x = denoised
    return forge_t, cfg_t, model, outputs, (comp, text_cond, text_uncond)


def _by_hand(model, comp, text_cond, text_uncond, x):
    """sum_j w_j (eps_cj - eps_u) per image, normalised as the signal is."""
    out = []
    for i, pairs in enumerate(comp):
        d = sum(w * (model.eps(x[i:i + 1], text_cond[r:r + 1]) - model.eps(x[i:i + 1], text_uncond[i:i + 1]))
                for r, w in pairs)
        out.append(float(d.norm()) * (4 * 64 * 64 / d.numel()) ** 0.5)
    return out


def test_forge_signal_equals_the_cfg_callback_signal():
    prompts = ["a photo of a memorized poster", "an ordinary street"]
    forge_t, cfg_t, model, _, (comp, tc, tu) = _run_both(prompts, steps=3)
    for i in range(2):
        f, a = forge_t.signals[i], cfg_t.signals[i]
        assert len(f.steps) == 3 and f.steps == pytest.approx(a.steps, rel=1e-5)
        assert f.magnitude == pytest.approx(a.magnitude, rel=1e-5) and f.magnitude > 0
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, C, H, W, generator=gen)
    assert [forge_t.signals[i].steps[0] for i in range(2)] == pytest.approx(_by_hand(model, comp, tc, tu, x0), rel=1e-4)


def test_and_prompts_with_weights():
    """Forge batches each sub-prompt over the images with its strength (the same AND structure in
    every image, as Forge requires) and guides with the strength-weighted mean."""
    prompts = ["a castle AND a dragon :0.5", "a house AND a dragon :0.5"]
    forge_t, cfg_t, model, _, (comp, tc, tu) = _run_both(prompts, steps=2)
    for i in range(2):
        assert forge_t.signals[i].steps == pytest.approx(cfg_t.signals[i].steps, rel=1e-5)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, C, H, W, generator=gen)
    assert [forge_t.signals[i].steps[0] for i in range(2)] == pytest.approx(_by_hand(model, comp, tc, tu, x0), rel=1e-4)


def test_steps_without_uncond_pass_are_not_counted():
    """Guidance scale 1 at a step (Forge's "skip early CFG" and NGMS set it): no uncond pass, uncond
    predictions all zero; the step is skipped as the CFG path skips a step without uncond rows."""
    forge_t, cfg_t, _, _, _ = _run_both(["one prompt"], steps=4, cfg_at=lambda s: 1.0 if s == 1 else 7.5,
                                        tracker_steps=3)
    f, a = forge_t.signals[0], cfg_t.signals[0]
    assert len(f.steps) == 3 and f.steps == pytest.approx(a.steps, rel=1e-5)


def test_sampling_is_unchanged_and_work_stops_after_the_measured_steps():
    prompts = ["a", "b"]
    _, _, with_model, with_out, _ = _run_both(prompts, steps=4, tracker_steps=1)
    _, _, without_model, without_out, _ = _run_both(prompts, steps=4, register=False)
    assert all(torch.equal(a, b) for a, b in zip(with_out, without_out))
    assert with_model.calls == without_model.calls  # no extra model evaluation (cfg-1 optimisation kept)


def test_mitigation_perturbs_the_flagged_image_only():
    """The experimental mitigation works on Forge too: Forge calls the CFG denoiser callback and samples
    with the text conditioning it leaves in the params; rows are laid out as in the other web UIs."""
    prompts = ["a memorized poster", "an ordinary street"]
    plain, _, _, plain_out, _ = _run_both(prompts, steps=3, tracker_steps=1)
    m = [plain.signals[i].magnitude for i in range(2)]
    threshold = (m[0] + m[1]) / 2  # between the two: only the larger one is flagged
    high = 0 if m[0] > m[1] else 1
    mitigated, _, _, out, _ = _run_both(prompts, steps=3, tracker_steps=1, threshold=threshold, mitigate=True)
    assert mitigated.signals[high].mitigated_from == 1 and mitigated.signals[1 - high].mitigated_from is None
    assert torch.equal(out[0], plain_out[0])  # the measured step is untouched
    assert torch.equal(out[1][1 - high], plain_out[1][1 - high])
    assert not torch.allclose(out[1][high], plain_out[1][high])


def test_a_failure_while_sampling_leaves_sampling_alone(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("lib_replicheck.memorization.tracker.forge_guidance_difference", broken)
    forge_signal._logged.clear()
    with caplog.at_level(logging.WARNING):
        forge_t, _, _, out, _ = _run_both(["a", "b"], steps=3)
        monkeypatch.undo()
        _, _, _, reference, _ = _run_both(["a", "b"], steps=3, register=False)
    assert all(torch.equal(a, b) for a, b in zip(out, reference))
    sig = forge_t.signals[0]
    assert sig.magnitude is None and sig.verdict == "unavailable" and "RuntimeError: shape mismatch" in sig.note
    assert len([r for r in caplog.records if "memorization signal on Forge failed" in r.message]) == 1


def test_registering_on_an_unexpected_forge_marks_the_signal_unavailable(caplog):
    tracker = SignalTracker(1, 5.0, True)
    tracker.start_batch(0, ["a"])
    forge_signal._logged.clear()
    p = type("P", (), {"sd_model": object()})()  # no forge_objects
    assert forge_signal.attach(p, tracker, logging.getLogger("test")) is False
    assert tracker.signals[0].verdict == "unavailable" and "AttributeError" in tracker.signals[0].note
    assert not tracker.measuring
    assert forge_signal.attach(p, None, logging.getLogger("test")) is False  # feature off: nothing touched


def _one_step(sd_model, tracker, comp, text_cond, text_uncond, x, register_at_step=True):
    p = type("P", (), {"seeds": [7], "sd_model": sd_model})()
    params = _params(x, torch.tensor([14.6]), 0, 1, text_cond, text_uncond, Denoiser(p, sd_model))
    registered = forge_signal.attach_at_step(params, tracker, logging.getLogger("test")) if register_at_step else None
    tracker.on_denoiser(params)
    sampling_function(params.denoiser, denoiser_params=params, cond_scale=7.5, cond_composition=comp)
    return registered


def test_registered_at_the_first_step_where_no_hook_ran_before_sampling():
    """A calibration run has no scripts (no process_before_every_sampling), and Forge loads the model
    lazily inside the first generation: the CFG denoiser callback, which Forge calls before guiding,
    registers the measurement on the UNet that sampling reads, once."""
    prompts = ["a memorized poster"]
    comp, text_cond, text_uncond = _case(prompts)
    model = LinearUnet()
    original = UnetPatcher(model, "cpu", "cpu")
    sd_model = type("SDModel", (), {})()
    sd_model.forge_objects = ForgeObjects(original, None, None, None)
    tracker = SignalTracker(2, 5.0, True)
    tracker.start_batch(0, prompts)
    x = torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(3))
    assert _one_step(sd_model, tracker, comp, text_cond, text_uncond, x) is True
    assert _one_step(sd_model, tracker, comp, text_cond, text_uncond, x) is False  # already there
    assert tracker.signals[0].steps[0] == pytest.approx(_by_hand(model, comp, text_cond, text_uncond, x)[0], rel=1e-4)
    assert len(tracker.signals[0].steps) == 2
    assert "sampler_post_cfg_function" not in original.model_options  # on a clone


def test_a_later_extensions_clone_keeps_measuring():
    """Forge deep-copies model_options when another extension clones the UNet after replicheck (as
    PAG and SAG do in their process_before_every_sampling): the copy still measures for this generation."""
    prompts = ["a memorized poster"]
    comp, text_cond, text_uncond = _case(prompts)
    model = LinearUnet()
    sd_model = type("SDModel", (), {})()
    sd_model.forge_objects = ForgeObjects(UnetPatcher(model, "cpu", "cpu"), None, None, None)
    tracker = SignalTracker(1, 5.0, True)
    tracker.start_batch(0, prompts)
    p = type("P", (), {"seeds": [7], "sd_model": sd_model})()
    assert forge_signal.attach(p, tracker, logging.getLogger("test"))
    later = sd_model.forge_objects.unet.clone()
    later.set_model_sampler_post_cfg_function(lambda args: args["denoised"])
    sd_model.forge_objects.unet = later
    x = torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(3))
    assert _one_step(sd_model, tracker, comp, text_cond, text_uncond, x) is False  # recognised as registered
    assert tracker.signals[0].magnitude == pytest.approx(_by_hand(model, comp, text_cond, text_uncond, x)[0],
                                                         rel=1e-4)


# -- through scripts/replicheck.py, dressed as Forge -----------------------------------------------------

SCRIPT = r"""
import importlib.machinery, json, logging, os, sys, tempfile, types
os.environ["FAKE_WEBUI_ROOT"] = tempfile.mkdtemp()
sys.path[:0] = [{webui!r}, {repo!r}, {tests!r}]
sys.modules["modules_forge"] = types.ModuleType("modules_forge")
sys.modules["modules_forge"].__spec__ = importlib.machinery.ModuleSpec("modules_forge", None)
import torch
from PIL import Image
from modules import processing, script_callbacks, scripts, shared
from backend.diffusion_engine.base import ForgeObjects
from backend.patcher.unet import UnetPatcher
from backend.sampling.sampling_function import sampling_function
import test_forge_signal as t
from lib_replicheck.memorization.tracker import SignalTracker

module = scripts.load_script_module(os.path.join({repo!r}, "scripts", "replicheck.py"))
script_callbacks.ui_settings_callback()
case = {case!r}
prompts = ["a memorized poster", "an ordinary street"]
script = module.ReplicheckScript()
script.is_img2img = False
model = t.LinearUnet()
sd = type("ForgeModel", (), {{}})()
sd.forge_objects_original = ForgeObjects(UnetPatcher(model, "cpu", "cpu"), None, None, None)
sd.forge_objects_after_applying_lora = sd.forge_objects_original.shallow_copy()
p = processing.StableDiffusionProcessingTxt2Img(prompt=prompts, batch_size=2, steps=3, sd_model=sd)
p.all_prompts, p.all_seeds = prompts, [7, 8]
script.process(p, True)
p.sd_model.forge_objects = sd.forge_objects_original.shallow_copy()   # processing.py l.937
p.prompts, p.seeds = prompts, [7, 8]
script.process_batch(p, True, batch_number=0, prompts=prompts, seeds=p.seeds, subseeds=p.seeds)
# sample(): the objects are reset, then process_before_every_sampling (processing.py l.1373-1377)
p.sd_model.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
if case == "no_forge_objects":
    p.sd_model.forge_objects = types.SimpleNamespace()  # a Forge whose objects look different
comp, text_cond, text_uncond = t._case(prompts)
gen = torch.Generator().manual_seed(3)
x = torch.randn(2, t.C, t.H, t.W, generator=gen)
# Forge's Script has this hook (a no-op unless overridden); the 1.10.1 stand-in does not
getattr(script, "process_before_every_sampling", lambda *a, **k: None)(p, True, x=x, noise=x, c=None, uc=None)
if case == "no_forge_objects":
    p.sd_model.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
reference = SignalTracker(1, 5.0, True)
reference.start_batch(0, prompts)
sigmas = torch.linspace(14.6, 0.5, 3)
denoiser = t.Denoiser(p, p.sd_model)
for step in range(3):
    sigma = sigmas[step].repeat(2)
    params = t._params(x, sigma, step, 3, text_cond, text_uncond, denoiser)
    script_callbacks.cfg_denoiser_callback(params)      # Forge calls it; on_cfg_denoised never
    denoised, _, _ = sampling_function(denoiser, denoiser_params=params, cond_scale=7.5, cond_composition=comp)
    if step == 0:
        x_in = torch.cat([x, x]); sigma_in = sigmas[0].repeat(4)
        reference.on_denoiser(t._params(x_in, sigma_in, 0, 3, text_cond, text_uncond))
        from modules.script_callbacks import CFGDenoisedParams
        reference.on_denoised(CFGDenoisedParams(model.apply_model(x_in, sigma_in, c_crossattn=torch.cat([text_cond, text_uncond])), 0, 3, t.CompVisDenoiser()))
    x = denoised
infotexts = []
for i in range(2):
    p.iteration, p.batch_index = 0, i
    pp = scripts.PostprocessImageArgs(Image.new("RGB", (64, 64)))
    script.postprocess_image(p, pp, True)
    script.postprocess_image_after_composite(p, pp, True)  # Forge, as 1.10, calls both, in this order
    infotexts.append({{k: str(v) for k, v in p.extra_generation_params.items()}})
script.postprocess(p, processing.Processed(p, []), True)
sigs = module.service.live.get("txt2img").signals
print(json.dumps({{"platform": module.PLATFORM, "signal": module.SIGNAL_UNAVAILABLE, "unsupported": module.UNSUPPORTED,
                  "forge": [sigs[i].magnitude for i in range(2)], "notes": [sigs[i].note for i in range(2)],
                  "reference": [reference.signals[i].magnitude for i in range(2)], "infotexts": infotexts,
                  "original_untouched": "sampler_post_cfg_function" not in sd.forge_objects_original.unet.model_options}}))
"""


def _forge_run(case: str) -> dict:
    code = SCRIPT.format(webui=WEBUI, repo=str(REPO), tests=str(REPO / "tests"), case=case)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_forge_generation_through_the_extension():
    got = _forge_run("ok")
    assert got["platform"] == "forge" and got["signal"] is None
    assert not any("memorization" in u for u in got["unsupported"])
    assert got["forge"] == pytest.approx(got["reference"], rel=1e-5) and all(m > 0 for m in got["forge"])
    for value, text in zip(got["forge"], got["infotexts"]):
        assert text["Replicheck memorization"].startswith(f"{value:.2f} (")
    assert got["original_untouched"]  # registered on a clone, as Forge's own extensions do


def test_forge_generation_without_forge_objects_goes_on():
    got = _forge_run("no_forge_objects")
    assert got["forge"] == [None, None]
    assert all("did not accept the measurement" in n for n in got["notes"])
    assert all("Replicheck memorization" not in t for t in got["infotexts"])
