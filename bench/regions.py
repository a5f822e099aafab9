"""Region search: partial copies found, false hits on novel photos, whole-image copies, and cost,
with Meta's real SSCD weights (int8 ONNX) on the real photos tests/setup.sh installs.

    python bench/regions.py [--seed 1] [--pastes 15] [--negatives 2000] [--region-negatives 2000]
                            [--kinds own,default,none]

The real photos the tests install (Debian's mate/nature and *_by_* wallpapers, 31) are split by
photo: every other one goes into the pack, the rest are the novel photos (the other images those
packages install are vector art and plain colours, not photos). Pack: built with the builder's one
writer (build_from_items) from its photos plus the tests' 400 clip art drawings as distractors, in
three kinds measured side by side (`--kinds`), as users get them: `own`, with a background of
`--background` (2,000) other drawings of the same source, as a recipe takes the rows of its list
outside the pack; `default`, built without one, so it uses the default background shipped for SSCD
(bench/default_background.py: public-domain drawings, none of them in this pack); `none`, the same
pack without any background, its regions judged on their raw similarity at the older tiers. Every
image is embedded once and judged against each kind.
Copies: a pack photo scaled so its larger side is 35%, 55% or 75% of the side of a background,
pasted at a random spot into a random crop of a novel photo (512x512, 512x768 or 768x512: the
generation sizes), plain, or with light edits afterwards (JPEG quality 75 and colour +20%).
Negatives: random crops (30-100%) and rescales of the novel photos: there are 15 of them, so the
2,000 negatives are distinct crops, not distinct photos; crops with no detail at all (a flat patch
of sky) are left out and counted. Whole-image copies: the tests' edits of every pack photo.
Everything random comes from `--seed`:
the region tiers in lib_replicheck/thresholds.py were set from a run with `--seed 0`, and the
figures reported come from `--seed 1`.

Every image is embedded once per mode by the embedder's own regions (`embed_regions`); each mode's
verdict is then made by the checker's rules (thresholds.verdict_for: its tiers and the regions' raw
floor; only copies from regions; its choice of the best match) over that mode's queries, and Checker.check itself is run on a sample to confirm it
gives the same best match. Cost: one image
at a time through Checker.check in each mode, interleaved in one run (medians).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

SCALES = (0.35, 0.55, 0.75)
SIZES = ((512, 512), (512, 768), (768, 512))
MODES = ("off", "fast", "thorough")
#: negatives with less detail than this (lib_replicheck/regions.py's measure) are left out: a
#: featureless crop (a patch of sky) is no photo to judge
FLAT = 0.5


def shrink(im, side: int = 1024):
    """At most `side` pixels on the long side (the photos are up to 5K; pastes need no more)."""
    from PIL import Image

    s = side / max(im.size)
    return im if s >= 1 else im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.Resampling.BILINEAR)


def random_crop(rng: random.Random, photo, size: tuple[int, int], least: float = 0.5):
    """A crop of `photo` with the aspect of `size`, between `least` and all of the largest such
    crop, resized to `size`."""
    from PIL import Image

    w, h = photo.size
    aspect = size[0] / size[1]
    cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
    f = rng.uniform(least, 1.0)
    cw, ch = max(8, round(cw * f)), max(8, round(ch * f))
    x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
    return photo.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)


def light_edit(im):
    """JPEG quality 75 after colour +20%: what a copy goes through on its way around."""
    from PIL import Image, ImageEnhance

    buf = io.BytesIO()
    ImageEnhance.Color(im).enhance(1.2).save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def paste(rng: random.Random, original, background, scale: float):
    """`original` scaled so its larger side is `scale` of the background's, pasted at a random spot;
    the composite and the box it landed in."""
    from PIL import Image

    from lib_replicheck.regions import Region

    W, H = background.size
    s = scale * min(W / original.size[0], H / original.size[1])
    pw, ph = max(1, round(original.size[0] * s)), max(1, round(original.size[1] * s))
    x, y = rng.randrange(W - pw + 1), rng.randrange(H - ph + 1)
    out = background.copy()
    out.paste(original.resize((pw, ph), Image.Resampling.BILINEAR), (x, y))
    return out, Region(x, y, pw, ph, W, H)


def counted(level: str, modes) -> tuple:
    """The modes a query of `level` counts in: the whole image ('off') in all, a region in its own."""
    return tuple(modes) if level == "off" else (level,)


class Judge:
    """Each image embedded once with its thorough regions; verdicts per pack and per mode by the
    checker's code, so the pack kinds are compared on the very same queries."""

    def __init__(self, embedder):
        self.embedder = embedder

    def embed(self, images: list, upto: str = "thorough"):
        """(query vectors, owners (image, box, mode that searches it), images, upto)."""
        import numpy as np

        queries, owners = [], []
        for chunk in range(0, len(images), 16):
            part = images[chunk:chunk + 16]
            whole, fast = self.embedder.embed_regions(part, "fast" if upto != "off" else "off")
            thorough = self.embedder.embed_regions(part, "thorough")[1] if upto == "thorough" else []
            for i, v in enumerate(whole):
                queries.append(v)
                owners.append((chunk + i, None, "off"))
            # each mode's regions count in that mode only (they are laid out differently, LAYOUTS);
            # the whole image counts in every mode
            for level, found in (("fast", fast), ("thorough", thorough)):
                for i, box, v in found:
                    queries.append(v)
                    owners.append((chunk + i, box, level))
        return (np.stack(queries) if queries else None), owners, len(images), upto

    def reports(self, pack, embedded) -> list[dict]:
        """Per image, per mode up to the embedding's: the best Match (None when nothing was found).
        Sets self.top (per image, per mode: the highest score of any query, copy or not) and
        self.top_normalised (the highest normalised score of any region), for the tails."""
        from lib_replicheck.checker import background_offsets, best_per_item
        from lib_replicheck.report import Match
        from lib_replicheck.thresholds import verdict_for

        vectors, owners, n, upto = embedded
        if not n:
            return []
        modes = MODES[:MODES.index(upto) + 1]
        found: list[dict[str, list]] = [{m: [] for m in modes} for _ in range(n)]
        self.top = [{m: 0.0 for m in modes} for _ in range(n)]
        self.top_normalised = [{m: None for m in modes} for _ in range(n)]
        hits_all = pack.search(vectors, 1)
        offsets = background_offsets(pack, vectors, [(i, box) for i, box, _ in owners], hits_all, [])
        for row, ((i, box, level), hits) in enumerate(zip(owners, hits_all)):
            offset = offsets.get(row)
            for h in hits[:1]:
                score = h.similarity if offset is None else h.similarity - offset
                for mode in counted(level, modes):
                    self.top[i][mode] = max(self.top[i][mode], h.similarity)
                    if offset is not None:
                        prev = self.top_normalised[i][mode]
                        self.top_normalised[i][mode] = score if prev is None else max(prev, score)
                verdict = verdict_for("sscd", h.similarity, region=box is not None, offset=offset)
                if box is not None and not verdict.is_copy:
                    continue  # as the checker: a region adds only the copies it finds
                m = Match(pack=pack.name, item=h.item, similarity=h.similarity, distance=h.distance,
                          verdict=verdict, embedder=self.embedder.id, region=box, background=offset)
                for mode in counted(level, modes):
                    found[i][mode].append(m)
        return [{mode: (best_per_item(ms) or [None])[0] for mode, ms in f.items()} for f in found]


