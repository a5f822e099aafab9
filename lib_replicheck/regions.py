"""Query-side regions: parts of the checked image searched beside the whole image.

A whole-image descriptor misses a training image reproduced inside a larger picture (a "template"
or partial copy): pasted at 55% of the side into another photo, Meta's SSCD scores well below the
0.5 cut against its original. A crop that holds most of the copy scores much higher. Each crop is
one more forward pass of the model at its own input size (crops shrunk further lose most of their
score), so the sets are small; `bench/regions.py` measures what each finds and costs:

- `off`: the whole image only (one forward pass); the default, for the cost.
- `fast`: a 3x3 grid of half-size tiles, overlapping by half (9 regions), for copies about half
  the side across or larger.
- `thorough`: `fast` plus a 4x4 grid of tiles of 35% of the side (25 regions), for smaller ones.

Boxes are in pixels of the checked image, as it was given to the check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lib_replicheck.errors import ReplicheckError

MODES = ("off", "fast", "thorough")
DEFAULT_MODE = "off"

#: (tile side as a share of the image side, tiles per row) of each mode's grids
GRIDS: dict[str, tuple[tuple[float, int], ...]] = {
    "off": (),
    "fast": ((0.5, 3),),
    "thorough": ((0.5, 3), (0.35, 4)),
}

#: Regions narrower than this many pixels are not searched: too little for a descriptor to judge.
MIN_SIDE = 32
#: Regions with less detail than this are not searched: the mean step in grey level (0-255) between
#: neighbouring pixels, on the image shrunk to DETAIL_SIDE pixels. A flat tile (sky, a plain
#: background) scores up to 1.0 against any flat training image, which says nothing about copying.
MIN_DETAIL = 0.5
DETAIL_SIDE = 128


@dataclass(frozen=True)
class Region:
    """A box in pixels of the checked image: left, top, width, height; and the size of that image,
    so the box can be drawn over it (the panel, the HTML report) without the image at hand."""

    x: int
    y: int
    w: int
    h: int
    image_w: int
    image_h: int

    def to_dict(self) -> dict:
        return asdict(self)

    def crop_box(self) -> tuple[int, int, int, int]:
        """The box as PIL's crop wants it: (left, top, right, bottom)."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def text(self) -> str:
        return f"{self.w}x{self.h} at ({self.x}, {self.y})"


def check_mode(mode: str | None) -> str:
    """The mode named, or a clear error listing the modes."""
    mode = DEFAULT_MODE if mode is None else str(mode).strip().lower()
    if mode not in MODES:
        raise ReplicheckError(f"regions {mode!r}: choose one of {', '.join(MODES)}")
    return mode


def grid(width: int, height: int, share: float, per_row: int) -> list[Region]:
    """`per_row` x `per_row` tiles of `share` of each side, spread evenly from edge to edge."""
    tw, th = max(1, round(width * share)), max(1, round(height * share))
    steps = [i / (per_row - 1) for i in range(per_row)] if per_row > 1 else [0.5]
    return [Region(round((width - tw) * fx), round((height - th) * fy), tw, th, width, height)
            for fy in steps for fx in steps]


def propose(width: int, height: int, mode: str) -> list[Region]:
    """The regions searched for an image of this size, besides the whole image; none in `off`
    mode or when the image is too small for them."""
    regions: list[Region] = []
    for share, per_row in GRIDS[check_mode(mode)]:
        for r in grid(width, height, share, per_row):
            if min(r.w, r.h) >= MIN_SIDE and r not in regions:
                regions.append(r)
    return regions


def detail_map(image):
    """The image in grey, shrunk so its long side is DETAIL_SIDE pixels, as a float array."""
    import numpy as np
    from PIL import Image

    w, h = image.size
    s = min(1.0, DETAIL_SIDE / max(w, h))
    grey = image.convert("L").resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float32), s


def detail(grey, scale: float, box: Region) -> float:
    """Mean absolute step between neighbouring pixels inside `box` (see MIN_DETAIL)."""
    import numpy as np

    x0, y0 = int(box.x * scale), int(box.y * scale)
    x1, y1 = max(x0 + 2, round((box.x + box.w) * scale)), max(y0 + 2, round((box.y + box.h) * scale))
    a = grey[y0:y1, x0:x1]
    if a.shape[0] < 2 or a.shape[1] < 2:
        return 0.0
    return float((np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()) / 2)


def crops(image, mode: str) -> tuple[list, list[Region]]:
    """The region crops of a PIL image and their boxes, in the same order; featureless regions
    (below MIN_DETAIL) are left out."""
    boxes = propose(image.size[0], image.size[1], mode)
    if not boxes:
        return [], []
    grey, scale = detail_map(image)
    boxes = [b for b in boxes if detail(grey, scale, b) >= MIN_DETAIL]
    return [image.crop(b.crop_box()) for b in boxes], boxes
