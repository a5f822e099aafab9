"""Who is working on a pack, and what killed work on one left behind.

`pack_lock` keeps two downloads, installs, builds or removes of one pack from running at once (a
lock file, released when the process dies). `clean_stale` removes the hidden folders that killed
installs, builds and removes left in a packs folder; every Installer runs it when it is made.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from lib_replicheck.errors import InstallError
from lib_replicheck.packs.publish import recover

#: A `.NAME.download` folder nobody touched for this long is no longer worth resuming.
STALE_DOWNLOAD_SECONDS = 7 * 24 * 3600


def leftovers(packs_dir: Path, name: str) -> list[Path]:
    """What an unfinished download (`.NAME.download`) or recipe build (`.NAME.recipe`, see
    builder/build_recipe.py) of `name` left in `packs_dir` to resume from."""
    return [p for p in (packs_dir / f".{name}.download", packs_dir / f".{name}.recipe")
            if p.is_dir() and not p.is_symlink()]


@contextmanager
def pack_lock(packs_dir: Path, name: str):
    """An exclusive, non-blocking lock on `name` (released when the process dies).

    The lock file is removed on release, so the packs folder keeps no trace of it. Because another
    process may have opened the file just before it was removed, a lock taken on a file that is no
    longer the one at its path is dropped and taken again on the new one.
    """
    packs_dir.mkdir(parents=True, exist_ok=True)
    path = packs_dir / f".{name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            raise InstallError(f"pack {name!r} is already being downloaded, built, installed, verified or removed: "
                               "try again when that ends") from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)  # while still locked: nobody can hold a lock on it after this
        except OSError:
            pass  # Windows keeps open files; the next lock reuses it
        os.close(fd)  # closing the descriptor releases the lock


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- leftovers of killed installs ------------------------------------------------------------------

_WORK_RE = re.compile(r"^\.install-(\d+)-\d+$")
_PID_RE = re.compile(r"^\.(?P<name>[a-z0-9][a-z0-9._-]{0,63})\.(?P<kind>removing|old|partial)-(?P<pid>\d+)$")
_DOWNLOAD_RE = re.compile(r"^\.(?P<name>[a-z0-9][a-z0-9._-]{0,63})\.(download|recipe)$")


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (this process counts as running: its folders are in use)."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)  # signal 0: a probe on POSIX (on Windows os.kill would terminate it)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def _alive_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for p in folder.rglob("*"):
        try:
            newest = max(newest, p.lstat().st_mtime)
        except OSError:
            pass
    return newest


def clean_stale(packs_dir: str | Path, *, now: float | None = None) -> list[str]:
    """Remove what killed installs left in `packs_dir`; return the names removed.

    - `.install-PID-TID` work folders of processes that are gone;
    - `.NAME.removing-PID` folders of a remove that was killed, and `.NAME.partial-PID` folders of a
      build killed while it wrote the pack (packs.publish.staging_dir);
    - `.NAME.old-PID` folders of a replaced pack (build.recover: put back when the new pack never
      arrived, else removed);
    - `.NAME.download` and `.NAME.recipe` folders that nobody is downloading into or building in
      (their lock is free) and nobody touched for STALE_DOWNLOAD_SECONDS (younger ones are kept: the
      next download or build resumes them).
    """
    packs_dir = Path(packs_dir)
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = sorted(packs_dir.iterdir())
    except OSError:
        return removed
    for p in entries:
        name = p.name
        if not name.startswith(".") or p.is_symlink() or not p.is_dir():
            continue
        try:
            if (m := _WORK_RE.match(name)) and not _alive(int(m.group(1))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(name)
            elif (m := _PID_RE.match(name)) and not _alive(int(m.group("pid"))):
                if m.group("kind") == "old":  # a publish killed between its renames: build.recover
                    recover(packs_dir / m.group("name"))  # puts the old pack back or removes it
                    if not p.exists():
                        removed.append(name)
                    continue
                shutil.rmtree(p, ignore_errors=True)
                removed.append(name)
            elif m := _DOWNLOAD_RE.match(name):
                if now - _newest_mtime(p) < STALE_DOWNLOAD_SECONDS:
                    continue
                with pack_lock(packs_dir, m.group("name")):
                    shutil.rmtree(p, ignore_errors=True)
                removed.append(name)
        except (OSError, InstallError):
            continue  # busy, or not ours to remove: left for the next time
    return removed
