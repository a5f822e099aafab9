"""Reading a pack's faiss index (after `index_check`) and searching it.

Files below `MMAP_MIN_BYTES` are read into memory, so nothing that happens to the file later can
reach the process; larger ones are memory-mapped where faiss can (IO_FLAG_MMAP_IFC, faiss >= 1.11),
else read. A mapped file that shrinks would raise SIGBUS on the next read of a lost page, which is
why `Pack` compares each file's size, mtime and inode before every search.

Scores leave this module in one convention whatever the metric: `similarity` in [0, 1], higher is
closer (cosine for float vectors, 1 - d/bits for Hamming codes), plus the raw Hamming distance.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from lib_replicheck.embedders.base import HAMMING
from lib_replicheck.errors import PackError
from lib_replicheck.packs.index_check import MAX_PARAM, LayoutError, check_layout

MMAP_MIN_BYTES = 256 * 1024**2  # smaller index files are read into memory


def faiss_version() -> str:
    import faiss

    return getattr(faiss, "__version__", "unknown")


def read(path: str | Path, metric: str, dim: int, count: int, mmap_min_bytes: int | None = MMAP_MIN_BYTES):
    """Load an index after `check_layout`: into memory below `mmap_min_bytes` (or always, with
    None), else memory-mapped where faiss supports it (IO_FLAG_MMAP_IFC, faiss >= 1.11)."""
    import faiss

    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise PackError(path.parent, f"index file {path.name} is missing") from None
    except OSError as e:
        raise PackError(path.parent, f"index file {path.name} cannot be read ({e.strerror})") from None
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PackError(path.parent, f"index file {path.name} is not a regular file")
        size = st.st_size
        flags = getattr(faiss, "IO_FLAG_MMAP_IFC", None)
        mapped = mmap_min_bytes is not None and size >= mmap_min_bytes and flags is not None
        kind = "binary " if metric == HAMMING else ""
        try:
            if mapped:
                src = f
            else:  # read once: what is checked is what faiss reads
                src = io.BytesIO(f.read(size))
                if len(src.getbuffer()) != size:
                    raise LayoutError("the file changed while it was being read")
            check_layout(src, size, metric, dim, count)
        except LayoutError as e:
            raise PackError(path.parent, f"index file {path.name} is corrupt or not a faiss {kind}index that "
                                         f"packs use ({e})") from None
        try:
            if mapped:  # the file just checked, by its descriptor, so a swap in between cannot slip through
                name = f"/proc/self/fd/{f.fileno()}" if os.path.isdir("/proc/self/fd") else str(path)
                flags |= faiss.IO_FLAG_READ_ONLY
                return faiss.read_index_binary(name, flags) if metric == HAMMING else faiss.read_index(name, flags)
            reader = faiss.PyCallbackIOReader(src.read)
            return faiss.read_index_binary(reader) if metric == HAMMING else faiss.read_index(reader)
        except RuntimeError as e:
            msg = str(e).split("Error:")[-1].split(" at /")[0].strip().splitlines()
            raise PackError(path.parent, f"index file {path.name} is corrupt or not a faiss {kind}index "
                                         f"({msg[0][:200] if msg else 'faiss could not read it'})") from None


def set_search_params(index, params: dict, origin: str | Path = "index") -> None:
    """Apply nprobe/efSearch recorded in a manifest (also through IDMap wrappers); a parameter that
    is not a positive integer or that this index does not have is a PackError naming it."""
    import faiss

    if not params:
        return
    if not isinstance(params, dict):
        raise PackError(origin, "manifest field 'index.search_params' should be an object")
    for k, v in params.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_PARAM:
            raise PackError(origin, f"manifest field 'index.search_params.{k}' should be an integer from 1 to "
                                    f"{MAX_PARAM}, not {v!r}"[:300])
    if isinstance(index, faiss.IndexBinary):
        inner = faiss.downcast_IndexBinary(getattr(index, "index", index))
        for k, v in params.items():
            if k != "nprobe" or not hasattr(inner, "nprobe"):
                raise PackError(origin, f"manifest field 'index.search_params.{k}' does not apply to a "
                                        f"{type(inner).__name__}"[:300])
            inner.nprobe = v
        return
    ps = faiss.ParameterSpace()
    for k, v in params.items():
        try:
            ps.set_index_parameter(index, k, v)
        except RuntimeError:
            raise PackError(origin, f"manifest field 'index.search_params.{k}' does not apply to a "
                                    f"{describe(index)}"[:300]) from None


def search(index, queries, k: int):
    """Top-k neighbours: (similarity [n, k] float32, distance [n, k] or None, ids [n, k] int64).

    Missing neighbours (fewer than k vectors) have id -1. A single query runs on the calling thread:
    waking faiss's OpenMP pool for it cost 16-18 ms with the CPU shared (0.06 ms on one thread).
    """
    import faiss
    import numpy as np

    k = max(1, min(int(k), max(1, index.ntotal)))
    if len(queries) == 1:
        # nthreads is a per-thread setting in OpenMP (an ICV of the calling thread's task), so
        # this neither races with nor slows searches on other threads
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            D, I = index.search(queries, k)
        finally:
            faiss.omp_set_num_threads(before)
    else:
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
