"""Installing, verifying and removing packs in a packs folder.

A pack appears under its name only once it is complete and verified. Registry downloads go into a
hidden `.NAME.download` folder that survives interruptions (the next try resumes it), then the pack
is re-opened, every sha256 checked, and it is renamed into place; the previous version of the pack
stays usable until that moment. A lock file stops two downloads of the same pack at once.

Everything written is bounded before it is written: downloads by the size the registry declares
(or `max_bytes` for an archive URL), archives by the sizes their own manifest.json declares (read
from the archive first; members it does not list are refused), and both by the free disk space.
A failure that cannot be resumed removes what it wrote; the hidden folders of killed installs are
removed by `clean_stale`, which every Installer runs when it is made.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import Callable

from lib_replicheck.download import MAX_UNSIZED_BYTES, DownloadError, Policy, fetch, free_bytes
from lib_replicheck.errors import InstallError, PackError
from lib_replicheck.packs.publish import swap_in
from lib_replicheck.packs.manifest import MANIFEST, NAME_RE
from lib_replicheck.registry.archive import DISK_MARGIN, megabytes, safe_extract
from lib_replicheck.registry.pack_lock import clean_stale, leftovers, pack_lock
from lib_replicheck.registry.registry import RegistryPack


def _pack_root(folder: Path) -> Path:
    """The folder holding manifest.json: `folder` itself or its only subfolder."""
    if (folder / MANIFEST).is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subs) == 1 and (subs[0] / MANIFEST).is_file():
        return subs[0]
    raise InstallError(f"{folder.name}: no {MANIFEST} at the top of the archive or folder")


class Installer:
    """Installs into `packs_dir`. `max_bytes` bounds an archive downloaded from a URL (its size is
    declared by nobody); `disk_usage(dir)` gives the free bytes (tests pass their own)."""

    def __init__(self, packs_dir: str | Path, *, policy: Policy | None = None, offline: bool = False,
                 disk_usage: Callable[[Path], int] | None = None, max_bytes: int = MAX_UNSIZED_BYTES):
        self.packs_dir = Path(packs_dir)
        self.policy = policy or Policy()
        self.offline = offline
        self.max_bytes = max_bytes
        self._free = disk_usage or free_bytes
        clean_stale(self.packs_dir)

    # -- download ---------------------------------------------------------------------------------

    def download(self, rp: RegistryPack, *, progress: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None) -> Path:
        """Download, verify and install a pack from a registry; return its folder.

        The staging folder is kept for the next try only after a resumable interruption (a
        connection that broke or stalled, a cancel); any other failure removes it."""
        if self.offline:
            raise InstallError(f"pack {rp.name}: network access is off (--offline)")
        with pack_lock(self.packs_dir, rp.name):
            staging = self.packs_dir / f".{rp.name}.download"
            try:
                return self._download(rp, staging, progress, cancel)
            except DownloadError as e:
                if not e.resumable:
                    shutil.rmtree(staging, ignore_errors=True)
                raise
            except Exception as e:  # Ctrl-C (not an Exception) keeps the staging folder to resume
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(e, OSError):
                    raise InstallError(f"pack {rp.name}: cannot be written to {self.packs_dir}: "
                                       f"{e.strerror or e}") from None
                raise

    def _download(self, rp: RegistryPack, staging: Path, progress, cancel) -> Path:
        staging.mkdir(parents=True, exist_ok=True)
        self._check_space(rp, staging)
        reused = []
        for f in rp.files:
            dest = staging / f.path
            if dest.is_file() and dest.stat().st_size == f.size:
                if progress:
                    progress(f.size)
                reused.append(f)  # finished in an earlier try: its sha256 is checked below
                continue
            fetch(f.urls, dest, size=f.size, sha256=f.sha256, policy=self.policy, progress=progress,
                  cancel=cancel, disk_free=self._free, reserve=DISK_MARGIN)
        self._verify_files(rp, reused, staging)
        for f in rp.files:
            if f.extract:
                archive = staging / f.path
                # a work folder that clean_stale removes if this process is killed while unpacking
                unpacked = self.packs_dir / f".install-{os.getpid()}-{threading.get_ident()}"
                shutil.rmtree(unpacked, ignore_errors=True)
                unpacked.mkdir()
                try:
                    safe_extract(archive, unpacked, disk_free=self._free)
                    for p in unpacked.iterdir():
                        shutil.rmtree(staging / p.name, ignore_errors=True)
                        os.replace(p, staging / p.name)
                finally:
                    shutil.rmtree(unpacked, ignore_errors=True)
                archive.unlink()
        _prune_unlisted(staging)
        return self._install_verified(staging, rp.name, expect_embedder=rp.embedder.get("id"))

    def _check_space(self, rp: RegistryPack, staging: Path) -> None:
        have = sum((staging / f.path).stat().st_size for f in rp.files if (staging / f.path).is_file())
        parts = sum(p.stat().st_size for p in staging.rglob("*.part") if p.is_file())
        extract = sum(f.size for f in rp.files if f.extract)  # at least this much is unpacked beside it
        need = max(0, rp.size - have - parts) + extract + DISK_MARGIN
        free = self._free(self.packs_dir)
        if free < need:
            raise InstallError(f"pack {rp.name}: needs {megabytes(need)} of free disk, {self.packs_dir} has {megabytes(free)}")

    def _verify_files(self, rp: RegistryPack, files, staging: Path) -> None:
        """Files kept from an earlier try are checked against the registry before any is unpacked
        or installed (fetch checked the others as they arrived)."""
        from lib_replicheck.embedders.weights import sha256_file

        for f in files:
            p = staging / f.path
            if not p.is_file() or p.stat().st_size != f.size or sha256_file(p) != f.sha256:
                p.unlink(missing_ok=True)
                raise InstallError(f"pack {rp.name}: {f.path} failed verification; run the download again")

    # -- install from a folder, an archive or a URL ----------------------------------------------------

    def install(self, source: str, *, sha256: str | None = None, progress=None, cancel=None,
                overwrite: bool = False) -> Path:
        """Install a pack from a folder, a .tar(.gz)/.zip archive, or an http(s) URL of an archive;
        a pack of the same name already installed is replaced only with `overwrite`.

        Everything happens in a `.install-PID-TID` work folder inside the packs folder, which is
        removed at the end whatever happens (and by clean_stale when the process was killed)."""
        from urllib.parse import urlsplit

        self.packs_dir.mkdir(parents=True, exist_ok=True)
        work = self.packs_dir / f".install-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            staging = work / "pack"
            if urlsplit(source).scheme in ("http", "https"):
                if self.offline:
                    raise InstallError(f"{source}: network access is off (--offline)")
                name = _safe_filename(PurePosixPath(urlsplit(source).path).name)
                archive = fetch([source], work / name, size=None, sha256=sha256, policy=self.policy,
                                progress=progress, cancel=cancel, max_bytes=self.max_bytes, disk_free=self._free,
                                reserve=DISK_MARGIN)
                staging.mkdir()
                safe_extract(archive, staging, disk_free=self._free)
                archive.unlink()
            else:
                path = Path(source).expanduser()
                if path.is_dir():
                    _copy_listed(_pack_root(path), staging, self._free)  # the user's folder is copied, never moved
                elif path.is_file():
                    if sha256:
                        from lib_replicheck.embedders.weights import sha256_file

                        if sha256_file(path) != sha256.lower():
                            raise InstallError(f"{path}: sha256 does not match {sha256}")
                    staging.mkdir()
                    safe_extract(path, staging, disk_free=self._free)
                else:
                    raise InstallError(f"{source}: no such file or folder")
            from lib_replicheck.packs.manifest import read

            name = read(staging).name
            if (self.packs_dir / name).exists() and not overwrite:
                raise InstallError(f"pack {name} is already installed in {self.packs_dir / name}: pass --force to "
                                   "replace it (the installed one stays until the new one is verified)")
            with pack_lock(self.packs_dir, name):
                return self._install_verified(staging, name)
        except OSError as e:  # a full disk, a folder that went away: said in one line
            raise InstallError(f"{source}: cannot be installed in {self.packs_dir}: {e.strerror or e}"
                               + (f" ({e.filename})" if e.filename else "")) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _install_verified(self, staging: Path, name: str, expect_embedder: str | None = None) -> Path:
        from lib_replicheck.packs.pack import Pack

        try:
            pack = Pack(staging, expect_embedder=expect_embedder)
            try:
                if pack.name != name:
                    raise InstallError(f"pack {name}: its manifest names it {pack.name!r}")
                pack.verify()
            finally:
                pack.close()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a bad pack is not kept for resuming
            raise
        target = self.packs_dir / name
        swap_in(staging, target)
        return target

    # -- the rest ---------------------------------------------------------------------------------

    def verify(self, name_or_path: str) -> None:
        """Check every file of an installed pack (a name) or of a pack folder (a path) against its sha256.

        An installed pack is read under its lock: a remove, download or build of it at the same time
        would swap or delete its files under the reads, so whichever of the two comes second is
        refused, saying so (an InstallError), rather than failing inside a read."""
        from contextlib import nullcontext

        from lib_replicheck.packs import is_name, resolve
        from lib_replicheck.packs.pack import Pack

        path = resolve(name_or_path, self.packs_dir)
        with pack_lock(self.packs_dir, path.name) if is_name(name_or_path) else nullcontext():
            try:
                pack = Pack(path)
                try:
                    pack.verify()
                finally:
                    pack.close()
            except OSError as e:  # a pack folder changed by a program that takes no lock
                raise PackError(path, f"{Path(e.filename or path).name} cannot be read ({e.strerror or e})") from None

    def remove(self, name: str) -> list[Path]:
        """Remove the installed pack `name` and what unfinished downloads or builds of it left (the
        next one starts over); return what was removed. An error when there is neither."""
        left = leftovers(self.packs_dir, name) if NAME_RE.match(name) else []
        path = self._installed(name) if not left else self.packs_dir / name
        with pack_lock(self.packs_dir, name):
            removed = []
            if path.is_dir():
                trash = self.packs_dir / f".{name}.removing-{os.getpid()}"
                os.replace(path, trash)  # gone from the packs list at once
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(path)
            for p in left:
                shutil.rmtree(p)
                removed.append(p)
        return removed

    def _installed(self, name: str) -> Path:
        if not NAME_RE.match(name) or not (self.packs_dir / name).is_dir():
            raise InstallError(f"no installed pack named {name!r} in {self.packs_dir}")
        return self.packs_dir / name


def _safe_filename(name: str) -> str:
    """A URL's last segment as a local file name (an archive suffix kept, nothing else trusted)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-100:].lstrip(".")
    return clean or "pack"


