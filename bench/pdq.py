"""PDQ on this CPU: what shrinking to 512 pixels before hashing saves, and what a 3-degree rotation
does to a hash.

    python bench/pdq.py

Real photos from tests/setup.sh (the pack photos of the tests). A 4K frame is one of them resized
to 3840x2160; it is hashed whole with pdqhash and through the pdq embedder, which shrinks it to 512
pixels first (time per hash: the fastest of 5). Rotation: each photo turned by 3 degrees, as it is
(black corners) and with the corners cropped away (the edit the tests use), against the photo's
own hash; a 90% centre crop alone for comparison.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def fastest(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    import numpy as np
    import pdqhash
    from PIL import Image

    from conftest import BACKGROUNDS, edits
    from lib_replicheck import embedders
    from lib_replicheck.embedders.pdq import hamming
    from lib_replicheck.images import load_image

    files = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg")) + sorted(BACKGROUNDS.glob("*_by_*.jpg"))
    if len(files) < 25:
        sys.exit("needs the photos of tests/setup.sh (mate-backgrounds, lomiri-wallpapers)")
    pdq = embedders.load("pdq")
    frame = load_image(files[0]).resize((3840, 2160), Image.Resampling.BICUBIC)
    pixels = np.ascontiguousarray(np.asarray(frame, dtype=np.uint8))
    whole = fastest(lambda: pdqhash.compute(pixels))
    shrunk = fastest(lambda: pdq.embed([frame]))
    bits, _ = pdqhash.compute(pixels)
    diff = hamming(np.packbits(np.asarray(bits, dtype=np.uint8)), pdq.embed([frame])[0])
    print(f"4K frame (3840x2160): {whole * 1000:.0f} ms hashed whole, {shrunk * 1000:.1f} ms shrunk to 512 "
          f"pixels first; the two hashes differ by {diff} bits")
    moved: dict[str, list[int]] = {"rotated 3 degrees": [], "rotated 3 degrees, corners cropped": [],
                                   "cropped 90% centre": []}
    for f in files:
        im = load_image(f)
        variants = [im.rotate(3, resample=Image.Resampling.BILINEAR), edits(im)["rotated 3 degrees"],
                    edits(im)["cropped 90% centre"]]
        codes = pdq.embed([im, *variants])
        for name, code in zip(moved, codes[1:]):
            moved[name].append(hamming(codes[0], code))
    for name, d in moved.items():
        print(f"{name}: the hash moves by {min(d)} to {max(d)} bits (median {int(np.median(d))}) over {len(d)} "
              f"photos; PDQ's match threshold is 31")

if __name__ == "__main__":
    main()
