"""A training image fetched from its URL for verification, through a disk cache with a size cap.

The fetch is a recipe's image fetch (builder/fetch.py `get`): http(s) only (redirects too, and at
most urllib's 10 of them), a Content-Length over the cap refused before a byte is read and a body
over it cut, no byte for `timeout` seconds is a stall and the whole request ends after 3 x
`timeout`. The bytes are decoded by images.decode (known formats only, the pixel cap checked
before decoding). The cache keeps the fetched bytes under the sha256 of the URL, written
atomically; once it is over its cap, the oldest files go first.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lib_replicheck.builder.fetch_http import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS  # a recipe's bounds on an image
from lib_replicheck.verification_status import DEAD, NOT_IMAGE, REFUSED

#: Seconds without a byte before a fetch counts as stalled (the whole fetch: 3 times this).
TIMEOUT = 10.0
#: Default size cap of the verification cache.
CACHE_BYTES = 256 * 1024**2
CACHE_FOLDER = "verify-cache"
#: What a refused fetch's reason says (too large; a redirect away from http(s), refused by the
#: fetch or by urllib itself); any other failure is a dead URL.
REFUSALS = ("larger than", "http(s) URL", "is not allowed")


@dataclass
class Fetched:
    """The decoded training image, or why there is none (`status`: verification_status DEAD,
    NOT_IMAGE or REFUSED, `detail` the reason)."""

    image: object | None = None
    status: str = ""
    detail: str = ""
    cached: bool = False


class ImageCache:
    """Fetched training images on disk, keyed by the sha256 of their URL, at most `cap` bytes."""

    def __init__(self, folder: str | Path, cap: int = CACHE_BYTES):
        self.folder = Path(folder)
        self.cap = max(0, int(cap))

    def path(self, url: str) -> Path:
        return self.folder / hashlib.sha256(url.encode("utf-8")).hexdigest()

    def get(self, url: str) -> bytes | None:
        p = self.path(url)
        try:
            data = p.read_bytes() if p.is_file() and p.stat().st_size <= MAX_IMAGE_BYTES else None
        except OSError:
            return None
        if data is not None:
            os.utime(p)  # recently used: evicted last
        return data

    def put(self, url: str, data: bytes) -> None:
        """Keep `data`, then evict the oldest files until the cache is within its cap (a file larger
        than the cap is not kept at all)."""
        from lib_replicheck.atomic import write_atomic

        if len(data) > self.cap:
            return
        write_atomic(self.path(url), data)
        self.evict()

    def evict(self) -> None:
        files = []
        for p in self.folder.iterdir() if self.folder.is_dir() else ():
            try:
                st = p.stat()
            except OSError:
                continue
            if p.is_file() and len(p.name) == 64:
                files.append((st.st_mtime_ns, p.name, st.st_size, p))
        total = sum(size for _, _, size, _ in files)
        for _, _, size, p in sorted(files):
            if total <= self.cap:
                break
            p.unlink(missing_ok=True)
            total -= size

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir()) if self.folder.is_dir() else 0


def fetch_image(url: str | None, cache: ImageCache | None, *, timeout: float = TIMEOUT,
                max_bytes: int = MAX_IMAGE_BYTES) -> Fetched:
    """The training image at `url`, from the cache or fetched (and then cached)."""
    from lib_replicheck.builder.fetch_http import Failed, get

    if not url or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        return Fetched(status=REFUSED, detail="no http(s) URL")
    data = cache.get(url) if cache is not None else None
    cached = data is not None
    if data is None:
        try:
            data = get(url, timeout=timeout, max_bytes=max_bytes)
        except Failed as e:
            reason = str(e)
            if any(r in reason for r in REFUSALS):
                return Fetched(status=REFUSED, detail=reason)
            return Fetched(status=DEAD, detail=reason)
    image = decode(data)
    if isinstance(image, str):
        return Fetched(status=NOT_IMAGE, detail=image, cached=cached)
    if cache is not None and not cached:
        try:
            cache.put(url, data)
        except OSError:
            pass  # a cache that cannot be written costs a fetch next time, nothing else
    return Fetched(image=image, cached=cached)


def decode(data: bytes):
    """The image, or why the bytes are not one replicheck decodes (a string)."""
    from lib_replicheck.errors import ImageError
    from lib_replicheck.images import decode as safe_decode

    try:
        return safe_decode(data, name="the training image", max_pixels=MAX_IMAGE_PIXELS)
    except ImageError as e:
        return e.reason
