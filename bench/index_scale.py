"""Index scale: build a pack index from N synthetic SSCD-like vectors, then load it memory-mapped.

    python bench/index_scale.py [--n 1000000] [--data clusters|sscd-cov] [--memory-budget 4]
                                [--max-query-ms 5] [--keep]

Synthetic vectors stand in for real ones (embedding N real images would take days on this
machine), from one of two models:
- `clusters`: unit vectors around 1000 random centres with isotropic noise. Within a cluster the
  neighbours of a vector are barely closer than the rest of it: a hard case for any index.
- `sscd-cov`: a Gaussian with the mean and covariance of real SSCD descriptors, computed here with
  Meta's sscd_disc_mixup weights (`.cache/sscd_disc_mixup.onnx`, from tests/setup.sh) on the photos
  and clip art that tests/setup.sh installs, near-duplicates (similarity >= 0.5) dropped. The script
  prints how the neighbour similarities of real and synthetic descriptors compare at equal size.
The builder's own index stage chooses the index, trains it, fills it shard by shard, and tunes it to
recall@10 >= 0.95 against exact search within the latency budget; this script then loads the pack
as `check` does and prints the resident memory it takes, the single-query latency, and how often a
stand-in for an edited copy (a pack vector moved to similarity 0.75 or 0.5, the SSCD thresholds in
science.md) finds its original first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rss_mb(kind: str = "") -> float:
    """Resident memory in MB: all of it, or only `RssAnon` (memory of its own) or `RssFile` (pages
    of memory-mapped files, which the kernel can drop and read again)."""
    if not kind:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    for line in open("/proc/self/status"):
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1e3
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--data", choices=("clusters", "sscd-cov"), default="clusters")
    ap.add_argument("--memory-budget", type=float, default=4.0, help="GB")
    ap.add_argument("--max-query-ms", type=float, default=5.0, help="the builder's latency budget")
    ap.add_argument("--shard", type=int, default=100_000)
    ap.add_argument("--keep", action="store_true", help="keep the shards and the pack (in a temp folder)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="replicheck-scale-"))
    try:
        run(args, work)
    finally:  # the shards and the pack take gigabytes: removed however the run ends, unless --keep
        if args.keep:
            print(f"kept the shards and the pack in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    import numpy as np

    from lib_replicheck.builder.options import GB, BuildOptions

    from lib_replicheck.builder.stages import index_stage, metadata_stage
    from lib_replicheck.builder.shards import ShardStore
    from lib_replicheck.embedders import sscd
    from lib_replicheck.packs.publish import seal, staging_dir
    from lib_replicheck.packs.pack import Pack

    store = ShardStore(work / "work")
    rng = np.random.default_rng(0)
    generate = clusters_model(args.dim, rng) if args.data == "clusters" else sscd_cov_model(rng)
    t = time.perf_counter()
    for s, start in enumerate(range(0, args.n, args.shard)):
        m = min(args.shard, args.n - start)
        store.write(s, generate(m)[:, None, :], [{"key": str(start + i)} for i in range(m)], [])
    print(f"{args.n:,} synthetic {args.dim}-d vectors ({args.data} model) written as shards in "
          f"{time.perf_counter() - t:.0f} s")
    spec = sscd.spec_for("sscd_disc_mixup" if args.dim == 512 else "sscd_disc_large")
    out = work / "scale"
    tmp = staging_dir(out)
    t = time.perf_counter()
    info, count, vectors = index_stage(store, spec, tmp, BuildOptions(memory_budget=int(args.memory_budget * GB),
                                                                        max_query_ms=args.max_query_ms),
                                       print)
    metadata_stage(store, tmp)
    seal(tmp, out, name="scale", title=None, description="synthetic", source={}, spec=spec, count=count,
         vectors=vectors, index=info)
    build_s = time.perf_counter() - t
    size = (out / "index.faiss").stat().st_size
    pack_size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    before, anon0, file0 = rss_mb(), rss_mb("RssAnon"), rss_mb("RssFile")
    pack = Pack(out)
    loaded = rss_mb() - before
    q = np.load(store.dir / "00000.npy", mmap_mode="r")[:200, 0]
    t = time.perf_counter()
    for row in q:
        pack.search(row[None], k=10)
    per_query = (time.perf_counter() - t) / len(q) * 1000
    rerank = info.get("rerank")
    print(f"index {info['type']}: built in {build_s:.0f} s, index {size / 1e6:,.0f} MB, whole pack "
          f"{pack_size / 1e6:,.0f} MB on disk, recall@10 {info['recall_at_10']:.3f} against exact search, "
          f"params {info['search_params']}" + (f", {rerank['candidates']} candidates re-ranked" if rerank else ""))
    print(f"loaded memory-mapped: +{loaded:.0f} MB resident; search with metadata: {per_query:.2f} ms per query "
          f"(index{' and re-ranking' if rerank else ''}: {info['query_ms']:.2f} ms); resident after 200 queries: "
          f"+{rss_mb() - before:.0f} MB (+{rss_mb('RssAnon') - anon0:.0f} MB own memory, "
          f"+{rss_mb('RssFile') - file0:.0f} MB pages of the memory-mapped files)")
    found = {}
    for sim in (0.75, 0.5):
        found[sim] = copies_found(pack, np.load(store.dir / "00000.npy", mmap_mode="r")[:200, 0], sim,
                                  first_key=0, rng=rng)
    print("edited-copy stand-ins found first: " + ", ".join(f"{v:.1%} at similarity {k}" for k, v in found.items()))
    pack.close()


def clusters_model(dim, rng):
    import numpy as np

    centres = rng.standard_normal((1000, dim)).astype("float32")

    def generate(m, rng=rng):
        v = centres[rng.integers(0, 1000, m)] + 0.6 * rng.standard_normal((m, dim)).astype("float32")
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    n = 120_000  # from a generator of its own: the benchmark's vectors stay those of earlier runs
    print(f"clusters model: neighbour similarity 1st / 10th / 100th at {n:,} vectors: "
          f"{profile(generate(n, np.random.default_rng(1)))}")
    return generate


def profile(x) -> str:
    """Mean similarity of the 1st, 10th and 100th neighbour of 300 of the vectors `x`."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    d, _ = index.search(x[:300], 101)
    return " / ".join(f"{d[:, r].mean():.3f}" for r in (1, 10, 100))


