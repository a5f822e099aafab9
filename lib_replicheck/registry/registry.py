"""Registries: JSON documents listing the packs that can be downloaded (see docs/registry.md).

A registry comes from the network, so it is parsed strictly: every pack and file field is checked,
file paths must stay inside the pack folder, URLs are resolved against the registry's own URL
(so a registry can sit beside its packs on any static host) and must be http(s). Reading one is
bounded in size (MAX_REGISTRY_BYTES) and in time (TIMEOUT without a byte, DEADLINE in all), and
several registries are read at once, so one slow or broken registry is reported beside the packs
of the others instead of hiding them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.home import shipped_registry
from lib_replicheck.packs.manifest import MANIFEST, NAME_RE, SHA256_RE, check_relative_path
from lib_replicheck.registry.entry import Listed, listed_fields
from lib_replicheck.registry.parse_recipe import MAX_PARTS, checked_urls

FORMAT = "replicheck-registry"
FORMAT_VERSION = 1
#: The registry shipped in this repository (the demo pack and the recipes), read from disk: listing
#: it and installing the demo need no network. Remote registries are added by the user (Settings,
#: --registry, $REPLICHECK_REGISTRY); no default points at a host this project does not control.
DEFAULT_REGISTRY = str(shipped_registry() / "packs.json")
MAX_REGISTRY_BYTES = 5 * 1024 * 1024
#: Seconds without a byte before a registry counts as stalled, and seconds for the whole read.
TIMEOUT = 10.0
DEADLINE = 30.0
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


class RegistryError(ReplicheckError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    extract: bool = False  # an archive unpacked into the pack folder after verification


@dataclass(frozen=True)
class RegistryPack(Listed):
    count: int
    files: tuple[RemoteFile, ...]
    registry: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "description": self.description, "version": self.version,
                "source": dict(self.source), "embedder": dict(self.embedder), "count": self.count,
                "size": self.size, "registry": self.registry, "kind": "pack"}


    kind = "pack"


@dataclass
class Registry:
    url: str
    packs: list = field(default_factory=list)  # RegistryPack and RegistryRecipe entries, in order


@dataclass(frozen=True)
class RegistryResult:
    """What reading one registry gave: its packs, or the error that stopped it (never both)."""

    url: str
    packs: tuple[RegistryPack, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse(data: Any, url: str) -> Registry:
    """Validate a decoded registry; RegistryError names the registry and the bad field.

    A registry read from a file (`url` is a file: URI) may name files beside it with relative URLs
    (file: URLs inside its own folder); one read from the network names only http(s) URLs."""
    from urllib.request import url2pathname

    from lib_replicheck.registry.parse_recipe import parse_recipe

    local = urlsplit(url).scheme == "file"
    base_dir = str(Path(url2pathname(urlsplit(url).path)).parent) if local else None

    def fail(where: str, what: str):
        raise RegistryError(f"registry {url}: {where}: {what}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        fail("format", f"not a replicheck registry (expected \"format\": \"{FORMAT}\")")
    if data.get("format_version") != FORMAT_VERSION:
        fail("format_version", f"{data.get('format_version')!r} is not supported (this replicheck reads "
                               f"{FORMAT_VERSION})")
    packs = data.get("packs")
    if not isinstance(packs, list):
        fail("packs", "missing or not a list")
    out, names, listed = [], set(), 0
    for i, p in enumerate(packs):
        where = f"packs[{i}]"
        if not isinstance(p, dict):
            fail(where, "not an object")
        name = p.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            fail(f"{where}.name", f"{name!r}: use lowercase letters, digits, '.', '_', '-'")
        if name in names:
            fail(f"{where}.name", f"{name!r} is listed twice")
        names.add(name)
        kind = p.get("kind", "pack")
        if kind == "recipe":
            out.append(parse_recipe(p, where, url, fail, _text, allow_file_urls=local, base_dir=base_dir))
            listed += len(out[-1].list.files)  # each recipe is bounded; so are all of them together
            if listed > MAX_PARTS:
                fail(f"{where}.list", f"the registry's recipes name more than {MAX_PARTS:,} list files in all")
            continue
        if kind != "pack":
            fail(f"{where}.kind", f"{_text(kind, 40)!r}: 'pack' or 'recipe'")
        emb = p.get("embedder")
        if not isinstance(emb, dict) or not isinstance(emb.get("id"), str):
            fail(f"{where}.embedder", "missing, or without an 'id'")
        count = p.get("count", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            fail(f"{where}.count", "not a non-negative integer")
        files = p.get("files")
        if not isinstance(files, list) or not files:
            fail(f"{where}.files", "missing or empty")
        parsed = []
        for j, f in enumerate(files):
            fw = f"{where}.files[{j}]"
            if not isinstance(f, dict):
                fail(fw, "not an object")
            path, size, sha = f.get("path"), f.get("size"), f.get("sha256")
            try:
                check_relative_path(path, f"{fw}.path")
            except ValueError as e:
                fail(f"{fw}.path", str(e))
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                fail(f"{fw}.size", "not a non-negative integer")
            if not isinstance(sha, str) or not SHA256_RE.match(sha.lower()):
                fail(f"{fw}.sha256", "not a sha256 hex digest")
            resolved = checked_urls(f.get("urls"), url, f"{fw}.urls", fail, allow_file_urls=local, base_dir=base_dir)
            extract = f.get("extract", False)
            if not isinstance(extract, bool) or (extract and not path.endswith(ARCHIVE_SUFFIXES)):
                fail(f"{fw}.extract", f"only {', '.join(ARCHIVE_SUFFIXES)} archives can be extracted")
            parsed.append(RemoteFile(path, size, sha.lower(), resolved, extract))
        if not any(f.path == MANIFEST for f in parsed) and not any(f.extract for f in parsed):
            fail(f"{where}.files", f"lists no {MANIFEST} (nor an archive that holds it)")
        out.append(RegistryPack(**listed_fields(p, name, emb, _text), count=count, files=tuple(parsed), registry=url))
    return Registry(url, out)




def _text(v: Any, n: int) -> str:
    """A scalar as text of at most `n` characters; anything else as ''."""
    if v is None or isinstance(v, (dict, list, bool)):
        return ""
    s = str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def load(url: str, *, offline: bool = False, timeout: float | None = None, deadline: float | None = None,
         session=None) -> Registry:
    """Read a registry from an http(s) URL, or from a local file path.

    `timeout`: seconds without a byte (TIMEOUT); `deadline`: seconds for the whole read (DEADLINE).
    Every failure is a RegistryError naming the registry.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        path = Path(url).expanduser()
        try:
            with open(path, "rb") as f:
                body = f.read(MAX_REGISTRY_BYTES + 1)
        except FileNotFoundError:
            raise RegistryError(f"registry {url}: no such file") from None
        except OSError as e:
            raise RegistryError(f"registry {url}: cannot be read ({e})") from None
        if len(body) > MAX_REGISTRY_BYTES:
            raise RegistryError(f"registry {url}: larger than {MAX_REGISTRY_BYTES} bytes")
        return _parse_safely(_decode(body, url), path.resolve().as_uri())
    if offline:
        raise RegistryError(f"registry {url}: network access is off (--offline)")
    timeout = TIMEOUT if timeout is None else timeout
    deadline = DEADLINE if deadline is None else deadline
    try:
        body = _read_bounded(url, timeout, deadline, session)
    except RegistryError:
        raise
    except Exception as e:  # noqa: BLE001 - requests, urllib3 and socket errors alike name the registry
        raise RegistryError(f"registry {url}: {type(e).__name__}: {e}") from None
    return _parse_safely(_decode(body, url), url)


