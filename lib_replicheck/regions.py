"""Query-side regions: parts of the checked image searched beside the whole image.

A whole-image descriptor misses a training image reproduced inside a larger picture (a "template"
or partial copy): pasted at 55% of the side into another photo, Meta's SSCD scores well below the
0.5 cut against its original. A box that holds the copy scores much higher.

Boxes are not cropped and embedded one by one (a forward pass each). SSCD ends in a feature map
that it pools (GeM, p=3) into one vector through a linear layer; pooling a box of that map instead
of all of it gives that box's descriptor for the cost of a sum, so one forward pass yields dozens
to hundreds of regions (`embedders/sscd.py` reads the map; this module chooses and pools the boxes):

- `off`: the whole image only; the default: `fast` misses the detection targets on pastes
  (`bench/geometry.py`), and its regions are each one more query, which a pack of millions pays for.
- `fast`: boxes of the feature map the whole-image pass already made (288 pixels on the short
  side): no extra forward pass. Its regions find copies of about half the side and more by their
  tiers; below them, a region's nearest training image is still verified on placed local features
  (checker.verify_geometry), which finds some copies of a third of the side too.
- `thorough`: boxes of the whole-image pass laid densely, plus passes at 1.5, 2 and 3 times the
  side, where copies of about 2/3, 1/2 and 1/3 of the side are as large as the training images
  were when they were embedded (a copy scores best at that size: measured, a 75% paste scores
  highest in the 1.5x pass, a 35% one in the 3x pass).

`thorough` lays boxes of 35% to 100% of the short side, square and 4:3 either way, a third of their
size apart; `fast` squares of 35% to 80%, half their size apart (LAYOUTS); `bench/regions.py` and
`bench/geometry.py` measure what each mode finds and costs.
Boxes are reported in pixels of the checked image, as it was given to the check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lib_replicheck.errors import ReplicheckError

MODES = ("off", "fast", "thorough")
DEFAULT_MODE = "off"

#: per mode, the passes: the model's input side as a multiple of its usual side (1.0: the
#: whole-image pass itself)
PASSES: dict[str, tuple[float, ...]] = {"off": (), "fast": (1.0,), "thorough": (1.0, 1.5, 2.0, 3.0)}


@dataclass(frozen=True)
class Layout:
    """Where a mode lays its boxes on a feature map: box sides as shares of the map's short side, box
    aspects (width / height), and the step between boxes as a share of their own size."""

    sides: tuple[float, ...]
    aspects: tuple[float, ...]
    step: float


#: `thorough`: every side and aspect, a third of their size apart. `fast`: squares half their size
#: apart, about a seventh of the boxes (66 against 448 on a 9 x 14 map), so its cost stays near the
#: whole image's. Measured side by side (`bench/geometry.py`, seeds 0 and 1): pastes at 55% of the side
#: whose top region candidate is their own original, at or above the shortlist cut, 40 of 40 either
#: way; at 35% 24 of 40 against 27 of 40 with thorough's layout; `fast` with verification costs 1.62x
#: the whole-image check against 2.73x with thorough's layout (seed 1).
LAYOUTS: dict[str, Layout] = {
    "fast": Layout(sides=(0.35, 0.5, 0.65, 0.8), aspects=(1.0,), step=1 / 2),
    "thorough": Layout(sides=(0.35, 0.5, 0.65, 0.8, 1.0), aspects=(1.0, 4 / 3, 3 / 4), step=1 / 3),
}
#: boxes smaller than this many cells a side are not pooled: too little for a descriptor to judge
MIN_CELLS = 2
#: Regions with less detail than this are not searched: the mean step in grey level (0-255) between
#: neighbouring pixels, on the image shrunk to DETAIL_SIDE pixels. A flat region (sky, a plain
#: background) scores high against flat training images (flags, patterns), which says nothing
#: about copying: in `bench/regions.py`, every region of a novel photo that reached 0.5 against
#: one of the pack's drawings but one had a detail under 1.2 (most photos have 3 to 15).
MIN_DETAIL = 1.2
DETAIL_SIDE = 128
#: GeM's exponent in SSCD's head (the pooling below takes cube roots)
GEM_P = 3


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
    """The mode named, or a clear error listing the modes: the one rule for the option, wherever it
    comes from (the command line's choices are MODES, the settings read through `setting_mode`)."""
    mode = DEFAULT_MODE if mode is None else str(mode).strip().lower()
    if mode not in MODES:
        raise ReplicheckError(f"regions {mode[:40]!r}: choose one of {', '.join(MODES)}")
    return mode


def setting_mode(mode) -> str:
    """A stored setting's mode: `check_mode`'s, or the default where it refuses the value (a bad
    setting never stops a generation)."""
    try:
        return check_mode(mode)
    except ReplicheckError:
        return DEFAULT_MODE


def cell_boxes(rows: int, cols: int, mode: str = "thorough") -> list[tuple[int, int, int, int]]:
    """Boxes of a rows x cols feature map as `mode` lays them out (LAYOUTS), as (x0, y0, x1, y1) in
    cells, the whole map left out (the whole image is searched anyway)."""
    layout = LAYOUTS[mode]
    short = min(rows, cols)
    out: set[tuple[int, int, int, int]] = set()
    for side in layout.sides:
        for aspect in layout.aspects:
            bh = max(MIN_CELLS, round(short * side / aspect ** 0.5))
            bw = max(MIN_CELLS, round(short * side * aspect ** 0.5))
            if bh > rows or bw > cols:
                continue
            sy, sx = max(1, round(bh * layout.step)), max(1, round(bw * layout.step))
            for y in sorted({*range(0, rows - bh + 1, sy), rows - bh}):
                for x in sorted({*range(0, cols - bw + 1, sx), cols - bw}):
                    out.add((x, y, x + bw, y + bh))
    out.discard((0, 0, cols, rows))
    return sorted(out)


def to_region(cells: tuple[int, int, int, int], rows: int, cols: int, width: int, height: int) -> Region:
    """A box of a rows x cols feature map as pixels of a width x height image."""
    x0, y0, x1, y1 = cells
    left, top = round(x0 * width / cols), round(y0 * height / rows)
    right, bottom = round(x1 * width / cols), round(y1 * height / rows)
    return Region(left, top, right - left, bottom - top, width, height)


def gem_pool(feature_map, cells: list[tuple[int, int, int, int]]):
    """GeM (p=3) of each box of a C x rows x cols feature map: [len(cells), C] float32. One
    summed-area table serves every box; it is float64, as a channel near zero inside a box but
    large elsewhere loses its value to float32's rounding, which the cube root then magnifies."""
    import numpy as np

    c, rows, cols = feature_map.shape
    cubed = np.clip(feature_map, 1e-6, None, dtype=np.float32).astype(np.float64) ** GEM_P
    table = np.zeros((rows + 1, cols + 1, c), dtype=np.float64)
    table[1:, 1:] = cubed.transpose(1, 2, 0).cumsum(0).cumsum(1)
    b = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    sums = table[y1, x1]
    sums -= table[y0, x1]
    sums -= table[y1, x0]
    sums += table[y0, x0]
    np.maximum(sums, 0.0, out=sums)
    sums /= ((x1 - x0) * (y1 - y0)).astype(np.float64)[:, None]
    return np.cbrt(sums, out=sums).astype(np.float32)


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
    return featured_scores(grey, scale, [box])[0]


def featured_scores(grey, scale: float, boxes: list[Region]) -> list[float]:
    """`detail` of many boxes at once, from summed-area tables of the steps."""
    import numpy as np

    h, w = grey.shape
    steps = {}
    for axis, d in ((0, np.abs(np.diff(grey, axis=0))), (1, np.abs(np.diff(grey, axis=1)))):
        t = np.zeros((d.shape[0] + 1, d.shape[1] + 1), dtype=np.float64)
        t[1:, 1:] = d.cumsum(0).cumsum(1)
        steps[axis] = t
    out = []
    for box in boxes:
        x0, y0 = min(int(box.x * scale), w - 2), min(int(box.y * scale), h - 2)
        x1, y1 = min(w, max(x0 + 2, round((box.x + box.w) * scale))), min(h, max(y0 + 2, round((box.y + box.h) * scale)))
        if x0 < 0 or y0 < 0 or x1 - x0 < 2 or y1 - y0 < 2:
            out.append(0.0)
            continue
        means = []
        for axis, (ya, yb, xa, xb) in ((0, (y0, y1 - 1, x0, x1)), (1, (y0, y1, x0, x1 - 1))):
            t = steps[axis]
            total = t[yb, xb] - t[ya, xb] - t[yb, xa] + t[ya, xa]
            means.append(total / max(1, (yb - ya) * (xb - xa)))
        out.append(float(sum(means) / 2))
    return out


def featured(image, regions: list[Region]) -> list[bool]:
    """Whether each region has enough detail to be searched (see MIN_DETAIL)."""
    grey, scale = detail_map(image)
    return [d >= MIN_DETAIL for d in featured_scores(grey, scale, regions)]
