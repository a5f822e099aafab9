"""The memorization signal: the arithmetic against hand computations, then through the web UI's
sampling loop (tests/webui: CFG callbacks with the real row layout) with a small denoiser whose
cond and uncond outputs differ by a known amount."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib_replicheck.memorization.signal import (DEFAULT_THRESHOLD, guidance_difference, magnitudes, roc,
                                         subprompt_weights)

# -- arithmetic ----------------------------------------------------------------------------------------


def test_single_prompts_k_diffusion():
    """B=2: rows [c0, c1, u0, u1]; x0_c = x0_u - sigma * D  =>  eps_c - eps_u = D."""
    sigma = 7.0
    d0, d1 = torch.full((4, 64, 64), 0.05), torch.full((4, 64, 64), -0.2)
    u = torch.randn(2, 4, 64, 64)
    x_out = torch.stack([u[0] - sigma * d0, u[1] - sigma * d1, u[0], u[1]])
    diff = guidance_difference(x_out, [[1.0], [1.0]], sigma=torch.full((4,), sigma), denoised=True)
    assert torch.allclose(diff[0], d0, atol=1e-5) and torch.allclose(diff[1], d1, atol=1e-5)
    m = magnitudes(diff)
    assert m[0] == pytest.approx(0.05 * math.sqrt(4 * 64 * 64), rel=1e-4)  # 0.05 * 128 = 6.4
    assert m[1] == pytest.approx(0.2 * 128, rel=1e-4)


def test_and_subprompts_with_weights_and_per_row_sigmas():
    """Image 0 is 'a AND b :0.5' (rows c0a, c0b), image 1 a single prompt; rows [c0a, c0b, c1, u0, u1]."""
    sig = torch.tensor([2.0, 2.0, 4.0, 2.0, 4.0])
    da, db, d1 = (torch.randn(4, 8, 8) for _ in range(3))
    u = torch.randn(2, 4, 8, 8)
    x_out = torch.stack([u[0] - 2.0 * da, u[0] - 2.0 * db, u[1] - 4.0 * d1, u[0], u[1]])
    weights = [subprompt_weights("a castle AND a dragon :0.5"), subprompt_weights("a cat")]
    assert weights == [[1.0, 0.5], [1.0]]
    diff = guidance_difference(x_out, weights, sigma=sig, denoised=True)
    assert torch.allclose(diff[0], da + 0.5 * db, atol=1e-5) and torch.allclose(diff[1], d1, atol=1e-5)


def test_eps_outputs_and_skipped_uncond():
    eps_u, d = torch.randn(1, 4, 8, 8), torch.randn(4, 8, 8)
    diff = guidance_difference(torch.stack([eps_u[0] + d, eps_u[0]]), [[1.0]], denoised=False)
    assert torch.allclose(diff[0], d, atol=1e-6)
    assert guidance_difference(torch.randn(2, 4, 8, 8), [[1.0], [1.0]], sigma=torch.ones(2)) is None


def test_resolution_normalisation():
    """A constant difference v gives v * sqrt(4*64*64) whatever the latent size."""
    for h, w in ((64, 64), (96, 96), (128, 72)):
        diff = torch.full((1, 4, h, w), 0.1)
        assert magnitudes(diff)[0] == pytest.approx(0.1 * 128, rel=1e-4)


def test_and_parsing_like_the_web_ui():
    assert subprompt_weights("a AND_PERP b") == [1.0]
    assert subprompt_weights("x AND y AND z :2") == [1.0, 1.0, 2.0]
    assert subprompt_weights("ANDROID robot") == [1.0]


def test_roc_by_hand():
    r = roc([3, 4, 5], [1, 2, 3.5], fpr=0.0)
    assert r["auc"] == pytest.approx(8 / 9)
    assert 3.5 < r["threshold"] <= 4 and r["tpr"] == pytest.approx(2 / 3) and r["fpr"] == 0
    r = roc([3, 4, 5], [1, 2, 3.5], fpr=0.34)  # one of three negatives may be flagged
    assert 2 < r["threshold"] <= 3 and r["tpr"] == 1.0 and r["fpr"] == pytest.approx(1 / 3)
    assert roc([1, 2], [1, 2])["auc"] == 0.5  # ties count half


#: the header the API asks of requests that change or start something (keeps other sites' pages out)
CHANGING = {"X-Replicheck-Request": "1"}


# -- through the web UI ------------------------------------------------------------------------------

def _known_denoiser(magnitude_of):
    """x0_c = x0_u - sigma * D_i (k-diffusion) or eps_c = eps_u + D_i (timesteps), with a constant D_i
    whose normalised norm is magnitude_of(prompt), split evenly over the AND sub-prompts."""
    from modules import processing

    def model(x_in, sigma_in, text_cond, repeats, step, prompts):
        model.seen_text_cond.append(text_cond.clone())
        batch, conds = len(repeats), sum(repeats)
        out = x_in.clone() * 0.5
        if x_in.shape[0] == conds + batch:
            row = 0
            for i, n in enumerate(repeats):
                v = magnitude_of(prompts[i]) / math.sqrt(x_in[0].numel()) / n
                for _ in range(n):
                    d = torch.full_like(x_in[0], v)
                    k = processing.sampler_kind == "k-diffusion"
                    out[row] = out[conds + i] - sigma_in[row] * d if k else out[conds + i] + d
                    row += 1
        return out

    model.seen_text_cond = []
    return model


@pytest.fixture
def sampling(webui, photos):
    from modules import processing

    from test_webui import _source

    _source(webui, [photos[0].resize((512, 384))] * 8)
    old = dict(webui.shared.opts.data)
    yield processing
    processing.sampling_model = None
    processing.sampler_kind = "k-diffusion"
    webui.shared.opts.data.update(old)


def _run(webui, processing, prompts, magnitude_of, **kw):
    model = _known_denoiser(magnitude_of)
    processing.sampling_model = model
    p, processed = webui.txt2img(prompt=list(prompts), batch_size=len(prompts), steps=kw.pop("steps", 6), **kw)
    return p, processed, model


def test_signal_live_infotext_and_verdict(webui, sampling, photos):
    mags = {"a memorized prompt": 7.5, "an ordinary prompt": 1.25}
    seen_at_image = {}

    def source(p, index, seed):
        job = webui.module.service.live.get("txt2img")
        seen_at_image[index] = {i: s.magnitude for i, s in job.signals.items()}
        return photos[0].resize((512, 384))

    webui.processing.image_source = source
    _, processed, _ = _run(webui, sampling, ["a memorized prompt", "an ordinary prompt"], mags.get)
    job = webui.module.service.live.get("txt2img")
    sigs = job.signals
    assert sigs[0].magnitude == pytest.approx(7.5, rel=1e-4) and sigs[0].high
    assert sigs[1].magnitude == pytest.approx(1.25, rel=1e-4) and not sigs[1].high
    assert seen_at_image[0][0] == pytest.approx(7.5, rel=1e-4)  # live: known before the image existed
    assert "Replicheck memorization: 7.50 (high)" in processed.infotexts[1]
    assert "Replicheck memorization: 1.25 (normal)" in processed.infotexts[2]
    from lib_replicheck.webui.panel import render

    panel = render(job.reports, signals=job.signals)
    assert "Memorization signal: 7.50 (threshold 5)" in panel and "high memorization signal" in panel


def test_averaging_skips_steps_without_uncond(webui, sampling):
    webui.set_option("replicheck_mem_steps", 3)
    values = iter([2.0, 4.0, 9.0, 100.0, 100.0, 100.0])
    model = _known_denoiser(lambda prompt: next(values))
    sampling.sampling_model = model
    p = webui.processing.StableDiffusionProcessingTxt2Img(prompt="one prompt", steps=6, outpath_samples=webui.outdir,
                                                          outpath_grids=webui.outdir)
    p.skip_uncond_steps = {1}  # the web UI's "skip uncond" at step 1: no uncond rows
    p.scripts, p.script_args = webui.runners["txt2img"], [None, True]
    webui.processing.process_images(p)
    sig = webui.module.service.live.get("txt2img").signals[0]
    assert sig.steps == pytest.approx([2.0, 4.0, 9.0], rel=1e-4) and sig.magnitude == pytest.approx(5.0, rel=1e-4)


def test_timestep_samplers_and_and_prompts(webui, sampling):
    sampling.sampler_kind = "timesteps"
    _run(webui, sampling, ["a castle AND a dragon", "a cat"], lambda pr: 6.0)
    sigs = webui.module.service.live.get("txt2img").signals
    assert sigs[0].magnitude == pytest.approx(6.0, rel=1e-4) and sigs[1].magnitude == pytest.approx(6.0, rel=1e-4)


def test_img2img_and_other_models_are_labelled(webui, sampling, photos):
    webui.img2img([photos[0].resize((512, 384))])
    sig = webui.module.service.live.get("img2img").signals[0]
    assert sig.magnitude is None and "txt2img only" in sig.note
    webui.shared.sd_model.is_sdxl = True
    try:
        _, processed, _ = _run(webui, sampling, ["p"], lambda pr: 9.0)
    finally:
        webui.shared.sd_model.is_sdxl = False
    sig = webui.module.service.live.get("txt2img").signals[0]
    assert not sig.calibrated and sig.verdict == "not calibrated for this model"
    assert "Replicheck memorization: 9.00 (high; uncalibrated)" in processed.infotexts[0]


def test_feature_off_does_no_work(webui, sampling):
    webui.set_option("replicheck_mem_enabled", False)
    _, processed, _ = _run(webui, sampling, ["p"], lambda pr: 9.0)
    assert "memorization" not in processed.infotexts[0]
    assert webui.module.hook.tracker is None

    class Trap:
        def __getattr__(self, name):
            raise AssertionError(f"the callback touched {name}")

    webui.module.on_cfg_denoiser(Trap())  # returns at once: nothing is read
    webui.module.on_cfg_denoised(Trap())


def test_mitigation_perturbs_only_flagged_images(webui, sampling):
    webui.set_option("replicheck_mem_mitigate", True)
    mags = {"memorized": 8.0, "fine": 1.0}
    _, processed, model = _run(webui, sampling, ["memorized", "fine"], mags.get, steps=4)
    conds = model.seen_text_cond
    assert torch.count_nonzero(conds[0]) == 0  # step 0 is measured, untouched
    assert torch.count_nonzero(conds[1][1]) == 0  # the ordinary image's row stays as it was
    assert conds[1][0].std().item() == pytest.approx(0.1, rel=0.05)  # lambda 0.1 on the flagged row
    assert "Replicheck mitigation: text noise 0.1 from step 1" in processed.infotexts[1]
    assert "Replicheck mitigation" not in processed.infotexts[2]


def test_calibration_route_and_command(webui, sampling, tmp_path):
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from browser import serve
    from conftest import REPO

    def mag(prompt):
        return 8.0 + len(prompt) % 3 if prompt.startswith("mem") else 1.0 + len(prompt) % 4

    sampling.sampling_model = _known_denoiser(mag)
    body = {"memorized": ["mem one", "mem two", "mem three"], "ordinary": ["a", "bb", "ccc", "dddd"], "fpr": 0.0}
    r = TestClient(webui.app).post("/replicheck/v1/calibrate", json=body, headers=CHANGING)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["auc"] == 1.0 and res["tpr"] == 1.0 and 4.0 < res["threshold"] < 8.0
    assert [round(x["magnitude"], 3) for x in res["ordinary"]] == [2.0, 3.0, 4.0, 1.0]
    assert webui.shared.state.interrupted is False  # the flag that stopped sampling early is reset
    (tmp_path / "mem.txt").write_text("\n".join(body["memorized"]))
    (tmp_path / "ord.txt").write_text("\n".join(body["ordinary"]))
    with serve(webui.app) as url:
        out = subprocess.run([sys.executable, "-m", "lib_replicheck", "calibrate", "--url", url, "--memorized",
                              str(tmp_path / "mem.txt"), "--ordinary", str(tmp_path / "ord.txt"), "--fpr", "0"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ROC AUC 1.000" in out.stdout and "TPR 1.000 at FPR 0.000" in out.stdout
    bad = TestClient(webui.app).post("/replicheck/v1/calibrate", json={"memorized": [], "ordinary": ["a"]},
                                           headers=CHANGING)
    assert bad.status_code == 409


def test_calibrate_without_a_web_ui_says_where_it_looked(tmp_path, capsys):
    """No web UI at --url: one line naming the address and what to do, exit status 2 (before, a raw
    'HTTPConnectionPool(...): Max retries exceeded ... Connection refused')."""
    import socket

    from lib_replicheck.cli.main import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    (tmp_path / "p.txt").write_text("a prompt\n")
    code = main(["calibrate", "--url", url, "--memorized", str(tmp_path / "p.txt"), "--ordinary",
                 str(tmp_path / "p.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"replicheck: error: no web UI answers at {url}: start the web UI") and "--url" in err, err
    assert "HTTPConnectionPool" not in err and "Max retries" not in err


def test_default_threshold_is_the_documented_one():
    assert DEFAULT_THRESHOLD == 5.0
    assert np.isclose(magnitudes(torch.full((1, 4, 64, 64), 5.0 / 128))[0], 5.0)


def test_calibration_leaves_no_temporary_folders(webui, sampling, tmp_path, monkeypatch):
    """Each calibrated prompt runs a generation in a scratch output folder (up to 2,000 prompts x
    generations): every one is removed again."""
    import tempfile

    from fastapi.testclient import TestClient

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    sampling.sampling_model = _known_denoiser(lambda prompt: 9.0 if prompt.startswith("mem") else 1.0)
    body = {"memorized": ["mem one", "mem two"], "ordinary": ["a", "bb", "ccc"], "fpr": 0.0, "generations": 2}
    r = TestClient(webui.app).post("/replicheck/v1/calibrate", json=body, headers=CHANGING)
    assert r.status_code == 200, r.text
    assert r.json()["auc"] == 1.0
    assert list(scratch.iterdir()) == []
