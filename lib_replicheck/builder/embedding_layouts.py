"""The files of published CLIP embeddings, as their publishers lay them out, read bounded.

- clip-retrieval's (`clip-retrieval inference`, and the LAION embeddings published with it):
  `img_emb/img_emb_N.npy` (float16 rows of unit length) and `metadata/metadata_N.parquet`
  (`image_path`, `caption`, and the webdataset's json fields flattened: `url`, `key`, `width`, ...),
  row i of one the row i of the other;
- PD12M's (Spawning/PD12M on the Hugging Face hub): `embeddings/pd12m.NN.npy` (float32, 768
  columns) and `metadata/pd12m.NN.parquet` (id, url, caption, width, height, mime_type, hash,
  license), row i of the embeddings the row i of the metadata file of the same name;
- DataComp's (download_upstream.py --download_npz): `NAME.npz` beside `NAME.parquet`, read by
  embedding_datacomp.py.

Every file comes from a stranger. The `.npy` header is read by the bounded parser of packs/npy.py
(float16 or float32, two dimensions, exactly the bytes the file holds); an embedding file and its
metadata file must hold the same number of rows (an error names both); the parquet's row groups are
bounded from its footer before a value is read; rows are read in chunks from a memory map and
checked (finite, not zero) and normalised; text values are cut to MAX_URL / MAX_CAPTION / MAX_KEY.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lib_replicheck.errors import ReplicheckError

CLIP_RETRIEVAL, PD12M, DATACOMP = "clip-retrieval", "pd12m", "datacomp"
#: Bounds on what an embedding file may declare (before anything is mapped): PD12M's are 3.07 GB.
MAX_EMBEDDING_BYTES = 64 * 1024**3
MAX_DIM = 4096
#: A parquet row group is read whole: bounded from the footer, the columns read, uncompressed.
MAX_ROW_GROUP_BYTES = 1024**3
MAX_URL, MAX_CAPTION, MAX_KEY, MAX_LICENSE = 2048, 1000, 200, 300
MAX_PARTS = 100_000
#: metadata columns read, by role, in the order looked for
COLUMNS = {"url": ("url", "URL"), "caption": ("caption", "TEXT", "text"), "key": ("key", "id", "image_path", "uid"),
           "width": ("width", "WIDTH", "original_width"), "height": ("height", "HEIGHT", "original_height"),
           "license": ("license", "LICENSE")}
TEXT_LIMITS = {"url": MAX_URL, "caption": MAX_CAPTION, "key": MAX_KEY, "license": MAX_LICENSE}
_CLIP_NPY = re.compile(r"img_emb_(\d{1,9})\.npy")
_PD_NPY = re.compile(r"([A-Za-z0-9_-]{1,64}\.\d{1,9})\.npy")


class EmbeddingSourceError(ReplicheckError):
    """A file of an embedding source that cannot be used; the message names it."""


@dataclass(frozen=True)
class EmbeddingPart:
    """One embedding file and the metadata file whose rows are its rows."""

    vectors: Path
    metadata: Path


@dataclass(frozen=True)
class EmbeddingLayout:
    kind: str  # CLIP_RETRIEVAL, PD12M or DATACOMP
    parts: tuple[EmbeddingPart, ...]


def detect_layout(folder: str | Path) -> EmbeddingLayout:
    """The layout of `folder` and its parts in numeric order; an error names what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmbeddingSourceError(f"--embeddings {folder}: not a folder (give a folder in clip-retrieval's, "
                                   "PD12M's or DataComp's layout, or a text file of URLs)")
    datacomp = _datacomp_parts(folder)
    if datacomp:
        return EmbeddingLayout(DATACOMP, datacomp)
    if (folder / "img_emb").is_dir():
        kind, emb_dir, pattern = CLIP_RETRIEVAL, folder / "img_emb", _CLIP_NPY
        meta_name = lambda m: f"metadata_{m.group(1)}.parquet"  # noqa: E731
    elif (folder / "embeddings").is_dir():
        kind, emb_dir, pattern = PD12M, folder / "embeddings", _PD_NPY
        meta_name = lambda m: f"{m.group(1)}.parquet"  # noqa: E731
    else:
        raise EmbeddingSourceError(f"--embeddings {folder}: holds neither img_emb/ (clip-retrieval), "
                                   "embeddings/ (PD12M) nor NAME.npz with NAME.parquet (DataComp)")
    found = []
    for p in emb_dir.iterdir():
        m = pattern.fullmatch(p.name)
        if m is None or not p.is_file():
            continue
        meta = folder / "metadata" / meta_name(m)
        if not meta.is_file():
            raise EmbeddingSourceError(f"embedding file {p} has no metadata file {meta}")
        number = int(re.findall(r"\d+", m.group(1))[-1])
        found.append((number, p.name, EmbeddingPart(p, meta)))
        if len(found) > MAX_PARTS:
            raise EmbeddingSourceError(f"{emb_dir}: more than {MAX_PARTS:,} embedding files")
    if not found:
        raise EmbeddingSourceError(f"{emb_dir}: no embedding files (" +
                                   ("img_emb_N.npy" if kind == CLIP_RETRIEVAL else "NAME.NN.npy") + ")")
    return EmbeddingLayout(kind, tuple(part for _, _, part in sorted(found, key=lambda t: t[:2])))


