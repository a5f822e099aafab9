"""Writing a pack's faiss index: a new exact index, vectors added, the file written.

The builder's approximate indexes come from `builder/index_factory.py`; they are written here too.
"""

from __future__ import annotations

from pathlib import Path

from lib_replicheck.embedders.base import COSINE, HAMMING


def new_index(metric: str, dim: int, with_ids: bool = False):
    """An exact index: inner product for L2-normalised floats, Hamming for bit codes.

    `with_ids` maps several vectors (variants of one image) onto one metadata id.
    """
    import faiss

    if metric == COSINE:
        base = faiss.IndexFlatIP(dim)
        return faiss.IndexIDMap(base) if with_ids else base
    if metric == HAMMING:
        base = faiss.IndexBinaryFlat(dim)
        return faiss.IndexBinaryIDMap(base) if with_ids else base
    raise ValueError(f"unknown metric {metric!r}")


def add(index, vectors, ids=None) -> None:
    import numpy as np

    if ids is None:
        index.add(vectors)
    else:
        index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))


def write(index, path: str | Path) -> None:
    import faiss

    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, str(path))
    else:
        faiss.write_index(index, str(path))

