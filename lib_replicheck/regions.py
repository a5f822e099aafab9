"""Query-side regions: parts of the checked image searched beside the whole image.

A whole-image descriptor misses a training image reproduced inside a larger picture (a "template"
or partial copy): pasted at 55% of the side into another photo, Meta's SSCD scores a median of
about 0.4 against its original. Searching crops of the checked image finds it: a crop that holds
most of the copy scores about as high as the copy on its own. Each crop is one more forward pass
of the model (SSCD needs its crops at 288 pixels: at 160 they lose most of their score), so the
sets are small and chosen by `bench/regions.py`:

- `off`: the whole image only (one forward pass).
- `fast`: a 3x3 grid of half-size tiles, overlapping by half (9 regions): every copy that covers
  at least about 55% of the side lies mostly inside one of them.
- `thorough`: `fast` plus a 4x4 grid of tiles of 35% of the side (25 regions): copies down to
  about a third of the side.

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


@dataclass(frozen=True)
class Region:
    """A box in pixels of the checked image: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

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
    return [Region(round((width - tw) * fx), round((height - th) * fy), tw, th) for fy in steps for fx in steps]


def propose(width: int, height: int, mode: str) -> list[Region]:
    """The regions searched for an image of this size, besides the whole image; none in `off`
    mode or when the image is too small for them."""
    regions: list[Region] = []
    for share, per_row in GRIDS[check_mode(mode)]:
        for r in grid(width, height, share, per_row):
            if min(r.w, r.h) >= MIN_SIDE and r not in regions:
                regions.append(r)
    return regions


def crops(image, mode: str) -> tuple[list, list[Region]]:
    """The region crops of a PIL image and their boxes, in the same order."""
    boxes = propose(image.size[0], image.size[1], mode)
    return [image.crop(b.crop_box()) for b in boxes], boxes
