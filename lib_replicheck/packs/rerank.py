"""Exact re-ranking of a compressed index's candidates, from float16 vectors on disk.

A product-quantised index keeps a few bytes per vector in memory, which finds the right
neighbourhood but orders near neighbours poorly (recall@10 around 0.3 with 64 bytes for 512-d
descriptors). The pack therefore also stores every vector as float16 in `vectors.f16.npy`; a
query reads only its candidates' rows (positioned reads, not a memory map: mapped pages would count
as the process's memory, a whole 64 KB around each 1 KB row), and their exact similarity decides
the order. Resident memory stays that of the index.

Rows are in id order, the variants of one image next to each other (row = id * variants + v), and
an image's similarity is that of its closest variant, as in the index itself.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from lib_replicheck.errors import PackError

RERANK_FILE = "vectors.f16.npy"


class Reranker:
    def __init__(self, path: str | Path, vectors: int, dim: int, variants: int = 1):
        import numpy as np

        path = Path(path)
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
            shape, fortran, dtype = header(f)
            self._offset = f.tell()
            size = os.fstat(f.fileno()).st_size
        except (OSError, ValueError) as e:
            f.close()
            raise PackError(path.parent, f"re-ranking file {path.name} cannot be read ({e})") from None
        if dtype != np.float16 or fortran or tuple(shape) != (vectors, dim) or size != self._offset + vectors * dim * 2:
            f.close()
            raise PackError(path.parent, f"re-ranking file {path.name} holds {dtype} {tuple(shape)}, "
                                         f"the manifest says float16 ({vectors}, {dim})")
        if hasattr(os, "posix_fadvise"):  # scattered reads: read-ahead would only fill the page cache
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        self._file, self._lock = f, threading.Lock()
        self.dim, self.variants = dim, max(1, int(variants))
        self._row_bytes = self.variants * dim * 2  # the variants of one id, next to each other

    def _read(self, ids):
        """The float16 rows of `ids` (sorted), as float32 [len(ids), variants, dim]."""
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
        return np.frombuffer(data, dtype=np.float16).astype(np.float32).reshape(len(ids), self.variants, self.dim)

    def rescore(self, queries, ids):
        """Exact similarities of the candidate `ids` [n, c] (-1 = none): (similarity, ids), both [n, c],
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
