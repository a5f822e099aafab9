"""modules/script_callbacks.py (1.10.1): registration and the callers the web UI uses."""

from modules import errors


class ImageSaveParams:
    def __init__(self, image, p, filename, pnginfo):
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond,
                 denoiser=None):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


callback_map = {k: [] for k in ("callbacks_app_started", "callbacks_ui_settings", "callbacks_before_image_saved",
                                "callbacks_image_saved", "callbacks_script_unloaded", "callbacks_ui_tabs",
                                "callbacks_cfg_denoiser", "callbacks_cfg_denoised")}


def clear_callbacks():
    for v in callback_map.values():
        v.clear()


def _add(name, callback):
    callback_map[name].append(callback)


def _run(name, *args):
    result = []
    for c in callback_map[name]:
        try:
            result.append(c(*args))
        except Exception:
            errors.report(f"Error executing callback {name} for {getattr(c, '__name__', c)}", exc_info=True)
    return result


def on_app_started(callback, *, name=None):
    _add("callbacks_app_started", callback)


def on_ui_settings(callback, *, name=None):
    _add("callbacks_ui_settings", callback)


def on_before_image_saved(callback, *, name=None):
    _add("callbacks_before_image_saved", callback)


def on_image_saved(callback, *, name=None):
    _add("callbacks_image_saved", callback)


def on_script_unloaded(callback, *, name=None):
    _add("callbacks_script_unloaded", callback)


def on_ui_tabs(callback, *, name=None):
    _add("callbacks_ui_tabs", callback)


def on_cfg_denoiser(callback, *, name=None):
    _add("callbacks_cfg_denoiser", callback)


def on_cfg_denoised(callback, *, name=None):
    _add("callbacks_cfg_denoised", callback)


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _run("callbacks_cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams):
    _run("callbacks_cfg_denoised", params)


def app_started_callback(demo, app):
    _run("callbacks_app_started", demo, app)


def ui_settings_callback():
    _run("callbacks_ui_settings")


def before_image_saved_callback(params: ImageSaveParams):
    _run("callbacks_before_image_saved", params)


def image_saved_callback(params: ImageSaveParams):
    _run("callbacks_image_saved", params)


def script_unloaded_callback():
    _run("callbacks_script_unloaded")


def ui_tabs_callback():
    return [t for r in _run("callbacks_ui_tabs") for t in (r or [])]
