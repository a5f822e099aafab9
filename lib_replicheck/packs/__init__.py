"""Packs: a folder with manifest.json, a faiss index and SQLite metadata (see docs/pack-format.md)."""

from __future__ import annotations

import os
from pathlib import Path

from lib_replicheck.errors import PackError


def default_packs_dir() -> Path:
    from lib_replicheck.home import default_home

    return default_home() / "packs"


def installed(packs_dir: str | Path | None = None) -> list[Path]:
    """Pack folders directly under `packs_dir` (hidden and partial folders are ignored)."""
    d = Path(packs_dir) if packs_dir else default_packs_dir()
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file())


def is_name(text: str | Path) -> bool:
    """The one rule every command follows: a bare word (no path separator, not starting with '.' or
    '~') names an installed pack; anything else is a path to a pack folder. So `--pack mywalls` is
    the installed pack even where a folder `mywalls` is in the current directory (`./mywalls` is that)."""
    s = str(text)
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return bool(s) and not any(sep in s for sep in seps) and s[0] not in ".~"


def resolve(name_or_path: str | Path, packs_dir: str | Path | None = None) -> Path:
    """A pack folder from the name of an installed pack, or from a path (`is_name` tells which)."""
    d = Path(packs_dir) if packs_dir else default_packs_dir()
    text = str(name_or_path)
    if not text.strip():
        raise PackError(repr(text), "give the name of an installed pack or the path of a pack folder")
    if is_name(text):
        if (d / text).is_dir():
            return d / text
        here = f"; for the folder {text} here, give its path: ./{text}" if Path(text).is_dir() else ""
        raise PackError(text, f"no pack of that name is installed in {d}{here}")
    p = Path(text).expanduser()
    if p.is_dir():
        return p
    raise PackError(text, "no such folder" if not p.exists() else "not a folder")
