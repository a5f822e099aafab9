"""Exact re-ranking of a compressed index's candidates, from float16 vectors on disk.

A product-quantised index keeps a few bytes per vector in memory, which finds the right
neighbourhood but orders near neighbours poorly (recall@10 around 0.3 with 64 bytes for 512-d
descriptors). The pack therefore also stores every vector as float16 in `vectors.f16.npy`,
memory-mapped: a query reads only its candidates' rows from disk, so resident memory stays that of
the index, and their exact similarity decides the order.

Rows are in id order, the variants of one image next to each other (row = id * variants + v), and
an image's similarity is that of its closest variant, as in the index itself.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from ..errors import PackError

RERANK_FILE = "vectors.f16.npy"


class Reranker:
    def __init__(self, path: str | Path, vectors: int, dim: int, variants: int = 1):
        import numpy as np

        path = Path(path)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"unsupported .npy version {version}")
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = header(f)
                offset = f.tell()
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise PackError(path.parent, f"re-ranking file {path.name} cannot be read ({e})") from None
        if dtype != np.float16 or fortran or tuple(shape) != (vectors, dim) or \
                len(self._map) != offset + vectors * dim * 2:
            self._map.close()
            raise PackError(path.parent, f"re-ranking file {path.name} holds {dtype} {tuple(shape)}, "
                                         f"the manifest says float16 ({vectors}, {dim})")
        if hasattr(self._map, "madvise"):
            # rows are read a few at a time, scattered: read-ahead would only fill memory
            self._map.madvise(mmap.MADV_RANDOM)
        self.rows = np.ndarray((vectors, dim), dtype=np.float16, buffer=self._map, offset=offset)
        self.variants = max(1, int(variants))

    def rescore(self, queries, ids):
        """Exact similarities of the candidate `ids` [n, c] (-1 = none): (similarity, ids), both [n, c],
        each row's distinct ids sorted closest first, padded with -inf / -1."""
        import numpy as np

        n, c = ids.shape
        sims = np.full((n, c), -np.inf, dtype=np.float32)
        out = np.full((n, c), -1, dtype=np.int64)
        v = self.variants
        for r in range(n):
            cand = np.unique(ids[r][ids[r] >= 0])  # sorted, so reads go forward through the file
            if not len(cand):
                continue
            rows = (cand[:, None] * v + np.arange(v)[None, :]).ravel()
            vecs = np.asarray(self.rows[rows], dtype=np.float32)
            s = (vecs @ np.asarray(queries[r], dtype=np.float32)).reshape(len(cand), v).max(axis=1)
            order = np.argsort(-s, kind="stable")
            sims[r, : len(cand)] = s[order]
            out[r, : len(cand)] = cand[order]
        return sims, out

    def close(self) -> None:
        self.rows = None
        try:
            self._map.close()
        except BufferError:  # rows still referenced elsewhere: the mapping goes with them
            pass


def write_rows(path: str | Path, chunks, total: int, dim: int) -> None:
    """Write `total` vectors from `chunks` (arrays [rows, dim], in row order) as float16 `.npy`."""
    import numpy as np

    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float16, shape=(total, dim))
    pos = 0
    for vecs in chunks:
        out[pos: pos + len(vecs)] = vecs
        pos += len(vecs)
    if pos != total:
        raise ValueError(f"re-ranking rows: wrote {pos}, expected {total}")
    out.flush()
    del out
