"""Index scale in copies found: real edited copies searched in a haystack of N vectors.

    python bench/index_scale.py --n 100000 [--n 1000000 ...] [--design auto --design pca-sq8 ...]
                                [--memory-budget 1] [--disk-budget 4] [--max-query-ms 20] [--json]

What a pack is for is that a copy's original comes back first, so that is what this measures:
- the haystack: N - O distractors drawn from `sscd-cov`, a Gaussian with the mean and covariance of
  real, mutually unrelated SSCD descriptors (Meta's sscd_disc_mixup weights, `.cache/sscd_disc_mixup.onnx`
  from tests/setup.sh, on 1,200 drawings that tests/setup.sh installs), and hidden among them at
  spread-out rows the real descriptors of O originals: every photo tests/setup.sh installs and 90 other
  drawings. Embedding N real images would take days on this machine; the distractors are synthetic.
- the queries: real descriptors of edited copies of the originals (the tests' edits, tests/conftest.py,
  and resize+JPEG, colour, grey, a caption bar, mirror+blur, pasted small on another picture),
  counted over the copies whose exact similarity to their original is >= 0.5 and >= 0.75 (the SSCD
  thresholds in science.md); beside them, as the worst case, stand-ins: 1,000 distractors moved in a
  random direction to similarity 0.5 and 0.75, harsher than any real edit.
- each configuration (N, index design) is built by the builder's own index stage with the budgets
  given, then searched by a fresh process (pinned to `--query-cores` with taskset if given) that opens
  the pack memory-mapped as `check` does and runs one query at a time (top 5, metadata lookup
  included). `private_mb` is that process's own memory (Private_* of /proc/self/smaps, pages of the
  pack's mapped files left out); `disk_mb` the whole pack, whose metadata rows have LAION's sizes (a
  100-character URL and a 60-character caption each, as a real pack carries; the disk budget is the
  whole pack's, so the planner sees them); `disk_mb_laion` the same from 20,000 such rows measured
  apart (rows measured before the haystack carried them had key-only metadata).
`--json` prints one JSON object per configuration; without it, a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IMAGE_DIRS = ("/usr/share/backgrounds", "/usr/share/openclipart/png")
BASIS_CLIPART = 1200  # real, mutually unrelated descriptors the distractor model is fitted to
ORIGINAL_CLIPART = 90  # originals: every photo tests/setup.sh installs, plus this many drawings


def _small_enough(path) -> bool:
    """Whether an image's header declares at most 40M pixels (a few drawings are far larger)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.width * im.height <= 40_000_000
    except Exception:  # noqa: BLE001 - unreadable files are left out
        return False


def _load(path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):  # clip art: transparent parts on white
            im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
        im = im.convert("RGB")
    if max(im.size) > 1600:  # the embedder resizes to 288 anyway; editing full-size wallpapers is slow
        s = 1600 / max(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)))
    return im


