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


def _png(f) -> int:
    f.seek(8)
    total = 0
    for _ in range(MAX_PARTS):
        head = f.read(8)
        if len(head) < 8:
            return total
        length, kind = struct.unpack(">I4s", head)
        if kind == b"caBX":
            total += length
        if kind == b"IEND":
            return total
        f.seek(length + 4, 1)  # data and CRC
    raise LayoutError(f"more than {MAX_PARTS} PNG chunks")


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


def _webp(f) -> int:
    f.seek(12)
    total = 0
    for _ in range(MAX_PARTS):
        head = f.read(8)
        if len(head) < 8:
            return total
        kind, length = struct.unpack("<4sI", head)
        if kind == b"C2PA":
            total += length
        f.seek(length + (length & 1), 1)
    raise LayoutError(f"more than {MAX_PARTS} WebP chunks")
