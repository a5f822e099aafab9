"""Index scale: build a pack index from N synthetic SSCD-like vectors, then load it memory-mapped.

    python bench/index_scale.py [--n 1000000] [--dim 512] [--memory-budget 4] [--keep]

Synthetic vectors stand in for real ones (embedding N real images would take days on this
machine): unit vectors around 1000 cluster centres, like descriptors of a photo collection. The
builder's own index stage chooses the index, trains it, fills it shard by shard, and tunes nprobe to
recall@10 >= 0.95 against exact search; this script then loads the pack as `check` does and prints
the resident memory it takes and the single-query latency.
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
    ap.add_argument("--memory-budget", type=float, default=4.0, help="GB")
    ap.add_argument("--shard", type=int, default=100_000)
    ap.add_argument("--keep", action="store_true", help="keep the shards and the pack (in a temp folder)")
    args = ap.parse_args()

    import numpy as np

    from lib_replicheck.builder import GB, BuildOptions, index_stage, metadata_stage
    from lib_replicheck.builder.shards import ShardStore
    from lib_replicheck.embedders import sscd
    from lib_replicheck.packs.build import seal, staging_dir
    from lib_replicheck.packs.pack import Pack

    work = Path(tempfile.mkdtemp(prefix="replicheck-scale-"))
    store = ShardStore(work / "work")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, args.dim)).astype("float32")
    t = time.perf_counter()
    for s, start in enumerate(range(0, args.n, args.shard)):
        m = min(args.shard, args.n - start)
        v = centres[rng.integers(0, 1000, m)] + 0.6 * rng.standard_normal((m, args.dim)).astype("float32")
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.write(s, v[:, None, :], [{"key": str(start + i)} for i in range(m)], [])
    print(f"{args.n:,} synthetic {args.dim}-d vectors written as shards in {time.perf_counter() - t:.0f} s")
    spec = sscd.spec_for("sscd_disc_mixup" if args.dim == 512 else "sscd_disc_large")
    out = work / "scale"
    tmp = staging_dir(out)
    t = time.perf_counter()
    info, count, vectors = index_stage(store, spec, tmp, BuildOptions(memory_budget=int(args.memory_budget * GB)),
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
    pack.close()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
