"""Reference-side crops: does a pack that also stores centre crops of its images find copies of a
part of a training image, and what does it cost? Meta's real SSCD weights (int8 ONNX), real photos.

    python bench/reference_crops.py [--seed 1] [--copies 4] [--negatives 1000] [--crops 0.7,0.5]

Packs: every other real photo tests/setup.sh installs plus 400 clip art drawings, built twice by
the builder's one writer (build_from_items): the whole images only, and with `--crops` centre
crops beside each. Copies: a random part of a pack photo (35%, 50% or 70% of each side, at a random
spot) enlarged to 512 pixels on the short side, plain or after JPEG 75 and colour +20%, as a
generation that reproduces part of a training image would be. Novel: random crops of the photos
not in the pack. Each is checked by Checker.check (whole image, default tiers) against both packs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

SIDES = (0.35, 0.5, 0.7)


def part(rng: random.Random, photo, side: float):
    from PIL import Image

    w, h = photo.size
    cw, ch = round(w * side), round(h * side)
    x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
    s = 512 / min(cw, ch)
    return photo.crop((x, y, x + cw, y + ch)).resize((round(cw * s), round(ch * s)), Image.Resampling.BILINEAR)


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--copies", type=int, default=4, help="copies per pack photo and part size")
    ap.add_argument("--negatives", type=int, default=1000)
    ap.add_argument("--crops", default="0.7,0.5", help="the centre crops stored beside each image")
    args = ap.parse_args()

    from conftest import BACKGROUNDS, CLIPART, SSCD_ONNX
    from regions import SIZES, FLAT, light_edit, random_crop, shrink
    from lib_replicheck import embedders
    from lib_replicheck.builder.options import parse_centre_crops
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.builder.sources import SourceItem
    from lib_replicheck.checker import Checker
    from lib_replicheck.embedders import EmbedderOptions
    from lib_replicheck.images import load_image
    from lib_replicheck.packs.pack import Pack
    from lib_replicheck.regions import Region, detail, detail_map
    from lib_replicheck.thresholds import Verdict

    if not SSCD_ONNX.is_file():
        sys.exit(f"needs {SSCD_ONNX} (bash tests/setup.sh puts it there)")
    started = time.perf_counter()
    crops = parse_centre_crops(args.crops)
    photos = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg")) + sorted(BACKGROUNDS.glob("*_by_*.jpg"))
    pack_files, other_files = photos[0::2], photos[1::2]
    drawings = sorted(CLIPART.rglob("*.png"))
    drawings = drawings[:: max(1, len(drawings) // 400)][:400]
    sscd = embedders.load("sscd", runtime="onnx", weights=SSCD_ONNX)
    tmp = Path(tempfile.mkdtemp(prefix="replicheck-refcrops-"))
    items = [SourceItem(key=p.name, path=str(p)) for p in pack_files + drawings]
    packs = {}
    for name, c in (("whole", ()), ("crops", crops)):
        built = build_from_items(items, sscd, tmp / name, thumbnails=False, centre_crops=c, log=lambda s: None)
        packs[name] = Pack(built.path)
    checkers = {n: Checker([p], top_k=1, embedder=EmbedderOptions(runtime="onnx", weights=SSCD_ONNX, offline=True)) for n, p in packs.items()}
    originals = [shrink(load_image(p)) for p in pack_files]
    others = [shrink(load_image(p)) for p in other_files]
    rng = random.Random(args.seed)
    w, c = packs["whole"], packs["crops"]
    print(f"reference-side crops: SSCD int8 ONNX, {len(pack_files)} photos + {len(drawings)} drawings, seed "
          f"{args.seed}; pack with centre crops {', '.join(f'{x:g}' for x in crops)}: {c.manifest.vectors} vectors "
          f"({c.manifest.vectors / w.manifest.vectors:.1f}x), {folder_mb(c.path):.1f} MB on disk against "
          f"{folder_mb(w.path):.1f} MB")
    print("copies of a part of a training image, enlarged (plain / JPEG 75 + colour), own original found at the tier:")
    for side in SIDES:
        cases = []
        for k, o in enumerate(originals):
            for j in range(args.copies):
                im = part(rng, o, side)
                cases.append((k, light_edit(im) if j % 2 else im))
        row = []
        for name, checker in checkers.items():
            reports = checker.check([im for _, im in cases])
            for tier in (Verdict.POSSIBLE, Verdict.LIKELY):
                ok = [r.best is not None and r.best.source == pack_files[k].name and r.verdict.rank >= tier.rank
                      for (k, _), r in zip(cases, reports)]
                row.append(f"{name} {tier.value} {100 * sum(ok) / len(ok):.1f}%")
        print(f"  {round(side * 100)}% of the side ({len(cases)} copies): " + ", ".join(row))
    negatives = []
    while len(negatives) < args.negatives:
        im = random_crop(rng, others[rng.randrange(len(others))], SIZES[rng.randrange(len(SIZES))], least=0.3)
        grey, s = detail_map(im)
        if detail(grey, s, Region(0, 0, im.size[0], im.size[1], *im.size)) >= FLAT:
            negatives.append(im)
    for name, checker in checkers.items():
        flagged, best = 0, 0.0
        for i in range(0, len(negatives), 50):
            for r in checker.check(negatives[i:i + 50]):
                flagged += r.is_copy
                best = max(best, r.best.similarity)
        print(f"novel photos ({len(negatives)} crops of the {len(others)} photos not in the pack), {name}: flagged "
              f"{100 * flagged / len(negatives):.1f}%, best score {best:.3f}")
    times = {n: [] for n in checkers}
    for im in negatives[:20]:
        for name, checker in checkers.items():
            t = time.perf_counter()
            checker.check([im])
            times[name].append(time.perf_counter() - t)
    print("check of one image, median of 20, interleaved: " + ", ".join(
        f"{n} {1000 * statistics.median(t):.0f} ms" for n, t in times.items()))
    print(f"run took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
