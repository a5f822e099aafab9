"""A list's images fetched by replicheck itself: the standard library and Pillow, no img2dataset.

A CSV list (sd1-memorized's 500 URLs) needs neither pyarrow nor img2dataset: its rows
(`rows.jsonl`, see fetch_lists.collect_rows) are fetched here, in the process builder/fetch.py
starts (and can kill to cancel). What it writes is img2dataset's webdataset layout, so the rest of
the build reads both alike:

    NNNNN.tar          KEY.jpg + KEY.txt + KEY.json (url, caption, and the row's license, hash, key)
    NNNNN_stats.json   count, successes, failed_to_download, failed_to_resize, status_dict

A shard is done once its stats file exists (written last); a rerun fetches only the others.

Every request is bounded (`get`, which img2dataset's downloads also go through, see
fetch_img2dataset.py): http(s) only (redirects too), at most MAX_IMAGE_BYTES, no byte for
`timeout` seconds is a stall, and a wall-clock limit of LIMIT_FACTOR x `timeout` for the whole
request, headers included (a server trickling a byte now and then is cut at the limit). Images
over MAX_IMAGE_PIXELS are refused before they are decoded, and only DECODE_SLOTS are decoded at
a time. When the first NO_NETWORK_ROWS answers all fail to connect, from NO_NETWORK_HOSTS hosts or
more, the fetch stops at once (the network is down, not the hosts) and says so in STOPPED_FILE.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

#: Bounds on one image fetched for a recipe: bytes, and pixels (checked before decoding).
MAX_IMAGE_BYTES = 32 * 1024**2
MAX_IMAGE_PIXELS = 100_000_000
#: The whole request may take this many times the recipe's `download_timeout`, headers included.
LIMIT_FACTOR = 3
#: Images decoded and resized at once (each may be up to MAX_IMAGE_PIXELS).
DECODE_SLOTS = 2
#: The first answers that, all failing to connect from this many hosts, mean the network is down.
NO_NETWORK_ROWS, NO_NETWORK_HOSTS = 24, 3
#: What the fetch leaves in the work folder when it stops early (read by builder/fetch.py).
STOPPED_FILE = "fetch-stopped.json"
#: Its exit status then.
EXIT_NO_NETWORK = 3
#: What urllib and the socket layer say when the network (not the image's host) is the problem.
NETWORK_DOWN = ("Connection refused", "Network is unreachable", "No route to host",
                "Temporary failure in name resolution", "Name or service not known",
                "nodename nor servname provided", "getaddrinfo failed", "No address associated with hostname",
                "timed out")
USER_AGENT = "replicheck (+https://github.com/replicheck)"
JPEG_QUALITY = 95


class Failed(Exception):
    """This row's image could not be had; the message is its reason, as the build counts it."""


def network_down(reason: str) -> bool:
    return any(n in reason for n in NETWORK_DOWN)