def _datacomp_parts(folder: Path) -> tuple[EmbeddingPart, ...]:
    """DataComp's shards, `NAME.npz` each beside its `NAME.parquet`, in `folder` or its `metadata/`
    (where download_upstream.py puts them), in name order; () when there is no npz."""
    from lib_replicheck.builder.embedding_datacomp import NPZ

    meta = folder / "metadata"
    where = meta if meta.is_dir() and not (folder / "img_emb").is_dir() and not (folder / "embeddings").is_dir() \
        else folder
    found = []
    for p in where.iterdir():
        if not NPZ.fullmatch(p.name) or not p.is_file():
            continue
        parquet = p.with_suffix(".parquet")
        if not parquet.is_file():
            raise EmbeddingSourceError(f"embedding file {p} has no metadata file {parquet}")
        found.append(EmbeddingPart(p, parquet))
        if len(found) > MAX_PARTS:
            raise EmbeddingSourceError(f"{where}: more than {MAX_PARTS:,} embedding files")
    return tuple(sorted(found, key=lambda part: part.vectors.name))


@dataclass(frozen=True)
class PartInfo:
    """An embedding file's checked header and its metadata file's row count and columns."""

    part: EmbeddingPart
    rows: int
    dim: int
    dtype: str
    offset: int
    columns: dict  # role -> column name present in the metadata file
    member: str | None = None  # the npz array read (DataComp), None for a .npy file
    compressed: bool = False  # a deflated npz member: read in order, not mapped


def inspect(part: EmbeddingPart, member: str | None = None) -> PartInfo:
    """Check an embedding file's header (packs/npy.py's bounded parser, float16/float32, 2-D; for an
    npz, of its array `member`) and that its metadata file holds as many rows, and which columns it
    has; nothing is read beyond that."""
    from lib_replicheck.builder import embedding_datacomp as npz
    from lib_replicheck.packs import npy

    compressed, where = False, f"{part.vectors}" + (f", array {member}" if member else "")
    try:
        if member is not None:
            m = npz.open_member(part.vectors, member, MAX_EMBEDDING_BYTES)
            header, offset, compressed = m.header, m.offset, m.compressed
        else:
            with open(part.vectors, "rb", buffering=0) as f:
                header = npy.read_header(f, os.fstat(f.fileno()).st_size, MAX_EMBEDDING_BYTES)
            offset = header.offset
    except (OSError, npy.NpyError, npz.NpzError) as e:
        raise EmbeddingSourceError(f"embedding file {where}: cannot be used ({e})"[:500]) from None
    if header.dtype not in ("float16", "float32") or len(header.shape) != 2:
        raise EmbeddingSourceError(f"embedding file {where}: {header.dtype} {header.shape}, not rows of "
                                   "float16 or float32 (rows x dimensions)")
    rows, dim = header.shape
    if not 1 <= dim <= MAX_DIM:
        raise EmbeddingSourceError(f"embedding file {where}: {dim} dimensions (1 to {MAX_DIM})")
    pf = open_parquet(part.metadata)
    if pf.metadata.num_rows != rows:
        raise EmbeddingSourceError(f"embedding file {where} holds {rows:,} rows but its metadata file "
                                   f"{part.metadata} holds {pf.metadata.num_rows:,}: they must line up row by row")
    names = set(pf.schema_arrow.names)
    columns = {role: next(c for c in options if c in names) for role, options in COLUMNS.items()
               if any(c in names for c in options)}
    schema = pf.schema_arrow
    for role, name in columns.items():
        t = str(schema.field(name).type)
        want_int = role in ("width", "height")
        if want_int and not re.fullmatch(r"u?int(8|16|32|64)|double|float", t) or \
                not want_int and t not in ("string", "large_string") and not (role == "key" and "int" in t):
            raise EmbeddingSourceError(f"metadata file {part.metadata}: column {name} is {t}, not "
                                       + ("a number" if want_int else "text"))
    for g in range(pf.metadata.num_row_groups):
        rg = pf.metadata.row_group(g)
        size = sum(rg.column(i).total_uncompressed_size for i in range(rg.num_columns)
                   if rg.column(i).path_in_schema.split(".")[0] in columns.values())
        if size > MAX_ROW_GROUP_BYTES:
            raise EmbeddingSourceError(f"metadata file {part.metadata}: row group {g} holds {size:,} bytes of "
                                       f"metadata (at most {MAX_ROW_GROUP_BYTES:,} are read at once)")
    return PartInfo(part, rows, dim, header.dtype, offset, columns, member, compressed)


