"""The embed stage: source items decoded (in threads, a batch ahead of the model, or on Ray Data
actors), embedded with their PDQ crop variants, filtered by PDQ quality, and written as shards.
Flat images (images.is_flat) given to a learned descriptor are indexed, and counted for a warning."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Iterable, Iterator

from lib_replicheck.errors import ImageError
from lib_replicheck.builder.options import THUMB_SIZE, BuildOptions, crops_for, load_embedder
from lib_replicheck.builder.shards import CorruptShard, ShardStore
from lib_replicheck.builder.sources import SourceItem


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
                thumbnails: bool = False, progress=None, flat: list[str] | None = None):
    """Vectors [rows, variants, width], metadata rows, skipped rows and thumbnails (JPEG bytes, when
    asked) of a list of items; images are decoded in the pool, a batch ahead of the model.
    `progress(n)` is called after each batch of n items; the keys of flat images indexed are added
    to `flat` when it is given."""
    import numpy as np

    from lib_replicheck.images import centre_crop, is_flat

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
            if progress:
                progress(len(decoded))
            continue
        vecs = embedder.embed([centre_crop(im, c) for _, im in good for c in crops])
        vecs = vecs.reshape(len(good), len(crops), -1)
        poor = embedder.unjudged()  # e.g. a PDQ hash of too low a quality: never matched reliably
        for j, (it, im) in enumerate(good):
            if j * len(crops) in poor:
                skipped.append(f"{it.key}: {poor[j * len(crops)].split(';')[0]}")
                continue
            vectors.append(vecs[j])
            metas.append(_meta(it, im))
            if flat is not None and is_flat(im):
                flat.append(it.key)
            if thumbnails:
                thumbs.append(_thumbnail(im))
        if progress:
            progress(len(decoded))
    width = embedder.spec.dim // 8 if embedder.metric == "hamming" else embedder.spec.dim
    dtype = np.uint8 if embedder.metric == "hamming" else np.float32
    arr = np.stack(vectors) if vectors else np.zeros((0, len(crops), width), dtype=dtype)
    return arr.astype(dtype, copy=False), metas, skipped, thumbs


class _RayEmbed:
    """A Ray Data actor: loads the embedder once, embeds batches of items."""

    def __init__(self, opts: BuildOptions, crops, learned: bool = False):
        self.embedder = load_embedder(opts)
        self.crops = crops
        self.thumbnails = opts.thumbnails
        self.learned = learned
        self.pool = ThreadPoolExecutor(2)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        items = [SourceItem(key=k, data=d if d is not None and len(d) else None, path=p or None, url=u or None,
                            caption=c or None, license=lic or None)
                 for k, d, p, u, c, lic in zip(batch["key"], batch["data"], batch["path"], batch["url"],
                                               batch["caption"], batch["license"], strict=True)]
        flat: list[str] | None = [] if self.learned else None
        vectors, metas, skipped, thumbs = embed_items(items, self.embedder, self.crops, len(items), self.pool,
                                                      self.thumbnails, flat=flat)
        import json

        pad = [b""] * len(skipped)
        flat_keys = set(flat or ())
        return {"vectors": np.array([v.tobytes() for v in vectors] + pad, dtype=object),
                "meta": np.array([json.dumps(m) for m in metas] + [""] * len(skipped), dtype=object),
                "thumb": np.array((thumbs or [b""] * len(metas)) + pad, dtype=object),
                "skipped": np.array([""] * len(metas) + skipped, dtype=object),
                "flat": np.array([m["key"] in flat_keys for m in metas] + [False] * len(skipped), dtype=bool)}


def embed_with_ray(items: list[SourceItem], opts: BuildOptions, crops, spec, flat: list[str] | None = None):
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
    out = ds.map_batches(_RayEmbed, fn_constructor_kwargs={"opts": opts, "crops": crops, "learned": flat is not None},
                         batch_size=opts.batch,
                         concurrency=max(1, opts.workers), num_cpus=1, batch_format="numpy")
    width = spec.dim // 8 if spec.metric == "hamming" else spec.dim
    dtype = np.uint8 if spec.metric == "hamming" else np.float32
    vectors, metas, skipped, thumbs = [], [], [], []
    for b in out.iter_batches(batch_size=None, batch_format="numpy"):
        for v, m, t, s, f in zip(b["vectors"], b["meta"], b["thumb"], b["skipped"], b["flat"], strict=True):
            if s:
                skipped.append(str(s))
            else:
                vectors.append(np.frombuffer(v, dtype=dtype).reshape(len(crops), width))
                metas.append(json.loads(m))
                thumbs.append(bytes(t))
                if f and flat is not None:
                    flat.append(metas[-1]["key"])
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
    crops = crops_for(spec.metric, opts.centre_crops)
    flat: list[str] | None = [] if embedder.withholds_flat else None
    chunks = 0
    with ThreadPoolExecutor(max(1, opts.workers)) as pool:
        for i, chunk in enumerate(_chunks(items, opts.shard_size)):
            chunks = i + 1
            digest = row_digest(chunk)
            if store.complete(i):
                if store.source(i) == digest:
                    try:
                        store.read(i)
                        if opts.progress:
                            opts.progress(len(chunk))  # kept from an earlier run
                        continue
                    except CorruptShard as e:
                        log(f"{e}: embedding it again")
                else:
                    log(f"shard {i:05d}: its images changed since it was embedded: embedding it again")
                store.discard(i)
            t = time.perf_counter()
            if opts.ray:
                vectors, metas, skipped, thumbs = embed_with_ray(chunk, replace(opts, progress=None), crops, spec,
                                                                 flat)
                if opts.progress:
                    opts.progress(len(chunk))
            else:
                vectors, metas, skipped, thumbs = embed_items(chunk, embedder, crops, opts.batch, pool,
                                                              opts.thumbnails, progress=opts.progress, flat=flat)
            store.write(i, vectors, metas, skipped, thumbs, source=digest)
            rate = len(chunk) / max(1e-9, time.perf_counter() - t)
            log(f"shard {i:05d}: {len(metas)} images embedded, {len(skipped)} skipped ({rate:.1f} images/s)")
    for i in store.indices():
        if i >= chunks:
            log(f"shard {i:05d}: past the end of the source: dropped")
            store.discard(i)
    if flat:
        log(flat_warning(flat))
    return spec


def flat_warning(keys: list[str], named: int = 5) -> str:
    """The builder's warning about the flat images it indexed: how many, and the first few."""
    from lib_replicheck.errors import clean_text

    names = ", ".join(clean_text(k, 100) for k in keys[:named]) + (", ..." if len(keys) > named else "")
    return (f"warning: {len(keys)} flat image(s) indexed ({names}): plain colours, smooth gradients or mostly "
            "transparent pictures, which a learned descriptor places close to every other flat image; checks "
            "of flat images get no verdict from it")
