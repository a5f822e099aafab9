"""Geometric verification of candidates: verdicts with and without it, side by side in one run, with
Meta's real SSCD weights (int8 ONNX) on the real photos tests/setup.sh installs.

    python bench/geometry.py [--seed 0] [--pastes 20] [--negatives 200] [--timing 20]

The pack is built as bench/regions.py builds it (every other real photo, the tests' clip art as
distractors, a background set of other drawings), with 256-pixel thumbnails (build --thumbnails),
which verification compares with. Two checkers search it: one verifies geometrically (the default),
one does not (Checker(geometry=False): a region's copy then stays "possible"). Whole-image copies:
the tests' 5 edits of every pack photo, checked with regions off (the default). Pastes: a pack photo
pasted at 55% or 35% of the side into a crop of a novel photo, checked with `--regions fast`. Novel
photos: random crops of the other real photos (there are only as many distinct photos as the
packages install; the count is printed), featureless crops left out, checked with `--regions fast`.
Cost: Checker.check one image at a time, regions off, both checkers interleaved on the same images
(edits and novel crops alternately), medians.
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


def share(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / max(1, len(flags)):.1f}% of {len(flags)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pastes", type=int, default=20, help="pasted copies per scale")
    ap.add_argument("--negatives", type=int, default=200, help="novel crops")
    ap.add_argument("--timing", type=int, default=20, help="images timed per checker")
    ap.add_argument("--background", type=int, default=600, help="drawings in the pack's background set")
    args = ap.parse_args()

    import numpy as np

    from conftest import BACKGROUNDS, CLIPART, SSCD_ONNX, edits
    from lib_replicheck import embedders
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.builder.sources import SourceItem
    from lib_replicheck.checker import Checker
    from lib_replicheck.embedders import EmbedderOptions
    from lib_replicheck.images import load_image
    from lib_replicheck.packs.pack import Pack
    from lib_replicheck.regions import Region, detail, detail_map
    from lib_replicheck.thresholds import GEOMETRY_INLIERS, REGION_RAW_FLOOR, Verdict
    from regions import FLAT, paste, random_crop, shrink

    if not SSCD_ONNX.is_file():
        sys.exit(f"needs {SSCD_ONNX} (bash tests/setup.sh puts it there)")
    started = time.perf_counter()
    photos = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg")) + sorted(BACKGROUNDS.glob("*_by_*.jpg"))
    pack_files, other_files = photos[0::2], photos[1::2]
    drawings = sorted(CLIPART.rglob("*.png"))
    drawings = drawings[:: max(1, len(drawings) // 400)][:400]
    chosen = set(drawings)
    background = [SourceItem(key=p.name, path=str(p)) for p in sorted(CLIPART.rglob("*.png")) if p not in chosen]
    background = background[:: max(1, len(background) // args.background)][:args.background]
    originals = [shrink(load_image(p)) for p in pack_files]
    others = [shrink(load_image(p)) for p in other_files]
    sscd = embedders.load("sscd", runtime="onnx", weights=SSCD_ONNX)
    tmp = Path(tempfile.mkdtemp(prefix="replicheck-geometry-"))
    items = [SourceItem(key=p.name, path=str(p)) for p in pack_files + drawings]
    pack = Pack(build_from_items(items, sscd, tmp / "pack", thumbnails=True, log=lambda s: None,
                                 background=background, background_size=len(background)).path)
    by_source = {pack.metadata.get([r])[r].source: r for r in range(pack.manifest.count)}
    own_ids = [pack.metadata.get([by_source[p.name]])[by_source[p.name]].id for p in pack_files]
    options = EmbedderOptions(runtime="onnx", weights=SSCD_ONNX, offline=True)
    checkers = {"with": Checker([pack], top_k=3, embedder=options),
                "without": Checker([pack], top_k=3, embedder=options, geometry=False)}
    rng = random.Random(args.seed)
    print(f"geometric verification: SSCD int8 ONNX, pack of {len(pack_files)} photos + {len(drawings)} drawings "
          f"with 256-px thumbnails, background set of {pack.manifest.background['count']} drawings, seed "
          f"{args.seed}; likely from {GEOMETRY_INLIERS} inliers (SIFT, RANSAC homography); region raw floor "
          f"{REGION_RAW_FLOOR['sscd']}")

    def best(report):
        return report.best if report.best is not None and report.verdict.is_copy else None

    def reached(report, own, tier) -> bool:
        b = best(report)
        return b is not None and b.item.id == own and b.verdict.rank >= tier.rank

    # whole-image edits, regions off (the default)
    whole = [(k, im) for k, o in enumerate(originals) for im in edits(o).values()]
    for name, checker in checkers.items():
        reps = [checker.check([im], regions="off")[0] for _, im in whole]
        likely = [reached(r, own_ids[k], Verdict.LIKELY) for (k, _), r in zip(whole, reps)]
        possible = [reached(r, own_ids[k], Verdict.POSSIBLE) for (k, _), r in zip(whole, reps)]
        print(f"whole-image edits (5 edits of {len(originals)} photos), {name:>7} verification: own original at "
              f"likely {share(likely)}, at possible {share(possible)}")

    # pastes, regions fast
    cases = []
    for scale in (0.55, 0.35):
        for _ in range(args.pastes):
            k = rng.randrange(len(originals))
            bg = random_crop(rng, others[rng.randrange(len(others))], ((512, 512), (512, 768), (768, 512))[rng.randrange(3)])
            im, _ = paste(rng, originals[k], bg, scale)
            cases.append((scale, k, im))
    raw: dict[float, list[float]] = {0.55: [], 0.35: []}
    for name, checker in checkers.items():
        reps = [checker.check([im], regions="fast")[0] for _, _, im in cases]
        for scale in (0.55, 0.35):
            got = [(k, r) for (s, k, _), r in zip(cases, reps) if s == scale]
            likely = [reached(r, own_ids[k], Verdict.LIKELY) for k, r in got]
            possible = [reached(r, own_ids[k], Verdict.POSSIBLE) for k, r in got]
            print(f"pasted at {round(scale * 100)}% (regions fast), {name:>7} verification: likely {share(likely)}, "
                  f"possible {share(possible)}")
            if name == "with":
                raw[scale] = [m.similarity for k, r in got for m in r.matches
                              if m.item.id == own_ids[k] and m.region is not None and m.verdict.is_copy]
    for scale, values in raw.items():
        if values:
            print(f"  raw similarity of the region matches finding their own original, {round(scale * 100)}% pastes: "
                  f"n={len(values)} min {min(values):.3f}, 5th pct {np.percentile(values, 5):.3f}")

    # novel photos, regions fast
    negatives, flat = [], 0
    while len(negatives) < args.negatives:
        im = random_crop(rng, others[rng.randrange(len(others))], ((512, 512), (512, 768), (768, 512))[rng.randrange(3)],
                         least=0.3)
        grey, s = detail_map(im)
        if detail(grey, s, Region(0, 0, im.size[0], im.size[1], *im.size)) < FLAT:
            flat += 1
            continue
        negatives.append(im)
    for name, checker in checkers.items():
        reps = [checker.check([im], regions="fast")[0] for im in negatives]
        likely = [r.checked and r.verdict.rank >= Verdict.LIKELY.rank for r in reps]
        possible = [r.checked and r.verdict.is_copy for r in reps]
        inliers = [m.geometry.inliers for r in reps for m in r.matches if m.geometry is not None and not m.geometry.detail]
        print(f"novel photos ({len(negatives)} crops of {len(others)} distinct photos, {flat} featureless crops left out; "
              f"regions fast), {name:>7} verification: likely {share(likely)}, possible {share(possible)}"
              + (f"; {len(inliers)} candidates verified, most inliers {max(inliers)}" if inliers else ""))

    # cost of the default check (regions off), interleaved
    timed = {name: [] for name in checkers}
    sample = [im for pair in zip([im for _, im in whole][::3], negatives) for im in pair][:args.timing]
    for im in sample:
        for name, checker in checkers.items():
            t = time.perf_counter()
            checker.check([im], regions="off")
            timed[name].append(time.perf_counter() - t)
    if sample:
        w, wo = statistics.median(timed["with"]), statistics.median(timed["without"])
        mw, mwo = statistics.mean(timed["with"]), statistics.mean(timed["without"])
        print(f"cost of the default check (regions off), one image at a time, interleaved, {len(sample)} images (edits "
              f"and novel crops): median {1000 * w:.0f} ms with verification, {1000 * wo:.0f} ms without "
              f"({w / wo:.2f}x); mean {1000 * mw:.0f} ms vs {1000 * mwo:.0f} ms ({mw / mwo:.2f}x)")
    print(f"run took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
