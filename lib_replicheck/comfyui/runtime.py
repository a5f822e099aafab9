"""The one check service behind every replicheck node of a ComfyUI process.

Packs live where the web UI keeps them, `models/replicheck/packs` under ComfyUI's models folder,
so the packs commands (`python -m lib_replicheck packs install demo --packs-dir ...`) and a copied
pack folder work the same. The model and packs stay loaded between prompts, as ComfyUI keeps its
own models, and are let go when ComfyUI frees memory or unloads its models (`unload_hook`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib_replicheck.webui.service import CheckService

log = logging.getLogger("replicheck")

_service: CheckService | None = None


def models_dir() -> Path:
    """ComfyUI's `models/replicheck` (folder_paths.models_dir), or replicheck's own home outside ComfyUI."""
    try:
        import folder_paths  # ComfyUI's module

        return Path(folder_paths.models_dir) / "replicheck"
    except ImportError:
        from lib_replicheck.home import default_home

        return default_home()


def service() -> CheckService:
    """The process's check service, made on first use."""
    global _service
    if _service is None:
        root = models_dir()
        _service = CheckService(root / "packs", root, logger=log)
    return _service


def unload() -> None:
    """Let go of the packs and the model (the next check loads them again)."""
    if _service is not None:
        _service.unload()


def unload_hook(model_management) -> bool:
    """Make ComfyUI's `unload_all_models` (the "Unload models" and "Free model and node cache"
    actions, POST /free) also unload replicheck's model. Installed once; returns whether it was."""
    original = getattr(model_management, "unload_all_models", None)
    if original is None or getattr(original, "replicheck_unload", False):
        return False

    def unload_all_models(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            try:
                unload()
            except Exception as e:  # noqa: BLE001 - ComfyUI's own unload must never fail because of us
                log.warning("replicheck: could not unload its model: %s", e)

    unload_all_models.replicheck_unload = True
    unload_all_models.__wrapped__ = original
    model_management.unload_all_models = unload_all_models
    return True
