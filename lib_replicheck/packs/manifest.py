"""`manifest.json`: what a pack is, what built it, and the size and sha256 of each of its files.

Manifests come from the internet, so parsing is strict: unknown format versions, missing fields,
wrong types and file paths that leave the pack folder are refused with the field's name.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lib_replicheck.embedders.base import METRICS, EmbedderSpec
from lib_replicheck.errors import PackError
from lib_replicheck.packs.background import MAX_ROWS as MAX_BACKGROUND
from lib_replicheck.packs.rerank import DTYPES

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
    #: file and count of the background set for score normalisation (packs/background.py), if any
    background: dict[str, Any] | None = None

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
            **({"background": self.background} if self.background else {}),
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


MAX_MANIFEST_BYTES = 16 * 1024**2
MAX_DIM = 1 << 16
#: Bounds on re-ranking (packs/rerank.py), what one query may cost: candidates re-scored from disk
#: (the builder tries up to 1,000), variants of one image, and the dimension of the rows
MAX_CANDIDATES = 2_000
MAX_RERANK_VARIANTS = 64
MAX_RERANK_DIM = 4096


def parse(data: Any, origin: str | Path = MANIFEST) -> Manifest:
    """Validate a decoded manifest.json; raise PackError naming the bad field."""

    def bad(where: str, what: str):
        return PackError(origin, f"manifest field '{where}' {what}"[:400])

    def kind_name(kind) -> str:
        return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__

    def need(d: dict, key: str, kind, where: str):
        if key not in d:
            raise PackError(origin, f"manifest field '{where}{key}' is missing")
        return check(d[key], kind, where + key)

    def check(v, kind, where: str):
        if (kind is int or kind is float) and isinstance(v, bool) or not isinstance(v, kind):
            raise bad(where, f"should be {kind_name(kind)}, not {type(v).__name__}")
        return v

    def optional(d: dict, key: str, kind, where: str, default=None):
        return default if d.get(key) is None else check(d[key], kind, where + key)

    def relative(p: str, where: str) -> str:
        try:
            return check_relative_path(p, where)
        except ValueError as e:
            reason = str(e)
            raise bad(where, reason[len(where) + 2:] if reason.startswith(where + ": ") else reason) from None

    if not isinstance(data, dict):
        raise PackError(origin, "manifest is not a JSON object")
    if data.get("format") != FORMAT:
        raise PackError(origin, f"not a replicheck pack manifest (format is {str(data.get('format'))[:80]!r})")
    version = need(data, "format_version", int, "")
    if version != FORMAT_VERSION:
        raise PackError(origin, f"pack format version {version} is not supported by this replicheck "
                                f"(it reads version {FORMAT_VERSION}); update replicheck or rebuild the pack")
    name = need(data, "name", str, "")
    if not NAME_RE.match(name):
        raise PackError(origin, f"manifest field 'name' {name[:80]!r}: use lowercase letters, digits, '.', '_', '-'")
    emb = need(data, "embedder", dict, "")
    for key, kind in (("id", str), ("kind", str), ("model", str), ("dim", int), ("metric", str)):
        need(emb, key, kind, "embedder.")
    if emb["metric"] not in METRICS:
        raise bad("embedder.metric", f"{emb['metric'][:40]!r} is not one of {METRICS}")
    if not 0 < emb["dim"] <= MAX_DIM or emb["metric"] == "hamming" and emb["dim"] % 8:
        raise bad("embedder.dim", f"{emb['dim']} is not a positive dimension (at most {MAX_DIM}"
                                  f"{', a multiple of 8 for bit codes' if emb['metric'] == 'hamming' else ''})")
    optional(emb, "preprocessing", dict, "embedder.")
    for i, w in enumerate(optional(emb, "weights", list, "embedder.", [])):
        where = f"embedder.weights[{i}]."
        check(w, dict, where[:-1])
        need(w, "runtime", str, where)
        for key in ("url", "sha256", "filename"):
            optional(w, key, str, where)
        unknown = set(w) - {"runtime", "url", "sha256", "filename"}
        if unknown:
            raise bad(where + sorted(unknown)[0], "is not a known field")
    try:
        spec = EmbedderSpec.from_dict(emb)
    except (TypeError, ValueError, KeyError) as e:
        raise PackError(origin, f"manifest field 'embedder' is malformed: {e}"[:400]) from None
    count = need(data, "count", int, "")
    vectors = data["vectors"] if data.get("vectors") is not None else count
    check(vectors, int, "vectors")
    if count < 0 or vectors < count:
        raise PackError(origin, "manifest fields 'count'/'vectors' are inconsistent")
    index = need(data, "index", dict, "")
    index_file = relative(optional(index, "file", str, "index.", INDEX_FILE), "index.file")
    optional(index, "type", str, "index.")
    for k, v in optional(index, "search_params", dict, "index.", {}).items():
        check(v, int, f"index.search_params.{k}")
    rerank = optional(index, "rerank", dict, "index.")
    if rerank is not None:
        relative(need(rerank, "file", str, "index.rerank."), "index.rerank.file")
        dtype = optional(rerank, "dtype", str, "index.rerank.", "float16")
        if dtype not in DTYPES:
            raise bad("index.rerank.dtype", f"should be one of {', '.join(DTYPES)}, not {dtype!r}"[:200])
        if dtype == "sq4":
            lo_hi = need(rerank, "range", list, "index.rerank.")
            if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          and math.isfinite(v) for v in lo_hi) or not lo_hi[0] < lo_hi[1]:
                raise bad("index.rerank.range", "should be two finite numbers, the lower first")
        if dtype == "pq":
            relative(need(rerank, "codebook", str, "index.rerank."), "index.rerank.codebook")
        candidates = need(rerank, "candidates", int, "index.rerank.")
        if not 0 < candidates <= MAX_CANDIDATES:
            raise bad("index.rerank.candidates", f"should be from 1 to {MAX_CANDIDATES:,}, not {candidates}")
        if emb["dim"] > MAX_RERANK_DIM:
            raise bad("embedder.dim", f"is {emb['dim']}: re-ranking rows take at most {MAX_RERANK_DIM} dimensions")
        if count and vectors // count > MAX_RERANK_VARIANTS:
            raise bad("vectors", f"is {vectors} for {count} images: re-ranking takes at most {MAX_RERANK_VARIANTS} "
                                 "vectors an image")
    background = optional(data, "background", dict, "")
    if background is not None:
        relative(need(background, "file", str, "background."), "background.file")
        rows = need(background, "count", int, "background.")
        if not 0 < rows <= MAX_BACKGROUND:
            raise bad("background.count", f"should be from 1 to {MAX_BACKGROUND:,}, not {rows}")
    files = []
    for i, f in enumerate(need(data, "files", list, "")):
        if not isinstance(f, dict):
            raise PackError(origin, f"manifest field 'files[{i}]' is not an object")
        path = relative(need(f, "path", str, f"files[{i}]."), f"files[{i}].path")
        size = need(f, "size", int, f"files[{i}].")
        sha = need(f, "sha256", str, f"files[{i}].").lower()
        if size < 0 or not SHA256_RE.match(sha):
            raise PackError(origin, f"manifest field 'files[{i}]' has a bad size or sha256")
        files.append(FileEntry(path, size, sha))
    paths = {f.path for f in files}
    for required in (index_file, METADATA_FILE) + rerank_files(index) + background_files(background):
        if required not in paths:
            raise PackError(origin, f"manifest does not list the file {required!r}")
    tool = optional(data, "tool", dict, "", {})
    source = optional(data, "source", dict, "", {})
    extra = optional(data, "extra", dict, "", {})
    return Manifest(
        name=name,
        title=optional(data, "title", str, "") or name,
        description=optional(data, "description", str, "", ""),
        source={str(k): str(v) for k, v in source.items() if isinstance(v, (str, int, float))},
        embedder=spec,
        count=count,
        vectors=vectors,
        index=index,
        files=files,
        built_at=optional(data, "built_at", str, "", ""),
        tool_version=str(optional(tool, "version", (str, int, float), "tool.", "")),
        format_version=version,
        extra=extra,
        background=background,
    )


def read(pack_dir: str | Path) -> Manifest:
    """Read and validate manifest.json, bounded in size before it is read."""
    path = Path(pack_dir) / MANIFEST
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise PackError(pack_dir, f"{MANIFEST} is missing (not a pack folder?)") from None
    except OSError as e:
        raise PackError(pack_dir, f"{MANIFEST} cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PackError(pack_dir, f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES // 1024**2} MB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise PackError(pack_dir, f"{MANIFEST} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise PackError(pack_dir, f"{MANIFEST} is not valid JSON ({e})") from None
    except RecursionError:
        raise PackError(pack_dir, f"{MANIFEST} is nested too deeply") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise PackError(pack_dir, f"{MANIFEST} is not valid JSON ({str(e)[:200]})") from None
    return parse(data, pack_dir)


def write(pack_dir: str | Path, manifest: Manifest) -> Path:
    path = Path(pack_dir) / MANIFEST
    path.write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def rerank_files(index: dict) -> tuple[str, ...]:
    """The re-ranking files an index's manifest entry names: the rows and, for pq, the codebook."""
    rerank = index.get("rerank")
    if not rerank:
        return ()
    return (rerank["file"],) + ((rerank["codebook"],) if rerank.get("dtype") == "pq" else ())


def background_files(background: dict | None) -> tuple[str, ...]:
    """The background set's file, if the pack has one."""
    return (background["file"],) if background else ()
