"""Reading images safely and turning any of them into plain 8-bit RGB, in one place.

Generated images, scraped training images, API uploads and whatever a user points the command line
at all go through `decode`: only the formats below are recognised (never EPS/PostScript, which
Pillow hands to Ghostscript, nor any other of Pillow's exotic decoders), the pixel count is
checked against one cap before a single pixel is decoded, EXIF orientation is applied (the image
as every viewer shows it), and every mode PIL knows comes out as 8-bit RGB. Every failure is an
ImageError naming the file or field.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Iterator

from lib_replicheck.errors import ImageError

#: Refuse images above this many pixels: 100 Mpx is far above any generation or training image,
#: and still bounds a decoded RGBA image to 400 MB.
MAX_PIXELS = 100_000_000

#: The only formats decoded (Pillow's format ids). EPS, PDF, PSD, ICO, SVG-ish and the rest are
#: refused whatever the file is called.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

#: Rows converted at once when 16-bit or 32-bit data is scaled to 8 bits (bounds the temporary copies).
_BAND_PIXELS = 1 << 20


def decode(source: bytes | str | os.PathLike, *, name: str | None = None, max_pixels: int = MAX_PIXELS):
    """An 8-bit RGB PIL image from encoded bytes or a file, EXIF orientation applied.

    `name` is what errors call the image (e.g. "request field 'image'"); by default the path, or
    "image data" for bytes. Raises ImageError for anything that is not a readable PNG, JPEG, WebP,
    GIF, BMP or TIFF of at most `max_pixels` pixels. Safe to call from worker threads: it changes
    no global state of PIL or of the warnings module.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "image data"
        return _decode_open_file(io.BytesIO(bytes(source)), label, max_pixels)
    path = Path(source)
    label = name or str(path)
    with _open_regular_file(path, label) as f:
        return _decode_open_file(f, label, max_pixels)


def _open_regular_file(path: Path, label: str):
    """`path` opened for reading, only if it is a regular file: a FIFO or a device named like an
    image would otherwise block the open or the read for good. Opened without blocking, checked
    on the open descriptor (no window between the check and the use), then read normally."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(label, "no such file") from None
    except IsADirectoryError:
        raise ImageError(label, "is a folder, not an image") from None
    except PermissionError:
        raise ImageError(label, "permission denied") from None
    except OSError as e:
        raise ImageError(label, f"could not be read: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError(label, "is a folder, not an image")
        if not stat.S_ISREG(mode):
            raise ImageError(label, "is not a regular file (a pipe, socket or device), not an image")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS):
    """Open `path` and return an RGB PIL image, or raise ImageError naming the file."""
    return decode(path, max_pixels=max_pixels)


def _decode_open_file(fp, label: str, max_pixels: int):
    from PIL import Image

    try:
        im = _open_allowed(fp)
        if im is None:
            raise ImageError(label, "not an image replicheck reads (only " + ", ".join(FORMATS)
                             + " are accepted; the file is of another format, or corrupt)")
        w, h = im.size
        if w < 1 or h < 1:
            raise ImageError(label, f"has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise ImageError(label, f"{w}x{h} pixels is over the limit of {max_pixels:,} "
                                    "(a decompression bomb, or an image far larger than any generation)")
        if getattr(im, "is_animated", False):
            im.seek(0)  # the first frame stands for the animation
        im.load()
        orientation = _orientation(im)
        rgb = to_rgb(im)
        return _apply_orientation(rgb, orientation)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(label, "out of memory while decoding") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(label, f"refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, ZeroDivisionError) as e:
        raise ImageError(label, f"could not be decoded: {str(e)[:200]} (truncated or corrupt?)") from None


def _open_allowed(fp):
    """Identify `fp` among FORMATS only and return the (not yet loaded) image, or None.

    This is what `Image.open(fp, formats=FORMATS)` does, without its decompression-bomb check:
    that check turns into a warning at PIL's global MAX_IMAGE_PIXELS (89.5 Mpx) and an error at
    twice that, and silencing or tightening it would mean changing PIL's or the warnings module's
    process-wide state from a worker thread of the web UI. The caller applies its own cap instead,
    before anything is decoded.
    """
    from PIL import Image

    Image.preinit()
    prefix = fp.read(16)
    for fmt in FORMATS:
        if fmt not in Image.OPEN:
            Image.init()
        if fmt not in Image.OPEN:
            continue  # e.g. Pillow built without WebP
        factory, accept = Image.OPEN[fmt]
        try:
            result = not accept or accept(prefix)
            if result and not isinstance(result, str):
                fp.seek(0)
                return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, ValueError, EOFError, struct.error):
            continue  # a format whose signature matched but whose header did not: try the next one
    return None


def _orientation(im) -> int:
    """The EXIF orientation tag (1 to 8); 1 when there is none or the EXIF block is unreadable,
    which is also what viewers do with a broken block."""
    try:
        value = im.getexif().get(0x0112, 1)
        return value if isinstance(value, int) and 1 <= value <= 8 else 1
    except Exception:  # noqa: BLE001 - malformed EXIF raises anything from struct.error to KeyError
        return 1


def _apply_orientation(im, orientation: int):
    """Turn the stored pixels into the displayed image, as ImageOps.exif_transpose does."""
    from PIL import Image

    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return im.transpose(method) if method is not None else im


def to_rgb(im):
    """Convert a PIL image of any mode to 8-bit RGB.

    Transparency is composited on white (what a viewer shows), 16-bit greys are scaled (65535 ->
    255) rather than clipped, 32-bit and float greys are stretched onto 0..255, CMYK and the
    other colour spaces go through PIL's converters.
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
        return Image.fromarray(_grey_to_uint8(im)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _grey_to_uint8(im):
    """uint8 HxW from a 16-bit, 32-bit or float grey image, a band of rows at a time.

    16-bit values are divided by 257 with rounding in integer arithmetic (exact for 8-bit data
    stored as 16-bit); other data is stretched from its min..max in float32. No full-size float64
    copy is ever made: a 100 Mpx 16-bit image needs its own 200 MB plus the 100 MB result.
    """
    import numpy as np

    a = np.asarray(im)
    if a.ndim != 2:
        a = a.reshape(im.size[1], im.size[0])
    out = np.empty(a.shape, dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, a.shape[1]))
    sixteen = im.mode.startswith("I;16")
    if not sixteen:
        lo, hi = float(a.min()), float(a.max())
        stretch = hi > 255 or lo < 0
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
    # One band buffer, reused and worked on in place: NumPy 2 no longer reuses the temporaries of
    # `(band + 128) // 257` on its own, which would add a band per operation.
    buf = np.empty((min(rows, a.shape[0]), a.shape[1]), dtype=np.uint32 if sixteen else np.float32)
    for y in range(0, a.shape[0], rows):
        band = a[y:y + rows]
        t = buf[:band.shape[0]]
        t[...] = band
        if sixteen:
            t += 128
            t //= 257
        else:
            if stretch:
                t -= lo
                t *= scale
            t += 0.5
            np.clip(t, 0, 255, out=t)
        out[y:y + rows] = t
    return out


