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
header bounded and checked against the file before anything is allocated) and checked before use. The builder embeds it from images the user names (`build --background`), a recipe from rows of
its list outside the pack, an embedding pack from rows of its files it left out; it drops those that
are copies of a pack image, since they would lower the scores of that image's copies.

A pack without one uses the default background that ships with replicheck for its embedder
(DEFAULTS, in lib_replicheck/data/backgrounds/, made by bench/default_background.py from
public-domain images): its sha256 is checked against the provenance file beside it before the rows
are read, and its rows that are copies of one of the pack's images are left out for that pack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
#: the default backgrounds shipped with replicheck, by embedder id (their provenance file is the
#: same name with .json)
DEFAULTS_DIR = Path(__file__).resolve().parent.parent / "data" / "backgrounds"
DEFAULTS = {"sscd_disc_mixup": "sscd_disc_mixup.npy"}
#: bounds on a shipped default: its rows' bytes and its provenance file's
MAX_DEFAULT_BYTES = 1024 * 1024
MAX_PROVENANCE_BYTES = 256 * 1024


@dataclass
class Sample:
    """Background rows a builder made, with where they came from (shown by `packs list`)."""

    rows: object  # float32 [n, dim]
    source: str


@dataclass(frozen=True)
class Default:
    """The default background of an embedder: its file and what its provenance says of it."""

    path: Path
    sha256: str
    rows: int
    dim: int
    summary: str  # e.g. '256 OpenClipart drawings (CC0)'

    @property
    def name(self) -> str:
        return self.path.stem


def default_for(embedder_id: str) -> Default | None:
    """The default background shipped for `embedder_id`, from its provenance file; None when none
    ships for it. A provenance file that cannot be read is a PackError naming it (the folder it is
    in stands where a pack's path stands; Pack says which pack needed it)."""
    name = DEFAULTS.get(embedder_id)
    if name is None:
        return None
    path = DEFAULTS_DIR / name
    meta = path.with_suffix(".json")
    try:
        if meta.stat().st_size > MAX_PROVENANCE_BYTES:
            raise PackError(meta.parent, f"default background provenance {meta.name} is larger than "
                                         f"{MAX_PROVENANCE_BYTES:,} bytes")
        data = json.loads(meta.read_text(encoding="utf-8"))
        digest, rows, dim = str(data["sha256"]), int(data["rows"]), int(data["dim"])
        summary = str(data["summary"])[:200]
    except PackError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PackError(meta.parent, f"default background provenance {meta.name} cannot be read "
                                     f"({type(e).__name__}: {e}); reinstall replicheck"[:400]) from None
    return Default(path, digest, rows, dim, summary)


_loaded: dict = {}


def load_default(default: Default, dim: int):
    """The default background's rows as float32 [n, dim], after its sha256 matched its provenance
    file (read once per file as it is on disk); a PackError naming the file otherwise."""
    import hashlib

    try:
        st = default.path.stat()
    except OSError as e:
        raise PackError(default.path.parent, f"default background {default.path.name} cannot be read "
                                             f"({e.strerror or e}); reinstall replicheck") from None
    key = (str(default.path), st.st_size, st.st_mtime_ns, st.st_ino, default.sha256, dim)
    if key not in _loaded:
        if st.st_size > MAX_DEFAULT_BYTES:
            raise PackError(default.path.parent, f"default background {default.path.name} is {st.st_size:,} bytes, "
                                                 f"more than the {MAX_DEFAULT_BYTES:,} a shipped default may be")
        if hashlib.sha256(default.path.read_bytes()).hexdigest() != default.sha256:
            raise PackError(default.path.parent, f"default background {default.path.name} fails its sha256 check "
                                                 f"(corrupt or tampered with: it differs from the sha256 in "
                                                 f"{default.path.with_suffix('.json').name}); reinstall replicheck")
        rows = load(default.path, dim)
        if len(rows) != default.rows:
            raise PackError(default.path.parent, f"default background {default.path.name} holds {len(rows)} rows, "
                                                 f"its provenance says {default.rows}")
        _loaded.clear()
        _loaded[key] = rows
    return _loaded[key]


def not_copies(nearest, cut: float):
    """Which background rows to keep: those whose nearest pack image stays under `cut` (a row that
    is a copy of a pack image would lower the normalised score of that image's copies)."""
    import numpy as np

    return np.asarray(nearest, dtype=np.float32) < cut


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
    """Write rows (unit length) as float16 .npy, to a path or an open binary file."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.float32)
    rows = (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float16)
    if hasattr(path, "write"):
        np.save(path, rows, allow_pickle=False)
        return
    with open(path, "wb") as f:
        np.save(f, rows, allow_pickle=False)


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
