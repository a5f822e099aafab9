"""Writing a file so that a reader sees the old one or the new one, never half of one.

Every file replicheck writes over something a user may have (reports, weights, keys, pack files,
work markers) goes through here: a temporary file beside the target, flushed to disk, then renamed
over it; on any failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _new_file_mode(tmp: str | Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600


@contextlib.contextmanager
def replacing(path: str | Path, *, mode: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it is flushed and renamed over
    `path`, on an exception it is removed. `mode="keep"` keeps mkstemp's private 0600 mode (keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if mode != "keep":
            _new_file_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (text is written as UTF-8) to `path` through `replacing`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path = Path(path)
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return path
