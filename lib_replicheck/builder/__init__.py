"""The pack builder: sources -> embed (shards on disk) -> index -> pack, each stage resumable.

    python -m lib_replicheck build SOURCE --out PACK --embedder sscd [--ray] [--work DIR] ...

SOURCE is a folder of images, img2dataset webdataset shards, or a LAION-style parquet (downloaded
with img2dataset first). The work folder (default: beside the pack) keeps the downloaded images and
the embedded shards, so a killed build resumes where it stopped; the pack appears only when it is
complete and verified. Embedding runs sequentially (decoding in threads while the model runs), or on
Ray Data with an actor pool (`--ray`, local by default, `--ray-address` for a cluster).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lib_replicheck.errors import ImageError, PackError, ReplicheckError
from lib_replicheck.builder.shards import CorruptShard, ShardStore
from lib_replicheck.builder.sources import Exclusions, SourceItem

GB = 1024**3
#: PDQ is not robust to cropping, so PDQ packs also store hashes of these centre crops of each
#: image (fractions of width and height); a cosine pack stores the whole image only.
PDQ_CROPS = (1.0, 0.95, 0.9, 0.85, 0.8)
THUMB_SIZE = 256


@dataclass
class BuildOptions:
    embedder: str = "sscd"
    runtime: str = "auto"
    device: str = "cpu"
    models_dir: str | None = None
    weights: str | None = None
    offline: bool = False
    shard_size: int = 10_000
    batch: int = 32
    workers: int = 2  # decoding threads (sequential) or Ray actors
    ray: bool = False
    ray_address: str | None = None
    memory_budget: int = 4 * GB
    recall_target: float = 0.95
    max_query_ms: float = 10.0  # latency budget of one query, as autofaiss's default
    exclude: str | None = None
    license: str | None = None
    thumbnails: bool = False  # store a 256-pixel thumbnail per image in the pack
    download_processes: int = 2
    download_threads: int = 16
    download_timeout: int = 10


@dataclass
class BuildReport:
    path: Path
    count: int
    vectors: int
    skipped: list[str] = field(default_factory=list)
    index: dict = field(default_factory=dict)
    seconds: float = 0.0


def crops_for(metric: str) -> tuple[float, ...]:
    return PDQ_CROPS if metric == "hamming" else (1.0,)


def load_embedder(opts: BuildOptions):
    from lib_replicheck import embedders

    return embedders.load(opts.embedder, device=opts.device, runtime=opts.runtime, models_dir=opts.models_dir,
                          weights=opts.weights, offline=opts.offline, progress=True)


def items_of(source: str | Path, opts: BuildOptions, work: Path, log) -> Iterator[SourceItem]:
    from lib_replicheck.builder import sources

    kind = sources.detect(source)
    exclusions = Exclusions(opts.exclude)
    if kind == "parquet":
        folder = sources.parquet_download(source, work, exclusions, processes=opts.download_processes,
                                          threads=opts.download_threads, timeout=opts.download_timeout, log=log)
        items = sources.webdataset(sources.webdataset_shards(folder), opts.license)
    elif kind == "webdataset":
        items = sources.webdataset(sources.webdataset_shards(source), opts.license)
    else:
        items = sources.folder(source, opts.license)
    dropped = 0
    for item in items:
        if exclusions.excludes(item):
            dropped += 1
            continue
        yield item
    if dropped:
        log(f"exclusion list: {dropped} image(s) dropped")


def _chunks(items: Iterable[SourceItem], size: int) -> Iterator[list[SourceItem]]:
    chunk: list[SourceItem] = []
    for it in items:
        chunk.append(it)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _meta(item: SourceItem, im) -> dict:
    return {"key": item.key, "url": item.url, "caption": item.caption, "license": item.license,
            "width": im.size[0], "height": im.size[1]}


def _thumbnail(im) -> bytes:
    import io

    from PIL import Image

    t = im.copy()
    t.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    t.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def embed_items(items: list[SourceItem], embedder, crops, batch: int, pool: ThreadPoolExecutor,
                thumbnails: bool = False):
    """Vectors [rows, variants, width], metadata rows, skipped rows and thumbnails (JPEG bytes, when
    asked) of a list of items; images are decoded in the pool, a batch ahead of the model."""
    import numpy as np

    from lib_replicheck.embedders.pdq import MIN_QUALITY
    from lib_replicheck.images import centre_crop

    def decode(item):
        try:
            return item, item.open(), None
        except ImageError as e:
            return item, None, e.reason

    vectors, metas, skipped, thumbs = [], [], [], []
    batches = [items[i:i + batch] for i in range(0, len(items), batch)]
    pending = pool.map(decode, batches[0]) if batches else iter(())
    for b in range(len(batches)):
        decoded = list(pending)
        if b + 1 < len(batches):
            pending = pool.map(decode, batches[b + 1])  # decode the next batch while this one is embedded
        good = [(it, im) for it, im, err in decoded if im is not None]
        skipped += [f"{it.key}: {err}" for it, im, err in decoded if im is None]
        if not good:
            continue
        vecs = embedder.embed([centre_crop(im, c) for _, im in good for c in crops])
        vecs = vecs.reshape(len(good), len(crops), -1)
        quality = getattr(embedder, "last_quality", None)
        for j, (it, im) in enumerate(good):
            if quality and quality[j * len(crops)] < MIN_QUALITY:
                skipped.append(f"{it.key}: PDQ quality {quality[j * len(crops)]} is too low to match reliably")
                continue
            vectors.append(vecs[j])
            metas.append(_meta(it, im))
            if thumbnails:
                thumbs.append(_thumbnail(im))
    width = embedder.spec.dim // 8 if embedder.metric == "hamming" else embedder.spec.dim
    dtype = np.uint8 if embedder.metric == "hamming" else np.float32
    arr = np.stack(vectors) if vectors else np.zeros((0, len(crops), width), dtype=dtype)
    return arr.astype(dtype, copy=False), metas, skipped, thumbs


class _RayEmbed:
    """A Ray Data actor: loads the embedder once, embeds batches of items."""

    def __init__(self, opts: BuildOptions, crops):
        self.embedder = load_embedder(opts)
        self.crops = crops
        self.thumbnails = opts.thumbnails
        self.pool = ThreadPoolExecutor(2)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        items = [SourceItem(key=k, data=d if d is not None and len(d) else None, path=p or None, url=u or None,
                            caption=c or None, license=lic or None)
                 for k, d, p, u, c, lic in zip(batch["key"], batch["data"], batch["path"], batch["url"],
                                               batch["caption"], batch["license"], strict=True)]
        vectors, metas, skipped, thumbs = embed_items(items, self.embedder, self.crops, len(items), self.pool,
                                                      self.thumbnails)
        import json

        pad = [b""] * len(skipped)
        return {"vectors": np.array([v.tobytes() for v in vectors] + pad, dtype=object),
                "meta": np.array([json.dumps(m) for m in metas] + [""] * len(skipped), dtype=object),
                "thumb": np.array((thumbs or [b""] * len(metas)) + pad, dtype=object),
                "skipped": np.array([""] * len(metas) + skipped, dtype=object)}


def embed_with_ray(items: list[SourceItem], opts: BuildOptions, crops, spec):
    import json

    import numpy as np
    import ray

    if not ray.is_initialized():
        ray.init(address=opts.ray_address, num_cpus=None if opts.ray_address else max(1, opts.workers),
                 include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    rows = [{"key": it.key, "data": it.data or b"", "path": it.path or "", "url": it.url or "",
             "caption": it.caption or "", "license": it.license or ""} for it in items]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), opts.workers * 4)))
    out = ds.map_batches(_RayEmbed, fn_constructor_kwargs={"opts": opts, "crops": crops}, batch_size=opts.batch,
                         concurrency=max(1, opts.workers), num_cpus=1, batch_format="numpy")
    width = spec.dim // 8 if spec.metric == "hamming" else spec.dim
    dtype = np.uint8 if spec.metric == "hamming" else np.float32
    vectors, metas, skipped, thumbs = [], [], [], []
    for b in out.iter_batches(batch_size=None, batch_format="numpy"):
        for v, m, t, s in zip(b["vectors"], b["meta"], b["thumb"], b["skipped"], strict=True):
            if s:
                skipped.append(str(s))
            else:
                vectors.append(np.frombuffer(v, dtype=dtype).reshape(len(crops), width))
                metas.append(json.loads(m))
                thumbs.append(bytes(t))
    arr = np.stack(vectors) if vectors else np.zeros((0, len(crops), width), dtype=dtype)
    return arr, metas, skipped, thumbs if opts.thumbnails else []


def embed_stage(items: Iterable[SourceItem], store: ShardStore, opts: BuildOptions, log, embedder=None) -> object:
    """Fill the shard store; returns the embedder spec. Complete shards embedded from the same rows
    are kept (resume); one whose rows changed is embedded again, and shards past the source's end
    are dropped. `embedder`: one already loaded (else it is loaded here)."""
    from lib_replicheck.builder.work import row_digest

    if embedder is None:
        embedder = load_embedder(opts)
    spec = embedder.spec
    crops = crops_for(spec.metric)
    chunks = 0
    with ThreadPoolExecutor(max(1, opts.workers)) as pool:
        for i, chunk in enumerate(_chunks(items, opts.shard_size)):
            chunks = i + 1
            digest = row_digest(chunk)
            if store.complete(i):
                if store.source(i) == digest:
                    try:
                        store.read(i)
                        continue
                    except CorruptShard as e:
                        log(f"{e}: embedding it again")
                else:
                    log(f"shard {i:05d}: its images changed since it was embedded: embedding it again")
                store.discard(i)
            t = time.perf_counter()
            if opts.ray:
                vectors, metas, skipped, thumbs = embed_with_ray(chunk, opts, crops, spec)
            else:
                vectors, metas, skipped, thumbs = embed_items(chunk, embedder, crops, opts.batch, pool,
                                                              opts.thumbnails)
            store.write(i, vectors, metas, skipped, thumbs, source=digest)
            rate = len(chunk) / max(1e-9, time.perf_counter() - t)
            log(f"shard {i:05d}: {len(metas)} images embedded, {len(skipped)} skipped ({rate:.1f} images/s)")
    for i in store.indices():
        if i >= chunks:
            log(f"shard {i:05d}: past the end of the source: dropped")
            store.discard(i)
    return spec


def index_stage(store: ShardStore, spec, folder: Path, opts: BuildOptions, log) -> tuple[dict, int, int]:
    """Build the index from the shards into `folder`; returns (index info, images, vectors)."""
    import numpy as np

    from lib_replicheck.packs import index as faiss_index
    from lib_replicheck.packs import manifest as mf
    from lib_replicheck.builder import index_factory as fac

    shards = store.indices()
    counts = [len(store.read(i)[1]) for i in shards]
    n_items = sum(counts)
    if n_items == 0:
        raise PackError(folder, "no usable images: nothing to build a pack from")
    variants = store.read(shards[0])[0].shape[1]
    n_vectors = n_items * variants
    plan = fac.choose(n_vectors, spec.dim, spec.metric, opts.memory_budget)
    log(f"index: {plan.factory} for {n_vectors:,} vectors of {spec.dim} dimensions"
        + (f" ({'; '.join(plan.notes)})" if plan.notes else ""))
    index = fac.new_index(plan, spec.dim, with_ids=variants > 1)

    def chunks():  # (ids, vectors) in row order; ids = metadata rows
        start = 0
        for i in shards:
            vecs, metas = store.read(i)
            ids = np.repeat(np.arange(start, start + len(metas), dtype=np.int64), variants)
            yield ids, np.ascontiguousarray(vecs.reshape(len(metas) * variants, -1))
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
    reranker = None
    if plan.rerank:
        from lib_replicheck.packs.rerank import RERANK_FILE, Reranker, write_rows

        write_rows(folder / RERANK_FILE, (v for _, v in chunks()), n_vectors, spec.dim)
        reranker = Reranker(folder / RERANK_FILE, n_vectors, spec.dim, variants)
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
        log(f"index: warning: no search setting reaches recall@10 {opts.recall_target} (and finds as many "
            f"copies) within "
            f"{opts.max_query_ms:g} ms a query; kept the " + ("most accurate within the budget" if
                                                             measured["within_budget"] else "fastest"))
    faiss_index.write(index, folder / mf.INDEX_FILE)
    info = {"file": mf.INDEX_FILE, "type": plan.factory, "exact": plan.exact, "search_params": measured["params"],
            "recall_at_10": measured["recall_at_10"], "query_ms": measured["query_ms"],
            "tuned_for": {"recall_at_10": opts.recall_target, "max_query_ms": opts.max_query_ms},
            **({"copies_found": measured["copies_found"]} if "copies_found" in measured else {}),
            "variants": [{"centre_crop": c} for c in crops_for(spec.metric)]}
    if reranker is not None:
        info["rerank"] = {"file": RERANK_FILE, "dtype": "float16", "candidates": measured["candidates"]}
    return info, n_items, n_vectors


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


def build(source: str | Path, out: str | Path, opts: BuildOptions | None = None, *, name: str | None = None,
          title: str | None = None, description: str = "", dataset: str = "", work: str | Path | None = None,
          overwrite: bool = False, keep_work: bool = False, log: Callable[[str], None] | None = None) -> BuildReport:
    """Build a pack at `out` from `source`; resumable through the work folder."""
    from lib_replicheck.packs.publish import check_target
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.work import exclusions_digest, fingerprint, open_work

    opts = opts or BuildOptions()
    log = log or (lambda s: print(s, file=sys.stderr))
    started = time.perf_counter()
    out = Path(out)
    name = check_target(out, name, overwrite)
    chosen_by_user = work is not None
    work = Path(work) if work else out.parent / f".{out.name}.work"
    kind = sources.detect(source)
    embedder = load_embedder(opts)
    options = {"shard_size": opts.shard_size, "crops": list(crops_for(embedder.spec.metric)),
               "thumbnails": opts.thumbnails, "license": opts.license, "exclude": exclusions_digest(opts.exclude)}
    store = open_work(work, fingerprint(source, kind, embedder.spec, options), chosen_by_user=chosen_by_user,
                      log=log)
    if store.indices():
        log(f"resuming from {work}: {len(store.indices())} shard(s) already embedded")
    spec = embed_stage(items_of(source, opts, work, log), store, opts, log, embedder=embedder)
    source_info = {k: v for k, v in (("dataset", dataset), ("license", opts.license or "")) if v}
    report = publish_stage(store, spec, out, opts, log, name=name, title=title, description=description,
                           source=source_info, started=started)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return report


def publish_stage(store: ShardStore, spec, out: Path, opts: BuildOptions, log, *, name: str, title: str | None,
                  description: str, source: dict, started: float) -> BuildReport:
    """Index and metadata from the shards into a staging folder beside `out`, sealed and moved into
    place (packs.publish); nothing is left behind when a stage fails."""
    from lib_replicheck.packs.publish import seal, staging_dir

    tmp = staging_dir(out)
    try:
        info, count, vectors = index_stage(store, spec, tmp, opts, log)
        thumbs = metadata_stage(store, tmp)
        seal(tmp, out, name=name, title=title, description=description, source=source, spec=spec, count=count,
             vectors=vectors, index=info, extra_files=thumbs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    skipped = [s for i in store.indices() for s in store.skipped(i)]
    return BuildReport(out, count, vectors, skipped, info, time.perf_counter() - started)


def build_from_items(items: Iterable[SourceItem], embedder, out: str | Path, *, name: str | None = None,
                     title: str | None = None, description: str = "", source: dict | None = None,
                     thumbnails: bool = True, overwrite: bool = False, batch: int = 64,
                     log: Callable[[str], None] | None = None) -> BuildReport:
    """Build a pack at `out` from `items` (files, bytes or images in memory, see SourceItem) with an
    embedder already loaded, through the same stages as `build`: programs that hold their images
    (the demo, the docs' figures, benchmarks) get the packs users build. The shards go to a hidden
    work folder beside `out`, removed afterwards whatever happens."""
    from lib_replicheck.packs.publish import check_target

    log = log or (lambda s: print(s, file=sys.stderr))
    started = time.perf_counter()
    out = Path(out)
    name = check_target(out, name, overwrite)
    opts = BuildOptions(batch=batch, thumbnails=thumbnails)
    work = out.parent / f".{out.name}.work-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        store = ShardStore(work)
        spec = embed_stage(items, store, opts, log, embedder=embedder)
        return publish_stage(store, spec, out, opts, log, name=name, title=title, description=description,
                             source=dict(source or {}), started=started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["build", "build_from_items", "BuildOptions", "BuildReport", "SourceItem", "ReplicheckError"]
