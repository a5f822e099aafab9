"""Fetching one file over HTTP(S) the way a slow, capped or flaky link needs it.

- resumes an interrupted download from its `.part` file with an HTTP Range request, and starts over
  when the server ignores Range;
- retries connection errors, stalls and 5xx answers with exponential backoff, then tries the next
  mirror; a 404 moves to the next mirror at once;
- times out a stalled connection (no byte for `read_timeout` seconds);
- refuses a server that announces or sends more bytes than expected; a file of unknown size is
  bounded by `max_bytes` (MAX_UNSIZED_BYTES by default), so an endless body cannot fill the disk;
- checks the free disk space against what is still to come before writing, and watches it while
  writing, keeping DISK_RESERVE free;
- verifies size and sha256 before the file gets its final name; a file that fails is deleted;
- keeps the `.part` file only after a resumable interruption (a dropped or stalled connection, a
  cancel); any other failure deletes it;
- uses the proxy environment variables (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) as requests does;
- can be cancelled from another thread, and reports progress to a callback.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

from lib_replicheck.errors import ReplicheckError

CHUNK = 1 << 16
#: Bound on a download whose size nobody declared (an archive URL, weights named by a pack).
MAX_UNSIZED_BYTES = 64 * 1024**3
#: Free space a download leaves on the disk; it stops before going below.
DISK_RESERVE = 64 * 1024**2
#: How often (bytes written) the free space is looked at again while writing.
DISK_CHECK_EVERY = 16 * 1024**2


class DownloadError(ReplicheckError):
    """`resumable`: the link failed, not the file (a dropped or stalled connection, a cancel); what
    was downloaded is kept and the next try continues it."""

    def __init__(self, message: str, *, resumable: bool = False):
        super().__init__(message)
        self.resumable = resumable


class Cancelled(DownloadError):
    def __init__(self):
        super().__init__("download cancelled", resumable=True)


def free_bytes(path: Path) -> int:
    """Free space of the disk holding `path` (its nearest existing parent)."""
    import shutil

    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


@dataclass
class Policy:
    """Knobs of the downloader; tests shorten them."""

    connect_timeout: float = 15.0
    read_timeout: float = 60.0  # a connection with no byte for this long is stalled
    retries: int = 4  # per mirror, after the first try
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_redirects: int = 10


def check_url(url: str) -> str:
    """http(s) URLs, and file: URLs (a registry read from disk names the files beside it; the
    registry parser allows them only there)."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.path:
        return url
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{url!r}: only http(s) URLs are downloaded")
    return url


def fetch(urls: Sequence[str], dest: str | Path, *, size: int | None, sha256: str | None,
          policy: Policy | None = None, progress: Callable[[int], None] | None = None,
          cancel: threading.Event | None = None, session=None,
          max_bytes: int | None = None, disk_free: Callable[[Path], int] | None = None,
          reserve: int = DISK_RESERVE) -> Path:
    """Download `dest` from the first mirror that delivers it whole; return `dest`.

    `progress(n)` is called with the number of new bytes as they arrive (also for the bytes of a
    resumed `.part` file, once, at the start). Without a `size`, at most `max_bytes` are accepted.
    `disk_free(dir)` gives the free bytes (tests pass their own).
    """
    import requests

    policy = policy or Policy()
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    limit = _Limits(size=size, max_bytes=size if size is not None else (max_bytes or MAX_UNSIZED_BYTES),
                    free=disk_free or free_bytes, reserve=reserve)
    own_session = session is None
    if own_session:
        session = requests.Session()
        session.max_redirects = policy.max_redirects
    errors: list[str] = []
    resumable = False  # the last failure left a `.part` file worth continuing
    try:
        if part.exists() and progress:
            progress(part.stat().st_size)
        for url in urls:
            check_url(url)
            delay, ok = policy.backoff, False
            for attempt in range(policy.retries + 1):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                try:
                    if urlsplit(url).scheme == "file":
                        _copy_local(url, part, limit, progress, cancel)
                    else:
                        _get(session, url, part, limit, policy, progress, cancel)
                    ok = True
                    break
                except _Fatal as e:
                    part.unlink(missing_ok=True)
                    raise DownloadError(f"{dest.name}: {e}") from None
                except _Permanent as e:
                    errors.append(f"{url}: {e}")
                    resumable = False
                    break
                except _Transient as e:
                    resumable = True
                    if attempt == policy.retries:
                        errors.append(f"{url}: {e} (gave up after {attempt + 1} tries)")
                        break
                    _sleep(delay, cancel)
                    delay *= 2
            if ok:
                try:
                    _verify(part, size, sha256)
                except DownloadError as e:  # a bad copy on this mirror: the next one may be good
                    errors.append(f"{url}: {e}")
                    resumable = False
                    continue
                os.replace(part, dest)
                return dest
        if not resumable:  # a bad file, not a bad link: nothing worth continuing
            part.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: could not be downloaded: " + "; ".join(errors or ["no mirror"]),
                            resumable=resumable)
    finally:
        if own_session:
            session.close()


