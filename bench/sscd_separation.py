"""How far SSCD (Meta's real sscd_disc_mixup weights, int8 ONNX) separates edited copies from
unrelated images, on the real photos and clip art that tests/setup.sh installs.

    python bench/sscd_separation.py

Copies: each pack photo of the tests through each edit the tests use (half size, JPEG quality 30,
90% centre crop, +15% brightness, 3-degree rotation), scored against its own original. Unrelated:
every other clip art drawing of the tests' selection and the photos that are not in the pack,
scored against the closest pack photo. The counts depend on what the Debian packages installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> None:
    import numpy as np

    from conftest import BACKGROUNDS, CLIPART, SSCD_ONNX, edits
    from lib_replicheck import embedders
    from lib_replicheck.images import load_image

    if not SSCD_ONNX.is_file():
        sys.exit(f"needs {SSCD_ONNX} (bash tests/setup.sh puts it there)")
    photos = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg")) + sorted(BACKGROUNDS.glob("*_by_*.jpg"))
    others = [p for p in sorted(BACKGROUNDS.glob("*")) if p.suffix in (".jpg", ".png") and "_by_" not in p.name]
    others += sorted((BACKGROUNDS / "mate" / "desktop").glob("*"))
    drawings = sorted(CLIPART.rglob("*.png"))
    drawings = drawings[:: max(1, len(drawings) // 400)][:400][::2]
    sscd = embedders.load("sscd", runtime="onnx", weights=SSCD_ONNX)

    def embed(paths):
        return np.concatenate([sscd.embed([load_image(p) for p in paths[i:i + 16]]) for i in range(0, len(paths), 16)])

    originals = embed(photos)
    scores: dict[str, list[float]] = {}
    for f, v in zip(photos, originals):
        variants = edits(load_image(f))
        for (name, _), e in zip(variants.items(), sscd.embed(list(variants.values()))):
            scores.setdefault(name, []).append(float(e @ v))
    print(f"edited copies of {len(photos)} real photos against their original (SSCD int8 ONNX):")
    for name, s in scores.items():
        print(f"  {name:>20}: min {min(s):.3f}  median {np.median(s):.3f}  max {max(s):.3f}")
    every = [x for s in scores.values() for x in s]
    print(f"  all edits: {min(every):.3f} to {max(every):.3f}")
    best = (embed(drawings + others) @ originals.T).max(axis=1)
    print(f"unrelated images ({len(drawings)} drawings, {len(others)} photos) against the closest pack photo: "
          f"max {best.max():.3f}, 99th percentile {np.percentile(best, 99):.3f}")


if __name__ == "__main__":
    main()
