"""Errors a user can act on, and outside text made safe to show.

Every failure that reaches a person is a ReplicheckError whose message names the file or field
and what is wrong; tracebacks from faiss, torch or PIL stay inside the library. Messages and
listings quote packs, registries and URLs, which anyone can write: `clean_text` and `json_text`
(safe_text.py, imported from here too) keep their control characters from reaching a terminal.
"""

from __future__ import annotations

from pathlib import Path

# the helpers every module imports from here; they live with the rest of safe text
from lib_replicheck.safe_text import clean_text, json_text, name_text  # noqa: F401


class ReplicheckError(Exception):
    """Base class: the message is written for the user."""


class ImageError(ReplicheckError):
    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class PackError(ReplicheckError):
    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"pack {path}: {reason}")


class InstallError(ReplicheckError):
    """A pack that cannot be installed, downloaded or removed; the message says which and why."""


class EmbedderError(ReplicheckError):
    """The model could not be found, loaded, verified or run."""


class WeightsError(EmbedderError):
    """A weights file is missing, could not be downloaded, or failed its sha256 check."""
