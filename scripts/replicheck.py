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
from lib_replicheck.memorization import forge as forge_signal  # noqa: E402
from lib_replicheck.errors import ReplicheckError  # noqa: E402
from lib_replicheck.webui.hook import INFOTEXT_KEYS, Hook, PerImageValue  # noqa: E402
from lib_replicheck.registry.manager import PackManager  # noqa: E402
from lib_replicheck.webui.service import CheckService  # noqa: E402
from lib_replicheck.webui.settings import SETTINGS, Settings  # noqa: E402

log = logging.getLogger("replicheck")


def _platform() -> str:
    import importlib.util

    if importlib.util.find_spec("modules_forge") is not None:
        return "forge"
    if hasattr(shared, "native") or hasattr(shared, "backend"):
        return "sdnext"
    return "automatic1111"


PLATFORM = _platform()
#: Why the memorization signal cannot be measured on this platform (None: it can).
SIGNAL_UNAVAILABLE = {
    "forge": None,  # measured in Forge's sampling function instead (lib_replicheck/memorization/forge.py)
    "sdnext": "SD.Next's diffusers backend does not call the CFG callbacks this signal needs"
              if getattr(shared, "native", False) else None,
    "automatic1111": None,
}[PLATFORM]
UNSUPPORTED = {
    "forge": [],
    "sdnext": ["the settings section has no category (SD.Next ignores categories)"]
              + ([f"memorization signal: {SIGNAL_UNAVAILABLE}"] if SIGNAL_UNAVAILABLE else []),
    "automatic1111": [],
}[PLATFORM]


def _is_sd1() -> bool:
    model = getattr(shared, "sd_model", None)
    return model is not None and not any(getattr(model, a, False) for a in ("is_sdxl", "is_sd2", "is_sd3", "is_ssd"))

MODELS_DIR = os.path.join(getattr(paths, "models_path", os.path.join(EXT_DIR, "models")), "replicheck")
service = CheckService(os.path.join(MODELS_DIR, "packs"), MODELS_DIR, logger=log)


def current_settings() -> Settings:
    return Settings.from_options(lambda key: getattr(shared.opts, key, None))


hook = Hook(service, current_settings)
manager = PackManager(service.packs_dir, MODELS_DIR, lambda: current_settings().registry_urls(),
                      on_change=service.packs_changed)


def _generation_running() -> bool:
    """Whether the web UI is generating: every generation, UI or API, holds call_queue's lock, and
    lets go of it however it ends (an exception included). Unknown: assume it is."""
    try:
        from modules.call_queue import queue_lock
    except ImportError:
        return True
    inner = getattr(queue_lock, "_lock", queue_lock)  # FIFOLock wraps a threading.Lock
    locked = getattr(inner, "locked", None)
    return bool(locked()) if callable(locked) else True


def settle_jobs() -> None:
    """Close the live job of a generation that failed before its `postprocess` (the panel polls this)."""
    hook.settle(_generation_running())


def _guard(what: str, fn, *args, default=None):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - a failure of ours must never reach the generation
        log.warning("replicheck: %s failed: %s: %s", what, type(e).__name__, e)
        return default


def composite_as_saved(p, image):
    """SD.Next pastes inpainting's overlay after postprocess_image and has no later hook: the image
    it will save is that composite, made here with its own apply_overlay(image, paste_loc, index,
    overlays) for checking only (the web UI's image is not touched). Anything else: `image`."""
    import inspect

    overlays = getattr(p, "overlay_images", None)
    if not overlays:
        return image
    use = getattr(p, "mask_apply_overlay", None)
    if use is None:
        use = getattr(shared.opts, "mask_apply_overlay", True)
    from modules import processing

    apply = getattr(processing, "apply_overlay", None)
    if not use or apply is None or len(inspect.signature(apply).parameters) != 4:
        return image
    out = apply(image, getattr(p, "paste_to", None), int(getattr(p, "batch_index", 0)), overlays)
    return out if hasattr(out, "size") else image


