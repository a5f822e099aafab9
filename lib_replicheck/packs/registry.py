"""Registries: JSON documents listing the packs that can be downloaded (see docs/registry.md).

A registry comes from the network, so it is parsed strictly: every pack and file field is checked,
file paths must stay inside the pack folder, URLs are resolved against the registry's own URL
(so a registry can sit beside its packs on any static host) and must be http(s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from ..errors import ReplicheckError
from .manifest import MANIFEST, NAME_RE, SHA256_RE, check_relative_path

FORMAT = "replicheck-registry"
FORMAT_VERSION = 1
#: The registry of this repository: the demo pack, and the packs the project publishes.
DEFAULT_REGISTRY = "https://raw.githubusercontent.com/replicheck/replicheck/main/registry/packs.json"
MAX_REGISTRY_BYTES = 5 * 1024 * 1024
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
class RegistryPack:
    name: str
    title: str
    description: str
    version: str
    source: dict[str, str]
    embedder: dict[str, Any]
    count: int
    files: tuple[RemoteFile, ...]
    registry: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "description": self.description, "version": self.version,
                "source": dict(self.source), "embedder": dict(self.embedder), "count": self.count,
                "size": self.size, "registry": self.registry}


@dataclass
class Registry:
    url: str
    packs: list[RegistryPack] = field(default_factory=list)


def parse(data: Any, url: str) -> Registry:
    """Validate a decoded registry; RegistryError names the registry and the bad field."""

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
    out, names = [], set()
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
            urls = f.get("urls")
            if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
                fail(f"{fw}.urls", "missing, empty, or not a list of strings")
            resolved = tuple(urljoin(url, u) for u in urls)
            for u in resolved:
                parts = urlsplit(u)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    fail(f"{fw}.urls", f"{u!r} is not an http(s) URL")
            extract = f.get("extract", False)
            if not isinstance(extract, bool) or (extract and not path.endswith(ARCHIVE_SUFFIXES)):
                fail(f"{fw}.extract", f"only {', '.join(ARCHIVE_SUFFIXES)} archives can be extracted")
            parsed.append(RemoteFile(path, size, sha.lower(), resolved, extract))
        if not any(f.path == MANIFEST for f in parsed) and not any(f.extract for f in parsed):
            fail(f"{where}.files", f"lists no {MANIFEST} (nor an archive that holds it)")
        source = p.get("source") if isinstance(p.get("source"), dict) else {}
        out.append(RegistryPack(
            name=name, title=str(p.get("title") or name), description=str(p.get("description") or ""),
            version=str(p.get("version") or ""), source={k: str(v) for k, v in source.items()},
            embedder={k: v for k, v in emb.items() if isinstance(v, (str, int, float))}, count=count,
            files=tuple(parsed), registry=url))
    return Registry(url, out)


def load(url: str, *, offline: bool = False, timeout: float = 20.0, session=None) -> Registry:
    """Read a registry from an http(s) URL, or from a local file path."""
    if urlsplit(url).scheme not in ("http", "https"):
        path = Path(url).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(f"registry {url}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RegistryError(f"registry {url}: cannot be read as JSON ({e})") from None
        return parse(data, path.resolve().as_uri())
    if offline:
        raise RegistryError(f"registry {url}: network access is off (--offline)")
    import requests

    get = (session or requests).get
    try:
        with get(url, timeout=timeout, stream=True) as r:
            if r.status_code != 200:
                raise RegistryError(f"registry {url}: HTTP {r.status_code}")
            body = r.raw.read(MAX_REGISTRY_BYTES + 1, decode_content=True)
    except requests.RequestException as e:
        raise RegistryError(f"registry {url}: {type(e).__name__}: {e}") from None
    if len(body) > MAX_REGISTRY_BYTES:
        raise RegistryError(f"registry {url}: larger than {MAX_REGISTRY_BYTES} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RegistryError(f"registry {url}: not valid JSON ({e})") from None
    return parse(data, url)


def load_all(urls: list[str], *, offline: bool = False) -> tuple[list[RegistryPack], list[str]]:
    """The packs of every registry (the first registry listing a name wins), and one error per
    registry that could not be read."""
    packs, errors, seen = [], [], set()
    for url in urls:
        try:
            reg = load(url, offline=offline)
        except RegistryError as e:
            errors.append(str(e))
            continue
        for p in reg.packs:
            if p.name not in seen:
                seen.add(p.name)
                packs.append(p)
    return packs, errors


def entry_for(pack_dir: str | Path, urls_prefix: str, *, version: str = "1") -> dict:
    """A registry entry for a built pack folder, its files to be published under `urls_prefix`."""
    from ..weights import sha256_file
    from .manifest import read

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


def publish(registry_file: str | Path, pack_dir: str | Path, urls_prefix: str, *, version: str = "1") -> dict:
    """Add or replace a pack's entry in a registry file (written through a temporary file)."""
    import os

    registry_file = Path(registry_file)
    if registry_file.exists():
        data = json.loads(registry_file.read_text(encoding="utf-8"))
        parse(data, "http://localhost/" + registry_file.name)  # refuse to extend a malformed file
    else:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "packs": []}
    entry = entry_for(pack_dir, urls_prefix, version=version)
    data["packs"] = [p for p in data["packs"] if p.get("name") != entry["name"]] + [entry]
    tmp = registry_file.with_name(registry_file.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, registry_file)
    return entry
