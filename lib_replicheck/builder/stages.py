"""The stages after embedding: the index (planned, trained, filled and tuned), the metadata and
thumbnails in row order, and the publish of the finished pack (packs.publish)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lib_replicheck.errors import PackError
from lib_replicheck.builder.options import GB, BuildOptions, BuildReport, crops_for
from lib_replicheck.builder.shards import ShardStore


def index_stage(store: ShardStore, spec, folder: Path, opts: BuildOptions, log) -> tuple[dict, int, int]:
    """Build the index from the shards into `folder`; returns (index info, images, vectors)."""
    import numpy as np

    from lib_replicheck.packs import index_write as faiss_index
    from lib_replicheck.packs import manifest as mf
    from lib_replicheck.builder import index_factory as fac

    shards = store.indices()
    n_items = meta_bytes = 0
    for i in shards:
        metas = store.read(i)[1]
        n_items += len(metas)
        meta_bytes += sum(metadata_row_bytes(m) for m in metas)
        if store.thumbs_dir(i).is_dir():  # thumbnails are copied into the pack as they are
            meta_bytes += sum(f.stat().st_size for f in store.thumbs_dir(i).glob("*.jpg"))
    if n_items == 0:
        raise PackError(folder, "no usable images: nothing to build a pack from")
    variants = store.read(shards[0])[0].shape[1]
    n_vectors = n_items * variants
    plan = fac.choose(n_vectors, spec.dim, spec.metric, opts.memory_budget, opts.disk_budget, opts.index_design,
                      metadata_bytes=meta_bytes)
    log(f"index: {plan.factory} for {n_vectors:,} vectors of {spec.dim} dimensions"
        + (f" ({'; '.join(plan.notes)})" if plan.notes else ""))
    index = fac.new_index(plan, spec.dim, with_ids=variants > 1)

    def chunks():  # (ids, vectors) in row order; ids = metadata rows
        start = 0
        for i in shards:
            vecs, metas = store.read(i)
            ids = np.repeat(np.arange(start, start + len(metas), dtype=np.int64), variants)
            flat = vecs.reshape(len(metas) * variants, -1)
            yield ids, np.ascontiguousarray(flat, dtype=np.float32 if flat.dtype == np.float16 else flat.dtype)
            start += len(metas)

    if not plan.exact:
        rng = np.random.default_rng(0)
        take = min(plan.train_size, n_vectors)
        sample = np.concatenate([v for _, v in chunks()])[np.sort(rng.choice(n_vectors, take, replace=False))] \
            if n_vectors <= 2_000_000 else _sample_chunks(chunks(), take, n_vectors, rng)
        log(f"index: training on {len(sample):,} vectors")
        fac.train(index, plan, sample)
    added, t, shown = 0, time.perf_counter(), time.perf_counter()
    for ids, vecs in chunks():
        faiss_index.add(index, vecs, ids if variants > 1 or not plan.exact else None)
        added += len(vecs)
        if time.perf_counter() - shown > 60 or added == n_vectors:
            log(f"index: {added:,} of {n_vectors:,} vectors added ({time.perf_counter() - t:.0f} s)")
            shown = time.perf_counter()
    reranker = rerank_info = None
    if plan.rerank:
        from lib_replicheck.packs import rerank as rr

        dtype, name, t = plan.rerank_dtype, rr.FILES[plan.rerank_dtype], time.perf_counter()
        value_range = rr.sq4_range(sample) if dtype == "sq4" else None
        codebook = rr.pq_train(sample, spec.dim // 8) if dtype == "pq" else None
        if codebook is not None:
            np.save(folder / rr.PQ_CODEBOOK, codebook)
        rr.write_rows(folder / name, (v for _, v in chunks()), n_vectors, spec.dim, dtype, value_range, codebook)
        log(f"index: re-ranking rows ({dtype}) written ({time.perf_counter() - t:.0f} s)")
        reranker = rr.Reranker(folder / name, n_vectors, spec.dim, variants, dtype, value_range, codebook)
        rerank_info = {"file": name, "dtype": dtype, **({"range": list(value_range)} if value_range else {}),
                       **({"codebook": rr.PQ_CODEBOOK} if codebook is not None else {})}
    # recall@10 against exact search for queries drawn from the data, each left out of its own
    # results (as if held out: the pack keeps every image, and a query's own vector is no neighbour)
    rng = np.random.default_rng(1)
    all_q = np.concatenate([v for _, v in chunks()]) if n_vectors <= 200_000 else None
    qidx = np.sort(rng.choice(n_vectors, min(200, n_vectors), replace=False))
    queries = all_q[qidx] if all_q is not None else _pick(chunks(), qidx)
    own = qidx // variants
    _, truth = fac.exact_topk(queries, chunks(), 10 + variants, spec.metric)
    truth = fac.leave_out(truth, own, 10)
    measured = fac.tune(index, plan, queries, truth, target=opts.recall_target, reranker=reranker, own=own,
                         variants=variants, max_ms=None if plan.exact else opts.max_query_ms)
    log(f"index: recall@10 {measured['recall_at_10']:.3f} against exact search, "
        f"{measured['query_ms']:.2f} ms per query, params {measured['params'] or 'exact'}"
        + (f", {measured['candidates']} candidates re-ranked" if reranker is not None else "")
        + (f"; finds {measured['copies_found']:.1%} of edited-copy stand-ins at similarity "
           f"{fac.COPY_SIMILARITY} first" if "copies_found" in measured else ""))
    if not measured["reached"] or not measured["within_budget"]:
        from lib_replicheck.builder.tuning import COPY_TARGET

        log(f"index: warning: no search setting reaches recall@10 {opts.recall_target} and finds "
            f"{COPY_TARGET:.1%} of the edited-copy stand-ins first within {opts.max_query_ms:g} ms a query; "
            "kept the " + ("most accurate within the budget" if measured["within_budget"] else "fastest"))
    faiss_index.write(index, folder / mf.INDEX_FILE)
    info = {"file": mf.INDEX_FILE, "type": plan.factory, "design": plan.design, "exact": plan.exact,
            "search_params": measured["params"],
            "recall_at_10": measured["recall_at_10"], "query_ms": measured["query_ms"],
            "tuned_for": {"recall_at_10": opts.recall_target, "max_query_ms": opts.max_query_ms,
                          **({"disk_budget_gb": round(opts.disk_budget / GB, 3)} if opts.disk_budget else {})},
            **({"copies_found": measured["copies_found"]} if "copies_found" in measured else {}),
            "variants": [{"centre_crop": c} for c in crops_for(spec.metric, opts.centre_crops)]}
    if reranker is not None:
        info["rerank"] = {**rerank_info, "candidates": measured["candidates"]}
    return info, n_items, n_vectors


METADATA_ROW_BYTES = 24  # SQLite's record header, row id and page overhead per row, measured (tests)
METADATA_KEYS = ("url", "caption", "width", "height", "key", "license")  # the shard fields metadata keeps


def metadata_row_bytes(meta: dict) -> int:
    """What one shard row will take in metadata.sqlite, estimated from its values' lengths, so that
    the disk budget covers the whole pack (within 10% for LAION-sized rows, tests/test_fastscan.py)."""
    return METADATA_ROW_BYTES + sum(len(v.encode("utf-8", "replace")) if isinstance(v, str) else 4
                                    for k, v in meta.items() if v is not None and k in METADATA_KEYS)


def _sample_chunks(chunks, take, total, rng):
    import numpy as np

    keep = set(rng.choice(total, take, replace=False).tolist())
    out, pos = [], 0
    for _, v in chunks:
        rows = [r - pos for r in range(pos, pos + len(v)) if r in keep]
        out.append(v[rows])
        pos += len(v)
    return np.concatenate(out)


def _pick(chunks, positions):
    import numpy as np

    want, out, pos = set(positions.tolist()), [], 0
    for _, v in chunks:
        rows = [r - pos for r in range(pos, pos + len(v)) if r in want]
        out.append(v[rows])
        pos += len(v)
    return np.concatenate(out)


def metadata_stage(store: ShardStore, folder: Path) -> list[str]:
    """metadata.sqlite (and thumbnails) in row order; returns the thumbnail files."""
    from lib_replicheck.packs import manifest as mf
    from lib_replicheck.packs.metadata import Item, MetadataWriter

    writer = MetadataWriter(folder / mf.METADATA_FILE)
    row, files = 0, []
    for i in store.indices():
        _, metas = store.read(i)
        thumbs = store.thumbs_dir(i)
        items = []
        for j, m in enumerate(metas):
            thumb = None
            if (thumbs / f"{j}.jpg").is_file():
                thumb = f"thumbnails/{row + j}.jpg"
                (folder / "thumbnails").mkdir(exist_ok=True)
                shutil.copyfile(thumbs / f"{j}.jpg", folder / thumb)
                files.append(thumb)
            items.append(Item(row + j, m.get("url"), m.get("caption"), m.get("width"), m.get("height"), m.get("key"),
                              m.get("license"), thumb))
        writer.add(items)
        row += len(metas)
    writer.close()
    return files


def publish_stage(store: ShardStore, spec, out: Path, opts: BuildOptions, log, *, name: str, title: str | None,
                  description: str, source: dict, started: float, background=None) -> BuildReport:
    """Index and metadata from the shards into a staging folder beside `out`, sealed and moved into
    place (packs.publish); nothing is left behind when a stage fails."""
    from lib_replicheck.packs.publish import seal, staging_dir

    tmp = staging_dir(out)
    try:
        info, count, vectors = index_stage(store, spec, tmp, opts, log)
        thumbs = metadata_stage(store, tmp)
        seal(tmp, out, name=name, title=title, description=description, source=source, spec=spec, count=count,
             vectors=vectors, index=info, extra_files=thumbs, background=background, log=log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    skipped = [s for i in store.indices() for s in store.skipped(i)]
    return BuildReport(out, count, vectors, skipped, info, time.perf_counter() - started)
