"""The work folder's identity: which source, embedder and options its shards were made with.

A build resumes from the shards in its work folder, so those shards must be the ones this build
would make. `WORK/fingerprint.json` records the source (its path, and size and mtime for a file),
the embedder's spec (model and weights sha256s) and the options that change what a shard holds;
each shard also records a digest of the rows it was embedded from (`row_digest`), so an image
replaced in the source between a killed build and its resumption is embedded again.

A work folder left by another build is handled by who chose it:
- the default one (hidden, beside the pack) belongs to the builder: its shards and downloads are
  discarded, with a log line, and the build starts over;
- one the user named with `--work` may hold days of embedding: the build is refused with a message
  naming the folder and what differs, and nothing in it is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from lib_replicheck.atomic import write_atomic
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.builder.shards import ShardStore
from lib_replicheck.builder.sources import check_exclusion_list

FINGERPRINT_FILE = "fingerprint.json"
#: what a work folder may hold besides the fingerprint: embedded shards and parquet downloads (the
#: images, their rows, and the shards fetch.py gave a second chance)
_PRODUCTS = ("shards", "images", "rows.parquet", "retried.json")


@dataclass(frozen=True)
class Fingerprint:
    """What the shards of a work folder depend on; equal fingerprints make shards reusable."""

    source: dict
    embedder: dict
    options: dict

    def to_dict(self) -> dict:
        return {"format": 1, **asdict(self)}

    def differences(self, recorded: dict | None) -> str:
        """Why `recorded` (a fingerprint.json's content) does not match, in words; '' if it does."""
        if not isinstance(recorded, dict) or recorded.get("format") != 1:
            return "it records no fingerprint"
        parts = [f"its {key} differs" for key in ("source", "embedder") if recorded.get(key) != getattr(self, key)]
        old = recorded.get("options") if isinstance(recorded.get("options"), dict) else {}
        names = sorted(k for k in set(old) | set(self.options) if old.get(k) != self.options.get(k))
        if names:
            parts.append(f"its options differ: {', '.join(names)}")
        return "; ".join(parts)


def _file_identity(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(source: str | Path, kind: str, spec, options: dict) -> Fingerprint:
    """The fingerprint of a build of `source` (of `kind`) with the embedder `spec` and `options`
    (only those that change what a shard holds: shard size, crops, thumbnails, license, exclusions)."""
    path = Path(source).resolve()
    src = {"kind": kind, "path": str(path)}
    if path.is_file():
        src.update(_file_identity(path))
    plain = json.loads(json.dumps([src, spec.to_dict(), options]))  # as it reads back from the file
    return Fingerprint(*plain)


def exclusions_digest(path: str | None) -> str | None:
    """sha256 of an exclusion list's bytes: another list drops other rows."""
    if not path:
        return None
    check_exclusion_list(path)
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        raise ReplicheckError(f"exclusion list {path}: {e}") from None


def row_digest(items: Iterable) -> str:
    """A digest of source rows (SourceItems): keys, metadata, and the bytes' sha256 or the file's size
    and mtime; a shard whose digest differs was embedded from other images."""
    h = hashlib.sha256()
    for it in items:
        if it.path is not None:
            try:
                st = os.stat(it.path)
                content = [it.path, st.st_size, st.st_mtime_ns]
            except OSError:
                content = [it.path, None, None]
        else:
            content = [hashlib.sha256(it.data or b"").hexdigest()]
        row = [it.key, it.url, it.caption, it.license, it.hash, *content]
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def _has_products(work: Path) -> bool:
    shards = work / "shards"
    return (shards.is_dir() and any(shards.iterdir())) or any((work / p).exists() for p in _PRODUCTS[1:])


def open_work(work: Path, fp: Fingerprint, *, chosen_by_user: bool, log: Callable[[str], None]) -> ShardStore:
    """The shard store of `work` for a build with fingerprint `fp`: a work folder made for another
    build is refused (`chosen_by_user`) or emptied, then the fingerprint is recorded."""
    marker = work / FINGERPRINT_FILE
    if _has_products(work):
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        why = fp.differences(recorded)
        if why:
            if chosen_by_user:
                raise ReplicheckError(
                    f"work folder {work} holds shards of another build ({why}); remove it to start over, "
                    f"or choose another --work")
            log(f"work folder {work}: its shards were embedded for another build ({why}): discarding them")
            for name in _PRODUCTS:
                p = work / name
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
    write_atomic(marker, json.dumps(fp.to_dict(), indent=1, sort_keys=True))
    return ShardStore(work)
