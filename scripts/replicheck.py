"""The web UI glue: translates between the web UI (AUTOMATIC1111, Forge, SD.Next) and lib_replicheck.

Every hook body is guarded: whatever replicheck does wrong, the generation and its saved images
stay exactly as they would be without it, and the console gets one line.
"""

from __future__ import annotations

import logging
import os
import sys

EXT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if EXT_DIR not in sys.path:
    sys.path.insert(0, EXT_DIR)

import gradio as gr  # noqa: E402
from modules import paths, script_callbacks, scripts, shared  # noqa: E402

from lib_replicheck import __version__  # noqa: E402
from lib_replicheck.webui import api as rc_api  # noqa: E402
from lib_replicheck.webui import calibrate  # noqa: E402
from lib_replicheck.webui import platform as webui_platform  # noqa: E402
from lib_replicheck.memorization import forge as forge_signal  # noqa: E402
from lib_replicheck.webui.hook import INFOTEXT_KEYS, PROMPT_KEY, Hook, PerImageValue  # noqa: E402
from lib_replicheck.webui.hosts import ServerAddress  # noqa: E402
from lib_replicheck.webui.pack_jobs import PackManager  # noqa: E402
from lib_replicheck.webui.service import CheckService  # noqa: E402
from lib_replicheck.webui.settings import SETTINGS, Settings  # noqa: E402
from lib_replicheck.webui.signing import SavedImageSigner, generator, wrap_api_encoders  # noqa: E402
from lib_replicheck.webui.tab import PacksTab  # noqa: E402
from lib_replicheck.webui.audits import AuditJobs, ServiceChecker  # noqa: E402

log = logging.getLogger("replicheck")

HOST = webui_platform.detect(shared)
PLATFORM, SIGNAL_UNAVAILABLE, UNSUPPORTED = HOST.name, HOST.signal_unavailable, list(HOST.unsupported)
MODELS_DIR = os.path.join(getattr(paths, "models_path", os.path.join(EXT_DIR, "models")), "replicheck")
service = CheckService(os.path.join(MODELS_DIR, "packs"), MODELS_DIR, logger=log)


def current_settings() -> Settings:
    return Settings.from_options(lambda key: getattr(shared.opts, key, None))


hook = Hook(service, current_settings)


def build_recipe(recipe, packs_dir, **kw):
    """A recipe built by the builder (imported when the first build starts), on the embedder's device
    chosen in Settings."""
    from lib_replicheck.builder.build_recipe import build_for_manager

    return build_for_manager(recipe, packs_dir, device=current_settings().device, **kw)


def wait_while_generating() -> None:
    """A recipe build embeds only while the web UI is not generating (nor checking what it made)."""
    import time

    while getattr(shared.state, "job", ""):
        time.sleep(0.5)


manager = PackManager(service.packs_dir, MODELS_DIR, lambda: current_settings().registry_urls(),
                      on_change=service.packs_changed, build_recipe=build_recipe, gate=wait_while_generating)
audits = AuditJobs(os.path.join(MODELS_DIR, "reports"), lambda: ServiceChecker(service, current_settings()),
                   log=log.warning)


def run_pip(command: str, desc: str):
    """The web UI's own pip helper (AUTOMATIC1111 and Forge: modules.launch_utils; SD.Next: launch)."""
    try:
        from modules.launch_utils import run_pip as web_ui_pip
    except ImportError:
        from launch import run_pip as web_ui_pip
    return web_ui_pip(command, desc)


packs_tab = PacksTab(gr, manager, service, audits=audits, run_pip=run_pip)


def settle_jobs() -> None:
    """Close the live job of a generation that failed before its `postprocess` (the panel polls this)."""
    try:
        from modules.call_queue import queue_lock
    except ImportError:
        queue_lock = None
    hook.settle(webui_platform.lock_held(queue_lock))


def _guard(what: str, fn, *args, default=None):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - a failure of ours must never reach the generation
        log.warning("replicheck: %s failed: %s: %s", what, type(e).__name__, e)
        return default


def webui_version() -> str | None:
    """The web UI's version as it names itself (its git tag), read once at load; None where it has no
    launch_utils.git_tag (SD.Next)."""
    try:
        from modules import launch_utils

        return launch_utils.git_tag()
    except (ImportError, AttributeError):
        return None


saved_signer = SavedImageSigner(service, MODELS_DIR, generator(PLATFORM, _guard("reading the web UI's version",
                                                                               webui_version)))


