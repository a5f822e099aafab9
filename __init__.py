"""ComfyUI custom node pack: ComfyUI loads this file from `custom_nodes/replicheck/` (a `git clone`
of this repository, or ComfyUI-Manager's install from its git URL). The nodes live in
`lib_replicheck/comfyui/`; the AUTOMATIC1111-family web UIs never read this file. Anything else that
imports it (pytest collects the repository root as a package) gets no nodes and changes nothing."""

import os
import sys

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

if "folder_paths" in sys.modules:  # ComfyUI's: imported by its nodes.py before any custom node loads
    _ROOT = os.path.dirname(os.path.abspath(__file__))
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

    from lib_replicheck.comfyui.register import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, setup  # noqa: E402

    setup()
