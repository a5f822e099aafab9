"""Crafted packs for the hostile pack tests: every file is made by the test, nothing binary is committed.

`write_pack` writes a pack folder around any index bytes, with a metadata database from a SQL
script, and a manifest that lists the files with their true sizes and sha256 (so that only what a
test means to break is broken). `run_child` runs Python in a subprocess under a memory limit, so
a regression that allocates what a file declares, hangs or dies of a signal fails the test instead
of taking the test run with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ITEMS_SQL = """
CREATE TABLE items (id INTEGER PRIMARY KEY, url TEXT, caption TEXT, width INTEGER, height INTEGER,
                    source TEXT, license TEXT, thumbnail TEXT);
"""


def fourcc(s: str) -> bytes:
    return s.encode("latin-1")


def index_header(d: int, ntotal: int, metric: int = 0) -> bytes:
    """faiss's Index header: d, ntotal, two unused int64, is_trained, metric type."""
    return struct.pack("<iqqqBi", d, ntotal, 1 << 20, 1 << 20, 1, metric)


def vector(items: int, item_bytes: bytes = b"") -> bytes:
    """A faiss vector: its 8-byte item count, then the items."""
    return struct.pack("<Q", items) + item_bytes


def faiss_bytes(index) -> bytes:
    import faiss

    if isinstance(index, faiss.IndexBinary):
        return faiss.serialize_index_binary(index).tobytes()
    return faiss.serialize_index(index).tobytes()


def unit_vectors(n: int, dim: int, seed: int = 0):
    import numpy as np

    x = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def flat_index(n: int, dim: int, seed: int = 0) -> bytes:
    import faiss

    idx = faiss.IndexFlatIP(dim)
    idx.add(unit_vectors(n, dim, seed))
    return faiss_bytes(idx)


def items_sql(count: int) -> str:
    rows = ",".join(f"({i}, 'https://example.org/{i}.jpg', 'caption {i}', 64, 64, 'src{i}', 'CC0', NULL)"
                    for i in range(count))
    return ITEMS_SQL + (f"INSERT INTO items VALUES {rows};" if count else "")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_pack(folder: Path, index: bytes, *, dim: int, count: int, vectors: int | None = None,
               metric: str = "cosine", metadata_sql: str | None = None, index_info: dict | None = None,
               manifest_edit=None, name: str = "crafted") -> Path:
    """A pack folder around `index` (bytes of index.faiss), listed truthfully in its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.faiss").write_bytes(index)
    db_path = folder / "metadata.sqlite"
    if db_path.exists():
        db_path.unlink()
    db = sqlite3.connect(db_path)
    db.executescript(metadata_sql if metadata_sql is not None else items_sql(count))
    db.commit()
    db.close()
    embedder = ({"id": "pdq", "kind": "pdq", "model": "pdq", "dim": dim, "metric": "hamming"} if metric == "hamming"
                else {"id": "sscd_disc_mixup", "kind": "sscd", "model": "sscd_disc_mixup", "dim": dim,
                      "metric": "cosine"})
    names = ["index.faiss", "metadata.sqlite"] + sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*")
        if p.is_file() and p.name not in ("index.faiss", "metadata.sqlite", "manifest.json"))
    manifest = {
        "format": "replicheck-pack", "format_version": 1, "name": name, "title": "Crafted", "description": "",
        "source": {}, "embedder": embedder, "metric": metric, "count": count,
        "vectors": count if vectors is None else vectors,
        "index": {"file": "index.faiss", "type": "Flat", **(index_info or {})},
        "files": [{"path": n, "size": (folder / n).stat().st_size, "sha256": _sha(folder / n)} for n in names],
        "built_at": "2026-01-01T00:00:00Z", "tool": {"name": "replicheck", "version": "test"},
    }
    if manifest_edit is not None:
        manifest_edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def relist(folder: Path, name: str) -> None:
    """Record the current size and sha256 of `name` in the manifest (the file was changed on purpose)."""
    p = folder / "manifest.json"
    m = json.loads(p.read_text())
    for f in m["files"]:
        if f["path"] == name:
            f["size"], f["sha256"] = (folder / name).stat().st_size, _sha(folder / name)
    p.write_text(json.dumps(m))


def run_child(code: str, *args: str, timeout: float = 120, memory_bytes: int | None = None,
              ) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python with the repository importable, under an address-space limit."""

    def limit():
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    path = os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, preexec_fn=limit)


OPEN_IN_CHILD = """
import sys
from lib_replicheck.errors import PackError
from lib_replicheck.packs.pack import Pack
try:
    Pack(sys.argv[1])
except PackError as e:
    print("PackError:", e)
    sys.exit(3)
print("opened")
"""
