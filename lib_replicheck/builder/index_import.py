"""An existing clip-retrieval / autofaiss index folder as a pack: `build --embeddings FOLDER` where
FOLDER holds the index (`knn.index`, autofaiss's name, or `image.index`, clip-retrieval's) beside
`metadata/metadata_N.parquet` and, optionally, the `img_emb/img_emb_N.npy` it was built from.

The index is a stranger's file, so faiss never sees it before packs/index_check.py has walked its layout
against the row count of the metadata and the model's width. When that validator accepts its type,
the index searches by inner product (cosine on CLIP's unit rows) and holds rows 0..n-1 in metadata
order, it is kept as it is: copied into the pack, its recall@10 measured against exact search, and
sealed like any pack (seal re-opens and verifies it). Otherwise a new index is built from its
vectors: the img_emb files where the folder has them, else what the accepted index gives back
(`reconstruct_n`, exact for flat indexes, the codes' approximation for PQ). Either way the rows go
through the same reading (finite, non-zero, normalised), shards and metadata as published embeddings
(embedding_source.build_from_embeddings).
"""

from __future__ import annotations

import re
import shutil
import time
from functools import partial
from pathlib import Path

from lib_replicheck.builder.embedding_layouts import MAX_EMBEDDING_BYTES, MAX_PARTS, EmbeddingSourceError

INDEX_NAMES = ("knn.index", "image.index")
_META = re.compile(r"metadata_(\d{1,9})\.parquet")
#: Rows given back by the index at once when its vectors are written out (24 MB of 768 float32).
RECONSTRUCT_ROWS = 8192


def find_index(folder: str | Path) -> Path | None:
    """The index file of an index folder, or None when `folder` is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return next((folder / n for n in INDEX_NAMES if (folder / n).is_file()), None)


def metadata_files(folder: Path) -> list[Path]:
    """`metadata/metadata_N.parquet` in numeric order: the order autofaiss added the rows in."""
    found = sorted(((int(m.group(1)), p) for p in (folder / "metadata").glob("metadata_*.parquet")
                    if (m := _META.fullmatch(p.name))), key=lambda t: t[0])
    if not found:
        raise EmbeddingSourceError(f"index folder {folder}: no metadata/metadata_N.parquet beside its index")
    if len(found) > MAX_PARTS:
        raise EmbeddingSourceError(f"index folder {folder}: more than {MAX_PARTS:,} metadata files")
    return [p for _, p in found]


def model_dim(embedder: str) -> int:
    """The output width of the CLIP model named by `embedder`, from open_clip's configuration."""
    import open_clip

    from lib_replicheck.builder.embedding_source import clip_model

    model = clip_model(embedder)[0]
    cfg = open_clip.get_model_config(model)
    if not cfg:
        raise EmbeddingSourceError(f"--embedder {embedder}: open_clip knows no model {model}")
    return int(cfg["embed_dim"])


def validated(path: Path, dim: int, count: int):
    """(index, None) when packs/index_check.py accepts the file and it can be kept as it is; (index, reason)
    when it is accepted but cannot be kept (its vectors can still be read back); (None, reason)."""
    import faiss

    from lib_replicheck.embedders.base import COSINE
    from lib_replicheck.errors import PackError
    from lib_replicheck.packs import index_search as faiss_index

    size = path.stat().st_size
    if size > MAX_EMBEDDING_BYTES:
        return None, f"{size:,} bytes (at most {MAX_EMBEDDING_BYTES:,})"
    try:
        index = faiss_index.read(path, COSINE, dim, count)  # mapped when large, as packs are
    except PackError as e:
        return None, f"{e.reason}; checked against the {count:,} rows of its metadata and {dim} dimensions"
    kind = faiss_index.describe(index)
    if kind.startswith("IndexIDMap"):
        return None, f"{kind} maps rows to ids of its own, not to the metadata's rows"
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return index, f"{kind} searching by L2 distance (packs score by inner product)"
    return index, None


def write_vectors(index, metas: list[Path], folder: Path, log) -> Path:
    """The index's vectors in clip-retrieval's layout under `folder` (img_emb_N.npy as float32 rows,
    written RECONSTRUCT_ROWS at a time, beside a copy of metadata_N.parquet), row i of one file the
    row i of the other; an index that cannot give its vectors back is an error naming it."""
    import numpy as np

    from lib_replicheck.builder.embedding_layouts import open_parquet

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    start = 0
    try:
        ivf = _ivf(index)
        if ivf is not None:
            ivf.make_direct_map()
        for n, meta in enumerate(metas):
            rows = open_parquet(meta).metadata.num_rows
            out = np.lib.format.open_memmap(folder / "img_emb" / f"img_emb_{n}.npy", mode="w+", dtype="<f4",
                                            shape=(rows, index.d))
            for a in range(0, rows, RECONSTRUCT_ROWS):
                b = min(rows, a + RECONSTRUCT_ROWS)
                out[a:b] = index.reconstruct_n(start + a, b - a)
            out.flush()
            del out
            shutil.copyfile(meta, folder / "metadata" / f"metadata_{n}.parquet")
            start += rows
    except RuntimeError as e:
        raise EmbeddingSourceError(f"the index cannot give its vectors back to rebuild it "
                                   f"({str(e).splitlines()[0][:200]})") from None
    log(f"{start:,} vectors read back from the index")
    return folder


