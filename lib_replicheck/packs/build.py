"""Build a pack from images: embed, index, store metadata, write the manifest, verify, then publish.

The pack is written into a hidden temporary folder beside the target and renamed into place only
after it has been re-opened and its sha256s checked, so a crash or a bad input never leaves a
half-written pack where a check would load it, and an existing pack is replaced only by a good one.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lib_replicheck import __version__
from lib_replicheck.errors import ImageError, PackError, ReplicheckError
from lib_replicheck.packs import index as faiss_index
from lib_replicheck.packs import manifest as mf
from lib_replicheck.packs.metadata import Item, MetadataWriter

#: PDQ is not robust to cropping, so PDQ packs also store hashes of these centre crops of each
#: image (fractions of width and height); a cosine pack stores the whole image only.
PDQ_CROPS = (1.0, 0.95, 0.9, 0.85, 0.8)
THUMB_SIZE = 256


@dataclass
class Record:
    """One training image to put into a pack: how to load it and what is known about it."""

    load: Callable[[], "object"]  # returns an RGB PIL image or raises ImageError
    label: str  # names the image in messages
    url: str | None = None
    caption: str | None = None
    source: str | None = None
    license: str | None = None


@dataclass
class BuildResult:
    path: Path
    count: int
    vectors: int
    skipped: list[str] = field(default_factory=list)  # "file: reason"


def centre_crop(im, fraction: float):
    if fraction >= 1.0:
        return im
    w, h = im.size
    dx, dy = int(w * (1 - fraction) / 2), int(h * (1 - fraction) / 2)
    return im.crop((dx, dy, w - dx, h - dy))


def folder_records(folder: str | Path, license: str | None = None) -> Iterator[Record]:
    """Images under `folder`; a sidecar `name.txt` beside `name.jpg` is its caption."""
    from lib_replicheck.images import iter_image_files, load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise ReplicheckError(f"{folder}: not a folder of images")
    for f in iter_image_files([folder]):
        caption = None
        txt = f.with_suffix(".txt")
        if txt.is_file():
            try:
                caption = txt.read_text(encoding="utf-8", errors="replace").strip()[:2000]
            except OSError:
                caption = None
        rel = f.relative_to(folder).as_posix()
        yield Record(load=lambda f=f: load_image(f), label=str(f), url=None, caption=caption,
                     source=rel, license=license)


def pack_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:64]
    return name or "pack"


def build_pack(records: Iterable[Record], embedder, out: str | Path, *, name: str | None = None,
               title: str | None = None, description: str = "", source: dict | None = None,
               crops: tuple[float, ...] | None = None, thumbnails: bool = True, overwrite: bool = False,
               batch: int = 64, log: Callable[[str], None] | None = None) -> BuildResult:
    """Embed `records` with `embedder` into a new pack folder at `out`."""

    log = log or (lambda s: print(s, file=sys.stderr))
    out = Path(out)
    name = check_target(out, name, overwrite)
    if crops is None:
        crops = PDQ_CROPS if embedder.metric == "hamming" else (1.0,)
    tmp = staging_dir(out)
    try:
        result = _write(records, embedder, tmp, crops, thumbnails, batch, log)
        seal(tmp, out, name=name, title=title, description=description, source=source, spec=embedder.spec,
             count=result["count"], vectors=result["vectors"],
             index={"file": mf.INDEX_FILE, "type": result["index_type"], "exact": True,
                    "variants": [{"centre_crop": c} for c in crops]},
             extra_files=result["thumbs"])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, result["count"], result["vectors"], result["skipped"])


def check_target(out: Path, name: str | None, overwrite: bool) -> str:
    """The pack's name (from `out` unless given); refuses an existing pack without `overwrite`. A pack
    that an interrupted replacement left aside is restored first (`recover`)."""
    recover(out)
    if out.exists() and not overwrite:
        raise PackError(out, "already exists; pass --force (overwrite) to replace it")
    name = name or pack_name(out.name)
    if not mf.NAME_RE.match(name):
        raise PackError(out, f"pack name {name!r}: use lowercase letters, digits, '.', '_', '-'")
    return name


def staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside `out` to write a pack into."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def seal(tmp: Path, out: Path, *, name: str, title: str | None, description: str, source: dict | None, spec,
         count: int, vectors: int, index: dict, extra_files: list[str] = ()) -> None:
    """Write the manifest of the pack in `tmp` (index and metadata already there), re-open it, check
    every sha256, and only then move it to `out`."""
    from lib_replicheck.embedders.weights import sha256_file
    from lib_replicheck.packs.pack import Pack

    files = [mf.INDEX_FILE, mf.METADATA_FILE] + ([index["rerank"]["file"]] if index.get("rerank") else []) \
        + list(extra_files)
    manifest = mf.Manifest(
        name=name, title=title or name, description=description, source=dict(source or {}), embedder=spec,
        count=count, vectors=vectors, index=index,
        files=[mf.FileEntry(p, (tmp / p).stat().st_size, sha256_file(tmp / p)) for p in files],
        built_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), tool_version=__version__)
    mf.write(tmp, manifest)
    check = Pack(tmp, expect_embedder=spec.id)
    check.verify()
    check.close()
    publish(tmp, out)


def _write(records, embedder, folder: Path, crops, thumbnails: bool, batch: int, log) -> dict:
    import numpy as np

    from lib_replicheck.embedders.pdq import MIN_QUALITY

    spec = embedder.spec
    index = faiss_index.new_index(spec.metric, spec.dim, with_ids=len(crops) > 1)
    meta = MetadataWriter(folder / mf.METADATA_FILE)
    thumbs: list[str] = []
    skipped: list[str] = []
    count = vectors = 0
    pending: list[tuple[Record, object]] = []

    def flush():
        nonlocal count, vectors
        if not pending:
            return
        images = [centre_crop(im, c) for _, im in pending for c in crops]
        vecs = embedder.embed(images)
        quality = getattr(embedder, "last_quality", None)
        keep, items, ids = [], [], []
        for j, (rec, im) in enumerate(pending):
            rows = list(range(j * len(crops), (j + 1) * len(crops)))
            if quality and quality[rows[0]] < MIN_QUALITY:
                skipped.append(f"{rec.label}: PDQ quality {quality[rows[0]]} is too low to match reliably")
                continue
            thumb = None
            if thumbnails:
                thumb = f"thumbnails/{count}.jpg"
                _save_thumbnail(im, folder / thumb)
                thumbs.append(thumb)
            items.append(Item(count, rec.url, rec.caption, im.size[0], im.size[1], rec.source, rec.license, thumb))
            keep.extend(rows)
            ids.extend([count] * len(crops))
            count += 1
        if keep:
            faiss_index.add(index, np.ascontiguousarray(vecs[keep]), ids if len(crops) > 1 else None)
            meta.add(items)
            vectors += len(keep)
        pending.clear()

    for rec in records:
        try:
            im = rec.load()
        except ImageError as e:
            skipped.append(f"{e.path}: {e.reason}")
            log(f"skipped {e}")
            continue
        pending.append((rec, im))
        if len(pending) >= batch:
            flush()
    flush()
    meta.close()
    if count == 0:
        raise PackError(folder, "no usable images: nothing to build a pack from"
                        + (f" ({len(skipped)} skipped)" if skipped else ""))
    faiss_index.write(index, folder / mf.INDEX_FILE)
    return {"count": count, "vectors": vectors, "skipped": skipped, "thumbs": thumbs,
            "index_type": faiss_index.describe(index)}


def _save_thumbnail(im, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    t = im.copy()
    t.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    t.save(path, "JPEG", quality=85)


def publish(tmp: Path, out: Path) -> None:
    """Move the verified pack in `tmp` to `out`, replacing any pack there. Where the kernel can swap
    two folders in one step (Linux renameat2 RENAME_EXCHANGE), `out` is at every moment the old pack
    or the new one. Elsewhere the old pack is renamed aside to `.NAME.old-PID` and the new one in:
    a crash between those two renames leaves no `out`, and `recover` (run here and by
    `check_target`, before the next build or install of that pack) renames the old pack back."""
    recover(out)
    if not out.exists():
        os.replace(tmp, out)
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # `tmp` now holds the old pack
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


_publish = publish  # the name packs/install.py imports


def recover(out: Path) -> bool:
    """Repair what a publish killed between its two renames left: when `out` is missing and an old
    pack was renamed aside by a process that is gone, rename it back. Asides left beside a present
    `out` were superseded and are removed. True when a pack was restored."""
    import glob

    out = Path(out)
    asides = []
    for p in out.parent.glob(glob.escape(f".{out.name}.old-") + "*"):
        pid = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and pid.isdigit() and not _alive(int(pid)):
            asides.append(p)
    if not asides:
        return False
    asides.sort(key=lambda p: p.stat().st_mtime_ns)
    restored = False
    if not out.exists() and not out.is_symlink():
        os.replace(asides.pop(), out)
        print(f"replicheck: {out}: restored the pack that an interrupted replacement had moved aside",
              file=sys.stderr)
        restored = True
    for p in asides:
        shutil.rmtree(p, ignore_errors=True)
    return restored


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (it may be publishing right now); our own pid is not."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step with renameat2(RENAME_EXCHANGE); False where the C library,
    kernel or file system cannot (then nothing was changed)."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
