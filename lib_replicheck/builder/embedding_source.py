"""A source of vectors, not images: published CLIP embeddings and their metadata, as a pack.

Datasets publish the CLIP image embeddings of their images beside their metadata; a pack of them is
built without fetching an image or running a model. Two layouts are read:

- clip-retrieval's (`clip-retrieval inference`, and the LAION embeddings published with it):
  `img_emb/img_emb_N.npy` (float16 rows of unit length) and `metadata/metadata_N.parquet`
  (`image_path`, `caption`, and the webdataset's json fields flattened: `url`, `key`, `width`, ...),
  row i of one the row i of the other;
- PD12M's (Spawning/PD12M on the Hugging Face hub): `embeddings/pd12m.NN.npy` (float32, 768
  columns) and `metadata/pd12m.NN.parquet` (id, url, caption, width, height, mime_type, hash,
  license), row i of the embeddings the row i of the metadata file of the same name.

Every file comes from a stranger. The `.npy` header is read by the bounded parser of packs/npy.py
(float16 or float32, two dimensions, exactly the bytes the file holds); an embedding file and its
metadata file must hold the same number of rows (an error names both); the parquet's row groups are
bounded from its footer before a value is read; rows are read in chunks from a memory map and
checked (finite, not zero) and normalised; text values are cut to MAX_URL / MAX_CAPTION / MAX_KEY.
Each chunk becomes one shard of the builder's shard store (shards.py), from which the pack goes
through the same index, metadata and publish stages as every pack (stages.py), so a killed build
resumes from its finished shards and the pack appears only once complete and verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.hashing import sha256_file

CLIP_RETRIEVAL, PD12M = "clip-retrieval", "pd12m"
#: Bounds on what an embedding file may declare (before anything is mapped): PD12M's are 3.07 GB.
MAX_EMBEDDING_BYTES = 64 * 1024**3
MAX_DIM = 4096
#: A parquet row group is read whole: bounded from the footer, the columns read, uncompressed.
MAX_ROW_GROUP_BYTES = 1024**3
MAX_URL, MAX_CAPTION, MAX_KEY, MAX_LICENSE = 2048, 1000, 200, 300
MAX_PARTS = 100_000
#: Rows read from a file at once (a shard is filled from several reads): 24 MB of 768 float32 columns.
READ_ROWS = 8192
#: metadata columns read, by role, in the order looked for
COLUMNS = {"url": ("url", "URL"), "caption": ("caption", "TEXT"), "key": ("key", "id", "image_path"),
           "width": ("width", "WIDTH"), "height": ("height", "HEIGHT"), "license": ("license", "LICENSE")}
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
    kind: str  # CLIP_RETRIEVAL or PD12M
    parts: tuple[EmbeddingPart, ...]


def detect_layout(folder: str | Path) -> EmbeddingLayout:
    """The layout of `folder` and its parts in numeric order; an error names what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmbeddingSourceError(f"--embeddings {folder}: not a folder (give a folder in clip-retrieval's or "
                                   "PD12M's layout, or a text file of URLs)")
    if (folder / "img_emb").is_dir():
        kind, emb_dir, pattern = CLIP_RETRIEVAL, folder / "img_emb", _CLIP_NPY
        meta_name = lambda m: f"metadata_{m.group(1)}.parquet"  # noqa: E731
    elif (folder / "embeddings").is_dir():
        kind, emb_dir, pattern = PD12M, folder / "embeddings", _PD_NPY
        meta_name = lambda m: f"{m.group(1)}.parquet"  # noqa: E731
    else:
        raise EmbeddingSourceError(f"--embeddings {folder}: holds neither img_emb/ (clip-retrieval) nor "
                                   "embeddings/ (PD12M)")
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


@dataclass(frozen=True)
class PartInfo:
    """An embedding file's checked header and its metadata file's row count and columns."""

    part: EmbeddingPart
    rows: int
    dim: int
    dtype: str
    offset: int
    columns: dict  # role -> column name present in the metadata file


