"""Recipes: registry entries that say how to build a pack on the user's machine.

No one hosts an index of a training set, but public lists of its images exist (a CSV of the images
Stable Diffusion reproduces, PD12M's metadata parquets, a user's own LAION parquet). A recipe names
such a list, which of its columns hold URL, caption, license and key, the embedder and builder
options, an optional exclusion list, and what the build is expected to give. `packs get NAME`
(builder/build_recipe.py) downloads the list, fetches the images, embeds, indexes and installs.

A recipe comes from a registry, which comes from the network: it is parsed as strictly as a pack
entry, every error naming the field. Its list is one of:
- `files`: one or more files at http(s) URLs, each with its size and sha256 (verified before use);
- `url_pattern` + `parts`: numbered files (`{i}`, or `{i:02d}` zero-padded) whose sha256 nobody published: they are
  used only when the user accepts to pin them on first use (`unpinned`), see builder/build_recipe.py;
- `shipped`: a file shipped inside the lib_replicheck package, with its sha256;
- `user`: a file the user names when building (`packs get NAME --list PATH`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.packs.manifest import NAME_RE, SHA256_RE, check_relative_path
from lib_replicheck.registry.entry import MAX_FIELDS, MAX_SHORT, Listed, listed_fields

LIST_FORMATS = ("csv", "parquet", "embeddings")  # embeddings: published vectors (builder/embedding_recipe.py)
#: The columns a recipe may name; `url` is required.
COLUMNS = ("url", "caption", "license", "key", "hash")
#: Bounds on what a recipe may ask for.
MAX_PARTS = 10_000
#: A url_pattern is a URL (at most this long) with one field, `{i}` or a zero-padded `{i:02d}` ..
#: `{i:09d}`, expanded by our own code: str.format on a stranger's text would build whatever its
#: format spec asks for (`{i:>200000000}`) or reach into attributes (`{i.__class__}`).
MAX_PATTERN = 2000
PATTERN_FIELD = re.compile(r"\{i(?::0([1-9])d)?\}")
MAX_LIST_BYTES = 4 * 1024**3
#: An exclusion list is read whole into a set, so it is bounded (declared size, download, file and
#: entries) before it is read: a million URLs take about 200 MB as a set.
MAX_EXCLUDE_BYTES = 64 * 1024**2
MAX_EXCLUDE_ENTRIES = 1_000_000
MAX_COUNT = 10_000_000_000
IMAGE_SIZES = (0, 4096)  # 0: images kept as fetched; else the shorter side, in pixels (larger images shrunk)
#: What a parquet list's build needs beyond requirements.txt, as pip installs it and as it imports
#: (requirements-builder.txt lists the same). A CSV list needs none: replicheck fetches it itself.
BUILDER_PACKAGES = (("pyarrow<18", "pyarrow"), ("img2dataset", "img2dataset"))
#: Options a recipe may set for the builder, with their types and bounds.
BUILD_OPTIONS = {"image_size": (int, 0, 4096), "download_timeout": (int, 1, 120), "thumbnails": (bool, None, None),
                 "shard_size": (int, 1, 1_000_000), "batch": (int, 1, 4096)}


class MissingPackages(ReplicheckError):
    """A recipe's build needs packages this Python lacks: said before anything starts, with the
    command that installs them (`packages`: their pip requirements)."""

    def __init__(self, name: str, packages: list[str]):
        from lib_replicheck.pipinstall import by_hand

        self.packages = packages
        super().__init__(f"recipe {name}: its list is a parquet file, read with pyarrow and fetched with img2dataset, "
                         f"and {', '.join(packages)} {'is' if len(packages) == 1 else 'are'} not installed in this "
                         f"Python. Install {'it' if len(packages) == 1 else 'them'} with: {by_hand(packages)}")


def missing_builder_packages() -> list[str]:
    """The BUILDER_PACKAGES this Python lacks, as pip requirements."""
    return [spec for spec, module in BUILDER_PACKAGES if not _importable(module)]


def _importable(module: str) -> bool:
    import importlib
    import importlib.util

    importlib.invalidate_caches()  # a package installed since this process started counts
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class ListFile:
    """One file of a recipe's list: where it is and how it is checked."""

    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None  # None: nobody published it (pinned on first use, if the user accepts)
    shipped: str | None = None  # a path inside the lib_replicheck package

    def shipped_path(self) -> Path:
        import lib_replicheck

        return Path(lib_replicheck.__file__).resolve().parent / (self.shipped or "")


