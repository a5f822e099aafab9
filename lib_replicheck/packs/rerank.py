"""Re-ranking of a compressed index's candidates, from vectors on disk.

A product-quantised index keeps a few bytes per vector in memory, which finds the right
neighbourhood but orders near neighbours poorly (recall@10 around 0.3 with 64 bytes for 512-d
descriptors, and similarities off by up to 0.66 with 4-bit fast-scan codes). The pack therefore
also stores every vector once more, and a query reads only its candidates' rows (positioned reads,
not a memory map: mapped pages would count as the process's memory, a whole 64 KB around each row),
whose similarity decides the order. Resident memory stays that of the index. Two row formats:

- `float16` (`vectors.f16.npy`, 2 bytes a dimension): exact similarities;
- `sq4` (`vectors.sq4.npy`, half a byte a dimension): 4-bit codes on one range for all dimensions
  (`range` in the manifest), two dimensions a byte, the even one in the low half; a value decodes
  to lo + (code + 0.5) / 16 * (hi - lo). Similarities within 0.02 of the exact ones on SSCD
  descriptors (tests/test_rerank_sq4.py), at a quarter of float16's size: what lets a 12M pack
  fit a download.

Rows are in id order, the variants of one image next to each other (row = id * variants + v), and
an image's similarity is that of its closest variant, as in the index itself.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from lib_replicheck.errors import PackError

RERANK_FILE = "vectors.f16.npy"
SQ4_FILE = "vectors.sq4.npy"
DTYPES = ("float16", "sq4")


def sq4_range(sample) -> tuple[float, float]:
    """The one range of 4-bit codes for vectors like `sample`: all but the outer 0.01% of their
    values at each end, which are clipped. On SSCD descriptors this put 99% of real copies' scores
    within 0.015 of the exact ones, against 0.020 for the full range (its steps are a third wider)."""
    import numpy as np

    v = np.asarray(sample, dtype=np.float32).ravel()
    lo, hi = (float(x) for x in np.quantile(v, [1e-4, 1 - 1e-4])) if len(v) else (0.0, 0.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def sq4_encode(vectors, lo: float, hi: float):
    """4-bit codes [n, ceil(dim / 2)] uint8 of float vectors on the range (lo, hi)."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float32)
    q = np.clip(np.floor((v - lo) / (hi - lo) * 16), 0, 15).astype(np.uint8)
    if q.shape[1] % 2:
        q = np.concatenate([q, np.zeros((len(q), 1), np.uint8)], axis=1)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def sq4_decode(codes, dim: int, lo: float, hi: float):
    """Float32 vectors [n, dim] of 4-bit codes."""
    import numpy as np

    c = np.asarray(codes, dtype=np.uint8)
    q = np.empty((len(c), c.shape[1] * 2), dtype=np.float32)
    q[:, 0::2], q[:, 1::2] = c & 15, c >> 4
    return lo + (q[:, :dim] + 0.5) * np.float32((hi - lo) / 16)


class Reranker:
    def __init__(self, path: str | Path, vectors: int, dim: int, variants: int = 1, dtype: str = "float16",
                 value_range: tuple[float, float] | None = None):
        import numpy as np

        path = Path(path)
        if dtype not in DTYPES or (dtype == "sq4") != (value_range is not None):
            raise ValueError(f"re-ranking rows of {dtype!r} with range {value_range!r}")
        try:
            f = open(path, "rb", buffering=0)
        except OSError as e:
            raise PackError(path.parent, f"re-ranking file {path.name} cannot be read ({e})") from None
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy version {version}")
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, stored = header(f)
            self._offset = f.tell()
            size = os.fstat(f.fileno()).st_size
        except (OSError, ValueError) as e:
            f.close()
            raise PackError(path.parent, f"re-ranking file {path.name} cannot be read ({e})") from None
        want, width = (np.float16, dim * 2) if dtype == "float16" else (np.uint8, (dim + 1) // 2)
        cols = dim if dtype == "float16" else width
        if stored != want or fortran or tuple(shape) != (vectors, cols) or size != self._offset + vectors * width:
            f.close()
            raise PackError(path.parent, f"re-ranking file {path.name} holds {stored} {tuple(shape)}, "
                                         f"the manifest says {dtype} ({vectors}, {cols})")
        if hasattr(os, "posix_fadvise"):  # scattered reads: read-ahead would only fill the page cache
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        self._file, self._lock = f, threading.Lock()
        self.dim, self.variants, self.dtype, self.range = dim, max(1, int(variants)), dtype, value_range
        self._row_bytes = self.variants * width  # the variants of one id, next to each other

    def _read(self, ids):
        """The rows of `ids` (sorted), decoded to float32 [len(ids), variants, dim]."""
        import numpy as np

        n, fd = self._row_bytes, self._file.fileno()
        if hasattr(os, "pread"):
            parts = [os.pread(fd, n, self._offset + int(i) * n) for i in ids]
        else:
            with self._lock:
                parts = []
                for i in ids:
                    self._file.seek(self._offset + int(i) * n)
                    parts.append(self._file.read(n))
        data = b"".join(parts)
        if len(data) != n * len(ids):
            raise PackError(Path(self._file.name).parent, "re-ranking file is shorter than its header says")
        if self.dtype == "sq4":
            codes = np.frombuffer(data, dtype=np.uint8).reshape(len(ids) * self.variants, -1)
            return sq4_decode(codes, self.dim, *self.range).reshape(len(ids), self.variants, self.dim)
        return np.frombuffer(data, dtype=np.float16).astype(np.float32).reshape(len(ids), self.variants, self.dim)

    def rescore(self, queries, ids):
        """Similarities (exact for float16) of the candidate `ids` [n, c] (-1 = none): (similarity, ids), both [n, c],
        each row's distinct ids sorted closest first, padded with -inf / -1."""
        import numpy as np

        n, c = ids.shape
        sims = np.full((n, c), -np.inf, dtype=np.float32)
        out = np.full((n, c), -1, dtype=np.int64)
        for r in range(n):
            cand = np.unique(ids[r][ids[r] >= 0])  # sorted, so reads go forward through the file
            if not len(cand):
                continue
            s = (self._read(cand) @ np.asarray(queries[r], dtype=np.float32)).max(axis=1)
            order = np.argsort(-s, kind="stable")
            sims[r, : len(cand)] = s[order]
            out[r, : len(cand)] = cand[order]
        return sims, out

    def close(self) -> None:
        self._file.close()


def write_rows(path: str | Path, chunks, total: int, dim: int, dtype: str = "float16",
               value_range: tuple[float, float] | None = None) -> None:
    """Write `total` vectors from `chunks` (arrays [rows, dim], in row order) as `.npy` rows of
    `dtype` (float16, or sq4 codes on `value_range`)."""
    import numpy as np

    if dtype == "sq4":
        out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.uint8, shape=(total, (dim + 1) // 2))
    else:
        out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float16, shape=(total, dim))
    pos = 0
    for vecs in chunks:
        out[pos: pos + len(vecs)] = sq4_encode(vecs, *value_range) if dtype == "sq4" else vecs
        pos += len(vecs)
    if pos != total:
        raise ValueError(f"re-ranking rows: wrote {pos}, expected {total}")
    out.flush()
    del out