def inspect(part: EmbeddingPart) -> PartInfo:
    """Check an embedding file's header (packs/npy.py's bounded parser, float16/float32, 2-D) and that
    its metadata file holds as many rows, and which columns it has; nothing is read beyond that."""
    from lib_replicheck.packs import npy

    try:
        with open(part.vectors, "rb", buffering=0) as f:
            header = npy.read_header(f, os.fstat(f.fileno()).st_size, MAX_EMBEDDING_BYTES)
    except (OSError, npy.NpyError) as e:
        raise EmbeddingSourceError(f"embedding file {part.vectors}: cannot be used ({e})"[:500]) from None
    if header.dtype not in ("float16", "float32") or len(header.shape) != 2:
        raise EmbeddingSourceError(f"embedding file {part.vectors}: {header.dtype} {header.shape}, not rows of "
                                   "float16 or float32 (rows x dimensions)")
    rows, dim = header.shape
    if not 1 <= dim <= MAX_DIM:
        raise EmbeddingSourceError(f"embedding file {part.vectors}: {dim} dimensions (1 to {MAX_DIM})")
    pf = _parquet(part.metadata)
    if pf.metadata.num_rows != rows:
        raise EmbeddingSourceError(f"embedding file {part.vectors} holds {rows:,} rows but its metadata file "
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
    return PartInfo(part, rows, dim, header.dtype, header.offset, columns)


def _parquet(path: Path):
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

    mm = np.memmap(info.part.vectors, dtype="<f2" if info.dtype == "float16" else "<f4", mode="r",
                   offset=info.offset, shape=(info.rows, info.dim))
    row = 0
    for batch in _metadata_batches(info, chunk_rows):
        n = batch.num_rows
        if not wanted(row, row + n):
            row += n
            continue
        vecs = np.array(mm[row:row + n], dtype=np.float32)
        finite = np.isfinite(vecs).all(axis=1)
        norms = np.linalg.norm(np.where(finite[:, None], vecs, 0), axis=1)
        bad = np.flatnonzero(~finite | (norms < 1e-6))
        if len(bad):
            what = "not finite" if not finite[bad[0]] else "zero"
            raise EmbeddingSourceError(f"embedding file {info.part.vectors}: row {row + int(bad[0]):,} is {what} "
                                       f"({len(bad)} such row(s) in rows {row:,} to {row + n - 1:,})")
        yield row, vecs / norms[:, None], _metadata_dicts(batch, info.columns)
        row += n
    del mm


def _metadata_batches(info: PartInfo, chunk_rows: int):
    import pyarrow as pa

    pf = _parquet(info.part.metadata)
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


def clip_spec(embedder: str, dim: int):
    """The EmbedderSpec a pack of vectors made by `embedder` (`clip:MODEL/TAG`) records: what the check
    loads to embed its images. The model's output width is checked against the files' when open_clip
    is installed (it knows it without loading weights)."""
    from lib_replicheck.embedders.base import COSINE, EmbedderSpec, WeightsFile
    from lib_replicheck.embedders.clip import embedder_id, parse_id

    if not str(embedder).startswith("clip"):
        raise EmbeddingSourceError(f"--embeddings: name the model that made the vectors with --embedder "
                                   f"clip:MODEL/TAG (e.g. clip:ViT-L-14/openai for LAION's and PD12M's), not "
                                   f"{embedder!r}")
    model, tag = parse_id(embedder)
    try:
        import open_clip

        cfg = open_clip.get_model_config(model)
    except ImportError:
        cfg = None
    if cfg is not None and cfg.get("embed_dim") != dim:
        raise EmbeddingSourceError(f"the embedding files hold {dim} dimensions but CLIP {model} makes "
                                   f"{cfg.get('embed_dim')}: they were not made by {embedder}")
    return EmbedderSpec(id=embedder_id(model, tag), kind="clip", model=model, dim=dim, metric=COSINE,
                        preprocessing={"precomputed": True},
                        weights=(WeightsFile("open_clip", tag, None, None),))


def _part_identity(info: PartInfo) -> list:
    out = []
    for p in (info.part.vectors, info.part.metadata):
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def fill_shards(infos: list[PartInfo], store, shard_rows: int, log, progress=None, license: str | None = None) -> int:
    """Write the shards of `infos` into `store` (vectors [n, 1, dim] float32 and metadata rows), one
    pass over each file, keeping the shards a killed build finished from the same files; returns the
    rows. `license` fills rows whose metadata names none."""
    import numpy as np

    from lib_replicheck.builder.shards import CorruptShard

    index, total = 0, 0
    for info in infos:
        identity = _part_identity(info)
        shards = []  # (shard index, first row, end row, digest) of this file
        for start in range(0, info.rows, shard_rows):
            end = min(info.rows, start + shard_rows)
            digest = hashlib.sha256(json.dumps([identity, start, end]).encode()).hexdigest()
            shards.append((index, start, end, digest))
            index += 1
        todo = []
        for i, start, end, digest in shards:
            if store.complete(i) and store.source(i) == digest:
                try:
                    store.read(i)
                    if progress:
                        progress(end - start)
                    log(f"shard {i:05d} kept from an earlier run ({info.part.vectors.name}, rows {start:,} to "
                        f"{end - 1:,})")
                    continue
                except CorruptShard as e:
                    log(f"{e}: reading it again")
            store.discard(i)
            todo.append((i, start, end, digest))
        total += info.rows
        if not todo:
            continue
        ranges = [(s, e) for _, s, e, _ in todo]
        wanted = lambda a, b: any(a < e and s < b for s, e in ranges)  # noqa: E731
        current, buf, metas_buf = 0, None, []
        for row, vecs, metas in read_rows(info, min(shard_rows, READ_ROWS), wanted):
            pos = 0
            while pos < len(metas) and current < len(todo):
                i, start, end, digest = todo[current]
                r = row + pos
                if r >= end:  # past this shard (it was written): the next one
                    current += 1
                    continue
                if r < start:  # rows of a shard kept from an earlier run
                    pos = min(len(metas), start - row)
                    continue
                take = min(end, row + len(metas)) - r
                if buf is None:
                    buf, metas_buf = np.empty((end - start, info.dim), np.float32), []
                buf[r - start:r - start + take] = vecs[pos:pos + take]
                metas_buf += metas[pos:pos + take]
                pos += take
                if r + take == end:
                    if license:
                        for m in metas_buf:
                            m["license"] = m.get("license") or license
                    store.write(i, buf.reshape(len(buf), 1, -1), metas_buf, [], source=digest)
                    if progress:
                        progress(end - start)
                    log(f"shard {i:05d}: {len(metas_buf):,} rows of {info.part.vectors.name} "
                        f"({start:,} to {end - 1:,})")
                    buf, metas_buf, current = None, [], current + 1
        if buf is not None or current < len(todo):
            raise EmbeddingSourceError(f"metadata file {info.part.metadata}: ended before its declared rows")
    for i in store.indices():
        if i >= index:
            store.discard(i)
    return total


@dataclass(frozen=True)
class FetchedFile:
    url: str
    path: str  # relative to the download folder
    size: int
    sha256: str


MAX_URL_LIST_BYTES = 1024**2
MAX_URL_LIST_LINES = 20_000
_FILE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def read_url_list(path: Path) -> list[tuple[str, str | None]]:
    """(URL, sha256 or None) per line of a URL list (`URL [SHA256]`, `#` comments), bounded."""
    from lib_replicheck.download import check_url

    try:
        if path.stat().st_size > MAX_URL_LIST_BYTES:
            raise EmbeddingSourceError(f"URL list {path}: larger than {MAX_URL_LIST_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EmbeddingSourceError(f"URL list {path}: cannot be read ({e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2 or (len(fields) == 2 and not re.fullmatch(r"[0-9a-f]{64}", fields[1])):
            raise EmbeddingSourceError(f"URL list {path}, line {n}: give a URL and, optionally, its sha256")
        try:
            check_url(fields[0])
        except ReplicheckError as e:
            raise EmbeddingSourceError(f"URL list {path}, line {n}: {e}") from None
        if fields[0].startswith("file:"):
            raise EmbeddingSourceError(f"URL list {path}, line {n}: only http(s) URLs are downloaded")
        out.append((fields[0], fields[1] if len(fields) == 2 else None))
        if len(out) > MAX_URL_LIST_LINES:
            raise EmbeddingSourceError(f"URL list {path}: more than {MAX_URL_LIST_LINES:,} URLs")
    if not out:
        raise EmbeddingSourceError(f"URL list {path}: no URLs")
    return out


def local_name(url: str) -> str:
    """Where a URL's file goes under the download folder: its last folder and file name, which say
    the layout (`img_emb/img_emb_0.npy`, `metadata/pd12m.00.parquet`, ...)."""
    from urllib.parse import unquote, urlsplit

    parts = [unquote(p) for p in urlsplit(url).path.split("/") if p]
    if len(parts) < 2 or parts[-2] not in ("img_emb", "embeddings", "metadata") or \
            not _FILE_NAME.fullmatch(parts[-1]) or parts[-1].startswith("."):
        raise EmbeddingSourceError(f"{url}: not a file of clip-retrieval's (img_emb/, metadata/) or PD12M's "
                                   "(embeddings/, metadata/) layout")
    return f"{parts[-2]}/{parts[-1]}"


def fetch_files(urls: list[tuple[str, str | None]], folder: Path, log, policy=None,
                sizes: dict[str, int] | None = None) -> list[FetchedFile]:
    """Download each URL into `folder` with the project's downloader (resumable, bounded; the sha256
    and the size in `sizes`, where given, checked); files already there from a killed build are kept.
    Returns each file's sha256, recorded in the manifest."""
    from lib_replicheck.download import MAX_UNSIZED_BYTES, fetch

    out = []
    for url, sha in urls:
        rel = local_name(url)
        dest = folder / rel
        if not dest.is_file():
            log(f"downloading {url}")
            fetch([url], dest, size=(sizes or {}).get(url), sha256=sha, policy=policy,
                  max_bytes=min(MAX_UNSIZED_BYTES, MAX_EMBEDDING_BYTES))
        digest = sha256_file(dest)
        if sha and digest != sha:
            dest.unlink(missing_ok=True)
            raise EmbeddingSourceError(f"{url}: sha256 {digest} is not the {sha} the list names")
        out.append(FetchedFile(url, rel, dest.stat().st_size, digest))
    return out


def build_from_embeddings(source: str | Path, out: str | Path, opts, *, name: str | None = None,
                          title: str | None = None, description: str = "", dataset: str = "",
                          work: str | Path | None = None, overwrite: bool = False, keep_work: bool = False,
                          log: Callable[[str], None] | None = None, policy=None):
    """Build a pack at `out` from published embeddings: a folder in clip-retrieval's or PD12M's layout,
    or a text file of URLs of such files (downloaded into the work folder first). `opts.embedder`
    names the model that made them (`clip:ViT-L-14/openai`). Returns the BuildReport."""
    from lib_replicheck.builder.stages import publish_stage
    from lib_replicheck.builder.work import fingerprint, open_work
    from lib_replicheck.packs.publish import check_target

    log = log or (lambda s: print(s, file=sys.stderr))
    started = time.perf_counter()
    out, source = Path(out), Path(source)
    name = check_target(out, name, overwrite)
    chosen_by_user = work is not None
    work = Path(work) if work else out.parent / f".{out.name}.work"
    fetched: list[FetchedFile] = []
    if source.is_file():
        urls = read_url_list(source)
        folder = work / "downloads"
        work.mkdir(parents=True, exist_ok=True)
        fetched = fetch_files(urls, folder, log, policy)
    else:
        folder = source
    layout = detect_layout(folder)
    infos = [inspect(p) for p in layout.parts]
    dims = {i.dim for i in infos}
    if len(dims) != 1:
        raise EmbeddingSourceError(f"the embedding files of {source} hold rows of different widths: "
                                   + ", ".join(f"{i.part.vectors.name} {i.dim}" for i in infos[:5]))
    spec = clip_spec(opts.embedder, dims.pop())
    log(f"{layout.kind} layout: {len(infos)} file(s), {sum(i.rows for i in infos):,} rows of {spec.dim} "
        f"dimensions, made by {spec.id}")
    options = {"shard_size": opts.shard_size, "embeddings": layout.kind, "license": opts.license}
    store = open_work(work, fingerprint(folder, "embeddings", spec, options), chosen_by_user=chosen_by_user, log=log)
    fill_shards(infos, store, max(1, opts.shard_size), log, opts.progress, license=opts.license)
    src = {k: v for k, v in (("dataset", dataset), ("license", opts.license or "")) if v}
    src["embeddings"] = {"layout": layout.kind, "files": [
        {"path": f.path, "url": f.url, "size": f.size, "sha256": f.sha256} for f in fetched]
        or [{"path": f"{p.vectors.parent.name}/{p.vectors.name}"} for p in layout.parts][:1000]}
    report = publish_stage(store, spec, out, opts, log, name=name, title=title, description=description,
                           source=src, started=started)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return report
