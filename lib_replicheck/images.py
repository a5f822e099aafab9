"""Reading images safely and turning any of them into plain 8-bit RGB.

Generated images, scraped training images and whatever a user points the command line at come in
every mode PIL knows: CMYK, 16-bit, palettes with transparency, alpha, animations. Embedders want
one thing, so everything is normalised here, once, and every failure names the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

from .errors import ImageError

#: Refuse images above this many pixels (PIL's own bomb limit is twice its warning limit of 89M).
MAX_PIXELS = 100_000_000

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS):
    """Open `path` and return an RGB PIL image, or raise ImageError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(path, f"{w}x{h} pixels is over the limit of {max_pixels:,} "
                                           "(a decompression bomb, or an image far larger than any generation)")
                if getattr(im, "is_animated", False):
                    im.seek(0)  # the first frame stands for the animation
                im.load()
                return to_rgb(im)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "is a folder, not an image") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image PIL can read (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(path, f"refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(path, f"could not be decoded: {e} (truncated or corrupt?)") from None


def to_rgb(im):
    """Convert a PIL image of any mode to 8-bit RGB.

    Transparency is composited on white (what a viewer shows), 16-bit and float greys are scaled
    rather than clipped, CMYK and the other colour spaces go through PIL's converters.
    """
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im.copy() if getattr(im, "fp", None) is not None else im
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            a = a / 257.0
        else:
            lo, hi = float(a.min()), float(a.max())
            if hi > 255 or lo < 0:  # 32-bit or float data: stretch its range onto 0..255
                a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else a * 0
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype("uint8")).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def iter_image_files(paths: list[str | Path]) -> Iterator[Path]:
    """Yield image files from files and folders (recursively, sorted), skipping hidden entries.

    A named file is always yielded, image or not, so that a wrong argument gets an error rather
    than silence; inside folders only files with an image suffix are taken.
    """
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not any(
                    part.startswith(".") for part in f.relative_to(p).parts
                ):
                    yield f
        else:
            yield p
