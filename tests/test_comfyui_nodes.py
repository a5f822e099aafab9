"""The ComfyUI nodes, run directly on real images with the demo pack (PDQ, real faiss and SQLite).

ComfyUI itself is not needed: tests/comfyui holds stand-ins for the three things the nodes take
from it (folder_paths.models_dir, ExecutionBlocker, model_management.unload_all_models), with
ComfyUI's signatures. The real ComfyUI runs these nodes in tests/real_webui/test_comfyui.py.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

DEMO = REPO / "registry" / "demo"
PACK_PHOTOS = REPO / "lib_replicheck" / "demo_images" / "pack"
NOVEL = REPO / "lib_replicheck" / "demo_images" / "novel" / "hubble_deep_field.jpg"
SONY = "Sony Won't Release <i>The Interview</i> on VOD"  # a known memorized prompt (Webster 2023)


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """ComfyUI's modules (stand-ins) with models_dir in tmp_path, and a fresh check service."""
    monkeypatch.syspath_prepend(str(REPO / "tests" / "comfyui"))
    import folder_paths

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    from lib_replicheck.comfyui import runtime

    monkeypatch.setattr(runtime, "_service", None)
    yield tmp_path / "models" / "replicheck" / "packs"
    runtime.unload()


@pytest.fixture
def demo(comfy):
    shutil.copytree(DEMO, comfy / "demo")
    return comfy / "demo"


def batch(*paths):
    """ComfyUI's IMAGE: [batch, height, width, 3] floats in [0, 1], at the first image's size."""
    import torch

    size = Image.open(paths[0]).size
    arrays = [np.asarray(Image.open(p).convert("RGB").resize(size), dtype=np.float32) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(arrays))


def defaults() -> dict:
    from lib_replicheck.comfyui.nodes import ReplicheckCheck

    return {k: v[1]["default"] for k, v in ReplicheckCheck.INPUT_TYPES()["required"].items() if k != "images"}


def run_check(images, extra=None, prompt=None, **changes):
    from lib_replicheck.comfyui.nodes import ReplicheckCheck

    return ReplicheckCheck().check(images, prompt=prompt, extra_pnginfo=extra, unique_id="7", **{**defaults(), **changes})


def test_inputs_carry_the_settings_defaults():
    from lib_replicheck.webui.settings import DEFAULTS

    d = defaults()
    assert d["sscd_possible"] == 0.5 and d["sscd_likely"] == 0.75 and d["sscd_duplicate"] == 0.95
    assert d["pdq_likely"] == 31 and d["pdq_duplicate"] == -1 and d["clip_possible"] == 0.0
    assert d["regions"] == DEFAULTS["replicheck_regions"] and d["top_k"] == 5 and d["packs"] == ""


def test_a_copy_of_a_demo_photo_is_a_likely_copy_and_the_verdict_goes_into_the_png_info(demo):
    images = batch(PACK_PHOTOS / "coffee.jpg")
    extra = {"workflow": {"nodes": []}}
    out = run_check(images, extra)
    passed, verdict, best, report = out["result"]
    assert passed is images  # unchanged
    assert verdict == "likely copy (best 1.00 in demo)" and best == pytest.approx(1.0)
    assert extra == {"workflow": {"nodes": []}, "Replicheck": "likely copy (best 1.00 in demo)"}
    data = json.loads(report)
    assert data["images"][0]["verdict"] == "likely copy" and data["images"][0]["best"]["pack"] == "demo"
    html = out["ui"]["replicheck_html"][0]
    assert 'data-verdict="likely copy"' in html and "rc-thumb" in html and "data:image/jpeg;base64," in html
    assert out["ui"]["verdicts"] == [verdict]


def test_a_batch_has_one_verdict_per_image_in_order(demo):
    extra = {}
    out = run_check(batch(PACK_PHOTOS / "rocket.jpg", NOVEL), extra)
    lines = out["result"][1].splitlines()
    assert lines[0] == "likely copy (best 1.00 in demo)" and lines[1].startswith("no copy (best ")
    assert extra["Replicheck"] == lines


