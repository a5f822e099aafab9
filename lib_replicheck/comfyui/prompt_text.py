"""The prompt texts a ComfyUI workflow makes visible: what reaches a sampler's `positive` input.

ComfyUI passes a node the whole prompt (API format: node id -> class_type and inputs, where an
input linked to another node is `[node id, output index]`). Only literal texts are read: a text
computed by another node is not known before it runs.
"""

from __future__ import annotations

#: inputs that carry the text of a text encoder (CLIPTextEncode: `text`; SDXL's: `text_g`, `text_l`)
TEXT_INPUTS = ("text", "text_g", "text_l")
MAX_NODES = 10_000
MAX_HOPS = 16


def _linked(value) -> str | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)):
        return str(value[0])
    return None


def visible_prompts(prompt) -> list[str]:
    """The literal texts of the encoders linked (through at most MAX_HOPS conditioning nodes) to a
    `positive` input, in node order, each once."""
    if not isinstance(prompt, dict) or len(prompt) > MAX_NODES:
        return []
    found: list[str] = []
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict) or "positive" not in inputs:
            continue
        todo, seen = [_linked(inputs["positive"])], set()
        while todo and len(seen) < MAX_HOPS:
            nid = todo.pop()
            if nid is None or nid in seen or not isinstance(prompt.get(nid), dict):
                continue
            seen.add(nid)
            src = prompt[nid].get("inputs") or {}
            if not isinstance(src, dict):
                continue
            for key in TEXT_INPUTS:
                if isinstance(src.get(key), str) and src[key].strip() and src[key] not in found:
                    found.append(src[key])
            todo.extend(_linked(v) for k, v in src.items() if k.startswith("conditioning"))
    return found
