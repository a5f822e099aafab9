"""What ComfyUI gets from the repository's `__init__.py`: the node classes, the frontend folder,
the packs route and the unload hook. The last two need ComfyUI's server and model management;
where they are missing (tests, another host), the nodes still load and one line says what is off."""

from __future__ import annotations

import logging
from pathlib import Path

from lib_replicheck.comfyui import runtime
from lib_replicheck.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from lib_replicheck.comfyui.routes import add_routes, add_style_route

log = logging.getLogger("replicheck")
#: the web UI panel's stylesheet, also the node UI's
STYLESHEET = Path(__file__).resolve().parents[2] / "style.css"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "setup"]


def _listen() -> str | None:
    """ComfyUI's --listen value (None where its arguments cannot be read: loopback is assumed)."""
    try:
        from comfy.cli_args import args  # ComfyUI's

        return args.listen
    except Exception:  # noqa: BLE001
        return None


def setup() -> None:
    """Register the route and the unload hook on the running ComfyUI; never raises."""
    try:
        from server import PromptServer  # ComfyUI's

        add_routes(PromptServer.instance.routes, runtime.service, _listen())
        add_style_route(PromptServer.instance.routes, STYLESHEET)
    except Exception as e:  # noqa: BLE001 - the nodes work without the route
        log.warning("replicheck: the packs route is not available (%s: %s)", type(e).__name__, e)
    try:
        import comfy.model_management as model_management  # ComfyUI's

        runtime.unload_hook(model_management)
    except Exception as e:  # noqa: BLE001 - the model then stays loaded until ComfyUI exits
        log.warning("replicheck: ComfyUI's unload actions will not unload replicheck (%s: %s)", type(e).__name__, e)