@dataclass(frozen=True)
class RecipeList:
    format: str
    files: tuple[ListFile, ...] = ()
    user: bool = False  # the user gives the file (`--list PATH`)
    delimiter: str = ","
    columns: dict[str, str] = field(default_factory=dict)  # role (url, caption, ...) -> column name
    optional: tuple[str, ...] = ()  # roles whose column may be absent from the file

    @property
    def unpinned(self) -> bool:
        """Some file of the list has no published sha256."""
        return any(f.sha256 is None and f.shipped is None for f in self.files)


@dataclass(frozen=True)
class RegistryRecipe(Listed):
    list: RecipeList
    build: dict[str, Any]
    count: int  # expected images (of the full list; fewer when URLs are dead)
    image_bytes: int  # expected size of the fetched images (work folder), 0: unknown
    pack_bytes: int  # expected size of the pack, 0: unknown
    sample: bool = False  # `--sample N` is offered (a large list)
    row_bytes: int = 0  # the pack's bytes on disk per row, where the count is the user's (0: unknown)
    exclude: ListFile | None = None
    embed_rate: dict[str, Any] = field(default_factory=dict)  # images/s measured, by device, and by what
    registry: str = ""
    kind: str = "recipe"

    @property
    def size(self) -> int:
        return self.pack_bytes

    def missing_packages(self) -> list[str]:
        """The pip requirements this recipe's build needs and this Python lacks (none for a CSV list)."""
        return [] if self.list.format == "csv" else missing_builder_packages()

    def check_packages(self) -> None:
        """MissingPackages, before anything starts, when the build cannot run here."""
        missing = self.missing_packages()
        if missing:
            raise MissingPackages(self.name, missing)

    def estimate(self, device: str, count: int | None = None) -> float | None:
        """Seconds to embed `count` images (default: the expected count) on `device` at the measured
        rate; None when no rate was measured for it."""
        rate = self.embed_rate.get(device)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
            return None
        return (self.count if count is None else count) / rate

    def to_dict(self) -> dict:
        return {"kind": "recipe", "name": self.name, "title": self.title, "description": self.description,
                "version": self.version, "source": dict(self.source), "embedder": dict(self.embedder),
                "count": self.count, "size": self.pack_bytes, "image_bytes": self.image_bytes,
                "row_bytes": self.row_bytes,
                "sample": self.sample, "list": {"format": self.list.format, "user": self.list.user,
                                                "unpinned": self.list.unpinned,
                                                "files": len(self.list.files)},
                "estimate_s": {d: self.estimate(d) for d in ("cpu", "gpu")},
                "embed_rate": dict(self.embed_rate), "registry": self.registry}


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _list_file(f: Any, where: str, base: str, fail, *, allow_file_urls: bool, base_dir: str | None) -> ListFile:
    if not isinstance(f, dict):
        fail(where, "not an object")
    sha = f.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not SHA256_RE.match(sha.lower())):
        fail(f"{where}.sha256", "not a sha256 hex digest")
    sha = sha.lower() if sha else None
    if "shipped" in f:
        try:
            check_relative_path(f["shipped"], f"{where}.shipped")
        except ValueError as e:
            fail(f"{where}.shipped", str(e))
        if sha is None:
            fail(f"{where}.sha256", "a shipped file needs its sha256")
        return ListFile(sha256=sha, shipped=f["shipped"])
    resolved = checked_urls(f.get("urls"), base, f"{where}.urls", fail, allow_file_urls=allow_file_urls,
                            base_dir=base_dir)
    size = f.get("size")
    if size is not None and not _int(size, 0, MAX_LIST_BYTES):
        fail(f"{where}.size", f"not an integer from 0 to {MAX_LIST_BYTES}")
    return ListFile(urls=resolved, size=size, sha256=sha)


