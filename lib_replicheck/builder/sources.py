"""The builder's readers: a folder of images, or webdataset tar shards as img2dataset (and
fetch_http.py) write them. A LAION-style parquet or a recipe's list is first fetched into such
shards (builder/fetch.py), then read here.

Every reader yields SourceItems: plain data (bytes or a path, and the metadata), so they can travel
to Ray workers. Decoding happens in the embed stage. An exclusion list (URLs, or hashes from the
parquet's `hash` column, or sha256 of the image bytes) drops rows before they are fetched or
indexed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.registry.parse_recipe import MAX_EXCLUDE_BYTES, MAX_EXCLUDE_ENTRIES

log = logging.getLogger("replicheck")

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


@dataclass
class SourceItem:
    key: str  # stable identity of the row (shard/key, relative path)
    data: bytes | None = None  # the encoded image, or
    path: str | None = None  # a file to read
    url: str | None = None
    caption: str | None = None
    license: str | None = None
    hash: str | None = None  # the parquet's hash column, when there is one
    #: an image already in memory: a callable returning an RGB PIL image or raising ImageError
    #: (packs built by a program from images it holds; such items cannot travel to Ray workers)
    load: Callable[[], object] | None = None

    def open(self):
        """The decoded RGB image as displayed (EXIF orientation applied), through the one decoder
        every image goes through; ImageError naming the row when it cannot be read."""
        from lib_replicheck.images import decode

        if self.load is not None:
            return self.load()
        if self.path is not None:
            return decode(self.path)
        return decode(self.data or b"", name=self.key)


def check_exclusion_list(path: str | Path) -> int:
    """The size of an exclusion list file; ReplicheckError naming it when it cannot be read or is
    larger than MAX_EXCLUDE_BYTES (checked before a byte of it is read)."""
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        raise ReplicheckError(f"exclusion list {path}: {e.strerror or e}") from None
    if size > MAX_EXCLUDE_BYTES:
        raise ReplicheckError(f"exclusion list {path}: {size:,} bytes, more than the {MAX_EXCLUDE_BYTES // 1024**2} "
                              "MB an exclusion list may have")
    return size


class Exclusions:
    """URLs and hashes to drop (Re-LAION's removals, opt-outs): one per line, '#' comments; at most
    MAX_EXCLUDE_BYTES and MAX_EXCLUDE_ENTRIES, refused naming the file before they are exceeded."""

    def __init__(self, path: str | Path | None = None):
        self.values: set[str] = set()
        if path:
            check_exclusion_list(path)
            self.values = _exclusion_values(path)

    def __bool__(self) -> bool:
        return bool(self.values)

    def excludes(self, item: SourceItem) -> bool:
        if not self.values:
            return False
        if item.url in self.values or (item.hash and item.hash in self.values):
            return True
        if item.data is not None:
            return hashlib.sha256(item.data).hexdigest() in self.values
        return False


def _exclusion_values(path: str | Path) -> set[str]:
    """The entries of an exclusion list, read a line at a time and never past the bounds (the file
    may have grown since its size was checked)."""
    values: set[str] = set()
    read = 0
    try:
        with open(path, "rb") as f:
            while line := f.readline(MAX_EXCLUDE_BYTES + 1 - read):
                read += len(line)
                if read > MAX_EXCLUDE_BYTES:
                    raise ReplicheckError(f"exclusion list {path}: more than the {MAX_EXCLUDE_BYTES // 1024**2} MB "
                                          "an exclusion list may have")
                entry = line.decode("utf-8").strip()
                if entry and not entry.startswith("#"):
                    values.add(entry)
                    if len(values) > MAX_EXCLUDE_ENTRIES:
                        raise ReplicheckError(f"exclusion list {path}: more than {MAX_EXCLUDE_ENTRIES:,} entries")
    except OSError as e:
        raise ReplicheckError(f"exclusion list {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ReplicheckError(f"exclusion list {path}: not UTF-8 text (byte {read - len(line) + e.start})") from None
    return values


def folder(path: str | Path, license: str | None = None) -> Iterator[SourceItem]:
    """Images under `path`, keyed by their relative path; a sidecar `name.txt` beside `name.jpg` is
    its caption."""
    from lib_replicheck.images import iter_image_files

    root = Path(path)
    if not root.is_dir():
        raise ReplicheckError(f"{path}: not a folder of images")
    for f in iter_image_files([root]):
        txt = f.with_suffix(".txt")
        caption = None
        if txt.is_file():
            try:
                caption = txt.read_text(encoding="utf-8", errors="replace").strip()[:2000]
            except OSError:
                caption = None  # an unreadable sidecar costs the caption, not the image
        yield SourceItem(key=f.relative_to(root).as_posix(), path=str(f), caption=caption, license=license)


def webdataset(paths: list[Path], license: str | None = None) -> Iterator[SourceItem]:
    """Samples of img2dataset's webdataset shards: KEY.jpg + KEY.txt + KEY.json (url, caption, ...)."""
    for shard in paths:
        try:
            tf = tarfile.open(shard, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise ReplicheckError(f"{shard}: not a readable tar shard ({e})") from None
        bad_sidecars: list[str] = []
        with tf:
            sample_key, sample = None, {}
            try:
                for member in tf:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.rpartition(".")
                    if key != sample_key:
                        if sample:
                            item = _sample_item(shard, sample_key, sample, license, bad_sidecars)
                            if item is not None:
                                yield item
                        sample_key, sample = key, {}
                    sample[ext.lower()] = tf.extractfile(member).read()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise ReplicheckError(f"{shard}: truncated or corrupt tar shard ({e})") from None
            if sample:
                item = _sample_item(shard, sample_key, sample, license, bad_sidecars)
                if item is not None:
                    yield item
        if len(bad_sidecars) > SIDECAR_WARNINGS:
            log.warning("%s: %d samples in all have an unreadable .json sidecar and keep no url, license or hash",
                        shard, len(bad_sidecars))


#: The column of a recipe's rows that holds the list's own key of a row (kept as the image's source).
SOURCE_KEY = "source_key"
#: Unreadable sidecar JSON files named one by one in the log, per shard; the rest are counted.
SIDECAR_WARNINGS = 5


def _sample_item(shard: Path, key: str, sample: dict, license: str | None,
                 bad_sidecars: list[str] | None = None) -> SourceItem | None:
    image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    if image is None:
        return None  # e.g. a stray .json of a failed download
    meta = {}
    if "json" in sample:
        meta, problem = _sidecar(sample["json"])
        if problem:
            name = f"{shard}: {os.path.basename(key)}.json"
            if bad_sidecars is not None:
                bad_sidecars.append(name)
                if len(bad_sidecars) <= SIDECAR_WARNINGS:
                    log.warning("%s: %s; the image is kept without its url, license and hash", name, problem)
    caption = sample["txt"].decode("utf-8", "replace").strip() if "txt" in sample else meta.get("caption")
    url, meta_license = meta.get("url"), meta.get("license")
    if meta_license is None and isinstance(meta.get("LICENSE"), str):
        meta_license = meta["LICENSE"]
    own_key = meta.get(SOURCE_KEY)  # the list's own key of the row (a recipe's `key` column)
    return SourceItem(key=str(own_key)[:200] if isinstance(own_key, (str, int)) and str(own_key)
                      else f"{shard.name}/{os.path.basename(key)}", data=image,
                      url=url if isinstance(url, str) else None,
                      caption=(caption or None) and str(caption)[:2000],
                      license=(meta_license if isinstance(meta_license, str) else None) or license,
                      hash=str(meta["hash"]) if isinstance(meta.get("hash"), (str, int)) else None)


def _sidecar(data: bytes) -> tuple[dict, str | None]:
    """The sample's metadata, or ({}, what is wrong with it)."""
    try:
        meta = json.loads(data)
    except UnicodeDecodeError:
        return {}, "not UTF-8 text"
    except json.JSONDecodeError as e:
        return {}, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except RecursionError:
        return {}, "JSON nested too deeply"
    if not isinstance(meta, dict):
        return {}, f"a JSON {type(meta).__name__}, not an object"
    return meta, None


def webdataset_shards(path: str | Path) -> list[Path]:
    p = Path(path)
    shards = sorted(p.glob("*.tar")) if p.is_dir() else [p]
    if not shards:
        raise ReplicheckError(f"{path}: no .tar shards")
    return shards


def detect(source: str | Path) -> str:
    """'parquet', 'webdataset' or 'folder', from what `source` is."""
    p = Path(source)
    if p.is_file() and p.suffix == ".parquet":
        return "parquet"
    if (p.is_file() and p.suffix == ".tar") or (p.is_dir() and any(p.glob("*.tar"))):
        return "webdataset"
    if p.is_dir():
        return "folder"
    raise ReplicheckError(f"{source}: not a folder of images, a .tar shard (or folder of them), nor a .parquet file")


__all__ = ["SourceItem", "Exclusions", "folder", "webdataset", "webdataset_shards", "detect"]
