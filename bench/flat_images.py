"""Where "flat" ends: the structure of the test fixtures, to set images.FLAT_STRUCTURE from.

    python bench/flat_images.py

Structure (lib_replicheck/images.py) is measured on every image the tests use as a photo or a
drawing (the conftest fixtures: the pack photos, the other photos and wallpapers, the 400 drawings
of openclipart-png), on MATE's transparent wallpapers put on white as the check sees them, and on
plain colours and gradients made here. A real photo or a drawing must measure above the cut; plain
colours, gradients and pictures that are almost all transparent below it. Some fixtures are not
photos or drawings but gradients or transparent wallpapers themselves (openclipart's
special/gradients, MATE-Stripes-Light.png): they are listed with what they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

#: fixtures that are a gradient or a transparent wallpaper, not a photo or a drawing (checked by eye)
NOT_PICTURES = ("gradients/", "MATE-Stripes-Light.png")


def made_here() -> dict:
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, 512, dtype=np.float32)[None, :].repeat(512, 0)
    return {"plain white": Image.new("RGB", (512, 512), "white"),
            "plain black": Image.new("RGB", (512, 512), "black"),
            "plain red": Image.new("RGB", (512, 512), (200, 30, 30)),
            "black-to-white gradient": Image.fromarray(ramp.astype(np.uint8)).convert("RGB"),
            "gradient of 40 grey levels": Image.fromarray((100 + ramp * 40 / 255).astype(np.uint8)).convert("RGB")}


def main() -> None:
    from conftest import BACKGROUNDS, CLIPART
    from lib_replicheck.images import FLAT_STRUCTURE, load_image, structure

    photos = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg")) + sorted(BACKGROUNDS.glob("*_by_*.jpg"))
    others = [p for p in sorted(BACKGROUNDS.glob("*")) if p.suffix in (".jpg", ".png") and "_by_" not in p.name]
    others += sorted((BACKGROUNDS / "mate" / "desktop").glob("*"))
    drawings = sorted(CLIPART.rglob("*.png"))
    drawings = drawings[::max(1, len(drawings) // 400)][:400]
    transparent = sorted((BACKGROUNDS / "mate" / "abstract").glob("*.png"))
    if len(photos) < 25 or len(drawings) < 300:
        sys.exit("needs the photos and clip art of tests/setup.sh")

    def measured(paths):
        return [(p, structure(load_image(p))) for p in paths]

    groups = {"photos": measured(photos), "wallpapers and other images": measured(others),
              "drawings": measured(drawings)}
    pictures = [(p, s) for group in groups.values() for p, s in group if not any(n in str(p) for n in NOT_PICTURES)]
    not_pictures = [(p, s) for group in groups.values() for p, s in group if any(n in str(p) for n in NOT_PICTURES)]
    flat = [(name, structure(im)) for name, im in made_here().items()]
    flat += [(p.name + " on white", s) for p, s in measured(transparent)]
    flat += [(p.name, s) for p, s in not_pictures]
    for what, group in groups.items():
        kept = [(p, s) for p, s in group if not any(n in str(p) for n in NOT_PICTURES)]
        p, s = min(kept, key=lambda x: x[1])
        print(f"{len(kept)} {what} of the fixtures: least structured {p.name} {s:.3f}")
    high = max(flat, key=lambda x: x[1])
    print(f"{len(flat)} plain colours, gradients and transparent pictures on white: most structured "
          f"{high[0]} {high[1]:.3f}")
    for name, s in flat:
        print(f"  {name}: {s:.3f}")
    wrong = [p.name for p, s in pictures if s < FLAT_STRUCTURE] + [n for n, s in flat if s >= FLAT_STRUCTURE]
    print(f"cut {FLAT_STRUCTURE:.2f}: " + ("every image on its side" if not wrong else "on the wrong side: "
                                             + ", ".join(wrong)))


if __name__ == "__main__":
    main()