IMAGE_DIRS = ("/usr/share/backgrounds", "/usr/share/wallpapers", "/usr/share/openclipart/png")


def real_sscd_descriptors():
    """SSCD descriptors of the real images tests/setup.sh installs, cached in .cache (about 14 minutes
    for 8k images on 2 cores)."""
    import hashlib

    import numpy as np
    from PIL import Image

    from lib_replicheck.embedders.sscd import SSCDEmbedder

    files = sorted(p for d in IMAGE_DIRS for p in Path(d).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) < 2000:
        sys.exit(f"--data sscd-cov needs the photos and clip art of tests/setup.sh ({len(files)} images found)")
    cache = REPO / ".cache" / f"bench-sscd-{hashlib.sha256(str(files).encode()).hexdigest()[:12]}.npy"
    if cache.is_file():
        return np.load(cache)
    onnx = REPO / ".cache" / "sscd_disc_mixup.onnx"
    if not onnx.is_file():
        sys.exit(f"--data sscd-cov needs {onnx} (bash tests/setup.sh puts it there)")
    embedder, out, t = SSCDEmbedder(runtime="onnx", weights_path=onnx), [], time.perf_counter()
    print(f"embedding {len(files):,} real images with SSCD to model real descriptors", flush=True)
    for i in range(0, len(files), 16):
        images = []
        for f in files[i: i + 16]:
            try:
                with Image.open(f) as im:
                    im.load()
                    if im.mode in ("RGBA", "LA", "P"):  # clip art: transparent parts on white
                        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
                    images.append(im.convert("RGB"))
            except Exception:  # noqa: BLE001 - unreadable or oversized files are simply left out
                continue
        if images:
            out.append(embedder.embed(images))
    vectors = np.concatenate(out)
    print(f"{len(vectors):,} real descriptors in {time.perf_counter() - t:.0f} s")
    cache.parent.mkdir(exist_ok=True)
    np.save(cache, vectors)
    return vectors


def sscd_cov_model(rng):
    """A Gaussian with the mean and covariance of real, mutually unrelated SSCD descriptors."""
    import numpy as np

    real = real_sscd_descriptors()
    sims = real @ real.T
    keep = np.ones(len(real), bool)
    for i in range(len(real)):  # one image of each near-duplicate group (replication threshold 0.5)
        if keep[i]:
            dup = np.where(sims[i] >= 0.5)[0]
            keep[dup[dup > i]] = False
    real = real[keep]
    mean = real.mean(0)
    chol = np.linalg.cholesky(np.cov((real - mean).T) + 1e-9 * np.eye(real.shape[1])).astype("float32")

    def generate(m):
        v = mean + rng.standard_normal((m, len(mean))).astype("float32") @ chol.T
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("float32")

    print(f"sscd-cov model from {len(real):,} unrelated real descriptors (of {len(keep):,}); neighbour "
          f"similarity 1st / 10th / 100th at {len(real):,} vectors: real {profile(real[rng.permutation(len(real))])}, "
          f"model {profile(generate(len(real)))}")
    return generate


def copies_found(pack, originals, similarity, first_key, rng):
    """Share of `originals` (pack rows first_key, first_key + 1, ...) whose stand-in copy, moved in a
    random direction to `similarity`, finds the original as the first hit."""
    import numpy as np

    from lib_replicheck.builder.index_factory import moved_to

    hits = pack.search(moved_to(originals, similarity, rng), k=1)
    return float(np.mean([bool(h) and h[0].item.source == str(first_key + i) for i, h in enumerate(hits)]))


if __name__ == "__main__":
    main()
