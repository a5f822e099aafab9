"""The faiss index of a pack: build it, read it (memory-mapped where faiss can), search it.

Scores leave this module in one convention whatever the metric: `similarity` in [0, 1], higher is
closer (cosine for float vectors, 1 - d/bits for Hamming codes), plus the raw Hamming distance.
"""

from __future__ import annotations

from pathlib import Path

from ..embedders.base import COSINE, HAMMING
from ..errors import PackError


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


def read(path: str | Path, metric: str, mmap: bool = True):
    """Load an index; floats are memory-mapped (faiss IO_FLAG_MMAP_IFC) so RAM stays small."""
    import faiss

    path = Path(path)
    if not path.is_file():
        raise PackError(path.parent, f"index file {path.name} is missing")
    flags = (faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY) if mmap else 0
    try:
        if metric == HAMMING:
            return faiss.read_index_binary(str(path), flags)
        try:
            return faiss.read_index(str(path), flags)
        except RuntimeError:
            if not mmap:
                raise
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)  # IVF lists on disk
    except RuntimeError as e:
        msg = str(e).split("Error:")[-1].split(" at /")[0].strip().splitlines()[0][:200]
        raise PackError(path.parent, f"index file {path.name} is corrupt or not a faiss "
                                     f"{'binary ' if metric == HAMMING else ''}index ({msg})") from None


def set_search_params(index, params: dict) -> None:
    """Apply nprobe/efSearch recorded in a manifest (also through IDMap wrappers)."""
    import faiss

    if not params:
        return
    inner = getattr(index, "index", index)
    if isinstance(index, faiss.IndexBinary):
        inner = faiss.downcast_IndexBinary(inner)
        if hasattr(inner, "nprobe") and "nprobe" in params:
            inner.nprobe = int(params["nprobe"])
        return
    ps = faiss.ParameterSpace()
    for k, v in params.items():
        try:
            ps.set_index_parameter(index, k, v)
        except RuntimeError:
            pass


def search(index, queries, k: int):
    """Top-k neighbours: (similarity [n, k] float32, distance [n, k] or None, ids [n, k] int64).

    Missing neighbours (fewer than k vectors) have id -1.
    """
    import numpy as np

    k = max(1, min(int(k), max(1, index.ntotal)))
    D, I = index.search(queries, k)
    d = index.d
    if hasattr(index, "metric_type") and not _is_binary(index):
        return D.astype(np.float32), None, I
    return (1.0 - D.astype(np.float32) / d), D.astype(np.int32), I


def _is_binary(index) -> bool:
    import faiss

    return isinstance(index, faiss.IndexBinary)


def describe(index) -> str:
    """faiss's class name, e.g. 'IndexFlatIP' or 'IndexBinaryIDMap(IndexBinaryFlat)'."""
    import faiss

    name = type(index).__name__
    inner = getattr(index, "index", None)
    if inner is not None:
        inner = faiss.downcast_IndexBinary(inner) if _is_binary(index) else faiss.downcast_index(inner)
        name += f"({type(inner).__name__})"
    return name