def composite_as_saved(p, image):
    """The image SD.Next will save: inpainting's overlay pasted with its own apply_overlay."""
    from modules import processing

    return webui_platform.composite_as_saved(p, image, getattr(processing, "apply_overlay", None),
                                             getattr(shared.opts, "mask_apply_overlay", True))


#: 1.10's ScriptRunner calls postprocess_image_after_composite after inpainting's overlay
AFTER_COMPOSITE = webui_platform.has_after_composite(getattr(scripts, "ScriptRunner", None))


class ReplicheckScript(scripts.Script):
    def title(self):
        return "Replicheck"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        tab = "img2img" if is_img2img else "txt2img"
        with gr.Accordion("Replicheck", open=False, elem_id=f"replicheck_{tab}_accordion"):
            enabled = gr.Checkbox(label="Check the images of this generation for copies of training images",
                                  value=bool(getattr(shared.opts, "replicheck_enabled", True)),
                                  elem_id=f"replicheck_{tab}_enabled")
            gr.HTML("<span class='replicheck-hint'>Results appear under the gallery. Packs, thresholds and "
                    "device: Settings → Replicheck.</span>")
        self.infotext_fields = []
        return [enabled]

    def process(self, p, enabled=True, *args):
        tab = "img2img" if self.is_img2img else "txt2img"
        expected = int(getattr(p, "n_iter", 1)) * int(getattr(p, "batch_size", 1))
        init = list(getattr(p, "init_images", None) or []) if self.is_img2img else None
        seed = int((getattr(p, "all_seeds", None) or [getattr(p, "seed", 0) or 0])[0])
        prompts = getattr(p, "all_prompts", None) or [getattr(p, "prompt", "")]
        p._replicheck = _guard("starting the check", lambda: hook.begin(
            tab, bool(enabled), expected, init, signal=SIGNAL_UNAVAILABLE,
            sd1=webui_platform.is_sd1(getattr(shared, "sd_model", None)), seed=seed, prompts=prompts))
        known = _guard("the known-prompt check", hook.prompt_infotext, p._replicheck)
        if known is not None:  # before sampling: the hit travels with every image whose prompt it is
            p.extra_generation_params[PROMPT_KEY] = known

    def process_batch(self, p, *args, **kwargs):
        state = getattr(p, "_replicheck", None)
        if state is not None:
            _guard("the memorization signal", hook.batch, state, int(kwargs.get("batch_number", 0)),
                   list(kwargs.get("prompts") or []))

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Forge only: it never calls the CFG callbacks, so the signal is measured in its sampling function.
        AUTOMATIC1111 1.10 calls this hook too, and measures through the CFG callbacks instead."""
        if PLATFORM == webui_platform.FORGE:
            _guard("the memorization signal", forge_signal.attach, p, hook.tracker, log)

    def postprocess_image(self, p, pp, enabled=True, *args):
        if not AFTER_COMPOSITE:  # a web UI without the hook below (SD.Next): the last chance before saving
            self._check_image(p, pp, as_saved=True)

    def postprocess_image_after_composite(self, p, pp, enabled=True, *args):
        """After inpainting's overlay is pasted, before the image is saved and its infotext built:
        the image checked is the image saved."""
        self._check_image(p, pp)

    def _check_image(self, p, pp, as_saved: bool = False):
        state = getattr(p, "_replicheck", None)
        if state is None or getattr(pp, "image", None) is None:
            return
        index = webui_platform.image_index(p)
        image = _guard("the inpainting overlay", composite_as_saved, p, pp.image, default=pp.image) if as_saved \
            else pp.image
        report = _guard("checking an image", hook.image, state, image, index)
        # the object the web UI appends to processed.images (1.10, Forge: pp.image after the overlay;
        # SD.Next: its postprocess_image's image, or the overlay pasted as it will save it)
        for returned in {id(pp.image): pp.image, id(image): image}.values():
            _guard("remembering the image for the API", saved_signer.remember, returned, state, index)
        values = _guard("the infotext", hook.image_values, state, index, report, default={})
        for key in INFOTEXT_KEYS:
            if key in values:
                p.extra_generation_params[key] = PerImageValue(values[key], state.values, key)
            else:
                p.extra_generation_params.pop(key, None)

    def postprocess(self, p, processed, enabled=True, *args):
        _guard("finishing the check", hook.end, getattr(p, "_replicheck", None))


def on_cfg_denoiser(params):
    tracker = hook.tracker
    if tracker is None:  # the feature is off, or no generation is measured: no work at all
        return
    if PLATFORM == webui_platform.FORGE:  # where no hook registered the measurement before sampling (calibration)
        _guard("the memorization signal", forge_signal.attach_at_step, params, tracker, log)
    _guard("the memorization signal", tracker.on_denoiser, params)


def on_cfg_denoised(params):
    tracker = hook.tracker
    if tracker is None:
        return
    _guard("the memorization signal", tracker.on_denoised, params)


def measure_signal(prompt: str, seed: int) -> float:
    """Calibration: the signal of one txt2img generation with the loaded model (webui/calibrate.py)."""
    from modules import processing
    from modules.call_queue import queue_lock

    return calibrate.measure_signal(prompt, seed, hook=hook, settings=current_settings(), shared=shared,
                                    processing=processing, lock=queue_lock, unavailable=SIGNAL_UNAVAILABLE)


def on_image_saved(params):
    """'Warn and do not save': remove the file the web UI just wrote for a flagged image; with the
    signed record on, sign the file the web UI wrote (its PNG info included)."""
    p = params.p
    state = getattr(p, "_replicheck", None)
    if state is None or not params.filename:
        return
    grids = getattr(p, "outpath_grids", None)
    if grids and os.path.abspath(params.filename).startswith(os.path.abspath(grids) + os.sep):
        return
    index = webui_platform.image_index(p)
    if hook.should_delete_saved(state, index):
        for f in (params.filename, os.path.splitext(params.filename)[0] + ".txt"):
            if os.path.isfile(f):
                _guard("removing a flagged image", os.remove, f)
        log.warning("replicheck: image %d flagged as a copy, not saved (%s)", index + 1, params.filename)
        return
    _guard("signing the saved image", saved_signer.sign_saved, state, index, params.filename)


def _multiselect_component():
    """`ui_components.DropdownMulti` (AUTOMATIC1111, Forge and SD.Next all have it), else a dropdown
    that is multi-select by construction."""
    try:
        from modules.ui_components import DropdownMulti

        return DropdownMulti
    except ImportError:
        def dropdown_multi(**kwargs):
            return gr.Dropdown(multiselect=True, **kwargs)

        return dropdown_multi


def on_ui_settings():
    section = HOST.settings_section
    options = {}
    for d in SETTINGS:
        component, args, refresh = None, None, None
        if d.kind == "slider":
            component, args = gr.Slider, {"minimum": d.minimum, "maximum": d.maximum, "step": d.step}
        elif d.kind == "number":
            component = gr.Number
        elif d.kind == "radio":
            component, args = gr.Radio, {"choices": list(d.choices)}
        elif d.kind == "dropdown":
            # The web UI sends `component_args` through gr.update() on every page load and refresh,
            # and gradio passes them to Dropdown.update(), which has no `multiselect`: the web UI's
            # own multi-select component carries it instead, so only choices go into the args.
            component = _multiselect_component()
            args = lambda: {"choices": [p.name for p in service.installed()]}  # noqa: E731
            refresh = lambda: None  # noqa: E731 - the web UI re-evaluates `args` on refresh
        options[d.key] = shared.OptionInfo(d.default, d.label, component, args, refresh=refresh).info(d.info)
    for key, info in shared.options_section(section, options).items():
        shared.opts.add_option(key, info)


# The routes are built now, while the web UI loads its scripts, so that on_app_started only has to
# hand them to the app: at start-up other work (Forge loads the model meanwhile) competes for the
# interpreter, and every moment spent there is a moment /replicheck/v1 answers 404.
ROUTES = rc_api.router(service, current_settings, api_auth=getattr(shared.cmd_opts, "api_auth", None),
                       platform=PLATFORM, unsupported=UNSUPPORTED, manager=manager, measure=measure_signal,
                       on_poll=settle_jobs, audits=audits, server=ServerAddress.from_cmd_opts(shared.cmd_opts))


def on_app_started(demo, app):
    rc_api.attach(app, ROUTES)
    _guard("signing the API's images", wrap_api_encoders, saved_signer)
    log.info("replicheck %s: API at %s, packs in %s", __version__, rc_api.PREFIX, service.packs_dir)


def on_script_unloaded():
    service.unload()


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_ui_tabs(packs_tab.build)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_image_saved(on_image_saved)
if hasattr(script_callbacks, "on_cfg_denoised"):
    script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
    script_callbacks.on_cfg_denoised(on_cfg_denoised)
script_callbacks.on_script_unloaded(on_script_unloaded)
