"""The builder's two entries: sources -> embed (shards on disk) -> index -> pack, each stage resumable.

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
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lib_replicheck.builder.embed import embed_stage
from lib_replicheck.builder.options import (DEFAULT_BACKGROUND_ROWS, BuildOptions, BuildReport, crops_for,
                                            load_embedder)
from lib_replicheck.builder.shards import ShardStore
from lib_replicheck.builder.sources import Exclusions, SourceItem
from lib_replicheck.builder.stages import publish_stage
from lib_replicheck.errors import ReplicheckError


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


def check_background(embedder) -> None:
    """A background set is for similarity descriptors (before anything long runs)."""
    if embedder.spec.metric == "hamming":
        raise ReplicheckError(f"--background: score normalisation is for similarity descriptors such as SSCD, "
                              f"not {embedder.spec.id}")


def embed_background(items: Iterable[SourceItem], embedder, limit: int, batch: int, log) -> object | None:
    """Vectors of the first `limit` readable images of `items` (a background set, see
    packs/background.py): float32 [n, dim], or None when there are none. Unreadable images are
    skipped and counted."""
    import numpy as np

    from lib_replicheck.errors import ImageError
    from lib_replicheck.packs import background as bg

    check_background(embedder)
    limit = max(1, min(int(limit), bg.MAX_ROWS))
    out, pending, skipped, done = [], [], 0, 0
    for item in items:
        try:
            pending.append(item.open())
        except ImageError:
            skipped += 1
            continue
        if len(pending) >= batch or done + len(pending) >= limit:
            out.append(np.asarray(embedder.embed(pending), dtype=np.float32))
            done += len(pending)
            pending = []
            if done >= limit:
                break
    if pending:
        out.append(np.asarray(embedder.embed(pending), dtype=np.float32))
    rows = np.concatenate(out)[:limit] if out else None
    log(f"background: {0 if rows is None else len(rows)} images embedded"
        + (f", {skipped} unreadable skipped" if skipped else ""))
    return rows


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
    if opts.background:
        check_background(embedder)
        sources.detect(opts.background)  # a source that is not one is refused before the long embedding
    options = {"shard_size": opts.shard_size, "crops": list(crops_for(embedder.spec.metric, opts.centre_crops)),
               "thumbnails": opts.thumbnails, "license": opts.license, "exclude": exclusions_digest(opts.exclude)}
    store = open_work(work, fingerprint(source, kind, embedder.spec, options), chosen_by_user=chosen_by_user,
                      log=log)
    if store.indices():
        log(f"resuming from {work}: {len(store.indices())} shard(s) already embedded")
    spec = embed_stage(items_of(source, opts, work, log), store, opts, log, embedder=embedder)
    background = None
    if opts.background:
        background = embed_background(items_of(opts.background, BuildOptions(), work / "background", log), embedder,
                                      opts.background_size, opts.batch, log)
    source_info = {k: v for k, v in (("dataset", dataset), ("license", opts.license or "")) if v}
    report = publish_stage(store, spec, out, opts, log, name=name, title=title, description=description,
                           source=source_info, started=started, background=background)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return report


def build_from_items(items: Iterable[SourceItem], embedder, out: str | Path, *, name: str | None = None,
                     title: str | None = None, description: str = "", source: dict | None = None,
                     thumbnails: bool = True, overwrite: bool = False, batch: int = 64,
                     centre_crops: tuple[float, ...] = (), background: Iterable[SourceItem] | None = None,
                     background_size: int = DEFAULT_BACKGROUND_ROWS, log: Callable[[str], None] | None = None) -> BuildReport:
    """Build a pack at `out` from `items` (files, bytes or images in memory, see SourceItem) with an
    embedder already loaded, through the same stages as `build`: programs that hold their images
    (the demo, the docs' figures, benchmarks) get the packs users build. The shards go to a hidden
    work folder beside `out`, removed afterwards whatever happens. `background`: images outside the
    pack for score normalisation (at most `background_size`, see packs/background.py)."""
    from lib_replicheck.packs.publish import check_target

    log = log or (lambda s: print(s, file=sys.stderr))
    started = time.perf_counter()
    out = Path(out)
    name = check_target(out, name, overwrite)
    opts = BuildOptions(batch=batch, thumbnails=thumbnails, centre_crops=tuple(centre_crops))
    if background is not None:
        check_background(embedder)
    work = out.parent / f".{out.name}.work-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        store = ShardStore(work)
        spec = embed_stage(items, store, opts, log, embedder=embedder)
        rows = None if background is None else embed_background(background, embedder, background_size, batch, log)
        return publish_stage(store, spec, out, opts, log, name=name, title=title, description=description,
                             source=dict(source or {}), started=started, background=rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
