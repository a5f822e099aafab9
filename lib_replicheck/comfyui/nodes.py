"""The ComfyUI nodes: `Replicheck Check` and `Replicheck Gate` (ComfyUI's V1 node classes).

The Check node runs the web UI's check service on each image of a batch with the Settings' words
and defaults as its inputs, and answers what the web UI shows: the verdict in the infotext's words
(one line per image), the best similarity, the report as JSON, and the panel's HTML for the node's
UI (`web/replicheck.js`). It writes the verdicts into `extra_pnginfo`, which ComfyUI's SaveImage
writes into the PNG next to the workflow. The Gate node passes, drops or replaces the images the
Check node flagged at or above a chosen tier. Neither ever fails a prompt because of replicheck:
every failure becomes a 'not checked' verdict with its reason and one log line.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from lib_replicheck.comfyui import runtime
from lib_replicheck.comfyui.prompt_text import visible_prompts
from lib_replicheck.comfyui.signal import MEASUREMENTS, NOT_IN_WORKFLOW, ReplicheckSignal
from lib_replicheck.memorization import prompts as known_prompts
from lib_replicheck.regions import MODES as REGION_MODES
from lib_replicheck.report import COPY_TIERS, Report, infotext, is_flagged, verdict_from_word
from lib_replicheck.thresholds import Verdict
from lib_replicheck.webui import panel
from lib_replicheck.webui.hook import INFOTEXT_KEY, NO_PACK, PACK_MISSING, PROMPT_KEY, SIGNAL_KEY
from lib_replicheck.webui.settings import DEFAULTS, DEVICES, SETTINGS, Settings

log = logging.getLogger("replicheck")

CATEGORY = "replicheck"
#: the key of the PNG text chunk the verdicts are written under (the infotext's key)
PNG_KEY = INFOTEXT_KEY
#: tiers the Gate node can act at, lowest first
GATE_TIERS = tuple(v.value for v in COPY_TIERS)
BLOCK, PLACEHOLDER = "block", "placeholder"
#: the grey a flagged image is replaced with (ComfyUI images are floats in [0, 1])
PLACEHOLDER_GREY = 0.5


def _setting(key: str):
    return next(s for s in SETTINGS if s.key == key)


def _tier_input(key: str) -> tuple:
    s = _setting(key)
    kind = "INT" if isinstance(s.default, int) and not isinstance(s.default, bool) else "FLOAT"
    spec = {"default": s.default, "min": s.minimum, "max": s.maximum, "step": s.step, "tooltip": f"{s.label}: {s.info}"}
    return kind, spec


def to_pil(images) -> list:
    """ComfyUI's IMAGE (a [batch, height, width, channels] float tensor in [0, 1]) as RGB PIL images,
    converted as its SaveImage converts them."""
    import numpy as np
    from PIL import Image

    out = []
    for image in images:
        a = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        out.append(Image.fromarray(a).convert("RGB"))
    return out


def settings_from(inputs: dict[str, Any]) -> Settings:
    """The node's inputs read as the web UI's Settings (the same keys without `replicheck_`)."""
    return Settings.from_options(lambda key: inputs.get(key.removeprefix("replicheck_")))


def verdict_lines(reports: list[Report], reason: str = "") -> list[str]:
    """Each image's verdict in the infotext's words."""
    return [infotext(None, reason) if reason else infotext(r) for r in reports]


def record_in_png(extra_pnginfo, lines: list[str], prompt_hit: str = "", signals: list[str] = ()) -> bool:
    """Put the verdicts (and the memorization signal, the known memorized prompt) into the
    `extra_pnginfo` ComfyUI's SaveImage writes into each PNG beside the workflow, in the infotext's
    words: one value for a single image, the list in batch order for a batch. False when the prompt
    carries no extra_pnginfo (queued through the API without it)."""
    if not isinstance(extra_pnginfo, dict):
        return False
    for key, values in ((PNG_KEY, list(lines)), (SIGNAL_KEY, list(signals))):
        if values:
            extra_pnginfo[key] = values[0] if len(values) == 1 else values
        else:
            extra_pnginfo.pop(key, None)
    if prompt_hit:
        extra_pnginfo[PROMPT_KEY] = prompt_hit
    else:
        extra_pnginfo.pop(PROMPT_KEY, None)
    return True


class ReplicheckCheck:
    """Checks each image for copies of training images; passes the images on unchanged."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Compares each image with the training images of the installed packs (models/replicheck/packs) "
                   "and says whether it copies one: no copy, possible copy, likely copy or duplicate.")
    FUNCTION = "check"
    RETURN_TYPES = ("IMAGE", "STRING", "FLOAT", "STRING")
    RETURN_NAMES = ("images", "verdict", "best_similarity", "report_json")
    OUTPUT_TOOLTIPS = ("the images, unchanged", "each image's verdict, one line per image, in the infotext's words",
                       "the highest similarity of any image to a training image (0 when none was found)",
                       "the whole report as JSON: per image its verdict, nearest training images and notes")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        regions = _setting("replicheck_regions")
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "the images to check"}),
                "packs": ("STRING", {"default": "", "tooltip": "pack names separated by commas; empty: every "
                                                               "installed pack (models/replicheck/packs)"}),
                "regions": (list(REGION_MODES), {"default": regions.default, "tooltip": regions.info}),
                "top_k": ("INT", {"default": DEFAULTS["replicheck_top_k"], "min": 1, "max": 20, "step": 1,
                                  "tooltip": _setting("replicheck_top_k").label}),
                "sscd_possible": _tier_input("replicheck_sscd_possible"),
                "sscd_likely": _tier_input("replicheck_sscd_likely"),
                "sscd_duplicate": _tier_input("replicheck_sscd_duplicate"),
                "pdq_likely": _tier_input("replicheck_pdq_likely"),
                "pdq_duplicate": _tier_input("replicheck_pdq_duplicate"),
                "clip_possible": _tier_input("replicheck_clip_possible"),
                "device": (list(DEVICES), {"default": DEFAULTS["replicheck_device"],
                                           "tooltip": _setting("replicheck_device").info}),
                "prompt_check": ("BOOLEAN", {"default": DEFAULTS["replicheck_prompt_check"],
                                             "tooltip": _setting("replicheck_prompt_check").info}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, **inputs):
        """Run at every prompt, never from ComfyUI's cache: the verdict must reach this prompt's
        extra_pnginfo, which a cached result would leave out of the saved PNG."""
        return float("nan")

    def check(self, images, prompt=None, extra_pnginfo=None, unique_id=None, **inputs):
        settings = settings_from(inputs)
        hit, hit_error = self._prompt_check(prompt, settings)
        reports, reason = self._reports(images, settings)
        lines = verdict_lines(reports, reason)
        hit_text = hit.summary() if hit else ""
        signals = {i: s for i, s in MEASUREMENTS.take().items() if i < len(reports)}
        record_in_png(extra_pnginfo, lines, hit_text, [signals[i].infotext() for i in sorted(signals)])
        best = max((r.best.similarity for r in reports if r.best is not None and not r.error), default=0.0)
        state = "no-pack" if reason == NO_PACK else "done"
        html = panel.render(reports, state=state, message=reports[0].error if reason and reports else "",
                            prompt_hits=[hit] if hit else [], prompt_error=hit_error, signals=signals)
        report = {"verdicts": lines, "best_similarity": best, "images": [r.to_dict() for r in reports],
                  "known_memorized_prompt": hit.to_dict() if hit else None,
                  "memorization_signal": [signals[i].to_dict() if i in signals else {"note": NOT_IN_WORKFLOW}
                                          for i in range(len(reports))]}
        ui = {"replicheck_html": [html], "verdicts": lines}
        return {"ui": ui, "result": (images, "\n".join(lines), float(best), json.dumps(report))}

    @staticmethod
    def _prompt_check(prompt, settings: Settings):
        """The known memorized prompt among the texts that reach the sampler's positive input."""
        if not settings.prompt_check:
            return None, ""
        try:
            for text in visible_prompts(prompt):
                hit = known_prompts.check(text)
                if hit is not None:
                    return hit, ""
            return None, ""
        except Exception as e:  # noqa: BLE001 - a broken list never stops the check
            log.warning("replicheck: the known memorized prompt check failed: %s", e)
            return None, f"the known memorized prompt check failed: {e}"

    @staticmethod
    def _reports(images, settings: Settings) -> tuple[list[Report], str]:
        """One report per image, and the infotext's reason when none could be checked."""
        labels = [f"image {i + 1}" for i in range(len(images))]
        service = runtime.service()
        installed = {p.name for p in service.installed()}
        if not installed:
            why = f"no pack installed in {service.packs_dir}: put a pack folder there (see the README)"
            log.warning("replicheck: %s", why)
            return [Report(image=label, error=why) for label in labels], NO_PACK
        missing = [n for n in settings.packs if n not in installed]
        if missing:
            why = f"pack(s) not installed in {service.packs_dir}: {', '.join(missing)}"
            log.warning("replicheck: %s", why)
            return [Report(image=label, error=why) for label in labels], PACK_MISSING
        try:
            pil = to_pil(images)
        except Exception as e:  # noqa: BLE001 - an input that is not an image batch
            why = f"the input is not an image batch ({type(e).__name__}: {e})"
            log.warning("replicheck: %s", why)
            return [Report(image=label, error=why) for label in labels], ""
        service.new_job()
        return service.check(pil, labels, settings), ""


