"""Installing, verifying and removing packs in a packs folder.

A pack appears under its name only once it is complete and verified. Downloads go into a hidden
`.NAME.download` folder that survives interruptions (the next try resumes it), then the pack is
re-opened, every sha256 checked, and it is renamed into place; the previous version of the pack
stays usable until that moment. A lock file stops two downloads of the same pack at once.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable

from ..download import DownloadError, Policy, fetch
from ..errors import PackError, ReplicheckError
from .build import _publish
from .manifest import MANIFEST, NAME_RE
from .registry import RegistryPack

#: Bounds for archives: far above any real pack, far below what fills a disk by surprise.
MAX_MEMBERS = 2_000_000
MAX_EXTRACTED_BYTES = 2 * 1024**4
DISK_MARGIN = 64 * 1024 * 1024


class InstallError(ReplicheckError):
    pass


@contextmanager
def pack_lock(packs_dir: Path, name: str):
    """An exclusive, non-blocking lock on `name` (released when the process dies)."""
    packs_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(packs_dir / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd)
    except OSError:
        os.close(fd)
        raise InstallError(f"pack {name!r} is already being downloaded or installed") from None
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def safe_extract(archive: Path, target: Path, max_bytes: int = MAX_EXTRACTED_BYTES) -> None:
    """Unpack a .tar(.gz) or .zip into `target`, refusing anything that could leave it or surprise:
    absolute paths, '..', links, devices, too many members or too many bytes."""

    def check(name: str, where: str) -> Path:
        p = PurePosixPath(name.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]) or not p.parts:
            raise InstallError(f"{archive.name}: member {name!r} would leave the pack folder ({where})")
        return target.joinpath(*p.parts)

    total = 0
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise InstallError(f"{archive.name}: more than {MAX_MEMBERS} members")
            for info in infos:
                dest = check(info.filename, "zip")
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode not in (0o100000, 0o040000):
                    raise InstallError(f"{archive.name}: member {info.filename!r} is a link or special file")
                total += info.file_size
                if total > max_bytes:
                    raise InstallError(f"{archive.name}: unpacks to more than {max_bytes} bytes")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
        return
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as e:
        raise InstallError(f"{archive.name}: not a tar or zip archive ({e})") from None
    with tf:
        count = 0
        for member in tf:
            count += 1
            if count > MAX_MEMBERS:
                raise InstallError(f"{archive.name}: more than {MAX_MEMBERS} members")
            dest = check(member.name, "tar")
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise InstallError(f"{archive.name}: member {member.name!r} is a link or special file")
            total += member.size
            if total > max_bytes:
                raise InstallError(f"{archive.name}: unpacks to more than {max_bytes} bytes")
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            with src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)


def _pack_root(folder: Path) -> Path:
    """The folder holding manifest.json: `folder` itself or its only subfolder."""
    if (folder / MANIFEST).is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subs) == 1 and (subs[0] / MANIFEST).is_file():
        return subs[0]
    raise InstallError(f"{folder.name}: no {MANIFEST} at the top of the archive or folder")


class Installer:
    def __init__(self, packs_dir: str | Path, *, policy: Policy | None = None, offline: bool = False,
                 disk_usage: Callable[[Path], int] | None = None):
        self.packs_dir = Path(packs_dir)
        self.policy = policy or Policy()
        self.offline = offline
        self._free = disk_usage or (lambda p: shutil.disk_usage(p).free)

    # -- download ---------------------------------------------------------------------------------

    def download(self, rp: RegistryPack, *, progress: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None) -> Path:
        """Download, verify and install a pack from a registry; return its folder."""
        if self.offline:
            raise InstallError(f"pack {rp.name}: network access is off (--offline)")
        with pack_lock(self.packs_dir, rp.name):
            staging = self.packs_dir / f".{rp.name}.download"
            staging.mkdir(parents=True, exist_ok=True)
            self._check_space(rp, staging)
            for f in rp.files:
                dest = staging / f.path
                if dest.is_file() and dest.stat().st_size == f.size:
                    if progress:
                        progress(f.size)
                    continue  # finished in an earlier try; its sha256 is checked with the pack below
                fetch(f.urls, dest, size=f.size, sha256=f.sha256, policy=self.policy, progress=progress,
                      cancel=cancel)
            for f in rp.files:
                if f.extract:
                    archive = staging / f.path
                    safe_extract(archive, staging)
                    archive.unlink()
            self._verify_files(rp, staging)
            return self._install_verified(staging, rp.name, expect_embedder=rp.embedder.get("id"))

    def _check_space(self, rp: RegistryPack, staging: Path) -> None:
        have = sum((staging / f.path).stat().st_size for f in rp.files if (staging / f.path).is_file())
        parts = sum(p.stat().st_size for p in staging.rglob("*.part") if p.is_file())
        extract = sum(f.size for f in rp.files if f.extract)  # unpacked beside the archive
        need = max(0, rp.size - have - parts) + extract + DISK_MARGIN
        free = self._free(self.packs_dir)
        if free < need:
            raise InstallError(f"pack {rp.name}: needs {_mb(need)} of free disk, {self.packs_dir} has {_mb(free)}")

    def _verify_files(self, rp: RegistryPack, staging: Path) -> None:
        from ..weights import sha256_file

        for f in rp.files:
            if f.extract:
                continue
            p = staging / f.path
            if not p.is_file() or p.stat().st_size != f.size or sha256_file(p) != f.sha256:
                p.unlink(missing_ok=True)
                raise InstallError(f"pack {rp.name}: {f.path} failed verification; run the download again")

    # -- install from a folder, an archive or a URL ----------------------------------------------------

    def install(self, source: str, *, sha256: str | None = None, progress=None, cancel=None) -> Path:
        """Install a pack from a folder, a .tar(.gz)/.zip archive, or an http(s) URL of an archive."""
        from urllib.parse import urlsplit

        self.packs_dir.mkdir(parents=True, exist_ok=True)
        work = self.packs_dir / f".install-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            copy = False
            if urlsplit(source).scheme in ("http", "https"):
                if self.offline:
                    raise InstallError(f"{source}: network access is off (--offline)")
                name = PurePosixPath(urlsplit(source).path).name or "pack"
                archive = fetch([source], work / name, size=None, sha256=sha256, policy=self.policy,
                                progress=progress, cancel=cancel)
                src = work / "unpacked"
                src.mkdir()
                safe_extract(archive, src)
            else:
                path = Path(source).expanduser()
                if path.is_dir():
                    src, copy = path, True  # the user's folder is copied, never moved
                elif path.is_file():
                    if sha256:
                        from ..weights import sha256_file

                        if sha256_file(path) != sha256.lower():
                            raise InstallError(f"{path}: sha256 does not match {sha256}")
                    src = work / "unpacked"
                    src.mkdir()
                    safe_extract(path, src)
                else:
                    raise InstallError(f"{source}: no such file or folder")
            root = _pack_root(src)
            from .manifest import read

            name = read(root).name
            with pack_lock(self.packs_dir, name):
                staging = self.packs_dir / f".{name}.download"
                shutil.rmtree(staging, ignore_errors=True)
                if copy:
                    shutil.copytree(root, staging)
                else:
                    shutil.move(str(root), str(staging))
                return self._install_verified(staging, name)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _install_verified(self, staging: Path, name: str, expect_embedder: str | None = None) -> Path:
        from .pack import Pack

        try:
            pack = Pack(staging, expect_embedder=expect_embedder)
            if pack.name != name:
                raise InstallError(f"pack {name}: its manifest names it {pack.name!r}")
            pack.verify()
            pack.close()
        except (PackError, InstallError):
            shutil.rmtree(staging, ignore_errors=True)  # a bad pack is not kept for resuming
            raise
        target = self.packs_dir / name
        _publish(staging, target)
        return target

    # -- the rest ---------------------------------------------------------------------------------

    def verify(self, name: str) -> None:
        from .pack import Pack

        pack = Pack(self._installed(name))
        try:
            pack.verify()
        finally:
            pack.close()

    def remove(self, name: str) -> None:
        path = self._installed(name)
        with pack_lock(self.packs_dir, name):
            trash = self.packs_dir / f".{name}.removing-{os.getpid()}"
            os.replace(path, trash)  # gone from the packs list at once
            shutil.rmtree(trash, ignore_errors=True)

    def _installed(self, name: str) -> Path:
        if not NAME_RE.match(name) or not (self.packs_dir / name).is_dir():
            raise InstallError(f"no installed pack named {name!r} in {self.packs_dir}")
        return self.packs_dir / name


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


__all__ = ["Installer", "InstallError", "DownloadError", "safe_extract", "pack_lock"]
