"""A pack's background set: descriptors of images that are not in the pack, for SSCD's score
normalisation.

Pizzi et al. (CVPR 2022) subtract from a similarity beta times the query's mean similarity to its
nearest neighbours in a background set of unrelated images; their evaluation's default is beta 1.0
over the first to third neighbours, which lifts disc_mixup's DISC2021 uAP from 61.5 to 72.5. Why it
matters here: a region of a picture is one of hundreds of queries, and a generic region (a texture, a
plain patch, a drawing-like shape) is close to many training images at once, while a copy is close to
one. The similarity less the background's separates the two where the raw similarity does not
(`bench/regions.py`). Only region matches are judged by it; whole-image verdicts keep the published
cuts on the raw similarity (a copy of a simple drawing has a high background too, and whole-image
copies must not be lost).

The file is `background.npy`: float16 [n, dim], L2-normalised rows, read by packs/npy.py (its
header bounded and checked against the file before anything is allocated) and checked before use. The builder embeds it from images the user names (`build --background`) and
drops those that are copies of a pack image, since they would lower the scores of that image's copies.
"""

from __future__ import annotations

from pathlib import Path

from lib_replicheck.errors import PackError

FILE = "background.npy"
#: SSCD's default normalisation: beta 1.0 times the mean similarity to neighbours 1 to 3
BETA = 1.0
NEIGHBOURS = 3
#: bounds before anything is allocated: rows and bytes of the file
MAX_ROWS = 50_000
MAX_BYTES = MAX_ROWS * 1024 * 4 + 4096
#: the builder's default sample: a query against 5,000 rows costs about a whole-image search of a
#: small pack, and the top three of 5,000 unrelated images already mark a generic query
DEFAULT_ROWS = 5_000
#: queries scored against the background at a time (bounds the similarity matrix to 4096 x rows)
CHUNK = 4096


def load(path: str | Path, dim: int):
    """The background's rows as float32 [n, dim], or a PackError naming the file: a .npy of float16
    or float32 (no pickle), 1 to MAX_ROWS rows of `dim`, finite, of unit length."""
    import numpy as np

    from lib_replicheck.packs import npy

    path = Path(path)
    rows = npy.load(path, "background", MAX_BYTES)
    if rows.dtype not in (np.float16, np.float32) or rows.ndim != 2 or rows.shape[1] != dim \
            or not 0 < rows.shape[0] <= MAX_ROWS:
        raise PackError(path.parent, f"background {path.name} holds {rows.dtype} {rows.shape}, not float16 or "
                                     f"float32 [1 to {MAX_ROWS:,}, {dim}]")
    rows = rows.astype(np.float32)
    if not np.isfinite(rows).all():
        raise PackError(path.parent, f"background {path.name} holds values that are not finite")
    norms = np.linalg.norm(rows, axis=1)
    if np.abs(norms - 1).max() > 0.01:
        raise PackError(path.parent, f"background {path.name} holds rows that are not of unit length "
                                     f"(lengths {norms.min():.3f} to {norms.max():.3f})")
    return np.ascontiguousarray(rows)


def save(path: str | Path, rows) -> None:
    """Write rows (unit length) as float16 .npy."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.float32)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    with open(path, "wb") as f:
        np.save(f, rows.astype(np.float16), allow_pickle=False)


def offsets(rows, queries):
    """Per query, what normalisation subtracts: BETA times its mean similarity to its NEIGHBOURS
    nearest background rows (all of them when there are fewer). float32 [len(queries)]."""
    import numpy as np

    q = np.asarray(queries, dtype=np.float32)
    k = min(NEIGHBOURS, len(rows))
    out = np.empty(len(q), dtype=np.float32)
    for start in range(0, len(q), CHUNK):
        sims = q[start:start + CHUNK] @ rows.T
        top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:] if k < sims.shape[1] else sims
        out[start:start + len(sims)] = BETA * top.mean(axis=1)
    return out
