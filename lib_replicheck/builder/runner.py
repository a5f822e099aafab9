"""One build as its stages, composed in one place as clip-retrieval's runner composes its reader,
mapper and writer: a reader (SourceItems, or published vectors) and an embedder fill the shard
store of a work folder (the writer), then the index is built and the pack published
(stages.publish_stage).

Each entry says only what differs and calls `run`: `pipeline.build` (a source on disk, resumable),
`pipeline.build_from_items` (images a program holds, a private work folder), `build_recipe.get_recipe`
(a recipe's fetched images) and `embedding_source.build_from_embeddings` (vectors already made).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from lib_replicheck.builder.options import BuildOptions, BuildReport, crops_for
from lib_replicheck.builder.shards import ShardStore
from lib_replicheck.builder.work import Fingerprint


@dataclass
class PackTarget:
    """The pack a build publishes: where, its name, and what it says of itself and its source."""

    out: Path
    name: str
    title: str | None = None
    description: str = ""
    source: dict = field(default_factory=dict)


@dataclass
class WorkFolder:
    """Where the shards wait between the embedding and the index."""

    path: Path
    #: what its shards must have been made with to be reused (work.py); None: a private folder for
    #: this run alone, emptied first and removed afterwards whatever happens
    fingerprint: Fingerprint | None = None
    chosen_by_user: bool = False  # `--work DIR`: refused, never emptied, when made for another build
    keep: bool = False  # left after the pack is published (`--keep-work`, or a caller that removes more)


def shard_options(opts: BuildOptions, metric: str, exclude: str | None = None) -> dict:
    """The options that change what a shard holds, as a work folder's fingerprint records them;
    `exclude`: the digest of the exclusion list (work.exclusions_digest)."""
    return {"shard_size": opts.shard_size, "crops": list(crops_for(metric, opts.centre_crops)),
            "thumbnails": opts.thumbnails, "license": opts.license, "exclude": exclude}


def embedded(items: Iterable, embedder, opts: BuildOptions, log) -> Callable[[ShardStore], object]:
    """The fill of an image build: reader (`items`) -> embedder -> writer (the shard store)."""
    from lib_replicheck.builder.embed import embed_stage

    return lambda store: embed_stage(items, store, opts, log, embedder=embedder)


def run(target: PackTarget, work: WorkFolder, spec, fill: Callable[[ShardStore], object], opts: BuildOptions,
        log: Callable[[str], None], *, started: float, background: Callable[[], object] | None = None,
        publish: Callable | None = None) -> BuildReport:
    """Open the work folder, `fill` its shard store, embed the `background` set (a callable giving
    its vectors, or None), then index and publish the pack at `target.out` (made by the embedder
    `spec`); the work folder is removed once the pack is in place unless `work.keep`. `publish`:
    another publish step with stages.publish_stage's signature (index_import.py keeps an index)."""
    from lib_replicheck.builder.stages import publish_stage
    from lib_replicheck.builder.work import open_work

    private = work.fingerprint is None
    if private:
        shutil.rmtree(work.path, ignore_errors=True)
        store = ShardStore(work.path)
    else:
        store = open_work(work.path, work.fingerprint, chosen_by_user=work.chosen_by_user, log=log)
        if store.indices():
            log(f"resuming from {work.path}: {len(store.indices())} shard(s) already embedded")
    try:
        fill(store)
        extra = {"background": background()} if background is not None else {}
        report = (publish or publish_stage)(store, spec, target.out, opts, log, name=target.name, title=target.title,
                                            description=target.description, source=target.source, started=started,
                                            **extra)
    finally:
        if private:
            shutil.rmtree(work.path, ignore_errors=True)
    if not work.keep:
        shutil.rmtree(work.path, ignore_errors=True)
    return report
