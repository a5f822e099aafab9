"""Put a finished pack in place: the target checked, a hidden staging folder beside it, the manifest
written and every sha256 re-checked (`seal`), then the move into place (`publish`).

A crash or a bad input never leaves a half-written pack where a check would load it, and an existing
pack is replaced only by a good one. The builder and the installer both end here.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import sys
from pathlib import Path

from lib_replicheck import __version__
from lib_replicheck.errors import PackError
from lib_replicheck.packs import manifest as mf


def pack_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:64]
    return name or "pack"


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
         count: int, vectors: int, index: dict, extra_files: list[str] = (), background=None, log=None) -> None:
    """Write the manifest of the pack in `tmp` (index and metadata already there), re-open it, check
    every sha256, and only then move it to `out`. `background`: vectors of images outside the pack
    for score normalisation (packs/background.py); those that are copies of a pack image are dropped."""
    from lib_replicheck.embedders.weights import sha256_file
    from lib_replicheck.packs.pack import Pack

    files = [mf.INDEX_FILE, mf.METADATA_FILE] + list(mf.rerank_files(index)) + list(extra_files)
    manifest = mf.Manifest(
        name=name, title=title or name, description=description, source=dict(source or {}), embedder=spec,
        count=count, vectors=vectors, index=index,
        files=[mf.FileEntry(p, (tmp / p).stat().st_size, sha256_file(tmp / p)) for p in files],
        built_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(), tool_version=__version__)
    mf.write(tmp, manifest)
    if background is not None and len(getattr(background, "rows", background)):
        add_background(tmp, manifest, background, log or (lambda s: print(s, file=sys.stderr)))
    check = Pack(tmp, expect_embedder=spec.id)
    check.verify()
    check.close()
    swap_in(tmp, out)


def add_background(tmp: Path, manifest: mf.Manifest, rows, log) -> None:
    """Write the background set into the pack in `tmp` and name it in its manifest. A row whose
    nearest pack image reaches the whole image's likely-copy cut is a copy of it and would lower the
    normalised score of that image's copies: it is dropped."""
    import numpy as np

    from lib_replicheck.embedders.weights import sha256_file
    from lib_replicheck.packs import background as bg
    from lib_replicheck.packs.pack import Pack
    from lib_replicheck.thresholds import DEFAULT_TIERS

    if manifest.metric == "hamming":
        raise PackError(tmp, "a background set is for similarity descriptors such as SSCD, not bit codes")
    source = rows.source if isinstance(rows, bg.Sample) else "images named by --background"
    rows = np.asarray(rows.rows if isinstance(rows, bg.Sample) else rows, dtype=np.float32)[:bg.MAX_ROWS]
    cut = DEFAULT_TIERS["sscd"].likely
    pack = Pack(tmp, expect_embedder=manifest.embedder.id)
    try:
        nearest = [hits[0].similarity if hits else 0.0 for hits in pack.search(rows, 1)]
    finally:
        pack.close()
    keep = bg.not_copies(nearest, cut)
    log(f"background: {int(keep.sum())} images kept, {int((~keep).sum())} dropped as copies of pack images "
        f"(similarity >= {cut})")
    if not keep.any():
        return
    bg.save(tmp / bg.FILE, rows[keep])
    manifest.background = {"file": bg.FILE, "count": int(keep.sum()), "dropped_as_copies": int((~keep).sum()),
                           "source": source}
    manifest.files.append(mf.FileEntry(bg.FILE, (tmp / bg.FILE).stat().st_size, sha256_file(tmp / bg.FILE)))
    mf.write(tmp, manifest)


def swap_in(tmp: Path, out: Path) -> None:
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
