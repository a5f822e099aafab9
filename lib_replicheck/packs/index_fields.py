"""The bounded field reader `index_check` walks an index file with: every read is checked against
the bytes the file has left, so nothing a header declares is allocated before it is known to fit."""

from __future__ import annotations

import os
import struct


class LayoutError(ValueError):
    """The index file is not one replicheck accepts; the message says what is wrong."""


class FieldReader:
    """Reads little-endian fields from a seekable file, never past its known size."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    @property
    def pos(self) -> int:
        return self.f.tell()

    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left():
            raise LayoutError(f"{what} needs {n} bytes at offset {self.pos}, the file has {self.left()} left")
        data = self.f.read(n)
        if len(data) != n:
            raise LayoutError(f"{what}: the file changed while it was being read")
        return data

    def skip(self, n: int, what: str) -> None:
        if n < 0 or n > self.left():
            raise LayoutError(f"{what} declares {n} bytes at offset {self.pos}, the file has {self.left()} left")
        self.f.seek(n, os.SEEK_CUR)

    def _unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def i32(self, what: str) -> int:
        return self._unpack("i", what)

    def i64(self, what: str) -> int:
        return self._unpack("q", what)

    def u64(self, what: str) -> int:
        return self._unpack("Q", what)

    def f32(self, what: str) -> float:
        return self._unpack("f", what)

    def flag(self, what: str) -> bool:
        b = self._unpack("B", what)
        if b > 1:
            raise LayoutError(f"{what} is {b}, not a boolean")
        return bool(b)

    def fourcc(self, what: str) -> str:
        return self.take(4, what).decode("latin-1")

    def vector(self, item: int, what: str) -> int:
        """Skip a faiss vector (8-byte count, then count items); returns the count."""
        n = self.u64(f"{what} size")
        if n > self.left() // item:
            raise LayoutError(f"{what} declares {n} items of {item} bytes, the file has {self.left()} bytes left")
        self.skip(n * item, what)
        return n

    def array(self, dtype: str, what: str, expect: int | None = None):
        """Read a faiss vector into a numpy array (its size checked against the file first)."""
        import numpy as np

        item = np.dtype(dtype).itemsize
        n = self.u64(f"{what} size")
        if expect is not None and n != expect:
            raise LayoutError(f"{what} holds {n} items, expected {expect}")
        if n > self.left() // item:
            raise LayoutError(f"{what} declares {n} items of {item} bytes, the file has {self.left()} bytes left")
        return np.frombuffer(self.take(n * item, what), dtype=dtype)