def flagged_at(report_json: str, tier: str, count: int) -> list[bool]:
    """For each of `count` images, whether the Check node's report flags it at `tier` (the rule of
    Report.flagged, read from the JSON). An image without a verdict (not checked, or a report that
    cannot be read) is not flagged."""
    at = Verdict(tier)
    try:
        images = [img if isinstance(img, dict) and not img.get("error") else {}
                  for img in json.loads(report_json).get("images", [])]
    except (TypeError, ValueError, AttributeError):
        images = []
    return [i < len(images) and is_flagged(verdict_from_word(images[i].get("verdict")), at,
                                           images[i].get("from_input") is True)
            for i in range(count)]


class ReplicheckGate:
    """Passes the images the Check node did not flag; blocks the others, or swaps them for a grey
    placeholder, so that a workflow never saves a copy."""

    CATEGORY = CATEGORY
    DESCRIPTION = ("Lets through the images whose replicheck verdict is below the chosen tier. 'block' drops the "
                   "others (when none is left, the nodes after it do not run); 'placeholder' replaces them with grey.")
    FUNCTION = "gate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "the images of the Check node"}),
                "report_json": ("STRING", {"forceInput": True, "tooltip": "the Check node's report_json"}),
                "at_or_above": (list(GATE_TIERS), {"default": Verdict.LIKELY.value,
                                                   "tooltip": "images with this verdict or a higher one are stopped"}),
                "action": ([BLOCK, PLACEHOLDER], {"default": BLOCK}),
            },
        }

    def gate(self, images, report_json, at_or_above=Verdict.LIKELY.value, action=BLOCK):
        flags = flagged_at(report_json, at_or_above, len(images))
        n = sum(flags)
        text = (f"{n} of {len(flags)} image(s) at or above '{at_or_above}': "
                + ("none stopped" if not n else "blocked" if action == BLOCK else "replaced with a grey placeholder"))
        if n:
            log.warning("replicheck: %s", text)
        ui = {"replicheck_gate": [text]}
        if not n:
            return {"ui": ui, "result": (images,)}
        if action == PLACEHOLDER:
            out = images.clone()
            for i, f in enumerate(flags):
                if f:
                    out[i] = PLACEHOLDER_GREY
            return {"ui": ui, "result": (out,)}
        keep = [i for i, f in enumerate(flags) if not f]
        if not keep:
            from comfy_execution.graph_utils import ExecutionBlocker  # ComfyUI's: the nodes after it do not run

            return {"ui": ui, "result": (ExecutionBlocker(None),)}
        return {"ui": ui, "result": (images[keep],)}


NODE_CLASS_MAPPINGS = {"ReplicheckCheck": ReplicheckCheck, "ReplicheckGate": ReplicheckGate,
                       "ReplicheckSignal": ReplicheckSignal}
NODE_DISPLAY_NAME_MAPPINGS = {"ReplicheckCheck": "Replicheck Check", "ReplicheckGate": "Replicheck Gate",
                              "ReplicheckSignal": "Replicheck Memorization Signal"}
