"""Pack metadata in SQLite, one row per training image, keyed by the id faiss returns.

Rows are written in id order in the same pass that adds vectors, so the index and the metadata
cannot drift apart. A pack's database comes from the internet, so opening it checks that `items`
is a plain table with the expected columns and declared types (a view would let a query run
forever), and every query runs read-only under a time bound (SQLite's progress handler).
Values are checked row by row as they are read: SQLite stores whatever type a row was given.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import astuple, fields
from pathlib import Path
from typing import Iterable

from lib_replicheck.errors import PackError
from lib_replicheck.item import Item

OPEN_SECONDS = 60.0  # counting the rows of a large pack on a cold disk
QUERY_SECONDS = 5.0  # one search's rows: a few primary-key lookups
MAX_VALUE_BYTES = 4 * 1024**2  # one text value; SQLite refuses to return a larger one


COLUMNS = [f.name for f in fields(Item)]
#: SQLite's declared type of each column, from Item's field types (`int ...` or `str ...`).
TYPES = {f.name: "INTEGER" if str(f.type).startswith("int") else "TEXT" for f in fields(Item)}
SCHEMA = "\nCREATE TABLE items (\n" + ",\n".join(
    f"    {c} {TYPES[c]}" + (" PRIMARY KEY" if c == "id" else "") for c in COLUMNS) + "\n);\n"


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
    """Read-only, time-bounded access to `metadata.sqlite`."""

    def __init__(self, path: str | Path, open_seconds: float = OPEN_SECONDS, query_seconds: float = QUERY_SECONDS):
        self.path = Path(path)
        self.open_seconds, self.query_seconds = open_seconds, query_seconds
        self._lock = threading.Lock()
        self._deadline = float("inf")
        if not self.path.is_file():
            raise PackError(self.path.parent, f"{self.path.name} is missing")
        try:
            # immutable: no locks, no journal, no writes; the pack re-checks the file's size, mtime and
            # inode before each search, so a file changed underneath is noticed there
            uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro&immutable=1"
            self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as e:
            raise PackError(self.path.parent, f"{self.path.name} is not a readable SQLite database ({e})") from None
        try:
            self.db.set_progress_handler(self._progress, 10_000)
            if hasattr(self.db, "setlimit"):  # Python 3.11+
                self.db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            self._query("PRAGMA mmap_size = 0", (), open_seconds)  # reads only: a shrunk file cannot SIGBUS
            self._query("PRAGMA trusted_schema = OFF", (), open_seconds)
            self._check_schema(open_seconds)
        except PackError:
            self.db.close()
            raise

    def _progress(self) -> int:
        """Called every 10,000 SQLite steps: non-zero aborts the running statement."""
        return 1 if time.monotonic() > self._deadline else 0

    def _query(self, sql: str, args, seconds: float) -> list:
        """Run one statement to completion within `seconds`, or raise PackError."""
        with self._lock:
            self._deadline = time.monotonic() + seconds
            try:
                return self.db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as e:
                if "interrupted" in str(e):
                    raise PackError(self.path.parent, f"{self.path.name}: a query took longer than {seconds:g} s "
                                                      "and was stopped (damaged or hostile database?)") from None
                raise PackError(self.path.parent, f"{self.path.name} cannot be read ({e})") from None
            except sqlite3.Error as e:
                raise PackError(self.path.parent, f"{self.path.name} is corrupt ({e})") from None
            finally:
                self._deadline = float("inf")

    def _check_schema(self, seconds: float) -> None:
        """`items` must be a plain table with the expected columns; nothing else may be defined."""
        rows = self._query("SELECT type, name, tbl_name, sql FROM sqlite_master", (), seconds)
        others = [f"{t} {n!r}" for t, n, tbl, _ in rows
                  if not (t == "table" and n == "items") and not (t == "index" and tbl == "items")]
        if others:
            raise PackError(self.path.parent, f"{self.path.name} defines {', '.join(others[:5])}"[:300]
                                              + "; a pack's metadata is only the table 'items'")
        table = [sql for t, n, _, sql in rows if t == "table" and n == "items"]
        if not table:
            raise PackError(self.path.parent, f"{self.path.name} has no table 'items'")
        if not isinstance(table[0], str) or "VIRTUAL" in table[0].upper().split("(")[0]:
            raise PackError(self.path.parent, f"{self.path.name}: 'items' is not a plain table")
        info = self._query("PRAGMA table_info(items)", (), seconds)
        cols = [(r[1], str(r[2]).upper()) for r in info]
        if [c for c, _ in cols] != COLUMNS:
            raise PackError(self.path.parent, f"{self.path.name} has no valid 'items' table "
                                              f"(columns {[c for c, _ in cols]})"[:300])
        for name, declared in cols:
            if declared != TYPES[name]:
                raise PackError(self.path.parent, f"{self.path.name}: column 'items.{name}' is declared "
                                                  f"{declared or 'without a type'}, not {TYPES[name]}"[:300])

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM items", (), self.open_seconds)[0][0])

    def get(self, ids: Iterable[int]) -> dict[int, Item]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM items WHERE id IN ({', '.join('?' * len(ids))})",
                           ids, self.query_seconds)
        return {r[0]: self._item(r) for r in rows}

    def _item(self, row) -> Item:
        """An Item from a row whose values have the declared types (SQLite does not enforce them)."""
        for name, value in zip(COLUMNS, row):
            want = int if TYPES[name] == "INTEGER" else str
            if value is None and name != "id" or isinstance(value, want) and not isinstance(value, bool):
                continue
            raise PackError(self.path.parent, f"{self.path.name}: row {row[0]!r} has a {type(value).__name__} "
                                              f"in 'items.{name}', which holds {TYPES[name]} values"[:300])
        return Item(*row)

    def close(self) -> None:
        self.db.close()