def checked_urls(urls: Any, base: str, where: str, fail, *, allow_file_urls: bool,
                 base_dir: str | None) -> tuple[str, ...]:
    """An entry's `urls` field: a non-empty list of strings, each resolved against `base` and checked."""
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        fail(where, "missing, empty, or not a list of strings")
    resolved = tuple(urljoin(base, u) for u in urls)
    for u in resolved:
        _check_url(u, where, fail, allow_file_urls=allow_file_urls, base_dir=base_dir)
    return resolved


def _check_url(u: str, where: str, fail, *, allow_file_urls: bool, base_dir: str | None) -> None:
    from urllib.request import url2pathname

    parts = urlsplit(u)
    if parts.scheme in ("http", "https") and parts.netloc:
        return
    if allow_file_urls and parts.scheme == "file" and base_dir is not None:
        import os.path

        path = os.path.normpath(url2pathname(parts.path))
        if path == base_dir or path.startswith(base_dir.rstrip(os.sep) + os.sep):
            return
        fail(where, f"{u!r} leaves the registry's folder")
    fail(where, f"{u!r} is not an http(s) URL")


def pattern_urls(pattern: Any, parts: int, where: str, fail) -> list[str]:
    """The `parts` URLs of a url_pattern: its one field `{i}` (or `{i:0Nd}`, N from 1 to 9) replaced
    by 0 .. parts - 1. Anything else (another field, a brace, a format spec) is refused by
    `fail(where, what)` before a URL is built."""
    if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN:
        fail(where, f"not a URL of at most {MAX_PATTERN} characters")
    fields = list(PATTERN_FIELD.finditer(pattern))
    if len(fields) != 1 or pattern.count("{") != 1 or pattern.count("}") != 1:
        fail(where, "should hold one field, {i} or {i:02d} .. {i:09d} for zero-padded numbers, and no other "
                    "braces")
    head, tail, pad = pattern[:fields[0].start()], pattern[fields[0].end():], int(fields[0].group(1) or 0)
    return [f"{head}{str(i).zfill(pad)}{tail}" for i in range(parts)]


