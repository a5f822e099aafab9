"""Re-ranking of a compressed index's candidates, from vectors on disk.

A product-quantised index keeps a few bytes per vector in memory, which finds the right
neighbourhood but orders near neighbours poorly (recall@10 around 0.3 with 64 bytes for 512-d
descriptors, and similarities off by up to 0.66 with 4-bit fast-scan codes). The pack therefore
also stores every vector once more, and a query reads only its candidates' rows (positioned reads,
not a memory map: mapped pages would count as the process's memory, a whole 64 KB around each row),
whose similarity decides the order. Resident memory stays that of the index. Three row formats:

- `float16` (`vectors.f16.npy`, 2 bytes a dimension): exact similarities;
- `sq4` (`vectors.sq4.npy`, half a byte a dimension): 4-bit codes on one range for all dimensions
  (`range` in the manifest), two dimensions a byte, the even one in the low half; a value decodes
  to lo + (code + 0.5) / 16 * (hi - lo). Similarities within 0.02 of the exact ones on SSCD
  descriptors (tests/test_fastscan.py), at a quarter of float16's size;
- `pq` (`vectors.pq.npy`, 10 bits per 8 dimensions plus 2 bytes): product-quantiser codes of the
  codebook `rerank.pq-codebook.npy` (float32 [m, 2**nbits, dim / m]), code j of a row at bits
  j*nbits.. of its bytes, least significant first (faiss's packing), then the float16 factor
  x . x^ of the vector and its reconstruction. A PQ reconstruction is shorter than the vector, so
  q . x^ alone scores a copy 0.09-0.28 too low; divided by the factor the estimate is unbiased for
  the vector's own direction (RaBitQ's estimator, Gao & Long 2024), and 99% of real copies' scores
  land within 0.04 of the exact ones at a third of sq4's size: what lets a 12M pack with LAION's
  captions and URLs fit a 4 GB download (bench/index_scale.py).

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
PQ_FILE = "vectors.pq.npy"
PQ_CODEBOOK = "rerank.pq-codebook.npy"
DTYPES = ("float16", "sq4", "pq")
PQ_NBITS = 10  # 1,024 centroids per 8 dimensions: 80 bytes for 512-d (64 and 96 bytes: p99 errors 0.048 and 0.035)
#: Bounds on a stranger's codebook: its bytes, bits per code (4,096 centroids) and sub-quantisers
#: (the builder makes dim / 8 of 10 bits: 64 for SSCD's 512 dimensions)
MAX_CODEBOOK_BYTES = 64 * 1024**2
MAX_PQ_NBITS = 12
MAX_PQ_M = 256
#: Candidate rows decoded and scored at a time: what a query holds in memory beyond its candidate
#: list, whatever the pack asks for (1,024 rows of 4,096 float32 dimensions: 16 MB)
CHUNK_ROWS = 1024
FILES = {"float16": RERANK_FILE, "sq4": SQ4_FILE, "pq": PQ_FILE}


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


def pq_train(sample, m: int, nbits: int = PQ_NBITS):
    """The codebook float32 [m, 2**nbits, dim / m] of a product quantiser trained on `sample`."""
    import faiss
    import numpy as np

    v = np.ascontiguousarray(sample, dtype=np.float32)
    pq = faiss.ProductQuantizer(v.shape[1], m, nbits)
    pq.cp.min_points_per_centroid = 1  # a small pack has fewer than 39 points a centroid: fine, and no warning
    pq.train(v[: 256 * 2**nbits // 2])  # 128 points a centroid: faiss's own cap is 256
    return faiss.vector_to_array(pq.centroids).reshape(m, 2**nbits, v.shape[1] // m).copy()


def _pq_shape(codebook) -> tuple[int, int, int, int]:
    """(m, nbits, dim, code bytes) of a codebook."""
    m, ksub, dsub = codebook.shape
    nbits = ksub.bit_length() - 1
    return m, nbits, m * dsub, (m * nbits + 7) // 8


def _row_layout(dtype: str, dim: int, codebook=None):
    """(numpy dtype, columns) of one row of the `.npy` re-ranking file: what the writer writes and
    the reader expects."""
    import numpy as np

    if dtype == "float16":
        return np.float16, dim
    return np.uint8, (dim + 1) // 2 if dtype == "sq4" else _pq_shape(codebook)[3] + 2


def pq_encode(vectors, codebook):
    """Rows uint8 [n, code bytes + 2]: the PQ codes of `vectors`, then their float16 factor x . x^."""
    import faiss
    import numpy as np

    m, nbits, dim, nbytes = _pq_shape(codebook)
    pq = faiss.ProductQuantizer(dim, m, nbits)
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32).ravel(), pq.centroids)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    codes = pq.compute_codes(v)
    factor = np.einsum("ij,ij->i", v, pq.decode(codes)).astype(np.float16)
    return np.concatenate([codes, factor.view(np.uint8).reshape(len(v), 2)], axis=1)


def _pq_codes(rows, m: int, nbits: int, nbytes: int):
    """The codes [n, m] of PQ rows: code j is bits j*nbits.. of a row, least significant first, read
    from the (at most three) bytes it spans: 12 bytes of work a code, not one int64 a bit."""
    import numpy as np

    padded = np.zeros((len(rows), nbytes + 2), dtype=np.uint8)
    padded[:, :nbytes] = rows[:, :nbytes]
    start = np.arange(m) * nbits
    first, shift = start // 8, (start % 8).astype(np.uint32)
    v = padded[:, first].astype(np.uint32)
    v |= padded[:, first + 1].astype(np.uint32) << 8
    v |= padded[:, first + 2].astype(np.uint32) << 16
    return (v >> shift) & np.uint32((1 << nbits) - 1)


def pq_decode(rows, codebook):
    """(reconstructions float32 [n, dim], factors float32 [n]) of rows written by pq_encode."""
    import numpy as np

    m, nbits, dim, nbytes = _pq_shape(codebook)
    rows = np.asarray(rows, dtype=np.uint8)
    idx = _pq_codes(rows, m, nbits, nbytes)
    recon = codebook[np.arange(m), idx].reshape(len(rows), dim)
    factor = np.ascontiguousarray(rows[:, nbytes: nbytes + 2]).view(np.float16)[:, 0].astype(np.float32)
    return recon, factor


def load_codebook(path: str | Path, dim: int):
    """A pack's PQ codebook, checked before use: a float32 .npy (read by packs/npy.py, no pickle) of
    [m, 2**nbits, dim / m], m at most MAX_PQ_M, nbits 1 to MAX_PQ_NBITS, finite values."""
    import numpy as np

    from lib_replicheck.packs import npy

    path = Path(path)
    book = npy.load(path, "re-ranking codebook", MAX_CODEBOOK_BYTES)
    ok = book.dtype == np.float32 and book.ndim == 3 and 0 < book.shape[0] <= dim \
        and book.shape[0] * book.shape[2] == dim and 2 <= book.shape[1] <= 2**MAX_PQ_NBITS \
        and book.shape[1] & (book.shape[1] - 1) == 0
    if not ok:
        raise PackError(path.parent, f"re-ranking codebook {path.name} holds {book.dtype} {book.shape}, not "
                                     f"float32 [m, 2**nbits, {dim} / m] with nbits 1 to {MAX_PQ_NBITS}")
    if book.shape[0] > MAX_PQ_M:
        raise PackError(path.parent, f"re-ranking codebook {path.name} has {book.shape[0]} sub-quantisers "
                                     f"(m), at most {MAX_PQ_M}")
    if not np.isfinite(book).all():
        raise PackError(path.parent, f"re-ranking codebook {path.name} holds values that are not finite")
    return np.ascontiguousarray(book)


class Reranker:
    def __init__(self, path: str | Path, vectors: int, dim: int, variants: int = 1, dtype: str = "float16",
                 value_range: tuple[float, float] | None = None, codebook=None):
        import numpy as np

        from lib_replicheck.packs import npy

        path = Path(path)
        if dtype not in DTYPES or (dtype == "sq4") != (value_range is not None) \
                or (dtype == "pq") != (codebook is not None):
            raise ValueError(f"re-ranking rows of {dtype!r} with range {value_range!r}")
        # rows are read where a query needs them, never whole: the header's shape need only match the file
        f, header = npy.open_checked(path, "re-ranking file", 1 << 62)
        self._offset = header.offset
        want, cols = _row_layout(dtype, dim, codebook)
        width = cols * np.dtype(want).itemsize
        if header.dtype != np.dtype(want).name or header.shape != (vectors, cols):
            f.close()
            raise PackError(path.parent, f"re-ranking file {path.name} holds {header.dtype} {header.shape}, "
                                         f"the manifest says {dtype} ({vectors}, {cols})")
        if hasattr(os, "posix_fadvise"):  # scattered reads: read-ahead would only fill the page cache
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        self._file, self._lock = f, threading.Lock()
        self.dim, self.variants, self.dtype, self.range = dim, max(1, int(variants)), dtype, value_range
        self.codebook = codebook
        self._row_bytes = self.variants * width  # the variants of one id, next to each other

    def _read(self, ids):
        """The rows of `ids` (sorted), decoded to float32 [len(ids), variants, dim] (and for pq the
        factors [len(ids), variants])."""
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
        if self.dtype == "pq":
            recon, factor = pq_decode(np.frombuffer(data, dtype=np.uint8).reshape(len(ids) * self.variants, -1),
                                      self.codebook)
            return recon.reshape(len(ids), self.variants, self.dim), factor.reshape(len(ids), self.variants)
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
            s = self._scores(cand, np.asarray(queries[r], dtype=np.float32))
            if self.dtype == "pq":
                cand, s = cand[s > -np.inf], s[s > -np.inf]  # rows with no usable factor are no match
            order = np.argsort(-s, kind="stable")
            sims[r, : len(cand)] = s[order]
            out[r, : len(cand)] = cand[order]
        return sims, out

    def _scores(self, cand, q):
        """The similarity to `q` of each candidate id's closest variant (-inf: none usable), its rows
        read and decoded CHUNK_ROWS at a time, so a query's memory is bounded whatever the pack
        asks for."""
        import numpy as np

        out = np.empty(len(cand), dtype=np.float32)
        per = max(1, CHUNK_ROWS // self.variants)
        for start in range(0, len(cand), per):
            part = cand[start: start + per]
            if self.dtype == "pq":
                recon, factor = self._read(part)
                ok = np.isfinite(factor) & (factor > 0.05)  # a stranger's file: no division by ~0
                s = np.where(ok, np.clip((recon @ q) / np.where(ok, factor, 1), -1, 1), -np.inf)
            else:
                s = self._read(part) @ q
            out[start: start + len(part)] = s.max(axis=1)
        return out

    def close(self) -> None:
        self._file.close()


def write_rows(path: str | Path, chunks, total: int, dim: int, dtype: str = "float16",
               value_range: tuple[float, float] | None = None, codebook=None) -> None:
    """Write `total` vectors from `chunks` (arrays [rows, dim], in row order) as `.npy` rows of
    `dtype` (float16, sq4 codes on `value_range`, or pq codes of `codebook`)."""
    import numpy as np

    want, cols = _row_layout(dtype, dim, codebook)
    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=want, shape=(total, cols))
    pos = 0
    for vecs in chunks:
        out[pos: pos + len(vecs)] = sq4_encode(vecs, *value_range) if dtype == "sq4" else \
            pq_encode(vecs, codebook) if dtype == "pq" else vecs
        pos += len(vecs)
    if pos != total:
        raise ValueError(f"re-ranking rows: wrote {pos}, expected {total}")
    out.flush()
    del out
