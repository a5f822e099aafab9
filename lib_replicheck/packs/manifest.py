"""`manifest.json`: what a pack is, what built it, and the size and sha256 of each of its files.

Manifests come from the internet, so parsing is strict: unknown format versions, missing fields,
wrong types and file paths that leave the pack folder are refused with the field's name.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..embedders.base import METRICS, EmbedderSpec
from ..errors import PackError

FORMAT = "replicheck-pack"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.sqlite"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    name: str
    title: str
    description: str
    source: dict[str, Any]  # dataset, license, url
    embedder: EmbedderSpec
    count: int  # items (training images) in the metadata
    vectors: int  # vectors in the index (more than `count` when variants are stored)
    index: dict[str, Any]  # file, type, variants, and any build measurements
    files: list[FileEntry]
    built_at: str
    tool_version: str
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.embedder.metric

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "source": self.source,
            "embedder": self.embedder.to_dict(),
            "metric": self.embedder.metric,
            "count": self.count,
            "vectors": self.vectors,
            "index": self.index,
            "files": [asdict(f) for f in self.files],
            "built_at": self.built_at,
            "tool": {"name": "replicheck", "version": self.tool_version},
            **({"extra": self.extra} if self.extra else {}),
        }

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)


def check_relative_path(p: str, where: str) -> str:
    """A path inside the pack: relative, forward slashes, no '..', no drive letters."""
    if not isinstance(p, str) or not p or "\\" in p or "\x00" in p or ":" in p:
        raise ValueError(f"{where}: {p!r} is not a plain relative path")
    pp = PurePosixPath(p)
    if pp.is_absolute() or any(part in ("..", ".", "") for part in pp.parts):
        raise ValueError(f"{where}: {p!r} leaves the pack folder")
    return p


def parse(data: Any, origin: str | Path = MANIFEST) -> Manifest:
    """Validate a decoded manifest.json; raise PackError naming the bad field."""

    def need(d: dict, key: str, kind, where: str):
        if key not in d:
            raise PackError(origin, f"manifest field '{where}{key}' is missing")
        v = d[key]
        if kind is int and isinstance(v, bool) or not isinstance(v, kind):
            raise PackError(origin, f"manifest field '{where}{key}' should be {getattr(kind, '__name__', kind)}, "
                                    f"not {type(v).__name__}")
        return v

    if not isinstance(data, dict):
        raise PackError(origin, "manifest is not a JSON object")
    if data.get("format") != FORMAT:
        raise PackError(origin, f"not a replicheck pack manifest (format is {data.get('format')!r})")
    version = need(data, "format_version", int, "")
    if version != FORMAT_VERSION:
        raise PackError(origin, f"pack format version {version} is not supported by this replicheck "
                                f"(it reads version {FORMAT_VERSION}); update replicheck or rebuild the pack")
    name = need(data, "name", str, "")
    if not NAME_RE.match(name):
        raise PackError(origin, f"manifest field 'name' {name!r}: use lowercase letters, digits, '.', '_', '-'")
    emb = need(data, "embedder", dict, "")
    for key, kind in (("id", str), ("kind", str), ("model", str), ("dim", int), ("metric", str)):
        need(emb, key, kind, "embedder.")
    if emb["metric"] not in METRICS:
        raise PackError(origin, f"manifest field 'embedder.metric' {emb['metric']!r} is not one of {METRICS}")
    if emb["dim"] <= 0:
        raise PackError(origin, "manifest field 'embedder.dim' must be positive")
    try:
        spec = EmbedderSpec.from_dict(emb)
    except (TypeError, ValueError, KeyError) as e:
        raise PackError(origin, f"manifest field 'embedder' is malformed: {e}") from None
    count = need(data, "count", int, "")
    vectors = data.get("vectors", count)
    if not isinstance(vectors, int) or count < 0 or vectors < count:
        raise PackError(origin, "manifest fields 'count'/'vectors' are inconsistent")
    index = need(data, "index", dict, "")
    files = []
    for i, f in enumerate(need(data, "files", list, "")):
        if not isinstance(f, dict):
            raise PackError(origin, f"manifest field 'files[{i}]' is not an object")
        path = need(f, "path", str, f"files[{i}].")
        size = need(f, "size", int, f"files[{i}].")
        sha = need(f, "sha256", str, f"files[{i}].").lower()
        try:
            check_relative_path(path, f"files[{i}].path")
        except ValueError as e:
            raise PackError(origin, f"manifest field {e}") from None
        if size < 0 or not SHA256_RE.match(sha):
            raise PackError(origin, f"manifest field 'files[{i}]' has a bad size or sha256")
        files.append(FileEntry(path, size, sha))
    paths = {f.path for f in files}
    rerank = index.get("rerank")
    if rerank is not None and not (isinstance(rerank, dict) and isinstance(rerank.get("file"), str)
                                   and isinstance(rerank.get("candidates"), int) and rerank["candidates"] > 0):
        raise PackError(origin, "manifest field 'index.rerank' needs a 'file' and a positive 'candidates'")
    for required in (index.get("file", INDEX_FILE), METADATA_FILE) + ((rerank["file"],) if rerank else ()):
        if required not in paths:
            raise PackError(origin, f"manifest does not list the file {required!r}")
    tool = data.get("tool") if isinstance(data.get("tool"), dict) else {}
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    return Manifest(
        name=name,
        title=str(data.get("title") or name),
        description=str(data.get("description") or ""),
        source={k: str(v) for k, v in source.items() if isinstance(v, (str, int, float))},
        embedder=spec,
        count=count,
        vectors=vectors,
        index=index,
        files=files,
        built_at=str(data.get("built_at") or ""),
        tool_version=str(tool.get("version") or ""),
        format_version=version,
        extra=data.get("extra") if isinstance(data.get("extra"), dict) else {},
    )


def read(pack_dir: str | Path) -> Manifest:
    path = Path(pack_dir) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PackError(pack_dir, f"{MANIFEST} is missing (not a pack folder?)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PackError(pack_dir, f"{MANIFEST} cannot be read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PackError(pack_dir, f"{MANIFEST} is not valid JSON ({e})") from None
    return parse(data, pack_dir)


def write(pack_dir: str | Path, manifest: Manifest) -> Path:
    path = Path(pack_dir) / MANIFEST
    path.write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
