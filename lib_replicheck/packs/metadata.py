"""Pack metadata in SQLite, one row per training image, keyed by the id faiss returns.

Rows are written in id order in the same pass that adds vectors, so the index and the metadata
cannot drift apart; a pack is opened read-only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Iterable

from ..errors import PackError

SCHEMA = """
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    url TEXT,
    caption TEXT,
    width INTEGER,
    height INTEGER,
    source TEXT,
    license TEXT,
    thumbnail TEXT
);
"""


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


COLUMNS = [f.name for f in fields(Item)]


class MetadataWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(SCHEMA)

    def add(self, items: Iterable[Item]) -> None:
        self.db.executemany(f"INSERT INTO items VALUES ({', '.join('?' * len(COLUMNS))})",
                            (astuple(i) for i in items))

    def close(self) -> None:
        self.db.commit()
        self.db.close()


class Metadata:
    """Read-only access to `metadata.sqlite`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PackError(self.path.parent, f"{self.path.name} is missing")
        try:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            cols = [r[1] for r in self.db.execute("PRAGMA table_info(items)")]
        except sqlite3.DatabaseError as e:
            raise PackError(self.path.parent, f"{self.path.name} is not a readable SQLite database ({e})") from None
        if cols != COLUMNS:
            raise PackError(self.path.parent, f"{self.path.name} has no valid 'items' table (columns {cols})")

    def count(self) -> int:
        try:
            return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        except sqlite3.DatabaseError as e:
            raise PackError(self.path.parent, f"{self.path.name} is corrupt ({e})") from None

    def get(self, ids: Iterable[int]) -> dict[int, Item]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        try:
            rows = self.db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM items WHERE id IN ({', '.join('?' * len(ids))})", ids).fetchall()
        except sqlite3.DatabaseError as e:
            raise PackError(self.path.parent, f"{self.path.name} is corrupt ({e})") from None
        return {r[0]: Item(*r) for r in rows}

    def close(self) -> None:
        self.db.close()
