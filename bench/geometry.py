"""Geometric verification of candidates: verdicts with and without it, side by side in one run, with
Meta's real SSCD weights (int8 ONNX) on the real photos tests/setup.sh installs.

    python bench/geometry.py [--seed 1] [--pastes 20] [--negatives 200] [--timing 20]

The pack is built as bench/regions.py builds it (every other real photo, the tests' clip art as
distractors, a background set of other drawings), with 256-pixel thumbnails (build --thumbnails),
which verification compares with. SIFT against ORB: every pair verification looked at in the run
(edited copies and pastes with their own thumbnail, found through the checker), and each novel crop
against the thumbnails of 3 random pack photos, verified by both methods (inliers, time per pair).
The region raw floor: the raw similarities of region matches with the floor switched off, for the
pastes' own originals and for novel crops. Two checkers search it: one verifies geometrically (the default),
one does not (Checker(geometry=False): a region's copy then stays "possible"). Whole-image copies:
the tests' 5 edits of every pack photo and 3 heavier ones (the centre 60% and 50%, a 10 degree turn
cropped to its centre 70%), checked with regions off (the default). Pastes: a pack photo
pasted at 55% or 35% of the side into a crop of a novel photo, checked with `--regions fast`. Novel
photos: random crops of the other real photos (there are only as many distinct photos as the
packages install; the count is printed), featureless crops left out, checked with `--regions fast`.
The shortlist (thresholds.GEOMETRY_SHORTLIST): each paste's and each novel crop's top region candidate
under `fast`, whatever its tier, with fast's own box layout and with the denser one thorough lays on the
same pass (regions.LAYOUTS); the novel crops' three best are verified on their thumbnails.
Cost: Checker.check one image at a time, regions off, both checkers interleaved on the same images
(edits and novel crops alternately), medians; beside them `fast` with verification, in both layouts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]


def checkerboard(squares: int, side: int, dark: str = "black", light: str = "white"):
    """A drawn checkerboard: the generic pattern a region must not call a copy on its descriptor alone."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (side, side), light)
    draw, c = ImageDraw.Draw(im), side // squares
    for i in range(squares):
        for j in range(squares):
            if (i + j) % 2 == 0:
                draw.rectangle((i * c, j * c, (i + 1) * c - 1, (j + 1) * c - 1), fill=dark)
    return im


