"""The training-image record: one row of a pack's metadata, the part of a match that says which
image it is. The metadata table's columns derive from its fields (packs/metadata.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """What a pack knows about one training image. All text comes from scraped data: untrusted."""

    id: int
    url: str | None = None
    caption: str | None = None
    width: int | None = None
    height: int | None = None
    source: str | None = None
    license: str | None = None
    thumbnail: str | None = None  # a path inside the pack folder