def test_no_pack_and_a_missing_pack_say_so_and_pass_the_images(comfy, demo):
    images = batch(PACK_PHOTOS / "coffee.jpg")
    out = run_check(images, packs="laion-400m")
    assert out["result"][0] is images and out["result"][1] == "not checked (pack not installed)"
    assert "laion-400m" in out["ui"]["replicheck_html"][0]
    shutil.rmtree(demo)
    extra = {}
    out = run_check(images, extra)
    assert out["result"][1] == "not checked (no pack installed)" and extra["Replicheck"] == out["result"][1]
    assert "No pack installed" in out["ui"]["replicheck_html"][0]


def test_a_truncated_pack_gives_a_message_and_the_images_pass(demo):
    index = demo / "index.faiss"
    index.write_bytes(index.read_bytes()[:100])
    images = batch(PACK_PHOTOS / "coffee.jpg")
    out = run_check(images)
    assert out["result"][0] is images and out["result"][1] == "not checked (error)"
    error = json.loads(out["result"][3])["images"][0]["error"]
    assert "index.faiss" in error
    assert "rc-error-text" in out["ui"]["replicheck_html"][0]


def test_the_known_memorized_prompt_reaching_the_sampler_is_reported(demo):
    prompt = {"3": {"class_type": "KSampler", "inputs": {"positive": ["6", 0], "negative": ["7", 0]}},
              "6": {"class_type": "CLIPTextEncode", "inputs": {"text": SONY, "clip": ["4", 1]}},
              "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}}}
    extra = {}
    out = run_check(batch(NOVEL), extra, prompt=prompt)
    summary = "known memorized prompt (SD 1.x, verbatim): Webster 2023"
    assert extra["Replicheck prompt"] == summary
    assert json.loads(out["result"][3])["known_memorized_prompt"]["summary"] == summary
    assert summary in out["ui"]["replicheck_html"][0]
    prompt["6"]["inputs"]["text"] = "a lighthouse at dawn"
    extra = {}
    run_check(batch(NOVEL), extra, prompt=prompt)
    assert "Replicheck prompt" not in extra


def test_the_gate_blocks_drops_or_replaces_copies(demo):
    from comfy_execution.graph_utils import ExecutionBlocker

    from lib_replicheck.comfyui.nodes import ReplicheckGate

    copy = batch(PACK_PHOTOS / "coffee.jpg")
    report = run_check(copy)["result"][3]
    out = ReplicheckGate().gate(copy, report, "likely copy", "block")
    assert isinstance(out["result"][0], ExecutionBlocker) and out["result"][0].message is None
    assert out["ui"]["replicheck_gate"] == ["1 of 1 image(s) at or above 'likely copy': blocked"]
    assert ReplicheckGate().gate(copy, report, "duplicate", "block")["result"][0] is copy
    mixed = batch(PACK_PHOTOS / "coffee.jpg", NOVEL)
    report = run_check(mixed)["result"][3]
    kept = ReplicheckGate().gate(mixed, report, "possible copy", "block")["result"][0]
    assert kept.shape[0] == 1 and bool((kept[0] == mixed[1]).all())
    swapped = ReplicheckGate().gate(mixed, report, "likely copy", "placeholder")["result"][0]
    assert bool((swapped[1] == mixed[1]).all()) and bool((swapped[0] == 0.5).all())
    assert bool((mixed[0] != 0.5).any())  # the input batch is untouched


def test_the_gate_lets_through_what_was_not_checked(comfy):
    from lib_replicheck.comfyui.nodes import ReplicheckGate

    images = batch(PACK_PHOTOS / "coffee.jpg")
    report = run_check(images)["result"][3]  # no pack: not checked
    assert ReplicheckGate().gate(images, report, "possible copy", "block")["result"][0] is images
    assert ReplicheckGate().gate(images, "not json", "possible copy", "block")["result"][0] is images


def test_comfyuis_unload_action_unloads_the_pack_and_model(demo):
    import comfy.model_management as mm

    from lib_replicheck.comfyui import runtime

    original = mm.unload_all_models
    try:
        assert runtime.unload_hook(mm) and not runtime.unload_hook(mm)  # installed once
        run_check(batch(PACK_PHOTOS / "coffee.jpg"))
        assert runtime.service().status()["loaded_packs"] == ["demo"]
        run_check(batch(NOVEL))
        assert runtime.service().status()["loaded"]  # kept between runs
        mm.unload_all_models()
        assert not runtime.service().status()["loaded"]
        assert run_check(batch(PACK_PHOTOS / "coffee.jpg"))["result"][1].startswith("likely copy")  # loads again
    finally:
        mm.unload_all_models = original


def _request(headers: dict):
    """A real ASGI request (Starlette's, as FastAPI's) with these headers; aiohttp's request in
    ComfyUI reads them the same way (request.headers.get, case-insensitive)."""
    from starlette.requests import Request

    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1:8188", **headers}.items()]
    return Request({"type": "http", "method": "GET", "path": "/replicheck/v1/packs", "headers": raw})


def test_the_packs_route_answers_comfyuis_own_page_only(demo):
    from lib_replicheck.comfyui import routes, runtime

    page = {"Origin": "http://127.0.0.1:8188", "X-Replicheck-Request": "1"}
    assert routes.refusal(_request(page)) is None
    assert routes.refusal(_request({"X-Replicheck-Request": "1"})) is None  # a client without Origin
    status, why = routes.refusal(_request({**page, "Origin": "http://evil.example"}))
    assert status == 403 and "cross-site" in why
    status, why = routes.refusal(_request({"Referer": "http://127.0.0.1:8188/"}))
    assert status == 403 and "X-Replicheck-Request" in why
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 is same-origin with
    # itself and may add the header; only the Host gives it away
    rebound = {"host": "evil.example:8188", "Origin": "http://evil.example:8188", "X-Replicheck-Request": "1"}
    status, why = routes.refusal(_request(rebound))
    assert status == 403 and "'evil.example' is not a name" in why
    listening = routes.server_address("0.0.0.0,::")
    assert routes.refusal(_request({**rebound, "host": "192.168.1.20:8188",
                                    "Origin": "http://192.168.1.20:8188"}), listening) is None
    assert routes.refusal(_request(rebound), listening)[0] == 403
    assert routes.refusal(_request(rebound), routes.server_address("127.0.0.1"))[0] == 403
    answer = routes.packs_answer(runtime.service())
    assert [(p["name"], p["count"], p["loaded"], p["error"]) for p in answer["packs"]] == [("demo", 4, False, None)]
    run_check(batch(NOVEL))
    assert routes.packs_answer(runtime.service())["packs"][0]["loaded"] is True
    (demo / "index.faiss").write_bytes(b"x")
    assert "index.faiss" in routes.packs_answer(runtime.service())["packs"][0]["error"]


def test_the_repository_root_is_a_comfyui_node_pack(comfy, monkeypatch):
    """ComfyUI loads custom_nodes/replicheck/__init__.py by path (nodes.load_custom_node): it must
    give NODE_CLASS_MAPPINGS and WEB_DIRECTORY, with the frontend file in it."""
    import importlib.util

    import comfy.model_management as mm
    import folder_paths  # noqa: F401 - ComfyUI imports it before it loads custom nodes

    monkeypatch.setattr(mm, "unload_all_models", mm.unload_all_models)  # setup() wraps it
    spec = importlib.util.spec_from_file_location("custom_nodes_replicheck", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "custom_nodes_replicheck", module)
    spec.loader.exec_module(module)
    assert set(module.NODE_CLASS_MAPPINGS) == {"ReplicheckCheck", "ReplicheckGate", "ReplicheckSignal"}
    assert getattr(mm.unload_all_models, "replicheck_unload", False)
    assert module.NODE_DISPLAY_NAME_MAPPINGS["ReplicheckCheck"] == "Replicheck Check"
    assert (REPO / module.WEB_DIRECTORY / "replicheck.js").is_file()


def test_pyproject_has_the_comfy_registrys_section():
    import tomllib

    comfy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert all((REPO / p).exists() for p in comfy["includes"])


def _cfg(model_options, cond_pred, uncond_pred, sigma, scale=7.0):
    """ComfyUI's comfy/samplers.py cfg_function after guiding: every post-CFG function gets these."""
    cfg_result = uncond_pred + (cond_pred - uncond_pred) * scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": cfg_result, "cond": [{"strength": 1.0}], "uncond": [{"strength": 1.0}],
                "cond_scale": scale, "model": None, "uncond_denoised": uncond_pred, "cond_denoised": cond_pred,
                "sigma": sigma, "model_options": model_options, "input": None}
        cfg_result = fn(args)
    return cfg_result