#: 1.10's ScriptRunner calls postprocess_image_after_composite after inpainting's overlay
AFTER_COMPOSITE = hasattr(getattr(scripts, "ScriptRunner", None), "postprocess_image_after_composite")


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
        p._replicheck = _guard("starting the check", lambda: hook.begin(
            tab, bool(enabled), expected, init, signal=SIGNAL_UNAVAILABLE, sd1=_is_sd1(), seed=seed))

    def process_batch(self, p, *args, **kwargs):
        state = getattr(p, "_replicheck", None)
        if state is not None:
            _guard("the memorization signal", hook.batch, state, int(kwargs.get("batch_number", 0)),
                   list(kwargs.get("prompts") or []))

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Forge only: it never calls the CFG callbacks, so the signal is measured in its sampling function.
        AUTOMATIC1111 1.10 calls this hook too, and measures through the CFG callbacks instead."""
        if PLATFORM == "forge":
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
        index = int(getattr(p, "iteration", 0)) * int(getattr(p, "batch_size", 1)) + int(getattr(p, "batch_index", 0))
        image = _guard("the inpainting overlay", composite_as_saved, p, pp.image, default=pp.image) if as_saved \
            else pp.image
        report = _guard("checking an image", hook.image, state, image, index)
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
    if PLATFORM == "forge":  # where no hook registered the measurement before sampling (calibration)
        _guard("the memorization signal", forge_signal.attach_at_step, params, tracker, log)
    _guard("the memorization signal", tracker.on_denoiser, params)


def on_cfg_denoised(params):
    tracker = hook.tracker
    if tracker is None:
        return
    _guard("the memorization signal", tracker.on_denoised, params)


def measure_signal(prompt: str, seed: int) -> float:
    """The memorization signal of one txt2img generation with the loaded model, as Wen et al. measure
    it (DDIM, 50 steps, guidance 7.5, 512x512), stopped once the first N steps are measured."""
    import tempfile

    from modules import processing
    from modules.call_queue import queue_lock

    from lib_replicheck.memorization.tracker import SignalTracker

    if SIGNAL_UNAVAILABLE:
        raise ReplicheckError(f"cannot calibrate here: {SIGNAL_UNAVAILABLE}")
    s = current_settings()
    tracker = SignalTracker(s.mem_steps, s.mem_threshold, True)
    tracker.publish = lambda signals: shared.state.interrupt()  # measured: stop sampling
    tracker.start_batch(0, [prompt])
    with queue_lock, tempfile.TemporaryDirectory(prefix="replicheck-calibrate-") as out:
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


def on_image_saved(params):
    """'Warn and do not save': remove the file the web UI just wrote for a flagged image."""
    p = params.p
    state = getattr(p, "_replicheck", None)
    if state is None or not params.filename:
        return
    grids = getattr(p, "outpath_grids", None)
    if grids and os.path.abspath(params.filename).startswith(os.path.abspath(grids) + os.sep):
        return
    index = int(getattr(p, "iteration", 0)) * int(getattr(p, "batch_size", 1)) + int(getattr(p, "batch_index", 0))
    if hook.should_delete_saved(state, index):
        for f in (params.filename, os.path.splitext(params.filename)[0] + ".txt"):
            if os.path.isfile(f):
                _guard("removing a flagged image", os.remove, f)
        log.warning("replicheck: image %d flagged as a copy, not saved (%s)", index + 1, params.filename)


# -- the Replicheck tab: the pack manager ------------------------------------------------------------

def _page() -> str:
    from lib_replicheck.webui import packs_page
    from lib_replicheck.webui.api_models import pack_model

    return packs_page.render([pack_model(p, service) for p in manager.installed()], manager.available,
                             manager.errors, refreshed=manager.refreshed is not None)


def _names() -> list[str]:
    return sorted({p.name for p in manager.installed()} | {p.name for p in manager.available})


def _message(text: str, error: bool = False) -> str:
    from lib_replicheck.webui.panel import esc

    return f"<p class='{'rc-error-text' if error else 'rc-message'}'>{esc(text)}</p>"


def _action(fn, name, done):
    if not name:
        return _page(), _message("Choose a pack first.", True)
    try:
        fn(name)
    except ReplicheckError as e:
        return _page(), _message(str(e), True)
    return _page(), _message(done)


def refresh_message() -> tuple[str, bool]:
    """What reading the registries gave: packs listed, and which registries could not be read."""
    count = len(manager.registries())
    bad = len(manager.errors)
    read = count - bad
    text = (f"Read {read} of {count} registr{'y' if count == 1 else 'ies'}: {len(manager.available)} pack(s) listed."
            if bad else f"Read {count} registr{'y' if count == 1 else 'ies'}: {len(manager.available)} pack(s) listed.")
    if bad:
        text += " Could not read: " + "; ".join(manager.errors)
    return text, bool(bad)


def ui_refresh():
    try:
        manager.refresh()
        text, error = refresh_message()
    except Exception as e:  # noqa: BLE001 - shown to the user, never raised into gradio
        text, error = f"Could not read the registries: {type(e).__name__}: {e}", True
    return _page(), gr.update(choices=_names()), _message(text, error)


def ui_reload():
    """The table and the pack list as they are now (page load, a download that ended)."""
    return _page(), gr.update(choices=_names())


def ui_download(name):
    return _action(manager.start_download, name, f"Downloading {name}: progress below.")


def ui_cancel(name):
    return _action(manager.cancel, name, f"Cancelling the download of {name}.")


def ui_verify(name):
    return _action(manager.verify, name, f"{name}: every file matches its sha256.")


def ui_remove(name):
    return _action(manager.remove, name, f"Removed {name}.")


def on_ui_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.HTML("<p>Packs are indexes of training images that replicheck searches. They are kept in "
                f"<code>{MODELS_DIR}/packs</code>. Nothing is downloaded until you click.</p>")
        with gr.Row():
            name = gr.Dropdown(label="Pack", choices=_names(), elem_id="replicheck_pack_name")
            refresh = gr.Button("Refresh list", elem_id="replicheck_refresh")
            download = gr.Button("Download", variant="primary", elem_id="replicheck_download")
            cancel = gr.Button("Cancel download", elem_id="replicheck_cancel")
            verify = gr.Button("Verify", elem_id="replicheck_verify")
            remove = gr.Button("Remove", elem_id="replicheck_remove")
        message = gr.HTML(elem_id="replicheck_message")
        gr.HTML("<div id='replicheck_downloads'></div>")
        table = gr.HTML(_page, elem_id="replicheck_packs_table")  # callable: built again at each page load
        # clicked by the panel's script when a download ends, so the table follows it
        reload = gr.Button("Reload table", visible=False, elem_id="replicheck_reload")
        reload.click(fn=ui_reload, outputs=[table, name])
        refresh.click(fn=ui_refresh, outputs=[table, name, message])
        download.click(fn=ui_download, inputs=[name], outputs=[table, message])
        cancel.click(fn=ui_cancel, inputs=[name], outputs=[table, message])
        verify.click(fn=ui_verify, inputs=[name], outputs=[table, message])
        remove.click(fn=ui_remove, inputs=[name], outputs=[table, message])
    return [(tab, "Replicheck", "replicheck_tab")]


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
    section = ("replicheck", "Replicheck") if PLATFORM == "sdnext" else ("replicheck", "Replicheck", "postprocessing")
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
                       on_poll=settle_jobs)


def on_app_started(demo, app):
    rc_api.attach(app, ROUTES)
    log.info("replicheck %s: API at %s, packs in %s", __version__, rc_api.PREFIX, service.packs_dir)


def on_script_unloaded():
    service.unload()


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_image_saved(on_image_saved)
if hasattr(script_callbacks, "on_cfg_denoised"):
    script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
    script_callbacks.on_cfg_denoised(on_cfg_denoised)
script_callbacks.on_script_unloaded(on_script_unloaded)
