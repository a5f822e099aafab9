"""DataComp's published CLIP embeddings: `NAME.npz` beside `NAME.parquet`, read without trusting either.

DataComp's pools (mlfoundations/datacomp_{small,medium,large,xlarge} and datacomp_1b on the Hugging Face
hub, fetched by its download_upstream.py with `--download_npz`) put, for each shard, a parquet of uid,
url, text, original_width, original_height, ... and an `.npz` written by np.savez whose arrays are the
OpenAI CLIP features of the same rows in the same order: `l14_img` (ViT-L-14), `b32_img` (ViT-B-32) and
their `_txt` twins. An npz is a zip of `.npy` members, so a stranger's file can lie in the zip as well
as in the npy: the zip's central directory is bounded from its end record before zipfile reads it,
the member's npy header goes through packs/npy.py's bounded parser, a stored member (what np.savez
writes) is memory-mapped where it lies, and a deflated one (np.savez_compressed) is refused when it
declares more than MAX_RATIO times its compressed size, else decompressed READ_BYTES at a time,
never whole, with zipfile checking its length and CRC.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

#: Which array holds the image features of which model (DataComp's own keys).
MEMBERS = {"ViT-L-14": "l14_img", "ViT-B-32": "b32_img"}
#: np.savez of DataComp's four arrays makes a directory of four entries; room for a few more.
MAX_MEMBERS = 64
MAX_DIRECTORY_BYTES = 64 * 1024
#: CLIP features hardly compress (about 1.1 to 1); a member that claims more is a zip bomb.
MAX_RATIO = 20
READ_BYTES = 8 * 1024**2
_EOCD, _EOCD64, _LOCATOR, _LOCAL = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"PK\x03\x04"
NPZ = re.compile(r"[A-Za-z0-9_.-]{1,128}\.npz")


class NpzError(ValueError):
    """An npz this reader does not accept; the message says what is wrong."""


@dataclass(frozen=True)
class NpzMember:
    """One `.npy` member of an npz: its checked header, where its data lies, and how it is stored."""

    header: object  # packs.npy.NpyHeader
    offset: int  # stored: where the rows start in the npz file; deflated: after the header in the member
    compressed: bool


def member_for(model: str) -> str:
    """The npz array holding the image features of CLIP `model`."""
    if model not in MEMBERS:
        raise NpzError(f"DataComp's npz files hold the image features of "
                       f"{' and '.join(f'{m} ({k})' for m, k in MEMBERS.items())}, not of {model}")
    return MEMBERS[model]


def _directory_bounds(f, size: int) -> tuple[int, int]:
    """(entries, bytes) of the zip's central directory, from its end record (zip64 too)."""
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise NpzError("not a zip file (no end record)")
    entries, cd_bytes = struct.unpack("<10xH I", tail[at:at + 16])
    if entries == 0xFFFF or cd_bytes == 0xFFFFFFFF:
        if at < 20 or tail[at - 20:at - 16] != _LOCATOR:
            raise NpzError("a zip64 end record without its locator")
        (where,) = struct.unpack("<Q", tail[at - 12:at - 4])
        if where > size - 56:
            raise NpzError("the zip64 end record lies outside the file")
        f.seek(where)
        rec = f.read(56)
        if rec[:4] != _EOCD64:
            raise NpzError("no zip64 end record where its locator points")
        entries, cd_bytes = struct.unpack("<Q Q", rec[32:48])
    return entries, cd_bytes


def open_member(path: Path, name: str, max_bytes: int) -> NpzMember:
    """Check the npz at `path` and its member `name`.npy (bounded directory, float16/float32 npy header
    of at most `max_bytes` of data, plain or deflated storage, no encryption); nothing else is read."""
    from lib_replicheck.packs import npy

    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            entries, cd_bytes = _directory_bounds(f, size)
            if entries > MAX_MEMBERS or cd_bytes > MAX_DIRECTORY_BYTES:
                raise NpzError(f"its zip directory declares {entries:,} members in {cd_bytes:,} bytes (at most "
                               f"{MAX_MEMBERS} in {MAX_DIRECTORY_BYTES:,})")
            with zipfile.ZipFile(f) as zf:
                names = zf.namelist()
                if f"{name}.npy" not in names:
                    held = ", ".join(n.removesuffix(".npy")[:40] for n in names[:8])
                    raise NpzError(f"holds no array {name} (it holds {held or 'nothing'})")
                info = zf.getinfo(f"{name}.npy")
                if info.flag_bits & 1:
                    raise NpzError(f"member {name} is encrypted")
                if info.compress_type == zipfile.ZIP_STORED:
                    if info.compress_size != info.file_size:
                        raise NpzError(f"member {name} is stored but declares {info.compress_size:,} bytes "
                                       f"stored for {info.file_size:,}")
                    start = _data_start(f, info, size)
                    f.seek(start)
                    header = npy.read_header(f, info.file_size, max_bytes)
                    return NpzMember(header, start + header.offset, False)
                if info.compress_type != zipfile.ZIP_DEFLATED:
                    raise NpzError(f"member {name} is compressed with method {info.compress_type} (np.savez "
                                   "stores, np.savez_compressed deflates)")
                if info.file_size > MAX_RATIO * max(1, info.compress_size):
                    raise NpzError(f"member {name} declares {info.file_size:,} bytes from {info.compress_size:,} "
                                   f"compressed (more than {MAX_RATIO} to 1: a zip bomb, not CLIP features)")
                with zf.open(info) as member:
                    header = npy.read_header(member, info.file_size, max_bytes)
                return NpzMember(header, header.offset, True)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile, npy.NpyError) as e:
        raise NpzError(str(e)) from None


def _data_start(f, info: zipfile.ZipInfo, size: int) -> int:
    """Where a stored member's bytes start: after its local header, whose lengths are its own."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != _LOCAL:
        raise NpzError(f"member {info.filename[:40]}: no local header where the directory points")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.compress_size > size:
        raise NpzError(f"member {info.filename[:40]} declares {info.compress_size:,} bytes past the file's end")
    return start


class MemberRows:
    """The rows of a deflated member, decompressed in order, READ_BYTES at a time: `take(row, n)`
    passes over the rows before `row` (they cannot be skipped in a deflate stream) and returns n."""

    def __init__(self, path: Path, name: str, dtype: str, offset: int, dim: int):
        try:
            self._zip = zipfile.ZipFile(path)
            self._stream = self._zip.open(f"{name}.npy")
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise NpzError(f"cannot be opened again ({e})") from None
        self._row_bytes = dim * (2 if dtype == "float16" else 4)
        self._dtype, self._dim, self._at = dtype, dim, 0
        self._read(offset)  # the npy header, checked by open_member

    def _read(self, n: int) -> bytes:
        out = bytearray()
        try:
            while len(out) < n:
                chunk = self._stream.read(min(READ_BYTES, n - len(out)))
                if not chunk:
                    raise NpzError("its member ended before the rows its header declares")
                out += chunk
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
            raise NpzError(f"its member cannot be decompressed ({e})") from None
        return bytes(out)

    def take(self, row: int, n: int):
        import numpy as np

        while self._at < row:
            skip = min(row - self._at, max(1, READ_BYTES // self._row_bytes))
            self._read(skip * self._row_bytes)
            self._at += skip
        data = self._read(n * self._row_bytes)
        self._at += n
        return np.frombuffer(data, dtype="<f2" if self._dtype == "float16" else "<f4").reshape(n, self._dim)

    def close(self) -> None:
        self._stream.close()
        self._zip.close()
