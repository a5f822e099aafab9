"""The CLIP cut of verification (lib_replicheck/verification/step.py CLIP_CUT): the CLIP similarity
from which a match of a CLIP pack is a candidate worth fetching and comparing, measured on the real
photos that tests/setup.sh installs.

    python bench/clip_cut.py [--model ViT-B-32] [--pretrained TAG]

Copies: each pack photo of the tests through each edit the tests use (half size, JPEG quality 30,
90% centre crop, +15% brightness, 3-degree rotation) and half size then JPEG quality 75, scored
against its own original. Novel: the photos that are not in the pack, scored against their nearest
pack photo. Prints the cut that keeps at least 99% of the copies as candidates (the copies' 1st
percentile, rounded down to 0.01) and the share of novel photos at or above it.

The weights are open_clip's, looked up on disk only (no download). When none are on disk, the model
runs with random weights (seed 0) and the figures only demonstrate the method: re-measure with the
pack's real weights.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def load_clip(model: str, pretrained: str | None):
    """A CLIP embedder with weights found on disk, else random weights (seed 0); and which it is."""
    import open_clip
    import torch

    from lib_replicheck.embedders.clip import ClipEmbedder
    from lib_replicheck.errors import EmbedderError

    tags = [pretrained] if pretrained else open_clip.list_pretrained_tags_by_model(model)
    for tag in tags:
        try:
            return ClipEmbedder(model, tag, offline=True), f"{model}/{tag}"
        except EmbedderError:
            continue
    torch.manual_seed(0)
    return ClipEmbedder(model, None), f"{model} with RANDOM weights"


def main() -> None:
    import numpy as np

    from conftest import BACKGROUNDS, edits, jpeg
    from lib_replicheck.images import load_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default=None, help="an open_clip tag on disk (default: the first found)")
    args = ap.parse_args()
    clip, which = load_clip(args.model, args.pretrained)
    random = "RANDOM" in which
    photos = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg")) + sorted(BACKGROUNDS.glob("*_by_*.jpg"))
    novel = [p for p in sorted(BACKGROUNDS.glob("*")) if p.suffix in (".jpg", ".png") and "_by_" not in p.name]
    novel += sorted((BACKGROUNDS / "mate" / "desktop").glob("*"))
    if len(photos) < 25 or len(novel) < 15:
        sys.exit("needs the Debian wallpaper packages (bash tests/setup.sh)")
    originals = np.concatenate([clip.embed([load_image(p)]) for p in photos])
    copies = []
    for f, v in zip(photos, originals):
        im = load_image(f)
        variants = list(edits(im).values())
        variants.append(jpeg(im.resize((im.width // 2, im.height // 2)), 75))
        copies += [float(e @ v) for e in clip.embed(variants)]
    nearest = (np.concatenate([clip.embed([load_image(p)]) for p in novel]) @ originals.T).max(axis=1)
    cut = math.floor(float(np.percentile(copies, 1)) * 100) / 100
    kept = float(np.mean(np.asarray(copies) >= cut))
    above = float(np.mean(nearest >= cut))
    print(f"CLIP {which}")
    if random:
        print("WARNING: no CLIP weights were found on disk: these figures come from RANDOM weights and only "
              "demonstrate the method; re-measure with the real weights before relying on the cut")
    print(f"edited copies of {len(photos)} real photos ({len(copies)}) against their original: min {min(copies):.3f}, "
          f"1st percentile {np.percentile(copies, 1):.3f}, median {np.median(copies):.3f}")
    print(f"novel photos ({len(novel)}) against their nearest pack photo: max {nearest.max():.3f}, "
          f"median {np.median(nearest):.3f}")
    print(f"cut keeping >= 99% of copies as candidates: {cut:.2f} ({kept:.1%} kept); novel photos at or above it: "
          f"{above:.1%}")


if __name__ == "__main__":
    main()
