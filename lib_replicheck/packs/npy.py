"""`.npy` files from packs, read by a bounded parser of our own.

numpy's reader evaluates the header's text as a Python literal (tokenize, then ast): an unbalanced
'(' escapes as tokenize's TokenError, and a shape of 10^12 rows passes until the allocation fails
with a MemoryError. A pack comes from a stranger, so its `.npy` files (background set, re-ranking
rows, PQ codebook) are read here instead: the header is parsed by a small grammar that accepts only
what numpy writes (a dict of 'descr', 'fortran_order' and 'shape'), only little-endian float16,
float32 and uint8 data, and the shape's bytes must be exactly what follows the header in the file,
and at most what the caller allows, before anything is allocated. Every refusal is a PackError
naming the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lib_replicheck.errors import PackError

MAGIC = b"\x93NUMPY"
#: numpy's own default cap on a header's length (numpy.lib.format, max_header_size)
MAX_HEADER_BYTES = 10_000
MAX_NDIM = 8
#: the data types a pack's .npy files use, as numpy spells them in a header
DTYPES = {"<f2": "float16", "<f4": "float32", "|u1": "uint8", "<u1": "uint8"}
_KINDS = {"p": "punctuation", "s": "a string", "b": "True or False", "i": "an integer"}
_TOKEN = re.compile(r"\s*(?:([{}():,])|'([^'\\]{0,32})'|\"([^\"\\]{0,32})\"|(True|False)|([0-9]{1,20}))")


class NpyError(ValueError):
    """A header this reader does not accept; the message says what is wrong."""


@dataclass(frozen=True)
class NpyHeader:
    dtype: str  # numpy's name: float16, float32 or uint8
    shape: tuple[int, ...]
    offset: int  # where the data starts
    data_bytes: int  # what the shape declares, equal to the bytes after the header


def _tokens(text: str) -> list[tuple[str, object]]:
    """(kind, value) pairs of the header's text: punctuation, strings, booleans and integers only."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            rest = text[pos:].lstrip()
            if rest:
                raise NpyError(f"header holds {rest[:20]!r} at character {len(text) - len(rest)}, not a plain dict")
            break
        punct, s1, s2, boolean, number = m.groups()
        if punct is not None:
            out.append(("p", punct))
        elif s1 is not None or s2 is not None:
            out.append(("s", s1 if s1 is not None else s2))
        elif boolean is not None:
            out.append(("b", boolean == "True"))
        else:
            out.append(("i", int(number)))
        pos = m.end()
    return out


def parse_header_text(text: str) -> tuple[str, bool, tuple[int, ...]]:
    """(descr, fortran_order, shape) of a header's dict text; NpyError for anything else."""
    toks, pos = _tokens(text), 0

    def take(kind: str, value=None):
        nonlocal pos
        if pos >= len(toks) or toks[pos][0] != kind or (value is not None and toks[pos][1] != value):
            got = repr(toks[pos][1]) if pos < len(toks) else "its end"
            want = repr(value) if value is not None else _KINDS[kind]
            raise NpyError(f"header is not a plain dict ({got} where {want} belongs)")
        pos += 1
        return toks[pos - 1][1]

    def peek(value) -> bool:
        return pos < len(toks) and toks[pos] == ("p", value)

    def shape() -> tuple[int, ...]:
        take("p", "(")
        dims = []
        while not peek(")"):
            dims.append(take("i"))
            if len(dims) > MAX_NDIM:
                raise NpyError(f"header declares more than {MAX_NDIM} dimensions")
            if not peek(")"):
                take("p", ",")
        take("p", ")")
        return tuple(dims)

    fields: dict[str, object] = {}
    take("p", "{")
    while not peek("}"):
        key = take("s")
        take("p", ":")
        if key in fields or key not in ("descr", "fortran_order", "shape"):
            raise NpyError(f"header holds the key {key!r} {'twice' if key in fields else 'numpy does not write'}")
        fields[key] = take("s") if key == "descr" else take("b") if key == "fortran_order" else shape()
        if not peek("}"):
            take("p", ",")
    take("p", "}")
    if pos != len(toks):
        raise NpyError("header holds text after its dict")
    if len(fields) != 3:
        raise NpyError(f"header lacks {', '.join(sorted({'descr', 'fortran_order', 'shape'} - set(fields)))}")
    return fields["descr"], fields["fortran_order"], fields["shape"]  # type: ignore[return-value]