def share(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / max(1, len(flags)):.1f}% of {len(flags)}"


def on_paste(box, paste) -> float:
    """Their intersection over the smaller of the two: the box lies on the paste, or holds it."""
    w = min(box.x + box.w, paste.x + paste.w) - max(box.x, paste.x)
    h = min(box.y + box.h, paste.y + paste.h) - max(box.y, paste.y)
    return max(0, w) * max(0, h) / min(box.w * box.h, paste.w * paste.h)


KINDS = ("own", "default", "none")
KIND_WORDS = {"own": "own background (recipe-style: other drawings of the same source, not in the pack)",
              "default": "default background (the one shipped for SSCD: 406 public-domain drawings)",
              "none": "no background (regions judged on their raw similarity at the older tiers)"}


def side_by_side(figures: dict[str, dict[str, str]], kinds: list[str]) -> None:
    """One line per figure: its value for each pack kind."""
    for label in next(iter(figures.values())):
        print(f"  {label}: " + " | ".join(f"{k}: {figures[k].get(label, '-')}" for k in kinds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="0 is the run the region tiers were set from")
    ap.add_argument("--pastes", type=int, default=15, help="pasted copies per scale, plain and edited each")
    ap.add_argument("--negatives", type=int, default=2000, help="novel crops judged on the whole image (off)")
    ap.add_argument("--region-negatives", type=int, default=2000, help="of those, judged in fast and thorough too")
    ap.add_argument("--whole-photos", type=int, default=1000, help="pack photos whose edited copies are judged")
    ap.add_argument("--timing", type=int, default=5, help="images timed through Checker.check per mode")
    ap.add_argument("--confirm", type=int, default=2, help="images checked by Checker.check to confirm the verdicts")
    ap.add_argument("--background", type=int, default=2000,
                    help="clip art drawings not in the pack, as the own background of the 'own' pack kind")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="pack kinds measured side by side: own (a background of the same source, as recipes "
                         "build), default (built without one: the shipped default), none (no background at all)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or any(k not in KINDS for k in kinds):
        sys.exit(f"--kinds: a comma-separated list of {', '.join(KINDS)}")

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
    from lib_replicheck.thresholds import NORMALISED_REGION_TIERS, REGION_RAW_FLOOR, REGION_TIERS, Verdict

    if not SSCD_ONNX.is_file():
        sys.exit(f"needs {SSCD_ONNX} (bash tests/setup.sh puts it there)")
    started = time.perf_counter()
    photos = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg")) + sorted(BACKGROUNDS.glob("*_by_*.jpg"))
    pack_files, other_files = photos[0::2], photos[1::2]  # split by photo: the novel ones are never in the pack
    drawings = sorted(CLIPART.rglob("*.png"))
    drawings = drawings[:: max(1, len(drawings) // 400)][:400]
    originals = [shrink(load_image(p)) for p in pack_files]
    others = [shrink(load_image(p)) for p in other_files]
    sscd = embedders.load("sscd", runtime="onnx", weights=SSCD_ONNX)
    tmp = Path(tempfile.mkdtemp(prefix="replicheck-regions-"))
    chosen = set(drawings)
    background = [SourceItem(key=p.name, path=str(p)) for p in sorted(CLIPART.rglob("*.png")) if p not in chosen][::3]
    items = [SourceItem(key=p.name, path=str(p)) for p in pack_files + drawings]
    packs, checkers, own_ids = {}, {}, {}
    for kind in kinds:
        if kind == "none" and "default" in packs:
            path = packs["default"].path  # the same pack, opened without the shipped default
        else:
            path = build_from_items(items, sscd, tmp / kind, thumbnails=False, log=lambda s: None,
                                    background=background if kind == "own" else None,
                                    background_size=max(1, args.background)).path
        pack = packs[kind] = Pack(path, default_background=kind != "none")
        by_source = {pack.metadata.get([r])[r].source: r for r in range(pack.manifest.count)}
        own_ids[kind] = [pack.metadata.get([by_source[p.name]])[by_source[p.name]].id for p in pack_files]
        checkers[kind] = Checker([pack], top_k=1,
                                 embedder=EmbedderOptions(runtime="onnx", weights=SSCD_ONNX, offline=True))
        checkers[kind].embedder(pack)
    judge = Judge(sscd)
    rng = random.Random(args.seed)
    print(f"region search: SSCD int8 ONNX (sscd_disc_mixup), pack of {len(pack_files)} photos + {len(drawings)} "
          f"drawings, seed {args.seed}; whole image judged on the similarity (possible 0.5, likely 0.75); pack kinds:")
    for kind in kinds:
        pack = packs[kind]
        normalised = pack.background is not None
        tiers = (NORMALISED_REGION_TIERS if normalised else REGION_TIERS)["sscd"]
        rows = "" if not normalised else (
            f": {pack.manifest.background['count']} other drawings ({pack.manifest.background['dropped_as_copies']} "
            "dropped as copies of pack images)" if pack.manifest.background else
            f": {len(pack.background)} rows of {pack.default_background.name}")
        print(f"  {kind}: {KIND_WORDS[kind]}{rows}; region tiers on the "
              f"{'normalised score (similarity less the mean of the 3 nearest background images)' if normalised else 'similarity'}"
              f": possible {tiers.possible}, likely {tiers.likely}"
              + (f", above a raw similarity of {REGION_RAW_FLOOR['sscd']}" if normalised else ""))

    # pasted copies
    cases = []
    for scale in SCALES:
        for edited in (False, True):
            for _ in range(args.pastes):
                k = rng.randrange(len(originals))
                bg = random_crop(rng, others[rng.randrange(len(others))], SIZES[rng.randrange(len(SIZES))])
                im, box = paste(rng, originals[k], bg, scale)
                cases.append((scale, edited, k, light_edit(im) if edited else im, box))
    embedded = judge.embed([c[3] for c in cases])
    figures: dict[str, dict[str, str]] = {k: {} for k in kinds}
    for kind in kinds:
        judged, ids, f = judge.reports(packs[kind], embedded), own_ids[kind], figures[kind]
        for scale in SCALES:
            for tier in (Verdict.POSSIBLE, Verdict.LIKELY):
                for mode in MODES:
                    ok = [b is not None and b.item.id == ids[k] and b.verdict.rank >= tier.rank
                          for (s, _, k, _, _), r in zip(cases, judged) if s == scale for b in [r[mode]]]
                    f[f"{round(scale * 100)}% pastes at {tier.value}, {mode}"] = share(ok)
        for mode in ("fast", "thorough"):
            inside = [on_paste(r[mode].region, box) >= 0.5 for (_, _, k, _, box), r in zip(cases, judged)
                      if r[mode] is not None and r[mode].region is not None and r[mode].item.id == ids[k]
                      and r[mode].verdict.is_copy]
            f[f"{mode}: reported region on the paste (of copies found through a region)"] = share(inside)
        big = [(c, r) for c, r in zip(cases, judged) if c[0] >= 0.55]
        small = [(c, r) for c, r in zip(cases, judged) if c[0] == 0.35]
        for mode in ("fast", "thorough"):
            likely = [r[mode] is not None and r[mode].item.id == ids[c[2]] and r[mode].verdict.rank >= Verdict.LIKELY.rank
                      for c, r in big]
            possible = [r[mode] is not None and r[mode].item.id == ids[c[2]] and r[mode].verdict.is_copy
                        for c, r in small]
            f[f"target {mode}: >= 55% pastes at likely copy (90%)"] = share(likely)
            f[f"target {mode}: 35% pastes at possible copy (80%)"] = share(possible)
    print("pasted copies into other photos (plain / JPEG 75 + colour), share reaching the tier with their own "
          "original as the best match:")
    side_by_side(figures, kinds)

    # novel photos
    negatives, flat = [], 0
    while len(negatives) < args.negatives:
        im = random_crop(rng, others[rng.randrange(len(others))], SIZES[rng.randrange(len(SIZES))], least=0.3)
        grey, s = detail_map(im)
        if detail(grey, s, Region(0, 0, im.size[0], im.size[1], *im.size)) < FLAT:
            flat += 1  # a flat picture matches any flat training image, regions or not
            continue
        negatives.append(im)
    scores = {k: {m: [] for m in MODES} for k in kinds}
    normalised_scores = {k: {m: [] for m in MODES} for k in kinds}
    flagged = {k: {m: [] for m in MODES} for k in kinds}
    by_region = {k: {m: [] for m in MODES} for k in kinds}
    for start in range(0, len(negatives), 50):
        chunk = negatives[start:start + 50]
        embedded = judge.embed(chunk, "thorough" if start < args.region_negatives else "off")
        for kind in kinds:
            for r, top, top_n in zip(judge.reports(packs[kind], embedded), judge.top, judge.top_normalised):
                for mode in r:
                    scores[kind][mode].append(top[mode])
                    if top_n[mode] is not None:
                        normalised_scores[kind][mode].append(top_n[mode])
                    flagged[kind][mode].append(r[mode].verdict.is_copy)
                    by_region[kind][mode].append(r[mode].verdict.is_copy and r[mode].region is not None)
    figures = {k: {} for k in kinds}
    for kind in kinds:
        for mode in MODES:
            s = np.asarray(scores[kind][mode])
            figures[kind][f"{mode}: flagged (target 0.1%)"] = share(flagged[kind][mode])
            figures[kind][f"{mode}: flagged through a region"] = share(by_region[kind][mode])
            figures[kind][f"{mode}: best similarity max / 99.9th pct"] = \
                f"{s.max():.3f} / {np.percentile(s, 99.9):.3f}" if len(s) else "-"
            n = np.asarray(normalised_scores[kind][mode])
            figures[kind][f"{mode}: best normalised region score max / 99.9th pct"] = \
                f"{n.max():.3f} / {np.percentile(n, 99.9):.3f} (in {len(n)} crops)" if len(n) else "-"
    print(f"novel photos ({len(negatives)} crops and rescales of the {len(others)} other photos, not in the pack; {flat} "
          "featureless crops left out), best score over the whole image and its regions, share flagged at the "
          "default tiers:")
    side_by_side(figures, kinds)

    # whole-image copies
    whole = [(k, im) for k, o in enumerate(originals[:args.whole_photos]) for im in edits(o).values()]
    if whole:
        embedded = judge.embed([im for _, im in whole], "fast")
        figures = {k: {} for k in kinds}
        for kind in kinds:
            wj = judge.reports(packs[kind], embedded)
            for mode in ("off", "fast"):
                ok = [r[mode].item.id == own_ids[kind][k] and r[mode].verdict.rank >= Verdict.LIKELY.rank
                      for (k, _), r in zip(whole, wj)]
                figures[kind][f"{mode}: own original at likely copy or above"] = share(ok)
                figures[kind][f"{mode}: lowest best score"] = f"{min(r[mode].similarity for r in wj):.3f}"
        print(f"whole-image copies (the tests' 5 edits of {len(originals)} photos):")
        side_by_side(figures, kinds)

    # the checker itself on a sample, and the cost side by side
    sample = [c[3] for c in cases[:: max(1, len(cases) // max(1, args.confirm))][:args.confirm]]
    embedded = judge.embed(sample)
    for kind in kinds:
        same = 0
        for im, r in zip(sample, judge.reports(packs[kind], embedded)):
            for mode in MODES:
                rep = checkers[kind].check([im], regions=mode)[0]
                same += (rep.best.item.id, rep.best.region, rep.verdict) == \
                    (r[mode].item.id, r[mode].region, r[mode].verdict)
        print(f"{kind}: " + f"Checker.check gives the same best match, region and verdict as above in {same} of "
              f"{len(sample) * len(MODES)}")
    timed = {(k, m): [] for k in kinds for m in MODES}
    for im in [c[3] for c in cases[1::max(1, len(cases) // max(1, args.timing))][:args.timing]]:
        for kind in kinds:
            for mode in MODES:
                t = time.perf_counter()
                checkers[kind].check([im], regions=mode)
                timed[kind, mode].append(time.perf_counter() - t)
    if timed[kinds[0], "off"]:
        off = statistics.median(timed[kinds[0], "off"])
        print(f"cost per image, Checker.check one image at a time, interleaved, median of {len(timed[kinds[0], 'off'])} "
              f"(x: of {kinds[0]}'s off; target for fast: 2x):")
        for kind in kinds:
            print(f"  {kind}: " + ", ".join(f"{m} {1000 * statistics.median(timed[kind, m]):.0f} ms "
                                            f"({statistics.median(timed[kind, m]) / off:.1f}x)" for m in MODES))
    print(f"run took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
