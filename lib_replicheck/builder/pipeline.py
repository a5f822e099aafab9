"""The builder's two entries: sources -> embed (shards on disk) -> index -> pack, each stage resumable.

    python -m lib_replicheck build SOURCE --out PACK --embedder sscd [--ray] [--work DIR] ...

SOURCE is a folder of images, img2dataset webdataset shards, or a LAION-style parquet (its images
fetched first, as a recipe's are: builder/fetch.py). The work folder (default: beside the pack) keeps the downloaded images and
the embedded shards, so a killed build resumes where it stopped; the pack appears only when it is
complete and verified. Embedding runs sequentially (decoding in threads while the model runs), or on
Ray Data with an actor pool (`--ray`, local by default, `--ray-address` for a cluster).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lib_replicheck.builder.options import DEFAULT_BACKGROUND_ROWS, BuildOptions, BuildReport, load_embedder
from lib_replicheck.builder.runner import PackTarget, WorkFolder, embedded, run, shard_options
from lib_replicheck.builder.sources import Exclusions, SourceItem
from lib_replicheck.errors import ReplicheckError


#: How often `build FILE.parquet` says how far the fetch of its images is.
FETCH_LOG_SECONDS = 60


def items_of(source: str | Path, opts: BuildOptions, work: Path, log) -> Iterator[SourceItem]:
    from lib_replicheck.builder import sources

    kind = sources.detect(source)
    exclusions = Exclusions(opts.exclude)
    if kind == "parquet":
        folder = parquet_images(source, work, exclusions, opts, log)
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


def parquet_images(parquet: str | Path, work: Path, exclusions: Exclusions, opts: BuildOptions, log) -> Path:
    """The images of a LAION-style parquet (URL, TEXT, and hash and LICENSE when present) fetched into
    webdataset shards under `work`, as a recipe's are (builder/fetch.py: bounded, in a process of its
    own, resumable); rows on the exclusion list are dropped before anything is fetched. The parquet
    is read a batch at a time within fetch_lists' bounds. Returns the shard folder."""
    import pyarrow.parquet as pq

    from lib_replicheck.builder import fetch, fetch_lists

    if fetch.fetched(work) is not None:
        log(f"images already downloaded in {work / fetch.IMAGES}")
        return work / fetch.IMAGES
    try:
        names = pq.read_schema(parquet).names
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types
        raise ReplicheckError(f"{parquet}: not a readable parquet file ({str(e)[:300]})") from None
    columns = {"url": "URL", "caption": "TEXT", "hash": "hash",
               "license": next((c for c in ("LICENSE", "license") if c in names), "LICENSE")}
    rows = fetch_lists.rows_file(work, "parquet")
    n, excluded = fetch_lists.collect_rows([Path(parquet)], "parquet", columns, rows, optional=("hash", "license"),
                                           exclusions=exclusions, where=None)  # ListError names the file
    if exclusions:
        log(f"exclusion list: {excluded} of {n + excluded} rows dropped before downloading")
    if n == 0:
        raise ReplicheckError(f"{parquet}: no rows with a URL to fetch")
    shown = [-FETCH_LOG_SECONDS]

    def progress(done: int, total: int, line: str) -> None:  # a line a minute while the fetch runs
        if time.monotonic() - shown[0] >= FETCH_LOG_SECONDS:
            shown[0] = time.monotonic()
            log(f"fetch: {done:,} of {total:,} rows done ({line})")

    stats = fetch.fetch_images(rows, n, work, fmt="parquet", threads=opts.download_threads,
                               processes=opts.download_processes, timeout=opts.download_timeout, image_size=0,
                               who=str(parquet), progress=progress)
    log(f"img2dataset: {stats['ok']} images downloaded, {stats['failed']} rows failed "
        f"({'; '.join(f'{k}: {v}' for k, v in stats['errors'].items()) or 'no errors'})")
    return work / fetch.IMAGES


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
    from lib_replicheck.builder.work import exclusions_digest, fingerprint

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
    options = shard_options(opts, embedder.spec.metric, exclusions_digest(opts.exclude))
    folder = WorkFolder(work, fingerprint(source, kind, embedder.spec, options), chosen_by_user=chosen_by_user,
                        keep=keep_work)
    background = None if not opts.background else (
        lambda: embed_background(items_of(opts.background, BuildOptions(), work / "background", log), embedder,
                                 opts.background_size, opts.batch, log))
    source_info = {k: v for k, v in (("dataset", dataset), ("license", opts.license or "")) if v}
    return run(PackTarget(out, name, title, description, source_info), folder, embedder.spec,
               embedded(items_of(source, opts, work, log), embedder, opts, log), opts, log, started=started,
               background=background)


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
    rows = None if background is None else (lambda: embed_background(background, embedder, background_size, batch, log))
    return run(PackTarget(out, name, title, description, dict(source or {})),
               WorkFolder(out.parent / f".{out.name}.work-{os.getpid()}"), embedder.spec,
               embedded(items, embedder, opts, log), opts, log, started=started, background=rows)
