"""The embed stage's output: shards of vectors with their metadata in row order, plain files.

    WORK/shards/00000.npy     vectors [rows, variants, width] (float32, packed uint8 bits, or float16 for
                              published embeddings: readers widen them to float32)
    WORK/shards/00000.jsonl   one JSON line per row: key, url, caption, license, width, height
    WORK/shards/00000.skipped rows of this shard that could not be used, with the reason
    WORK/shards/00000.thumbs/ a 256-pixel JPEG per row, when thumbnails are kept
    WORK/shards/00000.source  a digest of the source rows the shard was embedded from
    WORK/fingerprint.json     the source, embedder and options every shard here was made with

The .jsonl is renamed into place first and the .npy last, so a shard whose .npy exists is complete;
a build killed mid-way resumes from the first shard without one. Rows and metadata are written
together, so ids and captions cannot drift apart. The fingerprint and the per-shard digests keep a
build from reusing shards that another source, embedder or set of options produced.
"""

from __future__ import annotations

import json
from pathlib import Path

from lib_replicheck.atomic import replacing, write_atomic
from lib_replicheck.errors import ReplicheckError


class CorruptShard(ReplicheckError):
    pass


class ShardStore:
    def __init__(self, work: str | Path):
        self.dir = Path(work) / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _paths(self, i: int) -> tuple[Path, Path, Path, Path]:
        base = self.dir / f"{i:05d}"
        return (base.with_suffix(".npy"), base.with_suffix(".jsonl"), base.with_suffix(".skipped"),
                base.with_suffix(".source"))

    def complete(self, i: int) -> bool:
        return self._paths(i)[0].is_file()

    def thumbs_dir(self, i: int) -> Path:
        return self.dir / f"{i:05d}.thumbs"

    def write(self, i: int, vectors, metas: list[dict], skipped: list[str], thumbs: list[bytes] = (),
              source: str = "") -> None:
        """Write shard `i`; `source` is the digest of the rows it was embedded from (see `source`)."""
        import numpy as np

        npy, jsonl, skip, src = self._paths(i)
        if len(vectors) != len(metas):
            raise ValueError("vectors and metadata rows differ")
        if thumbs:
            d = self.thumbs_dir(i)
            d.mkdir(exist_ok=True)
            for j, data in enumerate(thumbs):
                (d / f"{j}.jpg").write_bytes(data)
        write_atomic(jsonl, "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in metas))
        skip.write_text("".join(s + "\n" for s in skipped), encoding="utf-8")
        src.write_text(source, encoding="utf-8")
        with replacing(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors))

    def read(self, i: int):
        """(vectors memory-mapped, metadata rows); CorruptShard when they do not agree or cannot be read."""
        import numpy as np

        npy, jsonl = self._paths(i)[:2]
        try:
            vectors = np.load(npy, mmap_mode="r")
            metas = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise CorruptShard(f"shard {npy.name}: cannot be read ({e})") from None
        if vectors.ndim != 3 or len(vectors) != len(metas):
            raise CorruptShard(f"shard {npy.name}: {len(vectors)} vectors but {len(metas)} metadata rows")
        return vectors, metas

    def source(self, i: int) -> str | None:
        """The digest of the source rows shard `i` was embedded from (None: not recorded)."""
        p = self._paths(i)[3]
        try:
            return p.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def skipped(self, i: int) -> list[str]:
        p = self._paths(i)[2]
        return p.read_text(encoding="utf-8").splitlines() if p.is_file() else []

    def discard(self, i: int) -> None:
        import shutil

        for p in self._paths(i):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.thumbs_dir(i), ignore_errors=True)

    def indices(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.npy"))