def open_parquet(path: Path):
    """A metadata file's parquet reader with its footer bounded; an error names the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, thrift_string_size_limit=64 * 1024**2, thrift_container_size_limit=1_000_000)
    except (OSError, pa.ArrowException, ValueError) as e:
        raise EmbeddingSourceError(f"metadata file {path}: not a readable parquet ({str(e)[:200]})") from None


def _bounded(value, limit: int):
    if value is None:
        return None
    s = str(value)
    return s[:limit] if len(s) > limit else s


def _number(value) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if 0 <= n <= 10**7 else None


def read_rows(info: PartInfo, chunk_rows: int, wanted: Callable[[int, int], bool] = lambda a, b: True
              ) -> Iterator[tuple[int, object, list[dict]]]:
    """(first row, float32 [n, dim] rows of unit length, metadata dicts) of `info`'s part, in one pass,
    at most `chunk_rows` at a time, for the row ranges `wanted(first, end)` accepts (the others are
    passed over unread); a row that is not finite, or is zero, is refused naming file and row."""
    import numpy as np

    source = _RowSource(info)
    row = 0
    try:
        for batch in _metadata_batches(info, chunk_rows):
            n = batch.num_rows
            if not wanted(row, row + n):
                row += n
                continue
            yield row, _checked(info, row, source.take(row, n)), _metadata_dicts(batch, info.columns)
            row += n
    finally:
        source.close()


class _RowSource:
    """Rows of an embedding file by range: memory-mapped where they lie in the file (a .npy, or an
    npz member stored as np.savez stores), else decompressed in order (embedding_datacomp)."""

    def __init__(self, info: PartInfo):
        import numpy as np

        from lib_replicheck.builder.embedding_datacomp import MemberRows, NpzError

        self._info, self._mm, self._stream = info, None, None
        if info.compressed:
            try:
                self._stream = MemberRows(info.part.vectors, info.member, info.dtype, info.offset, info.dim)
            except NpzError as e:
                raise self._error(e) from None
        else:
            self._mm = np.memmap(info.part.vectors, dtype="<f2" if info.dtype == "float16" else "<f4", mode="r",
                                 offset=info.offset, shape=(info.rows, info.dim))

    def take(self, row: int, n: int):
        from lib_replicheck.builder.embedding_datacomp import NpzError

        if self._mm is not None:
            return self._mm[row:row + n]
        try:
            return self._stream.take(row, n)
        except NpzError as e:
            raise self._error(e) from None

    def _error(self, e: Exception) -> EmbeddingSourceError:
        return EmbeddingSourceError(f"embedding file {self._info.part.vectors}, array {self._info.member}: {e}"[:500])

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._mm = None


def _checked(info: PartInfo, row: int, rows):
    """float32 `rows` of unit length; a row that is not finite, or is zero, is refused naming it."""
    import numpy as np

    n = len(rows)
    vecs = np.array(rows, dtype=np.float32)
    finite = np.isfinite(vecs).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], vecs, 0), axis=1)
    bad = np.flatnonzero(~finite | (norms < 1e-6))
    if len(bad):
        what = "not finite" if not finite[bad[0]] else "zero"
        raise EmbeddingSourceError(f"embedding file {info.part.vectors}: row {row + int(bad[0]):,} is {what} "
                                   f"({len(bad)} such row(s) in rows {row:,} to {row + n - 1:,})")
    return vecs / norms[:, None]


def _metadata_batches(info: PartInfo, chunk_rows: int):
    import pyarrow as pa

    pf = open_parquet(info.part.metadata)
    try:
        yield from pf.iter_batches(batch_size=chunk_rows, columns=sorted(set(info.columns.values())))
    except (OSError, pa.ArrowException, ValueError) as e:
        raise EmbeddingSourceError(f"metadata file {info.part.metadata}: cannot be read ({str(e)[:200]})") from None


def _metadata_dicts(batch, cols: dict) -> list[dict]:
    data = {role: batch.column(name).to_pylist() for role, name in cols.items()}
    out = []
    for j in range(batch.num_rows):
        m = {role: _bounded(data[role][j], TEXT_LIMITS[role]) for role in TEXT_LIMITS if role in data}
        for role in ("width", "height"):
            m[role] = _number(data[role][j]) if role in data else None
        out.append(m)
    return out
