"""What every registry entry carries, whether a pack to download or a recipe to build."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

#: Lengths kept of a registry's free-text fields (what a listing can show; the rest is noise or an attack).
MAX_TITLE, MAX_TEXT, MAX_SHORT, MAX_FIELDS = 200, 2000, 500, 32


@dataclass(frozen=True)
class Listed:
    """An entry's name and the words a listing shows of it (all checked and cut by the parser)."""

    name: str
    title: str
    description: str
    version: str
    source: dict[str, str]
    embedder: dict[str, Any]


def listed_fields(p: dict, name: str, embedder: dict, text: Callable[[Any, int], str]) -> dict[str, Any]:
    """The `Listed` fields of a registry entry `p` (a checked `name` and `embedder` object), each
    text cleaned and cut by `text`, at most MAX_FIELDS keys of `source` and `embedder`."""
    source = p.get("source") if isinstance(p.get("source"), dict) else {}
    return dict(
        name=name, title=text(p.get("title"), MAX_TITLE) or name, description=text(p.get("description"), MAX_TEXT),
        version=text(p.get("version"), MAX_SHORT),
        source={text(k, MAX_SHORT): text(v, MAX_SHORT) for k, v in list(source.items())[:MAX_FIELDS]
                if isinstance(v, (str, int, float))},
        embedder={text(k, MAX_SHORT): (text(v, MAX_SHORT) if isinstance(v, str) else v)
                  for k, v in list(embedder.items())[:MAX_FIELDS] if isinstance(v, (str, int, float))})
