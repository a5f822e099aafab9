"""How fast a pack is built from published embeddings (`build --embeddings`), from local files.

Writes N rows in PD12M's layout (embeddings/pd12m.NN.npy, 768 float32 columns as published, and
metadata/pd12m.NN.parquet with PD12M's columns; files of `--rows-per-file` rows), then times
build_from_embeddings: reading and checking the rows, the shards, the index (planned, trained,
filled and tuned as for every pack) and the publish. The index is of the design the planner gives
PD12M's full row count (`--design`, default sq8), so that its bytes per row are those of the full
pack. Prints rows/s, which registry/packs.json's embedding recipes carry as `embed_rate.cpu` (what
`packs available` turns into a build time), and the built pack's bytes on disk per row (index,
metadata and the rest), which times the published row counts are the recipes' `pack_bytes`
(`expected.row_bytes` for laion-clip, whose count is the user's). The metadata rows are synthetic
(URLs and captions of the lengths printed): real captions may be longer.

The rows are random unit vectors (no real CLIP vectors of millions of images exist here): the rate
of reading and checking does not depend on them; the index stage's does, a little, through its
tuning. A build of millions of rows trains a larger index than one of N, so the rate measured on a
small N is an upper bound for the full sets (issue 28 item 6 measures the 12.4M build).

    python bench/embedding_build.py [--rows 100000] [--rows-per-file 50000] [--design sq8]
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
PER = 1_000_000  # laion-clip: the user's copy, so per million rows


def rows_of(n: int, start: int) -> list[dict]:
    return [{"id": f"{i:08x}-0000-4000-8000-{i:012x}", "url": f"https://pd12m.s3.us-west-2.amazonaws.com/images/"
             f"{i:08x}-0000-4000-8000-{i:012x}.jpeg", "caption": f"The image shows a landscape, number {i}",
             "width": 1024, "height": 768} for i in range(start, start + n)]


def disk_per_row(pack: Path, count: int) -> dict[str, float]:
    """Bytes on disk per row of a built pack: its index, its metadata, and every other file."""
    from lib_replicheck.packs.manifest import INDEX_FILE, METADATA_FILE, read

    m = read(pack)
    sizes = {f.relative_to(pack).as_posix(): f.stat().st_size for f in pack.rglob("*") if f.is_file()}
    index = sizes.get(m.index.get("file", INDEX_FILE), 0)
    metadata = sizes.get(METADATA_FILE, 0)
    total = sum(sizes.values())
    return {"total": total / count, "index": index / count, "metadata": metadata / count,
            "other": (total - index - metadata) / count}


def main() -> None:
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.options import GB, BuildOptions
    from lib_replicheck.builder.planning import choose

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rows-per-file", type=int, default=50_000)
    ap.add_argument("--design", default="sq8", help="index design (builder.planning.DESIGNS); sq8: PD12M's")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        parts = [(distractors(min(args.rows_per_file, args.rows - s), DIM, seed=s),
                  rows_of(min(args.rows_per_file, args.rows - s), s)) for s in range(0, args.rows, args.rows_per_file)]
        folder = pd12m_folder(Path(tmp) / "pd12m", parts)
        del parts
        t = time.perf_counter()
        opts = BuildOptions(embedder="clip:ViT-L-14/openai", index_design=args.design)
        report = build_from_embeddings(folder, Path(tmp) / "pack", opts, log=lambda s: None)
        seconds = time.perf_counter() - t
        per = disk_per_row(Path(tmp) / "pack", report.count)
    rate = report.count / seconds
    sample = rows_of(1000, 0)
    url, caption = (sum(len(r[k]) for r in sample) / len(sample) for k in ("url", "caption"))
    print(f"build --embeddings of {report.count:,} rows of {DIM} float32 (PD12M's layout, local files): "
          f"{seconds:.1f} s, {rate:,.0f} rows/s, index {report.index['type']}")
    print(f"pack on disk: {per['total']:,.0f} bytes per row (index {per['index']:,.0f}, metadata {per['metadata']:,.0f}, "
          f"other {per['other']:,.0f}; synthetic metadata: URLs of {url:.0f} and captions of {caption:.0f} characters)")
    for name, n in FULL.items():
        plan = choose(n, DIM, "cosine", 4 * GB)
        print(f"{name}: {n:,} rows: {n * per['total'] / 1e9:.2f} GB on disk at the bytes per row above "
              f"(the planner gives this count {plan.factory}, {plan.design}); {n / rate / 3600:.1f} h at the rate "
              "above, extrapolated linearly (not measured at this size)")
    print(f"laion-clip: per {PER:,} rows: {PER * per['total'] / 1e9:.2f} GB on disk, {PER / rate / 60:.0f} min")


if __name__ == "__main__":
    main()
