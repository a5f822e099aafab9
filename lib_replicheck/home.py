"""Where replicheck keeps its models and packs outside the web UI."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """Where replicheck keeps models and packs outside the web UI (`$REPLICHECK_HOME`)."""
    env = os.environ.get("REPLICHECK_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "replicheck"


def default_models_dir() -> Path:
    return default_home() / "models"