class _Deadline:
    """Shuts the request's sockets when its time is up: a blocking read returns at once, whatever
    the server trickles (a socket timeout alone restarts at every byte)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def add(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                _shut(s)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _opener(deadline: _Deadline):
    """urllib's opener (proxies from the environment as usual) whose connections are registered
    with `deadline`, following redirects to http(s) only."""
    import http.client
    import urllib.request
    from urllib.error import HTTPError
    from urllib.parse import urlsplit

    def create(*args, **kwargs):
        return deadline.add(socket.create_connection(*args, **kwargs))

    class Conn(http.client.HTTPConnection):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._create_connection = create

    class SConn(http.client.HTTPSConnection):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._create_connection = create

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(Conn, req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            kw = {"check_hostname": self._check_hostname} if hasattr(self, "_check_hostname") else {}
            return self.do_open(SConn, req, context=self._context, **kw)

    class HttpOnly(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if urlsplit(newurl).scheme not in ("http", "https"):
                raise HTTPError(newurl, code, "redirect to a non-http(s) URL", headers, fp)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(Http, Https, HttpOnly)


def get(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """The body of `url`, within `timeout` seconds per socket operation and LIMIT_FACTOR x
    `timeout` in all (headers included), at most `max_bytes`; Failed with the reason otherwise."""
    import urllib.request
    from urllib.parse import urlsplit

    if urlsplit(url).scheme not in ("http", "https"):
        raise Failed("not an http(s) URL")
    limit = LIMIT_FACTOR * timeout
    deadline = _Deadline(limit)
    buf = io.BytesIO()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with _opener(deadline).open(request, timeout=timeout) as r:
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise Failed(f"larger than {max_bytes} bytes")
            while chunk := r.read1(65536) if hasattr(r, "read1") else r.read(65536):
                if buf.tell() + len(chunk) > max_bytes:
                    raise Failed(f"larger than {max_bytes} bytes")
                buf.write(chunk)
                if deadline.expired:
                    break
    except Failed:
        raise
    except Exception as e:  # noqa: BLE001 - as img2dataset: the row failed, with its reason
        if deadline.expired:
            raise Failed(f"timed out ({limit:g} s in all)") from None
        raise Failed(_reason(e)) from None
    finally:
        deadline.cancel()
    if deadline.expired:
        raise Failed(f"timed out ({limit:g} s in all)")
    return buf.getvalue()


def _reason(e: Exception) -> str:
    from urllib.error import HTTPError, URLError

    if isinstance(e, HTTPError):
        return f"HTTP Error {e.code}: {e.reason}"
    if isinstance(e, URLError):
        e = e.reason if isinstance(e.reason, Exception) else e
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return str(e.strerror or e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return " ".join(str(e).split())[:200] or type(e).__name__


def prepare(data: bytes, image_size: int, slots: threading.Semaphore) -> bytes:
    """The image as the pack keeps it: decoded (at most MAX_IMAGE_PIXELS, refused before decoding),
    shrunk so that its shorter side is `image_size` when it is larger (0: kept), as JPEG. Failed says
    why an image is not one."""
    from lib_replicheck.errors import ImageError
    from lib_replicheck.images import decode

    with slots:
        try:
            im = decode(data, name="image", max_pixels=MAX_IMAGE_PIXELS)
        except ImageError as e:
            if "over the limit" in e.reason or "bomb" in e.reason:
                raise Failed(f"more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None
            raise Failed("not an image") from None
        short = min(im.size)
        if image_size and short > image_size:
            from PIL import Image

            scale = image_size / short
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=JPEG_QUALITY)
        return out.getvalue()


def fetch_row(row: dict, *, timeout: float, image_size: int, slots: threading.Semaphore) -> tuple[bytes | None, str]:
    """(the image as JPEG, "") or (None, why it failed)."""
    try:
        data = get(row["URL"], timeout=timeout, max_bytes=MAX_IMAGE_BYTES)
        return prepare(data, image_size, slots), ""
    except Failed as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - one row's odd failure is that row's, never the build's
        return None, f"{type(e).__name__}: {str(e)[:150]}"


def iter_rows(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _shards(rows: Path, shard_rows: int) -> Iterator[tuple[int, list[dict]]]:
    shard: list[dict] = []
    n = 0
    for row in iter_rows(rows):
        shard.append(row)
        if len(shard) == shard_rows:
            yield n, shard
            n, shard = n + 1, []
    if shard:
        yield n, shard


class _NetworkWatch:
    """Stops the fetch when its first answers say the network is down (see the module's doc)."""

    def __init__(self):
        self.answers = 0
        self.hosts: set[str] = set()
        self.reasons: dict[str, int] = {}
        self.open = True  # still watching: nothing fetched yet and every failure network-down

    def see(self, url: str, image: bytes | None, reason: str) -> bool:
        """True when the fetch should stop now."""
        from urllib.parse import urlsplit

        if not self.open:
            return False
        if image is not None or not network_down(reason):
            self.open = False
            return False
        self.answers += 1
        self.hosts.add(urlsplit(url).netloc)
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        return self.answers >= NO_NETWORK_ROWS and len(self.hosts) >= NO_NETWORK_HOSTS


def fetch_rows(rows: Path, out: Path, *, threads: int, timeout: float, image_size: int, shard_rows: int,
               stopped: Path | None = None) -> int:
    """Fetch every shard of `rows` not done yet into `out`; returns the exit status (0, or
    EXIT_NO_NETWORK after writing `stopped`). Shards are written only once the network is known to
    be up (an image came, or a failure that is the host's): a fetch stopped for want of a network
    leaves nothing marked done."""
    out.mkdir(parents=True, exist_ok=True)
    slots = threading.Semaphore(DECODE_SLOTS)
    watch = _NetworkWatch()
    pending: list[tuple[int, list]] = []
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="replicheck-fetch") as pool:
        for shard, batch in _shards(rows, shard_rows):
            if (out / f"{shard:05d}_stats.json").is_file():
                continue
            results = pool.map(lambda r: fetch_row(r, timeout=timeout, image_size=image_size, slots=slots), batch)
            done = []
            for row, (image, reason) in zip(batch, results):
                done.append((row, image, reason))
                if watch.see(row["URL"], image, reason):
                    if stopped is not None:
                        stopped.write_text(json.dumps({"answers": watch.answers, "hosts": len(watch.hosts),
                                                       "reasons": watch.reasons}), encoding="utf-8")
                    pool.shutdown(wait=False, cancel_futures=True)
                    return EXIT_NO_NETWORK
            pending.append((shard, done))
            if not watch.open:
                for n, d in pending:
                    _write_shard(out, n, shard_rows, d)
                pending = []
    for n, d in pending:
        _write_shard(out, n, shard_rows, d)
    return 0


def _write_shard(out: Path, shard: int, shard_rows: int, done: list[tuple[dict, bytes | None, str]]) -> None:
    """The shard's tar, then its stats, each written atomically: the stats file says it is done."""
    from lib_replicheck.atomic import replacing, write_atomic

    status: dict[str, int] = {}
    ok = 0
    with replacing(out / f"{shard:05d}.tar") as tmp, tarfile.open(tmp, "w") as tf:
        for i, (row, image, reason) in enumerate(done):
            status[reason or "success"] = status.get(reason or "success", 0) + 1
            if image is None:
                continue
            ok += 1
            key = f"{shard:05d}{i:0{max(4, len(str(shard_rows)))}d}"
            meta = {"url": row["URL"], "caption": row.get("TEXT"), "key": key, "status": "success"}
            meta.update({k: row[k] for k in ("LICENSE", "hash", "source_key") if k in row})
            for name, data in ((f"{key}.jpg", image), (f"{key}.txt", (row.get("TEXT") or "").encode("utf-8")),
                               (f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), int(time.time())
                tf.addfile(info, io.BytesIO(data))
    failed = len(done) - ok
    stats = {"count": len(done), "successes": ok, "failed_to_download": failed, "failed_to_resize": 0,
             "status_dict": status}
    write_atomic(out / f"{shard:05d}_stats.json", json.dumps(stats))
