"""modules/script_callbacks.py (1.10.1): registration and the callers the web UI uses."""

from modules import errors


class ImageSaveParams:
    def __init__(self, image, p, filename, pnginfo):
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


callback_map = {k: [] for k in ("callbacks_app_started", "callbacks_ui_settings", "callbacks_before_image_saved",
                                "callbacks_image_saved", "callbacks_script_unloaded", "callbacks_ui_tabs")}


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
