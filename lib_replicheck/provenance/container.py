"""Where a PNG, JPEG or WebP file keeps its C2PA manifest, and how large it is, read from the
container's own chunk headers before c2pa-rs reads a byte of it: a file written by a stranger
cannot make the reader allocate more than MAX_MANIFEST_BYTES for a manifest."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

#: The largest manifest read (replicheck's own are about 4 kB; cameras' with thumbnails and
#: ingredients reach a few hundred kB).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: The largest image file read for its manifest.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: The most chunks or segments walked before giving up on a file.
MAX_PARTS = 100_000

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class Layout:
    kind: str  # png, jpeg, webp
    manifest_bytes: int  # bytes of the C2PA boxes found (0: none)

    @property
    def mime(self) -> str:
        return MIME[self.kind]


class LayoutError(ValueError):
    """The file is not a PNG, JPEG or WebP whose parts can be walked."""


def kind_of(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def layout(path: str | Path) -> Layout:
    """The file's kind and the size of its C2PA manifest boxes; LayoutError when it cannot be walked."""
    with open(path, "rb") as f:
        head = f.read(16)
        kind = kind_of(head)
        if kind is None:
            raise LayoutError("not a PNG, JPEG or WebP file")
        f.seek(0)
        walk = {"png": _png, "jpeg": _jpeg, "webp": _webp}[kind]
        return Layout(kind, walk(f))


def _read(f, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise LayoutError("the file ends inside a chunk header")
    return b


def _chunks(f, start: int, header: str, name_first: bool, wanted: bytes, until: bytes | None, pad: bool) -> int:
    """Bytes in the `wanted` chunks of a chunked file (PNG: length then type, data then CRC; RIFF:
    type then little-endian length, data padded to even), walking headers only."""
    f.seek(start)
    total = 0
    for _ in range(MAX_PARTS):
        head = f.read(8)
        if len(head) < 8:
            return total
        a, b = struct.unpack(header, head)
        kind, length = (a, b) if name_first else (b, a)
        if kind == wanted:
            total += length
        if kind == until:
            return total
        f.seek(length + (length & 1 if pad else 4), 1)
    raise LayoutError(f"more than {MAX_PARTS} chunks")


def _png(f) -> int:
    return _chunks(f, 8, ">I4s", False, b"caBX", b"IEND", pad=False)


def _webp(f) -> int:
    return _chunks(f, 12, "<4sI", True, b"C2PA", None, pad=True)


def _jpeg(f) -> int:
    f.seek(2)
    total = 0
    for _ in range(MAX_PARTS):
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return total
        code = marker[1]
        if code == 0xD9 or code == 0xDA:  # end of image, start of scan: no more metadata segments
            return total
        if 0xD0 <= code <= 0xD7 or code == 0x01:
            continue
        (length,) = struct.unpack(">H", _read(f, 2))
        if length < 2:
            raise LayoutError("a JPEG segment with a length under 2")
        if code == 0xEB:  # APP11: JUMBF, where C2PA lives
            total += length - 2
        f.seek(length - 2, 1)
    raise LayoutError(f"more than {MAX_PARTS} JPEG segments")