#: An image whose structure (below) is under this is "flat": a plain colour, a near-plain gradient,
#: or a mostly transparent picture shown on white. A learned descriptor (SSCD, CLIP) maps all such
#: images close together (a plain white 512x512 image scored 0.90 against transparent wallpapers
#: put on white, and those 1.00 against each other), so they get no verdict from it. The cut is set
#: from `python bench/flat_images.py` on the test fixtures: the least structured real photo
#: (umang_by_Abhishek_Mudgal.jpg, soft gradients with one shape) measures 0.314, wallpaper
#: (lomiri-default-background.png, a gradient with faint shapes) 0.146 and drawing of
#: openclipart-png (a small drawing on a large transparent page) 0.280; plain colours and a full
#: black-to-white gradient measure at most 0.039 and MATE's transparent wallpapers on white at most
#: 0.008. 0.10 lies between the two groups.
FLAT_STRUCTURE = 0.10
#: the long side, in pixels, at which structure is measured
STRUCTURE_SIDE = 128


def structure(im) -> float:
    """How much an image holds besides flat areas and smooth gradients: the mean absolute
    difference, in grey levels (0-255), between the image in grey shrunk to STRUCTURE_SIDE pixels
    on its long side and the same blurred (Gaussian, radius 2). A gradient, however steep, is
    unchanged by the blur and measures about 0; edges, lines and texture do not."""
    import numpy as np
    from PIL import Image, ImageFilter

    w, h = im.size
    s = min(1.0, STRUCTURE_SIDE / max(w, h))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    grey = im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0).convert("L")  # shrunk first: cheap on 4K
    blurred = grey.filter(ImageFilter.GaussianBlur(2))
    return float(np.abs(np.asarray(grey, dtype=np.float32) - np.asarray(blurred, dtype=np.float32)).mean())


def is_flat(im) -> bool:
    """Whether `im` (RGB, as `decode` gives it) is flat (see FLAT_STRUCTURE)."""
    return structure(im) < FLAT_STRUCTURE


def centre_crop(im, fraction: float):
    """The centre `fraction` of the image's width and height: the crop PDQ packs store hashes of
    (PDQ is not robust to cropping) and the edit the demo and tests apply to a copy."""
    if fraction >= 1.0:
        return im
    w, h = im.size
    dx, dy = int(w * (1 - fraction) / 2), int(h * (1 - fraction) / 2)
    return im.crop((dx, dy, w - dx, h - dy))


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
