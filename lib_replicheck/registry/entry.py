"""What every registry entry carries, whether a pack to download or a recipe to build."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Listed:
    """An entry's name and the words a listing shows of it (all checked and cut by the parser)."""

    name: str
    title: str
    description: str
    version: str
    source: dict[str, str]
    embedder: dict[str, Any]
