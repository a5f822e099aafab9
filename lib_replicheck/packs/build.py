"""Build a pack from images in memory: embed, index, store metadata, then seal and publish (packs.publish).

The pack is written into a hidden temporary folder beside the target and renamed into place only
after it has been re-opened and its sha256s checked, so a crash or a bad input never leaves a
half-written pack where a check would load it, and an existing pack is replaced only by a good one.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lib_replicheck.errors import ImageError, PackError, ReplicheckError
from lib_replicheck.packs import index as faiss_index
from lib_replicheck.packs import manifest as mf
from lib_replicheck.packs.metadata import Item, MetadataWriter
from lib_replicheck.packs.publish import check_target, seal, staging_dir

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
