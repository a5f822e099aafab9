"""Packs: a folder with manifest.json, a faiss index and SQLite metadata (see docs/pack-format.md)."""

from __future__ import annotations

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


def resolve(name_or_path: str | Path, packs_dir: str | Path | None = None) -> Path:
    """A pack folder from a path, or from the name of an installed pack."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    d = Path(packs_dir) if packs_dir else default_packs_dir()
    if (d / str(name_or_path)).is_dir() and "/" not in str(name_or_path):
        return d / str(name_or_path)
    raise PackError(name_or_path, f"not a pack folder, nor the name of a pack installed in {d}")
