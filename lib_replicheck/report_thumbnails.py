"""The folder report's pictures: thumbnails as data: URIs, and the matching region's box over them.

A thumbnail is at most THUMB_SIDE pixels and THUMB_BYTES bytes of JPEG, decoded with the pixel cap
of every check, so that the report's size is bounded whatever the images are.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path

from lib_replicheck.safe_text import escape

THUMB_SIDE = 256  # pixels, the longer side of every thumbnail
THUMB_BYTES = 24_000  # JPEG bytes of one thumbnail at most (quality lowered, then size, to fit)
#: Characters of an image's alt text or of the words shown instead of it, at most.
MAX_ALT = 200


@dataclass(frozen=True)
class Thumb:
    uri: str  # data:image/jpeg;base64,...
    width: int  # of the thumbnail
    height: int
    source_width: int  # of the image it was made from
    source_height: int


def thumbnail(path: str | Path, side: int = THUMB_SIDE, max_bytes: int = THUMB_BYTES) -> Thumb | None:
    """A JPEG data: URI of the image at `path`, at most `side` pixels and `max_bytes` bytes; None when
    it cannot be read. Decoded by images.decode (the pixel cap and formats of every check)."""
    from PIL import Image

    from lib_replicheck.errors import ImageError
    from lib_replicheck.images import decode

    try:
        im = decode(Path(path))
    except (ImageError, OSError):
        return None
    w0, h0 = im.size
    for s in (side, side * 3 // 4, side // 2):
        small = im.copy()
        small.thumbnail((s, s), Image.Resampling.LANCZOS)
        for quality in (80, 65, 50, 35):
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=quality, optimize=True)
            if buf.tell() <= max_bytes:
                uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
                return Thumb(uri, small.width, small.height, w0, h0)
    return None


def region_style(region, width: int, height: int) -> str | None:
    """CSS for the box of the matching region over the checked image's thumbnail, as percentages.
    `region`: a regions.Region (x, y, w, h in pixels of the checked image, and that image's size
    image_w, image_h), or the same as a dict; without image_w/image_h the box is in pixels of an
    image `width` x `height`, or in fractions of it when all four values are at most 1. None when
    there is no usable region."""
    if region is None:
        return None

    def get(key):
        return region.get(key) if isinstance(region, dict) else getattr(region, key, None)

    try:
        x, y, w, h = (float(get(k)) for k in ("x", "y", "w", "h"))
        iw, ih = get("image_w"), get("image_h")
        iw, ih = (float(iw), float(ih)) if iw is not None and ih is not None else (None, None)
    except (TypeError, ValueError):
        return None
    if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0:
        return None
    if iw is None:
        if max(x, y, w, h) <= 1.0:
            iw = ih = 1.0
        else:
            iw, ih = float(width or 0), float(height or 0)
    if not iw or not ih or not math.isfinite(iw) or not math.isfinite(ih) or iw <= 0 or ih <= 0:
        return None
    x, w, y, h = x / iw, w / iw, y / ih, h / ih
    x, y = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    w, h = min(w, 1.0 - x), min(h, 1.0 - y)
    if w <= 0 or h <= 0:
        return None
    return f"left:{x * 100:.2f}%;top:{y * 100:.2f}%;width:{w * 100:.2f}%;height:{h * 100:.2f}%"


def framed(thumb: Thumb | None, alt: str, missing: str, region_css: str | None = None) -> str:
    """A thumbnail in its fixed-size frame, with the matching region boxed over it; `missing` in its place
    when there is none."""
    if thumb is None:
        return f'<div class="frame"><div class="nothumb">{escape(missing, MAX_ALT)}</div></div>'
    box = f'<span class="region" style="{region_css}"></span>' if region_css else ""
    return (f'<div class="frame"><span class="shot"><img src="{thumb.uri}" width="{thumb.width}" '
            f'height="{thumb.height}" alt="{escape(alt, MAX_ALT)}">{box}</span></div>')


def region_text(region) -> str:
    """'x,y,w,h' in pixels of the checked image, or '' (the whole image)."""
    try:
        return ",".join(str(int(getattr(region, k))) for k in ("x", "y", "w", "h")) if region is not None else ""
    except (TypeError, ValueError, AttributeError):
        return ""
