"""How fast a pack is built from published embeddings (`build --embeddings`), from local files.

Writes N rows in PD12M's layout (embeddings/pd12m.NN.npy, 768 float32 columns as published, and
metadata/pd12m.NN.parquet with PD12M's columns; files of `--rows-per-file` rows), then times
build_from_embeddings: reading and checking the rows, the shards, the index (planned, trained,
filled and tuned as for every pack) and the publish. Prints rows/s, which registry/packs.json's
embedding recipes carry as `embed_rate.cpu` (what `packs available` turns into a build time), and
the index size the planner gives for PD12M's and PD3M's row counts (the recipes' `pack_bytes`;
their metadata is not counted, see the recipes' descriptions).

The rows are random unit vectors (no real CLIP vectors of millions of images exist here): the rate
of reading and checking does not depend on them; the index stage's does, a little, through its
tuning. A build of millions of rows trains a larger index than one of N, so the rate measured on a
small N is an upper bound for the full sets (issue 28 item 6 measures the 12.4M build).

    python bench/embedding_build.py [--rows 100000] [--rows-per-file 50000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.embedding_layouts import distractors, pd12m_folder  # noqa: E402

DIM = 768
FULL = {"pd12m-clip": 12_400_000, "pd3m-clip": 3_300_000}


def rows_of(n: int, start: int) -> list[dict]:
    return [{"id": f"{i:08x}-0000-4000-8000-{i:012x}", "url": f"https://pd12m.s3.us-west-2.amazonaws.com/images/"
             f"{i:08x}-0000-4000-8000-{i:012x}.jpeg", "caption": f"The image shows a landscape, number {i}",
             "width": 1024, "height": 768} for i in range(start, start + n)]


def main() -> None:
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.options import GB, BuildOptions
    from lib_replicheck.builder.planning import choose

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rows-per-file", type=int, default=50_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        parts = [(distractors(min(args.rows_per_file, args.rows - s), DIM, seed=s),
                  rows_of(min(args.rows_per_file, args.rows - s), s)) for s in range(0, args.rows, args.rows_per_file)]
        folder = pd12m_folder(Path(tmp) / "pd12m", parts)
        del parts
        t = time.perf_counter()
        report = build_from_embeddings(folder, Path(tmp) / "pack", BuildOptions(embedder="clip:ViT-L-14/openai"),
                                       log=lambda s: None)
        seconds = time.perf_counter() - t
    print(f"build --embeddings of {report.count:,} rows of {DIM} float32 (PD12M's layout, local files): "
          f"{seconds:.1f} s, {report.count / seconds:,.0f} rows/s, index {report.index['type']}")
    for name, n in FULL.items():
        plan = choose(n, DIM, "cosine", 4 * GB)
        print(f"{name}: {n:,} rows: index {plan.factory} ({plan.design}), planned {plan.disk_bytes / 1e9:.2f} GB "
              f"on disk without metadata; {n / (report.count / seconds) / 3600:.1f} h at the rate above, "
              "extrapolated linearly (not measured at this size)")


if __name__ == "__main__":
    main()
