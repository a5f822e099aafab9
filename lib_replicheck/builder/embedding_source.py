"""A source of vectors, not images: published CLIP embeddings and their metadata, as a pack.

Datasets publish the CLIP image embeddings of their images beside their metadata; a pack of them is
built without fetching an image or running a model. The layouts (clip-retrieval's, PD12M's,
DataComp's) are read by embedding_layouts.py, URL lists fetched by embedding_fetch.py. Each chunk
of rows becomes one shard of the builder's shard store (shards.py), from which the pack goes
through the same index, metadata and publish stages as every pack (stages.py), so a killed build
resumes from its finished shards and the pack appears only once complete and verified.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Callable

from lib_replicheck.builder.embedding_fetch import FetchedFile, fetch_files, read_url_list
from lib_replicheck.builder.embedding_layouts import (DATACOMP, EmbeddingSourceError, PartInfo, detect_layout, inspect,
                                                      read_rows)

#: Rows read from a file at once (a shard is filled from several reads): 24 MB of 768 float32 columns.
READ_ROWS = 8192
#: What a shard holds of the rows: float16, half of PD12M's float32 files (a full build's work folder
#: holds 19 GB of shards, not 38), as clip-retrieval and DataComp publish theirs. Unit-length rows lose
#: under 0.001 of similarity to it (tests/test_embedding_packs.py measures it), far less than the
#: index's own codes do; the rows are read back as float32.
SHARD_DTYPE = "float16"


def clip_model(embedder: str) -> tuple[str, str | None]:
    """(model, tag) of `embedder` (`clip:MODEL/TAG`), the model that made the vectors."""
    from lib_replicheck.embedders.clip import parse_id

    if not str(embedder).startswith("clip"):
        raise EmbeddingSourceError(f"--embeddings: name the model that made the vectors with --embedder "
                                   f"clip:MODEL/TAG (e.g. clip:ViT-L-14/openai for LAION's and PD12M's), not "
                                   f"{embedder!r}")
    return parse_id(embedder)


def npz_array(kind: str, embedder: str) -> str | None:
    """The array of DataComp's npz files that holds `embedder`'s features; None for other layouts."""
    from lib_replicheck.builder.embedding_datacomp import NpzError, member_for

    if kind != DATACOMP:
        return None
    try:
        return member_for(clip_model(embedder)[0])
    except NpzError as e:
        raise EmbeddingSourceError(f"--embedder {embedder}: {e}") from None


def clip_spec(embedder: str, dim: int):
    """The EmbedderSpec a pack of vectors made by `embedder` (`clip:MODEL/TAG`) records: what the check
    loads to embed its images. The model's output width is checked against the files' when open_clip
    is installed (it knows it without loading weights)."""
    from lib_replicheck.embedders.base import COSINE, EmbedderSpec, WeightsFile
    from lib_replicheck.embedders.clip import embedder_id

    model, tag = clip_model(embedder)
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
    """Write the shards of `infos` into `store` (vectors [n, 1, dim] SHARD_DTYPE and metadata rows), one
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
                    buf, metas_buf = np.empty((end - start, info.dim), SHARD_DTYPE), []
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


def build_from_embeddings(source: str | Path, out: str | Path, opts, *, name: str | None = None,
                          title: str | None = None, description: str = "", dataset: str = "",
                          work: str | Path | None = None, overwrite: bool = False, keep_work: bool = False,
                          log: Callable[[str], None] | None = None, policy=None, publish: Callable | None = None):
    """Build a pack at `out` from published embeddings: a folder in clip-retrieval's, PD12M's or
    DataComp's layout, or a text file of URLs of such files (downloaded into the work folder first).
    `opts.embedder` names the model that made them (`clip:ViT-L-14/openai`). `publish`: what makes
    the pack of the shards, stages.publish_stage's signature (index_import.py keeps an index). Returns the
    BuildReport."""
    from lib_replicheck.builder.runner import PackTarget, WorkFolder, run
    from lib_replicheck.builder.work import fingerprint
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
    array = npz_array(layout.kind, opts.embedder)
    infos = [inspect(p, array) for p in layout.parts]
    dims = {i.dim for i in infos}
    if len(dims) != 1:
        raise EmbeddingSourceError(f"the embedding files of {source} hold rows of different widths: "
                                   + ", ".join(f"{i.part.vectors.name} {i.dim}" for i in infos[:5]))
    spec = clip_spec(opts.embedder, dims.pop())
    log(f"{layout.kind} layout: {len(infos)} file(s), {sum(i.rows for i in infos):,} rows of {spec.dim} "
        f"dimensions, made by {spec.id}")
    options = {"shard_size": opts.shard_size, "embeddings": layout.kind, "license": opts.license, "array": array}
    src = {k: v for k, v in (("dataset", dataset), ("license", opts.license or "")) if v}
    src["embeddings"] = {"layout": layout.kind, **({"array": array} if array else {}), "files": [
        {"path": f.path, "url": f.url, "size": f.size, "sha256": f.sha256} for f in fetched]
        or [{"path": f"{p.vectors.parent.name}/{p.vectors.name}"} for p in layout.parts][:1000]}
    return run(PackTarget(out, name, title, description, src),
               WorkFolder(work, fingerprint(folder, "embeddings", spec, options), chosen_by_user=chosen_by_user,
                          keep=keep_work),
               spec, lambda store: fill_shards(infos, store, max(1, opts.shard_size), log, opts.progress,
                                               license=opts.license),
               opts, log, started=started, publish=publish)