@contextmanager
def fast_laid_as(mode: str):
    """`fast` with the box layout of `mode` (regions.LAYOUTS), for the time of the block."""
    from lib_replicheck import regions

    kept = regions.LAYOUTS["fast"]
    regions.LAYOUTS["fast"] = regions.LAYOUTS[mode]
    try:
        yield
    finally:
        regions.LAYOUTS["fast"] = kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="0 is the run the inlier cut and the raw floor were set from")
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
    from lib_replicheck import thresholds
    from lib_replicheck.images import centre_crop, load_image
    from lib_replicheck.verification.geometry import judged, verify
    from lib_replicheck.packs.pack import Pack
    from lib_replicheck.regions import Region, detail, detail_map
    from lib_replicheck.thresholds import GEOMETRY_INLIERS, REGION_RAW_FLOOR, Verdict
    from regions import FLAT, paste, random_crop, share, shrink

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
    def heavier(o):
        from PIL import Image

        return [centre_crop(o, 0.6), centre_crop(o, 0.5),
                centre_crop(o.rotate(10, resample=Image.Resampling.BILINEAR), 0.7)]

    whole = [(k, im) for k, o in enumerate(originals) for im in [*edits(o).values(), *heavier(o)]]
    pairs = []  # (checked image, own original's index or None, region) of every candidate verified
    for name, checker in checkers.items():
        reps = [checker.check([im], regions="off")[0] for _, im in whole]
        likely = [reached(r, own_ids[k], Verdict.LIKELY) for (k, _), r in zip(whole, reps)]
        possible = [reached(r, own_ids[k], Verdict.POSSIBLE) for (k, _), r in zip(whole, reps)]
        print(f"whole-image edits (5 edits and 3 heavier of {len(originals)} photos), {name:>7} verification: own "
              f"original at likely {share(likely)}, at possible {share(possible)}")
        if name == "with":
            pairs += [(im, k, m.region) for (k, im), r in zip(whole, reps) for m in r.matches
                      if m.geometry is not None and m.item.id == own_ids[k]]

    # pastes, regions fast
    cases = []
    for scale in (0.55, 0.35):
        for _ in range(args.pastes):
            k = rng.randrange(len(originals))
            bg = random_crop(rng, others[rng.randrange(len(others))], ((512, 512), (512, 768), (768, 512))[rng.randrange(3)])
            im, _ = paste(rng, originals[k], bg, scale)
            cases.append((scale, k, im))
    for name, checker in checkers.items():
        reps = [checker.check([im], regions="fast")[0] for _, _, im in cases]
        for scale in (0.55, 0.35):
            got = [(k, r) for (s, k, _), r in zip(cases, reps) if s == scale]
            likely = [reached(r, own_ids[k], Verdict.LIKELY) for k, r in got]
            possible = [reached(r, own_ids[k], Verdict.POSSIBLE) for k, r in got]
            print(f"pasted at {round(scale * 100)}% (regions fast), {name:>7} verification: likely {share(likely)}, "
                  f"possible {share(possible)}")
        if name == "with":
            pairs += [(im, k, m.region) for (_, k, im), r in zip(cases, reps) for m in r.matches
                      if m.geometry is not None and m.item.id == own_ids[k]]

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

    # the shortlist (thresholds.GEOMETRY_SHORTLIST): each image's top region candidate under `fast`, whatever its tier;
    # and under `fast` laid out as `thorough` lays its first pass (regions.LAYOUTS: 7x the boxes), side by side
    from lib_replicheck.thresholds import GEOMETRY_SHORTLIST

    def top_regions(im, n=1):
        """The training images the regions of `fast` find first, best normalised score first: (id, normalised, box)."""
        _, found = sscd.embed_regions([im], "fast")
        if not found:
            return []
        vectors = np.stack([v for _, _, v in found])
        best = {}
        for (_, box, _), hits, offset in zip(found, pack.search(vectors, 1), pack.background_offsets(vectors)):
            score = hits[0].similarity - float(offset)
            if hits[0].item.id not in best or score > best[hits[0].item.id][0]:
                best[hits[0].item.id] = (score, box)
        return sorted(((i, s_, b) for i, (s_, b) in best.items()), key=lambda t: -t[1])[:n]

    for layout in ("fast", "thorough"):
        with fast_laid_as(layout):
            tops = [(s_, k, top_regions(im)) for s_, k, im in cases]
        for scale in (0.55, 0.35):
            own_top = [t[0][1] for s_, k, t in tops if s_ == scale and t and t[0][0] == own_ids[k]]
            print(f"top region candidate under fast laid out as {layout} (the shortlist, cut {GEOMETRY_SHORTLIST['sscd']}), "
                  f"pasted at {round(scale * 100)}%: the paste's own original in {len(own_top)} of "
                  f"{sum(1 for s_, _, _ in tops if s_ == scale)}, normalised score min {min(own_top, default=float('nan')):.3f}, "
                  f"{sum(v >= GEOMETRY_SHORTLIST['sscd'] for v in own_top)} at or above the cut")
    novel_tops = [top_regions(im, 3) for im in negatives]
    firsts = [t[0][1] for t in novel_tops if t]
    row_of = {pack.metadata.get([r])[r].id: r for r in range(pack.manifest.count)}
    novel_judged = [judged(im, load_image(pack.thumbnail_path(pack.metadata.get([row_of[i]])[row_of[i]])), box)
                    for im, t in zip(negatives, novel_tops) for i, _, box in t]
    novel_inliers = [g.inliers for g in novel_judged if not g.detail]
    print(f"novel crops' top region candidate: normalised median {np.median(firsts):.3f}, 99th pct "
          f"{np.percentile(firsts, 99):.3f}, max {max(firsts):.3f}; at or above the shortlist cut "
          f"{share([f >= GEOMETRY_SHORTLIST['sscd'] for f in firsts])}; their 3 best region candidates verified "
          f"on the thumbnail: most inliers {max(novel_inliers, default=0)} of {len(novel_inliers)} pairs, verified "
          f"{sum(g.verified for g in novel_judged)} ({len(novel_judged) - len(novel_inliers)} thumbnails too small to compare)")

    # the region raw floor, measured with it switched off
    floor, thresholds.REGION_RAW_FLOOR["sscd"] = thresholds.REGION_RAW_FLOOR["sscd"], -1.0
    try:
        own = [m.similarity for (_, k, im) in cases for m in checkers["without"].check([im], regions="fast")[0].matches
               if m.region is not None and m.verdict.is_copy and m.item.id == own_ids[k]]
        novel = [m.similarity for im in negatives for m in checkers["without"].check([im], regions="fast")[0].matches
                 if m.region is not None and m.verdict.is_copy]
    finally:
        thresholds.REGION_RAW_FLOOR["sscd"] = floor
    for label, values in (("pastes' own originals", own), ("novel crops", novel)):
        if values:
            print(f"region copies with the raw floor off, {label}: n={len(values)}, raw similarity min "
                  f"{min(values):.3f}, 5th pct {np.percentile(values, 5):.3f}, max {max(values):.3f}")
        else:
            print(f"region copies with the raw floor off, {label}: none")

    # SIFT against ORB on the same pairs
    thumbs = {k: load_image(pack.thumbnail_path(pack.metadata.get([by_source[p.name]])[by_source[p.name]]))
              for k, p in enumerate(pack_files)}
    others_pairs = [(im, k, None) for im in negatives for k in rng.sample(range(len(originals)), 3)]
    board = checkerboard(8, 512)
    board.thumbnail((256, 256))
    boards = [checkerboard(n, 512, *c) for n in (4, 5, 6, 10, 12, 16)
              for c in (("black", "white"), ("#202020", "#e0e0e0"), ("darkred", "khaki"))]
    for method in ("sift", "orb"):
        t = time.perf_counter()
        true = [verify(im, thumbs[k], region, method=method).inliers for im, k, region in pairs]
        false = [verify(im, thumbs[k], region, method=method).inliers for im, k, region in others_pairs]
        ms = 1000 * (time.perf_counter() - t) / max(1, len(true) + len(false))
        drawn = [verify(im, board, method=method).inliers for im in boards]
        print(f"{method}: copies with their own thumbnail (the candidates verified above) at >= {GEOMETRY_INLIERS} "
              f"inliers {share([n >= GEOMETRY_INLIERS for n in true])}; novel crops against 3 random pack "
              f"thumbnails each: most inliers {max(false, default=0)}, at >= {GEOMETRY_INLIERS} "
              f"{share([n >= GEOMETRY_INLIERS for n in false])}; {ms:.0f} ms a pair; {len(boards)} drawn "
              f"checkerboards (4 to 16 squares a side, 3 colourings) against an 8x8 one: most inliers {max(drawn)}")

    # cost of the default check (regions off), interleaved, and of `fast` with verification beside it, laid out
    # as it is and as thorough lays its first pass
    timed = {name: [] for name in [*checkers, "fast", "fast laid out as thorough"]}
    sample = [im for pair in zip([im for _, im in whole][::3], negatives) for im in pair][:args.timing]
    banded = []  # whether verification looked at a candidate of the image
    for im in sample:
        for name, checker in [*checkers.items(), ("fast", checkers["with"]), ("fast laid out as thorough", checkers["with"])]:
            with fast_laid_as("thorough" if name.endswith("thorough") else "fast"):
                t = time.perf_counter()
                report = checker.check([im], regions="fast" if name.startswith("fast") else "off")[0]
                timed[name].append(time.perf_counter() - t)
            if name == "with":
                banded.append(any(m.geometry is not None for m in report.matches))
    if sample:
        w, wo = statistics.median(timed["with"]), statistics.median(timed["without"])
        mw, mwo = statistics.mean(timed["with"]), statistics.mean(timed["without"])
        print(f"cost of the default check (regions off), one image at a time, interleaved, {len(sample)} images (edits "
              f"and novel crops): median {1000 * w:.0f} ms with verification, {1000 * wo:.0f} ms without "
              f"({w / wo:.2f}x); mean {1000 * mw:.0f} ms vs {1000 * mwo:.0f} ms ({mw / mwo:.2f}x)")
        is_novel = [any(im is n for n in negatives) for im in sample]
        on = statistics.median([t for t, n in zip(timed["with"], is_novel) if n])
        for name in ("fast", "fast laid out as thorough"):
            f_ = statistics.median(timed[name])
            fn = statistics.median([t for t, n in zip(timed[name], is_novel) if n])
            print(f"  regions {name}, with verification, on the same images: median {1000 * f_:.0f} ms ({f_ / w:.2f}x the "
                  f"default check); on the {sum(is_novel)} novel crops alone {1000 * fn:.0f} ms against {1000 * on:.0f} ms "
                  f"({fn / on:.2f}x)")
        if any(banded):
            bw = statistics.median([t for t, b in zip(timed["with"], banded) if b])
            bwo = statistics.median([t for t, b in zip(timed["without"], banded) if b])
            print(f"  the {sum(banded)} of them with a candidate verified: median {1000 * bw:.0f} ms with, "
                  f"{1000 * bwo:.0f} ms without ({bw / bwo:.2f}x)")
    print(f"run took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
