"""What a build is asked for (BuildOptions) and what it reports (BuildReport), with the choices
every stage shares: the PDQ crop variants, the thumbnail size, and the embedder a build loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
    disk_budget: int | None = None  # bytes the index may take on disk (None: no limit); see builder.planning
    index_design: str = "auto"  # or one of builder.planning.DESIGNS, to compare designs
    recall_target: float = 0.95
    max_query_ms: float = 10.0  # latency budget of one query, as autofaiss's default
    exclude: str | None = None
    license: str | None = None
    thumbnails: bool = False  # store a 256-pixel thumbnail per image in the pack
    download_processes: int = 2
    download_threads: int = 16
    download_timeout: int = 10
    #: called with the number of source items of each batch done (embedded, skipped or kept from an
    #: earlier run): what moves the command line's progress bar; never sent to Ray actors
    progress: Callable[[int], None] | None = field(default=None, repr=False, compare=False)


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