def _ivf(index):
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def import_index(source: str | Path, out: str | Path, opts, *, work: str | Path | None = None, log=None, **kw):
    """Build a pack at `out` from the index folder `source` (see the module's docstring); `kw` as
    build_from_embeddings takes them. Returns the BuildReport."""
    import sys

    from lib_replicheck.builder.embedding_layouts import open_parquet
    from lib_replicheck.builder.embedding_source import build_from_embeddings

    log = log or (lambda s: print(s, file=sys.stderr))
    folder = Path(source)
    path = find_index(folder)
    metas = metadata_files(folder)
    count = sum(open_parquet(m).metadata.num_rows for m in metas)
    dim = model_dim(opts.embedder)
    index, reason = validated(path, dim, count)
    work = Path(work) if work else Path(out).parent / f".{Path(out).name}.work"
    if (folder / "img_emb").is_dir():
        vectors = folder
    elif index is not None:
        vectors = write_vectors(index, metas, work / "vectors", log)
    else:
        raise EmbeddingSourceError(f"index file {path}: cannot be used ({reason}), and the folder has no "
                                   "img_emb/ files to build a new index from")
    if reason is None:
        log(f"index file {path.name}: {_kind(index)} of {count:,} vectors, kept as it is")
        kept = path
    else:
        log(f"index file {path.name}: {reason}; a new index is built from its vectors")
        kept = None
    report = build_from_embeddings(vectors, out, opts, work=work / "build", log=log, **kw,
                                   publish=partial(publish_kept, kept=kept) if kept is not None else None)
    if not kw.get("keep_work"):
        shutil.rmtree(work, ignore_errors=True)
    return report


def _kind(index) -> str:
    from lib_replicheck.packs.index_search import describe

    return describe(index)


def publish_kept(store, spec, out: Path, opts, log, *, kept: Path, name: str, title: str | None,
                 description: str, source: dict, started: float):
    """The pack of `store`'s rows with the index file `kept` as its index: copied into the staging
    folder, checked and measured there (recall@10 of 200 of its own rows, each left out of its own
    results, against exact search), then the metadata and the seal, as stages.publish_stage does."""
    import numpy as np

    from lib_replicheck.builder.options import BuildReport, crops_for
    from lib_replicheck.builder.stages import metadata_stage
    from lib_replicheck.builder.tuning import exact_topk, leave_out
    from lib_replicheck.packs import index_search as faiss_index
    from lib_replicheck.packs import manifest as mf
    from lib_replicheck.packs.publish import seal, staging_dir

    tmp = staging_dir(out)
    try:
        shutil.copyfile(kept, tmp / mf.INDEX_FILE)
        count = sum(len(store.read(i)[1]) for i in store.indices())
        index = faiss_index.read(tmp / mf.INDEX_FILE, spec.metric, spec.dim, count)

        def chunks():
            start = 0
            for i in store.indices():
                vecs, metas = store.read(i)
                yield (np.arange(start, start + len(metas), dtype=np.int64),
                       np.asarray(vecs.reshape(len(metas), -1), dtype=np.float32))
                start += len(metas)

        own = np.sort(np.random.default_rng(1).choice(count, min(200, count), replace=False))
        queries = np.concatenate([v for _, v in chunks()])[own] if count <= 200_000 else \
            np.concatenate([v[np.isin(ids, own)] for ids, v in chunks()])
        truth = leave_out(exact_topk(queries, chunks(), 11, spec.metric)[1], own, 10)
        t = time.perf_counter()
        got = leave_out(faiss_index.search(index, queries, 11)[2], own, 10)
        query_ms = (time.perf_counter() - t) * 1000 / len(queries)
        recall = float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum())
                                for a, b in zip(got, truth)]))
        log(f"index: kept {faiss_index.describe(index)}; recall@10 {recall:.3f} against exact search")
        info = {"file": mf.INDEX_FILE, "type": faiss_index.describe(index), "design": "imported",
                "exact": faiss_index.describe(index).startswith("IndexFlat"), "search_params": {},
                "recall_at_10": round(recall, 4), "query_ms": round(query_ms, 3),
                "imported_from": kept.name, "variants": [{"centre_crop": c} for c in crops_for(spec.metric)]}
        thumbs = metadata_stage(store, tmp)
        seal(tmp, out, name=name, title=title, description=description, source=source, spec=spec, count=count,
             vectors=count, index=info, extra_files=thumbs, log=log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildReport(out, count, count, [], info, time.perf_counter() - started)