def _parse_safely(data: Any, url: str) -> Registry:
    try:
        return parse(data, url)
    except RegistryError:
        raise
    except Exception as e:  # noqa: BLE001 - a shape parse() did not foresee is still this registry's fault
        raise RegistryError(f"registry {url}: malformed ({type(e).__name__}: {e})") from None


def _read_bounded(url: str, timeout: float, deadline: float, session) -> bytes:
    """The body of `url`, at most MAX_REGISTRY_BYTES, read within `deadline` seconds: a server that
    sends a byte now and then cannot hold the read open."""
    import requests

    end = time.monotonic() + deadline
    own = session is None
    if own:
        session = requests.Session()
        session.max_redirects = 5
    try:
        with session.get(url, timeout=(min(timeout, deadline), min(timeout, deadline)), stream=True) as r:
            if r.status_code != 200:
                raise RegistryError(f"registry {url}: HTTP {r.status_code}")
            read = getattr(r.raw, "read1", None)  # urllib3 2: returns what one receive gave
            chunks, got = [], 0
            while True:
                if time.monotonic() > end:
                    raise RegistryError(f"registry {url}: not read within {deadline:g} s")
                chunk = read(65536, decode_content=True) if read else r.raw.read(8192, decode_content=True)
                if not chunk:
                    break
                got += len(chunk)
                if got > MAX_REGISTRY_BYTES:
                    raise RegistryError(f"registry {url}: larger than {MAX_REGISTRY_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    finally:
        if own:
            session.close()


def _decode(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RegistryError(f"registry {url}: not valid JSON ({e})") from None
    except RecursionError:
        raise RegistryError(f"registry {url}: not valid JSON (nested too deeply)") from None


def load_each(urls: list[str], *, offline: bool = False, timeout: float | None = None,
              deadline: float | None = None) -> list[RegistryResult]:
    """Read every registry at once (so the slowest bounds the wait, not the sum); one result per
    URL, in order. Never raises: an unexpected failure is that registry's error."""
    from concurrent.futures import ThreadPoolExecutor

    def one(url: str) -> RegistryResult:
        try:
            return RegistryResult(url, tuple(load(url, offline=offline, timeout=timeout, deadline=deadline).packs))
        except RegistryError as e:
            return RegistryResult(url, error=str(e))
        except Exception as e:  # noqa: BLE001 - one broken registry must not hide the others
            return RegistryResult(url, error=f"registry {url}: {type(e).__name__}: {e}")

    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(urls)), thread_name_prefix="replicheck-registry") as pool:
        return list(pool.map(one, urls))


