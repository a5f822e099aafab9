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


def shipped_registry() -> Path:
    """The registry shipped with replicheck (the demo pack and the recipes): its copy inside an
    installed package (`pip install .` puts it in lib_replicheck/shipped_registry), else the
    `registry/` folder beside lib_replicheck in the clone the web UI loads."""
    package = Path(__file__).resolve().parent
    inside = package / "shipped_registry"
    return inside if (inside / "packs.json").is_file() else package.parent / "registry"