def copy_edits(im, backdrop) -> dict:
    """The edits a copy goes through: those the tests measure (tests/conftest.py `edits`) and the
    harder ones a generated copy shows: resize+JPEG, colour, grey, a caption bar, mirror+blur, and the
    image pasted small onto another picture."""
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import edits, jpeg  # the tests' own edits

    out = edits(im)
    w, h = im.size
    out["resized 0.5x + JPEG q=50"] = jpeg(im.resize((w // 2, h // 2), Image.Resampling.BILINEAR), 50)
    out["colour (saturation x1.6, contrast x1.2)"] = ImageEnhance.Contrast(ImageEnhance.Color(im).enhance(1.6)).enhance(1.2)
    out["grey"] = ImageOps.grayscale(im).convert("RGB")
    bar = im.copy()
    draw = ImageDraw.Draw(bar)
    draw.rectangle((0, int(h * 0.85), w, h), fill="white")
    draw.text((w // 20, int(h * 0.88)), "a caption over the picture", fill="black")
    out["caption bar (15%)"] = bar
    out["mirror + blur"] = ImageOps.mirror(im).filter(ImageFilter.GaussianBlur(max(1, w // 400)))
    canvas = backdrop.resize((w, h))
    small = im.resize((int(w * 0.7), int(h * 0.7)))
    canvas.paste(small, (int(w * 0.15), int(h * 0.1)))
    out["pasted at 70% on another picture"] = canvas
    return out


def real_set(path: str | None = None):
    """SSCD descriptors (Meta's sscd_disc_mixup weights, int8 ONNX from tests/setup.sh) of real images:
    `basis` (drawings the distractor model is fitted to), `originals` (photos and drawings hidden in
    the haystack), `copies` (edited copies of the originals) with `copy_of` and `edit`. Cached in
    .cache: embedding them takes several minutes on 2 cores."""
    import hashlib

    import numpy as np

    if path:  # descriptors made here, carried to a machine without the images
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    photos = sorted(p for p in Path(IMAGE_DIRS[0]).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    drawings = sorted(Path(IMAGE_DIRS[1]).rglob("*.png"))
    photos = [p for p in photos if _small_enough(p)]
    if len(photos) < 25 or len(drawings) < 2000:
        sys.exit(f"the real copies need the photos and clip art of tests/setup.sh ({len(photos)} photos, "
                 f"{len(drawings)} drawings found)")
    step = len(drawings) // (BASIS_CLIPART + ORIGINAL_CLIPART)
    spread = [p for p in drawings[::step] if _small_enough(p)][: BASIS_CLIPART + ORIGINAL_CLIPART]
    basis_files, originals_files = spread[:: (BASIS_CLIPART + ORIGINAL_CLIPART) // ORIGINAL_CLIPART][:ORIGINAL_CLIPART], []
    originals_files = photos + basis_files  # every photo, and ORIGINAL_CLIPART drawings ...
    basis_files = [f for f in spread if f not in set(basis_files)]  # ... that the model never sees
    key = hashlib.sha256(str((photos, spread, "v1")).encode()).hexdigest()[:12]
    cache = REPO / ".cache" / f"bench-real-copies-{key}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    onnx = REPO / ".cache" / "sscd_disc_mixup.onnx"
    if not onnx.is_file():
        sys.exit(f"the real copies need {onnx} (bash tests/setup.sh puts it there)")
    from lib_replicheck.embedders.options import EmbedderOptions
    from lib_replicheck.embedders.sscd import SSCDEmbedder

    embedder, t = SSCDEmbedder(options=EmbedderOptions(runtime="onnx", weights=onnx)), time.perf_counter()
    print(f"embedding {len(basis_files):,} drawings, {len(originals_files)} originals and their edited copies "
          "with SSCD (cached afterwards)", file=sys.stderr, flush=True)
    basis = []
    for i in range(0, len(basis_files), 16):
        basis.append(embedder.embed([_load(f) for f in basis_files[i: i + 16]]))
    originals, copies, copy_of, edit = [], [], [], []
    backdrops = [_load(p) for p in photos[-3:]]
    for o, f in enumerate(originals_files):
        im = _load(f)
        originals.append(embedder.embed([im]))
        edited = copy_edits(im, backdrops[o % 3] if f not in photos[-3:] else backdrops[(o + 1) % 3].rotate(180))
        copies.append(embedder.embed(list(edited.values())))
        copy_of += [o] * len(edited)
        edit += list(edited)
        if o % 20 == 0:
            print(f"  {o} of {len(originals_files)} originals ({time.perf_counter() - t:.0f} s)", file=sys.stderr,
                  flush=True)
    out = {"basis": np.concatenate(basis), "originals": np.concatenate(originals), "copies": np.concatenate(copies),
           "copy_of": np.array(copy_of, dtype=np.int64), "edit": np.array(edit)}
    print(f"real descriptors in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, **out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append", help="haystack size (repeatable; default 100000)")
    ap.add_argument("--design", action="append", help="index design (repeatable): auto (the planner's "
                    "pick for the budgets) or one of builder.planning.DESIGNS; default auto")
    ap.add_argument("--memory-budget", type=float, default=1.0, help="GB (1)")
    ap.add_argument("--disk-budget", type=float, default=4.0, help="GB for the index (4); 0: no limit")
    ap.add_argument("--max-query-ms", type=float, default=20.0, help="the builder's latency budget (20)")
    ap.add_argument("--shard", type=int, default=250_000)
    ap.add_argument("--standins", type=int, default=1000)
    ap.add_argument("--query-cores", default="", help="e.g. 0,1: pin the searching process (taskset)")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact-search ceiling for copies")
    ap.add_argument("--real", help="the real descriptors' .npz (default: made from the images, cached in .cache)")
    ap.add_argument("--work", default=None, help="folder for shards and packs (default: a temp folder)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--table", help="print the rows of a file of --json output as a table, and nothing else")
    ap.add_argument("--keep", action="store_true", help="keep the shards and the packs")
    ap.add_argument("--search-pack", help=argparse.SUPPRESS)  # the searching process
    ap.add_argument("--queries", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.search_pack:
        print(json.dumps(search_pack(Path(args.search_pack), Path(args.queries))))
        return
    if args.table:  # rows measured earlier (bench/results/), printed as a table
        rows = [json.loads(line) for line in Path(args.table).read_text(encoding="utf-8").splitlines()
                if line.startswith("{")]
        for r in rows:
            print(table_row(r))
        print(laion_pack(rows))
        return
    work = Path(tempfile.mkdtemp(prefix="replicheck-scale-", dir=args.work))
    try:
        for n in args.n or [100_000]:
            run(args, n, work / str(n))
            shutil.rmtree(work / str(n) / "work", ignore_errors=args.keep)
    finally:  # the shards and the packs take gigabytes: removed however the run ends, unless --keep
        if args.keep:
            print(f"kept the shards and the packs in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def run(args, n: int, work: Path) -> None:
    import numpy as np

    from lib_replicheck.builder.options import GB, BuildOptions
    from lib_replicheck.builder.shards import ShardStore
    from lib_replicheck.builder.stages import index_stage, metadata_stage
    from lib_replicheck.builder.tuning import moved_to
    from lib_replicheck.embedders import sscd
    from lib_replicheck.packs.publish import seal, staging_dir

    rng = np.random.default_rng(0)
    if n >= 10_000:
        real = real_set(args.real)
        originals, copies, copy_of = distinct_originals(real["originals"], real["copies"], real["copy_of"])
        generate = sscd_cov_model(real["basis"])
    else:  # too small a haystack to say anything: random unit vectors, no real images needed
        log(f"{n} vectors: random unit vectors, no real copies hidden")
        originals = copies = np.zeros((0, 512), dtype=np.float32)
        copy_of = np.zeros(0, dtype=np.int64)

        def generate(m, rng):
            v = rng.standard_normal((m, 512)).astype("float32")
            return v / np.linalg.norm(v, axis=1, keepdims=True)
    # the originals hide at spread-out rows; every other row is a distractor
    hidden = np.linspace(0, n - 1, len(originals) + 2).astype(np.int64)[1:-1]
    store, t = ShardStore(work / "work"), time.perf_counter()
    rows = np.setdiff1d(np.arange(n), hidden)
    standin_rows = np.sort(rng.choice(rows, min(args.standins, len(rows)), replace=False))
    standin_src = []
    starts = list(range(0, n, args.shard))
    workers = min(8, os.cpu_count() or 1)  # numpy's generators and BLAS release the GIL

    def parts():  # shard by shard, `workers` at a time
        with ThreadPoolExecutor(workers) as pool:
            for first in range(0, len(starts), workers):
                yield from pool.map(lambda s: generate(min(args.shard, n - starts[s]), np.random.default_rng([1, s])),
                                    range(first, min(first + workers, len(starts))))

    for s, (start, v) in enumerate(zip(starts, parts())):
        m = len(v)
        inside = (hidden >= start) & (hidden < start + m)
        v[hidden[inside] - start] = originals[inside]
        take = standin_rows[(standin_rows >= start) & (standin_rows < start + m)]
        standin_src.append(v[take - start].copy())
        store.write(s, v[:, None, :], [laion_meta(start + i) for i in range(m)], [])
    log(f"{n:,} vectors ({len(originals)} real originals, the rest sscd-cov distractors) written as shards "
        f"in {time.perf_counter() - t:.0f} s")
    standins = np.concatenate(standin_src)
    exact_sim = (copies * originals[copy_of]).sum(1)
    queries = {"copies": copies, "copy_keys": hidden[copy_of].astype(str),
               "standins_050": moved_to(standins, 0.5, rng), "standins_075": moved_to(standins, 0.75, rng),
               "standin_keys": standin_rows.astype(str)}
    np.savez(work / "queries.npz", **queries)
    ceiling = None if args.no_exact else exact_first(store, copies, hidden[copy_of])
    laion_row = laion_metadata_bytes_per_row(work)
    spec = sscd.spec_for("sscd_disc_mixup")
    for design in args.design or ["auto"]:
        out = work / f"pack-{design}"
        tmp = staging_dir(out)
        opts = BuildOptions(memory_budget=int(args.memory_budget * GB), max_query_ms=args.max_query_ms,
                            disk_budget=int(args.disk_budget * GB) if args.disk_budget else None, index_design=design)
        t = time.perf_counter()
        info, count, vectors = index_stage(store, spec, tmp, opts, log)
        index_s = time.perf_counter() - t
        metadata_stage(store, tmp)
        seal(tmp, out, name="scale", title=None, description="synthetic haystack", source={}, spec=spec,
             count=count, vectors=vectors, index=info)
        build_s = time.perf_counter() - t
        files = [p for p in out.rglob("*") if p.is_file()]
        disk = sum(p.stat().st_size for p in files)
        meta = (out / "metadata.sqlite").stat().st_size
        cmd = [sys.executable, __file__, "--search-pack", str(out), "--queries", str(work / "queries.npz")]
        if args.query_cores:
            cmd = ["taskset", "-c", args.query_cores] + cmd
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if res.returncode:
            sys.exit(f"searching {out} failed:\n{res.stderr[-3000:]}")
        found = json.loads(res.stdout.strip().splitlines()[-1])
        hit, sim = np.array(found.pop("copy_hits")), np.array(found.pop("copy_sims"))
        row = {"n": n, "index": info["type"], "design": info.get("design", design),
               "copies_050": int((exact_sim >= 0.5).sum()), "copies_075": int((exact_sim >= 0.75).sum()),
               "copies_found_050": round(float(hit[exact_sim >= 0.5].mean()), 4),
               "copies_found_075": round(float(hit[exact_sim >= 0.75].mean()), 4),
               **({"copies_exact_first_050": round(float(ceiling[exact_sim >= 0.5].mean()), 4),
                   "copies_exact_first_075": round(float(ceiling[exact_sim >= 0.75].mean()), 4)}
                  if ceiling is not None else {}),
               "similarity_error_p99": round(float(np.percentile(np.abs(sim[hit] - exact_sim[hit]), 99)), 4),
               **found,
               "disk_mb": round(disk / 1e6, 1),
               "disk_mb_laion": round((disk - meta + laion_row * n) / 1e6, 1),
               "build_s": round(build_s, 1), "index_build_s": round(index_s, 1),
               "search_params": info["search_params"],
               "tuned": {k: info[k] for k in ("recall_at_10", "query_ms", "copies_found") if k in info},
               "budgets": {"memory_gb": args.memory_budget, "disk_gb": args.disk_budget,
                           "max_query_ms": args.max_query_ms},
               "machine": f"{os.cpu_count()} cores"
                          + (f", queries pinned to cores {args.query_cores}" if args.query_cores else "")}
        print(json.dumps(row) if args.json else table_row(row), flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


def table_row(r: dict) -> str:
    return (f"n={r['n']:,} {r['index']} ({r['design']}, tuned within {r['budgets']['max_query_ms']:g} ms): real copies found first {r['copies_found_050']:.1%} "
            f"of {r['copies_050']} at >= 0.5, {r['copies_found_075']:.1%} of {r['copies_075']} at >= 0.75; "
            f"stand-ins {r['standins_found_050']:.1%} at 0.5, {r['standins_found_075']:.1%} at 0.75; "
            + (f"shown similarity within {r['similarity_error_p99']:.3f} of the exact one (p99); "
               if "similarity_error_p99" in r else "")
            + f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms; private {r['private_mb']:.0f} MB; "
            f"disk {r['disk_mb']:,.0f} MB as built ({r['disk_mb_laion']:,.0f} MB with LAION-sized metadata, estimated); "
            f"built in {r['build_s']:.0f} s"
            + (f"; exact search finds {r['copies_exact_first_050']:.1%} / {r['copies_exact_first_075']:.1%}"
               if "copies_exact_first_050" in r else "") + f" [{r['machine']}]")


def laion_pack(rows: list[dict], images: int = 12_000_000) -> str:
    """What a pack of `images` (LAION-Aesthetics 6+: 12M) takes on disk with the design the planner
    picks for the budgets of the measured `rows`, with LAION-sized metadata rows."""
    from lib_replicheck.builder.planning import GB, choose

    b = rows[-1]["budgets"]
    with tempfile.TemporaryDirectory() as tmp:
        meta = laion_metadata_bytes_per_row(Path(tmp)) * images
    plan = choose(images, 512, "cosine", int(b["memory_gb"] * GB), int(b["disk_gb"] * GB) if b["disk_gb"] else None,
                  metadata_bytes=int(meta))  # the disk budget is the whole pack's
    rerank = f", {plan.rerank_dtype} re-ranking rows" if plan.rerank else ""
    return (f"a pack of {images:,} images (LAION-Aesthetics 6+) within these budgets: {plan.factory} ({plan.design}"
            f"{rerank}), index {plan.disk_bytes / 1e9:.2f} GB (planned) + LAION-sized metadata {meta / 1e9:.2f} GB = "
            f"{(plan.disk_bytes + meta) / 1e9:.2f} GB to download")


def private_mb(skip: tuple[str, ...]) -> float:
    """The process's own resident memory in MB: Private_Clean + Private_Dirty of every mapping in
    /proc/self/smaps except those of files under `skip` (the pack: pages the kernel can drop and read
    again); RssAnon where smaps is missing."""
    try:
        text = open("/proc/self/smaps").read()
    except OSError:
        text = ""
    total, counted, seen = 0, True, False
    for line in text.splitlines():
        first = line.split(None, 1)[0] if line.strip() else ""
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            parts = line.split(None, 5)
            counted = not (len(parts) == 6 and parts[5].startswith(skip))
        elif first in ("Private_Clean:", "Private_Dirty:"):
            seen = True
            if counted:
                total += int(line.split()[1])
    if seen:
        return total / 1e3
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1e3
    return float("nan")


def search_pack(pack_dir: Path, queries: Path) -> dict:
    """In a fresh process: open the pack memory-mapped, run every query one at a time (top 5, metadata
    included), and say how often the first hit is the original, how long queries took, and the
    process's private memory after them."""
    import numpy as np

    from lib_replicheck.packs.pack import Pack

    q = dict(np.load(queries))
    pack = Pack(pack_dir)
    times, copy_hits, copy_sims = [], [], []

    def first(vec, key) -> tuple[bool, float]:
        t = time.perf_counter()
        hits = pack.search(vec[None], k=5)[0]
        times.append(time.perf_counter() - t)
        return bool(hits) and hits[0].item.source == key, hits[0].similarity if hits else 0.0

    for vec, key in zip(q["copies"], q["copy_keys"]):
        h, s = first(vec, str(key))
        copy_hits.append(h)
        copy_sims.append(s)
    standins = {sim: np.mean([first(vec, str(key))[0] for vec, key in zip(q[f"standins_{sim}"], q["standin_keys"])])
                for sim in ("050", "075")}
    ms = np.array(times) * 1000
    out = {"standins_found_050": round(float(standins["050"]), 4),
           "standins_found_075": round(float(standins["075"]), 4),
           "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
           "queries": len(ms), "private_mb": round(private_mb((str(pack_dir.resolve()), str(pack_dir))), 1),
           "copy_hits": copy_hits, "copy_sims": [float(s) for s in copy_sims]}
    pack.close()
    return out


def exact_first(store, copies, keys):
    """Whether each copy's original is its exact nearest vector in the whole haystack: the ceiling any
    index can reach (faiss.contrib's blockwise exact search)."""
    import faiss
    import numpy as np
    from faiss.contrib.exhaustive_search import knn_ground_truth

    def blocks():
        for i in store.indices():
            yield np.ascontiguousarray(np.load(store.dir / f"{i:05d}.npy", mmap_mode="r")[:, 0])

    t = time.perf_counter()
    _, first = knn_ground_truth(np.ascontiguousarray(copies), blocks(), 1, metric_type=faiss.METRIC_INNER_PRODUCT,
                                ngpu=0)
    log(f"exact nearest of {len(copies):,} copies in {time.perf_counter() - t:.0f} s")
    return first[:, 0] == np.asarray(keys)


def laion_meta(i: int) -> dict:
    """A metadata row of LAION's sizes: a 100-character URL and a 60-character caption (LAION-Aesthetics'
    typical lengths), the image size and the row's key (how the search finds which image came back)."""
    return {"key": str(i), "url": f"https://images.example-cdn.com/uploads/2019/{i % 997:04d}/{i:012d}-a-photo-of-"
                                  f"something-large-{i * 7919 % 100003:06d}.jpg",
            "caption": f"A photograph of item {i} on a wooden table, soft light {i % 13}", "width": 1024, "height": 768}


def laion_metadata_bytes_per_row(work: Path, rows: int = 20_000) -> float:
    """Bytes per row of metadata.sqlite with LAION-sized rows (laion_meta), written by the pack writer."""
    from lib_replicheck.packs.metadata import Item, MetadataWriter

    path = work / "laion-metadata.sqlite"
    w = MetadataWriter(path)
    w.add(Item(i, m["url"], m["caption"], m["width"], m["height"], f"{i:09d}", None, None)
          for i, m in ((i, laion_meta(i)) for i in range(rows)))
    w.close()
    size = path.stat().st_size
    path.unlink()
    return size / rows


def distinct_originals(originals, copies, copy_of):
    """Originals with no other original at similarity >= 0.5 (the wallpapers come in several sizes and
    crops of one picture, whose copies would find a sibling first), and the copies of those."""
    import numpy as np

    sims = originals @ originals.T
    keep = np.ones(len(originals), bool)
    for i in range(len(originals)):
        if keep[i]:
            dup = np.where(sims[i] >= 0.5)[0]
            keep[dup[dup > i]] = False
    new = np.cumsum(keep) - 1
    mine = keep[copy_of]
    return originals[keep], copies[mine], new[copy_of[mine]]


def sscd_cov_model(real):
    """A Gaussian with the mean and covariance of real, mutually unrelated SSCD descriptors."""
    import numpy as np

    sims = real @ real.T
    keep = np.ones(len(real), bool)
    for i in range(len(real)):  # one image of each near-duplicate group (replication threshold 0.5)
        if keep[i]:
            dup = np.where(sims[i] >= 0.5)[0]
            keep[dup[dup > i]] = False
    real = real[keep]
    mean = real.mean(0)
    chol = np.linalg.cholesky(np.cov((real - mean).T) + 1e-6 * np.eye(real.shape[1])).astype("float32")

    def generate(m, rng):
        v = mean + rng.standard_normal((m, len(mean))).astype("float32") @ chol.T
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("float32")

    return generate


if __name__ == "__main__":
    main()