def parse_recipe(p: dict, where: str, url: str, fail, text, *, allow_file_urls: bool = False,
                 base_dir: str | None = None) -> RegistryRecipe:
    """One registry entry of kind 'recipe'; `fail(where, what)` raises the registry's error."""
    name = p.get("name")
    emb = p.get("embedder")
    if not isinstance(emb, dict) or not isinstance(emb.get("id"), str):
        fail(f"{where}.embedder", "missing, or without an 'id'")
    lst = p.get("list")
    if not isinstance(lst, dict):
        fail(f"{where}.list", "missing or not an object")
    fmt = lst.get("format")
    if fmt not in LIST_FORMATS:
        fail(f"{where}.list.format", f"{fmt!r}: one of {', '.join(LIST_FORMATS)}")
    delimiter = lst.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        fail(f"{where}.list.delimiter", "not one character")
    cols = lst.get("columns", {"url": "url"} if fmt == "embeddings" else None)  # their files name their columns
    if not isinstance(cols, dict) or not isinstance(cols.get("url"), str) or not cols["url"]:
        fail(f"{where}.list.columns", "missing, or without a 'url' column")
    columns = {}
    for role, col in cols.items():
        if role not in COLUMNS:
            fail(f"{where}.list.columns.{text(role, 40)}", f"unknown role (roles: {', '.join(COLUMNS)})")
        if col is None:
            continue
        if not isinstance(col, str) or not col or len(col) > 200:
            fail(f"{where}.list.columns.{role}", "not a column name")
        columns[role] = col
    optional = lst.get("optional", [])
    if not isinstance(optional, list) or not all(r in columns and r != "url" for r in optional):
        fail(f"{where}.list.optional", "not a list of the column roles that may be absent (never 'url')")
    kinds = [k for k in ("files", "url_pattern", "user") if lst.get(k)]
    if len(kinds) != 1:
        fail(f"{where}.list", "give exactly one of 'files', 'url_pattern' (with 'parts') or 'user': true")
    files: list[ListFile] = []
    if kinds[0] == "files":
        if not isinstance(lst["files"], list) or len(lst["files"]) > MAX_PARTS:
            fail(f"{where}.list.files", f"not a list of at most {MAX_PARTS} files")
        files = [_list_file(f, f"{where}.list.files[{j}]", url, fail, allow_file_urls=allow_file_urls,
                            base_dir=base_dir) for j, f in enumerate(lst["files"])]
    elif kinds[0] == "url_pattern":
        parts = lst.get("parts")
        if not _int(parts, 1, MAX_PARTS):
            fail(f"{where}.list.parts", f"not an integer from 1 to {MAX_PARTS}")
        for u in pattern_urls(lst["url_pattern"], parts, f"{where}.list.url_pattern", fail):
            files.append(_list_file({"urls": [u]}, f"{where}.list.url_pattern", url, fail,
                                    allow_file_urls=allow_file_urls, base_dir=base_dir))
    elif lst.get("user") is not True:
        fail(f"{where}.list.user", "not true")
    build = p.get("build", {})
    if not isinstance(build, dict):
        fail(f"{where}.build", "not an object")
    opts = {}
    for k, v in build.items():
        spec = BUILD_OPTIONS.get(k)
        if spec is None:
            fail(f"{where}.build.{text(k, 40)}", f"unknown option (options: {', '.join(BUILD_OPTIONS)})")
        typ, lo, hi = spec
        if typ is bool and not isinstance(v, bool) or typ is int and not _int(v, lo, hi):
            fail(f"{where}.build.{k}", f"not {'true or false' if typ is bool else f'an integer from {lo} to {hi}'}")
        opts[k] = v
    expected = p.get("expected", {})
    if not isinstance(expected, dict):
        fail(f"{where}.expected", "not an object")
    for k in ("count", "image_bytes", "pack_bytes", "row_bytes"):
        if k in expected and not _int(expected[k], 0, MAX_COUNT if k == "count" else 1 << 50):
            fail(f"{where}.expected.{k}", "not a non-negative integer")
    exclude = None
    if p.get("exclude") is not None:
        exclude = _list_file(p["exclude"], f"{where}.exclude", url, fail, allow_file_urls=allow_file_urls,
                             base_dir=base_dir)
        if exclude.sha256 is None:
            fail(f"{where}.exclude.sha256", "an exclusion list needs its sha256")
        if exclude.size is not None and exclude.size > MAX_EXCLUDE_BYTES:
            fail(f"{where}.exclude.size", f"{exclude.size:,} bytes: an exclusion list may have at most "
                                          f"{MAX_EXCLUDE_BYTES // 1024**2} MB")
    rate = p.get("embed_rate", {})
    if not isinstance(rate, dict):
        fail(f"{where}.embed_rate", "not an object")
    embed_rate = {}
    for k, v in list(rate.items())[:MAX_FIELDS]:
        if k in ("cpu", "gpu"):
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1e7):
                fail(f"{where}.embed_rate.{k}", "not a positive number of images per second")
            embed_rate[k] = v
        else:
            embed_rate[text(k, 40)] = text(v, MAX_SHORT)
    sample = p.get("sample", False)
    if not isinstance(sample, bool):
        fail(f"{where}.sample", "not true or false")
    return RegistryRecipe(
        **listed_fields(p, name, emb, text),
        list=RecipeList(fmt, tuple(files), kinds[0] == "user", delimiter, columns, tuple(optional)), build=opts,
        count=expected.get("count", 0), image_bytes=expected.get("image_bytes", 0),
        pack_bytes=expected.get("pack_bytes", 0), row_bytes=expected.get("row_bytes", 0), sample=sample,
        exclude=exclude, embed_rate=embed_rate,
        registry=url)


def duration(seconds: float) -> str:
    """'40 s', '12 min', '3.5 h', '6 days': the rough size of an estimate."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


__all__ = ["RegistryRecipe", "RecipeList", "ListFile", "parse_recipe", "duration", "NAME_RE", "MissingPackages",
           "BUILDER_PACKAGES", "missing_builder_packages"]
