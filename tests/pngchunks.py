"""A PNG file as its list of chunks and back (CRCs recomputed): for tests that edit a signed image's
pixels, text or C2PA manifest while keeping everything else byte for byte."""

from __future__ import annotations

import struct
import zlib


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        out.append((kind, data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def png_bytes(chunks) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
                                           for k, d in chunks)