def read_header(f, size: int, max_bytes: int) -> NpyHeader:
    """The header of the open .npy file `f` (at its start, `size` bytes long), checked: a data type
    of DTYPES, C order, and a shape whose bytes are exactly those after the header and at most
    `max_bytes`. Reads at most the header; NpyError otherwise."""
    start = f.read(len(MAGIC) + 2)
    if len(start) < len(MAGIC) + 2 or start[:len(MAGIC)] != MAGIC:
        raise NpyError("not a .npy file (no NUMPY magic)")
    major, minor = start[len(MAGIC)], start[len(MAGIC) + 1]
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise NpyError(f"unsupported .npy version {major}.{minor}")
    width = 2 if major == 1 else 4
    raw = f.read(width)
    if len(raw) != width:
        raise NpyError("the header is cut short")
    length = int.from_bytes(raw, "little")
    if length > MAX_HEADER_BYTES:
        raise NpyError(f"header of {length} bytes (at most {MAX_HEADER_BYTES})")
    offset = len(MAGIC) + 2 + width + length
    if offset > size:
        raise NpyError(f"header of {length} bytes in a file of {size}")
    body = f.read(length)
    if len(body) != length:
        raise NpyError("the header is cut short")
    try:
        text = body.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError:
        raise NpyError("header is not text") from None
    descr, fortran, shape = parse_header_text(text)
    if descr not in DTYPES:
        raise NpyError(f"data type {descr[:32]!r} is not one packs use ({', '.join(sorted(set(DTYPES.values())))}, "
                       "little-endian)")
    if fortran:
        raise NpyError("data in Fortran order (packs write C order)")
    data_bytes = int(descr[2:])
    for d in shape:
        data_bytes *= d
    if data_bytes > max_bytes:
        raise NpyError(f"shape {shape} declares {data_bytes:,} bytes (at most {max_bytes:,})")
    if data_bytes != size - offset:
        raise NpyError(f"shape {shape} declares {data_bytes:,} bytes of data, the file holds {size - offset:,}")
    return NpyHeader(DTYPES[descr], shape, offset, data_bytes)


def open_checked(path: str | Path, what: str, max_bytes: int):
    """(open binary file, its NpyHeader) of a pack's .npy file, or a PackError naming `what` and the
    file. The caller closes the file."""
    path = Path(path)
    try:
        f = open(path, "rb", buffering=0)
    except OSError as e:
        raise PackError(path.parent, f"{what} {path.name} cannot be read ({e.strerror or e})") from None
    try:
        return f, read_header(f, os.fstat(f.fileno()).st_size, max_bytes)
    except (OSError, NpyError) as e:
        f.close()
        raise PackError(path.parent, f"{what} {path.name} cannot be read ({e})"[:400]) from None


def load(path: str | Path, what: str, max_bytes: int):
    """The array of a pack's .npy file (read whole, at most `max_bytes` of data, never pickled), or a
    PackError naming `what` and the file."""
    import numpy as np

    path = Path(path)
    f, header = open_checked(path, what, max_bytes)
    data, got = bytearray(header.data_bytes), 0
    with f:
        try:
            while got < len(data):
                n = f.readinto(memoryview(data)[got:])
                if not n:
                    raise PackError(path.parent, f"{what} {path.name} changed while it was being read")
                got += n
        except OSError as e:
            raise PackError(path.parent, f"{what} {path.name} cannot be read ({e.strerror or e})") from None
    return np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
