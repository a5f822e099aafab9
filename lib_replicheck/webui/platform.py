"""Which web UI replicheck runs in (AUTOMATIC1111, Forge or SD.Next), and what that changes.

Everything here reads objects the web UI hands over (its `shared` module, the loaded model, a
processing object, a function of its own), so it imports nothing of the web UI and runs without one.
The differences it handles are documented per web UI in the extension API notes.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass

AUTOMATIC1111, FORGE, SDNEXT = "automatic1111", "forge", "sdnext"

#: why SD.Next's diffusers backend gives no memorization signal
NO_CFG_CALLBACKS = "SD.Next's diffusers backend does not call the CFG callbacks this signal needs"
NO_CATEGORY = "the settings section has no category (SD.Next ignores categories)"


@dataclass(frozen=True)
class Platform:
    """The web UI replicheck runs in, and what replicheck cannot do there."""

    name: str  # AUTOMATIC1111, FORGE or SDNEXT
    signal_unavailable: str | None = None  # why the memorization signal cannot be measured (None: it can)
    unsupported: tuple[str, ...] = ()  # what the status route lists as not available here

    @property
    def settings_section(self) -> tuple[str, ...]:
        """SD.Next keeps the section tuple as given and has no categories; the others file the
        section under the postprocessing category."""
        return ("replicheck", "Replicheck") if self.name == SDNEXT else ("replicheck", "Replicheck", "postprocessing")


def platform_name(shared) -> str:
    """Forge ships the `modules_forge` package; SD.Next's `shared` has `native` (or `backend`)."""
    if importlib.util.find_spec("modules_forge") is not None:
        return FORGE
    if hasattr(shared, "native") or hasattr(shared, "backend"):
        return SDNEXT
    return AUTOMATIC1111


def detect(shared) -> Platform:
    """The platform of the web UI whose `shared` module this is. Forge gives no CFG callbacks either,
    but the signal is measured in its sampling function instead (memorization/forge.py)."""
    name = platform_name(shared)
    if name != SDNEXT:
        return Platform(name)
    signal = NO_CFG_CALLBACKS if getattr(shared, "native", False) else None
    return Platform(name, signal, (NO_CATEGORY,) + ((f"memorization signal: {signal}",) if signal else ()))


def is_sd1(model) -> bool:
    """Whether the loaded model is a Stable Diffusion 1.x, the model the signal's threshold is for."""
    return model is not None and not any(getattr(model, a, False) for a in ("is_sdxl", "is_sd2", "is_sd3", "is_ssd"))


def has_after_composite(script_runner) -> bool:
    """1.10's ScriptRunner (and Forge's) calls postprocess_image_after_composite after inpainting's
    overlay is pasted; SD.Next has no such hook."""
    return hasattr(script_runner, "postprocess_image_after_composite")


def image_index(p) -> int:
    """The image's place in the whole generation (batch count x batch size), as the web UI numbers it."""
    return int(getattr(p, "iteration", 0)) * int(getattr(p, "batch_size", 1)) + int(getattr(p, "batch_index", 0))


def composite_as_saved(p, image, apply_overlay, apply_by_default: bool):
    """SD.Next pastes inpainting's overlay after postprocess_image and has no later hook: the image
    it will save is that composite, made here with its own `apply_overlay(image, paste_loc, index,
    overlays)` for checking only (the web UI's image is not touched). `apply_by_default`: its
    `mask_apply_overlay` option, used where the processing object does not say. Anything else: `image`."""
    overlays = getattr(p, "overlay_images", None)
    if not overlays:
        return image
    use = getattr(p, "mask_apply_overlay", None)
    if use is None:
        use = apply_by_default
    if not use or apply_overlay is None or len(inspect.signature(apply_overlay).parameters) != 4:
        return image
    out = apply_overlay(image, getattr(p, "paste_to", None), int(getattr(p, "batch_index", 0)), overlays)
    return out if hasattr(out, "size") else image


def lock_held(lock) -> bool:
    """Whether the web UI is generating: every generation, UI or API, holds call_queue's lock and
    lets go of it however it ends (an exception included). Unknown (None, or a lock that cannot
    say): assume it is."""
    if lock is None:
        return True
    inner = getattr(lock, "_lock", lock)  # FIFOLock wraps a threading.Lock
    locked = getattr(inner, "locked", None)
    return bool(locked()) if callable(locked) else True
