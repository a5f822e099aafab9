"""What a build is asked for (BuildOptions, and GetOptions for a recipe's) and what it reports
(BuildReport), with the choices every stage shares: the PDQ crop variants, the thumbnail size, and the embedder a build loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lib_replicheck.embedders.options import EmbedderOptions
from lib_replicheck.packs.background import DEFAULT_ROWS as DEFAULT_BACKGROUND_ROWS

GB = 1024**3
#: PDQ is not robust to cropping, so PDQ packs also store hashes of these centre crops of each
#: image (fractions of width and height); a cosine pack stores the whole image only.
PDQ_CROPS = (1.0, 0.95, 0.9, 0.85, 0.8)
THUMB_SIZE = 256
#: A cosine pack may also store descriptors of centre crops of each image (`build --centre-crops`):
#: a part of a training image enlarged to fill a picture scores higher against a crop of it than
#: against the whole (bench/reference_crops.py measures what they find and cost).
MAX_CENTRE_CROPS = 3


@dataclass
class BuildOptions:
    embedder: str = "sscd"
    #: how the embedder is loaded (device, runtime, weights, offline)
    embedding: EmbedderOptions = field(default_factory=EmbedderOptions)
    shard_size: int = 10_000
    batch: int = 32
    workers: int = 2  # decoding threads (sequential) or Ray actors
    ray: bool = False
    ray_address: str | None = None
    memory_budget: int = 4 * GB
    disk_budget: int | None = None  # bytes the pack may take on disk, metadata included (None: no limit)
    index_design: str = "auto"  # or one of builder.planning.DESIGNS, to compare designs
    recall_target: float = 0.95
    max_query_ms: float = 10.0  # latency budget of one query, as autofaiss's default
    exclude: str | None = None
    license: str | None = None
    thumbnails: bool = False  # store a 256-pixel thumbnail per image in the pack
    centre_crops: tuple[float, ...] = ()  # cosine packs: centre crops stored beside each whole image
    #: SSCD packs: a folder or shards of images outside the pack, for score normalisation of region
    #: matches (packs/background.py); at most `background_size` of them are embedded
    background: str | None = None
    background_size: int = DEFAULT_BACKGROUND_ROWS
    download_processes: int = 2
    download_threads: int = 16
    download_timeout: int = 10
    #: called with the number of source items of each batch done (embedded, skipped or kept from an
    #: earlier run): what moves the command line's progress bar; never sent to Ray actors
    progress: Callable[[int], None] | None = field(default=None, repr=False, compare=False)


@dataclass
class GetOptions:
    """What the user chose for a recipe's build (the recipe says the rest)."""

    sample: int | None = None  # the first N rows of the list
    list_path: str | None = None  # a user's own list (recipes with `user: true`)
    accept_unpinned: bool = False  # pin list files without a published sha256 on first use
    #: how the embedder is loaded (device, runtime, weights, offline)
    embedding: EmbedderOptions = field(default_factory=EmbedderOptions)
    processes: int = 2
    threads: int = 16
    overwrite: bool = False


@dataclass
class BuildReport:
    path: Path
    count: int
    vectors: int
    skipped: list[str] = field(default_factory=list)
    index: dict = field(default_factory=dict)
    seconds: float = 0.0


def crops_for(metric: str, centre_crops: tuple[float, ...] = ()) -> tuple[float, ...]:
    """The crops of each image a pack stores (fractions of width and height; 1.0 the whole)."""
    return PDQ_CROPS if metric == "hamming" else (1.0, *centre_crops)


def parse_centre_crops(text: str | None) -> tuple[float, ...]:
    """`--centre-crops 0.7,0.5`: distinct fractions between 0.3 and 0.95, at most
    MAX_CENTRE_CROPS; a clear error naming the option otherwise."""
    from lib_replicheck.errors import ReplicheckError

    if not text or not str(text).strip():
        return ()
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ReplicheckError(f"--centre-crops {text!r}: give fractions of the side, e.g. 0.7,0.5") from None
    if len(values) > MAX_CENTRE_CROPS or len(set(values)) != len(values) or not all(0.3 <= v <= 0.95 for v in values):
        raise ReplicheckError(f"--centre-crops {text!r}: at most {MAX_CENTRE_CROPS} distinct fractions "
                              "between 0.3 and 0.95")
    return values


def load_embedder(opts: BuildOptions):
    """The build's embedder, loaded as `opts.embedding` says (checked there first)."""
    from lib_replicheck import embedders

    return embedders.load(opts.embedder, **opts.embedding.validated().load_args())