class _Transient(Exception):
    """Worth another try: the connection broke, stalled, or the server had a 5xx moment."""


class _Permanent(Exception):
    """Not worth another try from this mirror."""


class _Fatal(Exception):
    """Not worth another try from any mirror: the disk is full, or the file is over its bound."""


@dataclass
class _Limits:
    size: int | None  # the declared size, when known
    max_bytes: int  # the most bytes accepted
    free: Callable[[Path], int]
    reserve: int

    def check_space(self, part: Path, coming: int) -> None:
        free = self.free(part.parent)
        if free - coming < self.reserve:
            raise _Fatal(f"not enough free disk in {part.parent}: {_mb(coming)} still to download, "
                         f"{_mb(free)} free, {_mb(self.reserve)} kept free")


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


def _get(session, url, part: Path, limit: _Limits, policy: Policy, progress, cancel) -> None:
    import requests

    size = limit.size
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:  # a stale part from another version of the file
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        r = session.get(url, stream=True, headers=headers, timeout=(policy.connect_timeout, policy.read_timeout))
    except requests.TooManyRedirects:
        raise _Permanent("too many redirects (a redirect loop?)") from None
    except (requests.ConnectionError, requests.Timeout) as e:
        raise _Transient(f"connection failed ({type(e).__name__})") from None
    except requests.RequestException as e:
        raise _Permanent(str(e)) from None
    with r:
        if r.status_code >= 500 or r.status_code == 429:
            raise _Transient(f"HTTP {r.status_code}")
        if r.status_code == 416 and have:
            part.unlink()  # our part file is not a prefix the server knows: start over next try
            raise _Transient("HTTP 416, restarting from the beginning")
        if r.status_code >= 400:
            raise _Permanent(f"HTTP {r.status_code}")
        resumed = have and r.status_code == 206
        if have and not resumed:  # the server ignored Range: start again from zero
            if progress:
                progress(-have)
            have = 0
        try:
            announced = int(r.headers.get("Content-Length", ""))
        except ValueError:
            announced = None
        if announced is not None and size is not None and announced + have > size:
            raise _Permanent(f"server announces {announced + have} bytes, {size} expected")
        if announced is not None and size is None and announced + have > limit.max_bytes:
            part.unlink(missing_ok=True)
            raise _Fatal(f"server announces {_mb(announced + have)}, more than the {_mb(limit.max_bytes)} "
                         "accepted for a file of undeclared size")
        coming = size - have if size is not None else (announced if announced is not None else 0)
        limit.check_space(part, coming)
        mode = "ab" if resumed else "wb"
        got = have
        since_check = 0
        try:
            with open(part, mode) as f:
                for chunk in r.iter_content(CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    got += len(chunk)
                    if size is not None and got > size:
                        raise _Permanent(f"server sent more than the {size} bytes expected")
                    if got > limit.max_bytes:
                        raise _Fatal(f"more than the {_mb(limit.max_bytes)} accepted for a file of undeclared "
                                     "size")
                    since_check += len(chunk)
                    if since_check >= DISK_CHECK_EVERY:
                        since_check = 0
                        limit.check_space(part, max(0, (size or 0) - got))
                    f.write(chunk)
                    if progress:
                        progress(len(chunk))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise _Transient(f"connection broke after {got} bytes ({type(e).__name__})") from None
        except _Permanent:
            part.unlink(missing_ok=True)
            raise
        except OSError as e:  # the disk filled up under us, or the folder went away
            part.unlink(missing_ok=True)
            raise _Fatal(f"cannot write {part}: {e.strerror or e}") from None
    if size is not None and got < size:
        raise _Transient(f"connection closed after {got} of {size} bytes")


def _copy_local(url: str, part: Path, limit: "_Limits", progress, cancel) -> None:
    """A file: URL copied to `part` under the same bounds as a download (size, disk, cancel)."""
    from urllib.request import url2pathname

    src = Path(url2pathname(urlsplit(url).path))
    if progress and part.exists():
        progress(-part.stat().st_size)  # a copy starts over: nothing to resume from a local file
    try:
        size = src.stat().st_size
    except OSError as e:
        raise _Permanent(f"cannot be read ({e.strerror or e})") from None
    if size > limit.max_bytes:
        raise _Permanent(f"is {size} bytes, more than the {limit.max_bytes} expected")
    limit.check_space(part, size)
    try:
        with open(src, "rb") as f, open(part, "wb") as out:
            while chunk := f.read(CHUNK):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                out.write(chunk)
                if progress:
                    progress(len(chunk))
    except OSError as e:
        part.unlink(missing_ok=True)
        raise _Permanent(f"cannot be copied ({e.strerror or e})") from None


def _verify(path: Path, size: int | None, sha256: str | None) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{path.name}: {actual_size} bytes, {size} expected")
    if sha256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != sha256.lower():
            path.unlink(missing_ok=True)
            raise DownloadError(f"{path.name}: sha256 {h.hexdigest()} does not match the expected {sha256}; "
                                "the file was deleted")


def _sleep(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is not None:
        if cancel.wait(seconds):
            raise Cancelled()
    else:
        time.sleep(seconds)
