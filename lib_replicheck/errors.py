"""Errors a user can act on.

Every failure that reaches a person is a ReplicheckError whose message names the file or field
and what is wrong; tracebacks from faiss, torch or PIL stay inside the library.
"""

from __future__ import annotations

from pathlib import Path


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


class EmbedderError(ReplicheckError):
    """The model could not be found, loaded, verified or run."""


class WeightsError(EmbedderError):
    """A weights file is missing, could not be downloaded, or failed its sha256 check."""