def test_the_memorization_signal_is_measured_through_comfyuis_post_cfg_function(demo):
    import torch
    from comfy.model_patcher import ModelPatcher

    from lib_replicheck.comfyui.signal import MEASUREMENTS, ReplicheckSignal
    from lib_replicheck.memorization.signal import forge_guidance_difference, magnitudes

    SD15 = type("SD15", (), {})  # the class name ComfyUI's supported_models gives SD 1.5
    model = ModelPatcher(type("BaseModel", (), {"model_config": SD15()})())
    patched = ReplicheckSignal().patch(model, steps=1, threshold=5.0)[0]
    assert patched is not model and "sampler_post_cfg_function" not in model.model_options
    gen = torch.Generator().manual_seed(0)
    x0_c, x0_u = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    sigma = torch.tensor([14.6, 14.6])
    guided = _cfg(patched.model_options, x0_c, x0_u, sigma)
    assert torch.equal(guided, x0_u + (x0_c - x0_u) * 7.0)  # sampling is untouched
    _cfg(patched.model_options, x0_u, x0_c, sigma * 0.5)  # a later step: not counted (steps=1)
    want = magnitudes(forge_guidance_difference(x0_c, x0_u, sigma, [1.0]))
    out = run_check(batch(PACK_PHOTOS / "coffee.jpg", NOVEL), extra := {})
    measured = json.loads(out["result"][3])["memorization_signal"]
    assert [m["magnitude"] for m in measured] == pytest.approx(want)
    assert extra["Replicheck memorization"] == [f"{w:.2f} ({'high' if w >= 5 else 'normal'})" for w in want]
    assert "Memorization signal: " in out["ui"]["replicheck_html"][0]
    # read once: the next prompt without a sampling through the patched model has none
    again = json.loads(run_check(batch(NOVEL))["result"][3])["memorization_signal"]
    assert again == [{"note": "not measured: put the Replicheck Memorization Signal node between the model loader "
                               "and the sampler"}]
    # a new sampling (the noise level rises again) is measured afresh
    _cfg(patched.model_options, x0_u, x0_c, sigma)
    assert MEASUREMENTS.take()[0].magnitude == pytest.approx(magnitudes(forge_guidance_difference(x0_u, x0_c, sigma, [1.0]))[0])


def test_without_a_post_cfg_function_the_signal_node_says_it_is_unavailable(demo):
    from lib_replicheck.comfyui.signal import ReplicheckSignal

    model = object()
    assert ReplicheckSignal().patch(model)[0] is model
    measured = json.loads(run_check(batch(NOVEL))["result"][3])["memorization_signal"]
    assert measured[0]["magnitude"] is None
    assert "no set_model_sampler_post_cfg_function" in measured[0]["note"]


def test_the_root_package_outside_comfyui_registers_nothing(monkeypatch):
    """pytest (or any tool) importing the repository root as a package must not start the nodes."""
    import importlib.util

    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    spec = importlib.util.spec_from_file_location("repository_root", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and "lib_replicheck.comfyui.register" not in vars(module)
