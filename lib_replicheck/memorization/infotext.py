"""The prompt a web UI stored in a PNG it saved, compared with the known memorized prompts.

AUTOMATIC1111, Forge and SD.Next write the generation's parameters into a `parameters` text chunk
of each PNG: the prompt (one or more lines), then a line `Negative prompt: ...` when there is one,
then the line of settings, `Steps: 20, Sampler: ...`. Only the chunks before the image data are read
(where the web UI writes them); no pixel is decoded, and the text is cut before it is split.
"""

from __future__ import annotations

from pathlib import Path

#: the most characters of a `parameters` chunk that are looked at (prompts are compared on their
#: first prompts.MAX_PROMPT_CHARS anyway)
MAX_PARAMETERS_CHARS = 64 * 1024


def prompt_of(parameters: str) -> str:
    """The prompt of a web UI's parameters text: the lines before `Negative prompt:`, without the
    last line when it is the settings line (`Steps: ...`)."""
    lines = str(parameters)[:MAX_PARAMETERS_CHARS].strip().split("\n")
    if lines[-1].startswith("Steps: "):
        lines.pop()
    for i, line in enumerate(lines):
        if line.startswith("Negative prompt:"):
            lines = lines[:i]
            break
    return "\n".join(lines).strip()


def stored_prompt(path: str | Path) -> str | None:
    """The prompt stored in a PNG's `parameters` chunk; None for another format, a PNG without one,
    or a file that cannot be read (the image check says why)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = im.info.get("parameters") if im.format == "PNG" else None
    except Exception:  # noqa: BLE001 - any unreadable file: the image check reports it, naming the file
        return None
    if not isinstance(text, str):
        return None
    return prompt_of(text) or None


def known_prompt(path: str | Path):
    """The known memorized prompt (prompts.PromptMatch) the PNG's stored prompt matches, or None."""
    from lib_replicheck.memorization import prompts

    prompt = stored_prompt(path)
    return prompts.check(prompt) if prompt else None