def load_all(urls: list[str], *, offline: bool = False, timeout: float | None = None,
             deadline: float | None = None) -> tuple[list[RegistryPack], list[str]]:
    """The packs of every registry (the first registry listing a name wins), and one error per
    registry that could not be read. Never raises (see load_each)."""
    packs, errors, seen = [], [], set()
    for res in load_each(urls, offline=offline, timeout=timeout, deadline=deadline):
        if res.error is not None:
            errors.append(res.error)
            continue
        for p in res.packs:
            if p.name not in seen:
                seen.add(p.name)
                packs.append(p)
    return packs, errors


def entry_for(pack_dir: str | Path, urls_prefix: str, *, version: str = "1") -> dict:
    """A registry entry for a built pack folder, its files to be published under `urls_prefix`."""
    from lib_replicheck.embedders.weights import sha256_file
    from lib_replicheck.packs.manifest import read

    pack_dir = Path(pack_dir)
    m = read(pack_dir)
    paths = [MANIFEST] + [f.path for f in m.files]
    prefix = urls_prefix if urls_prefix.endswith("/") else urls_prefix + "/"
    return {
        "name": m.name, "title": m.title, "description": m.description, "version": version,
        "source": m.source, "count": m.count,
        "embedder": {"id": m.embedder.id, "metric": m.embedder.metric, "dim": m.embedder.dim},
        "files": [{"path": p, "size": (pack_dir / p).stat().st_size, "sha256": sha256_file(pack_dir / p),
                   "urls": [prefix + p]} for p in paths],
    }


def list_pack(registry_file: str | Path, pack_dir: str | Path, urls_prefix: str, *, version: str = "1") -> dict:
    """Add or replace a pack's entry in a registry file (written atomically)."""
    from lib_replicheck.atomic import write_atomic

    registry_file = Path(registry_file)
    if registry_file.exists():
        data = json.loads(registry_file.read_text(encoding="utf-8"))
        parse(data, "http://localhost/" + registry_file.name)  # refuse to extend a malformed file
    else:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "packs": []}
    entry = entry_for(pack_dir, urls_prefix, version=version)
    data["packs"] = [p for p in data["packs"] if p.get("name") != entry["name"]] + [entry]
    write_atomic(registry_file, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return entry