def _copy_listed(root: Path, staging: Path, free: Callable[[Path], int]) -> None:
    """Copy a pack folder's manifest.json and the files it lists (nothing else, no links followed),
    after checking each one's size and the free disk."""
    from lib_replicheck.packs.manifest import read

    m = read(root)
    sizes = 0
    for f in m.files:
        p = root / f.path
        try:
            st = p.lstat()
        except OSError:
            raise PackError(root, f"file {f.path} listed in the manifest is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise PackError(root, f"file {f.path} is a link or not a regular file")
        if st.st_size != f.size:
            raise PackError(root, f"file {f.path} is {st.st_size} bytes, the manifest says {f.size}")
        sizes += f.size
    have = free(staging.parent)
    if have < sizes + DISK_MARGIN:
        raise InstallError(f"pack {m.name}: needs {megabytes(sizes + DISK_MARGIN)} of free disk, {staging.parent} has "
                           f"{megabytes(have)}")
    staging.mkdir()
    for rel in [MANIFEST] + [f.path for f in m.files]:
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dest, follow_symlinks=False)


def _prune_unlisted(staging: Path) -> None:
    """Remove what the pack's manifest does not list (left by an earlier version's download)."""
    from lib_replicheck.packs.manifest import read

    keep = {MANIFEST} | {f.path for f in read(staging).files}
    keep_dirs = {k.rsplit("/", i)[0] for k in keep for i in range(1, k.count("/") + 1)}
    for p in sorted(staging.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        rel = p.relative_to(staging).as_posix()
        if p.is_dir() and not p.is_symlink():
            if rel not in keep_dirs:
                shutil.rmtree(p, ignore_errors=True)
        elif rel not in keep:
            p.unlink(missing_ok=True)


__all__ = ["Installer", "DownloadError"]
