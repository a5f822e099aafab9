"""Unpacking a pack archive (.zip or .tar, compressed or not) without trusting it.

The archive's own manifest.json is read first and bounds everything after it: only the files it
lists are written, each at its listed size, and all of them within `max_bytes` and the free disk.
Paths that leave the pack folder, links, devices, duplicates and damaged data are refused with an
ArchiveError naming the archive and the member; what was written is removed by the caller.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from lib_replicheck.download import free_bytes
from lib_replicheck.errors import InstallError, PackError, ReplicheckError
from lib_replicheck.packs.manifest import MANIFEST, Manifest

#: Bounds for archives: far above any real pack, far below what fills a disk by surprise.
MAX_MEMBERS = 2_000_000
MAX_EXTRACTED_BYTES = 2 * 1024**4
#: A manifest.json larger than this inside an archive is refused (one line per file of the pack).
MAX_MANIFEST_BYTES = 64 * 1024**2
DISK_MARGIN = 64 * 1024 * 1024


class ArchiveError(PackError, InstallError):
    """An archive that cannot be unpacked as a pack: named, with the member and the reason."""

    def __init__(self, archive: str | Path, reason: str):
        super().__init__(Path(archive).name, reason)


def megabytes(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


@dataclass(frozen=True)
class _Member:
    """One archive member, as its header declares it."""

    name: str
    parts: tuple[str, ...]  # normalised path inside the archive
    kind: str  # "file", "dir" or "other"
    size: int


def _member_parts(archive: Path, name: str) -> tuple[str, ...]:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise ArchiveError(archive, f"member {name!r} would leave the pack folder")
    return p.parts


def _zip_members(archive: Path, z: zipfile.ZipFile) -> Iterator[tuple[_Member, zipfile.ZipInfo]]:
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(archive, f"more than {MAX_MEMBERS} members")
    for info in infos:
        mode = (info.external_attr >> 16) & 0o170000
        if mode and mode not in (0o100000, 0o040000):
            kind = "other"
        else:
            kind = "dir" if info.is_dir() else "file"
        yield _Member(info.filename, _member_parts(archive, info.filename), kind, info.file_size), info


def _tar_members(archive: Path, tf: tarfile.TarFile) -> Iterator[tuple[_Member, tarfile.TarInfo]]:
    count = 0
    while True:
        info = tf.next()
        if info is None:
            return
        count += 1
        if count > MAX_MEMBERS:
            raise ArchiveError(archive, f"more than {MAX_MEMBERS} members")
        if count % 1024 == 0:
            del tf.members[:]  # headers already judged need not stay in memory
        if info.isdir():
            kind = "dir"
        elif info.isfile() and not info.issparse():
            kind = "file"
        else:
            kind = "other"
        yield _Member(info.name, _member_parts(archive, info.name), kind, info.size), info


def _archive_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, ValueError,
                                       NotImplementedError]
    try:
        import lzma

        errs.append(lzma.LZMAError)
    except ImportError:
        pass
    return tuple(errs)


_ARCHIVE_ERRORS = _archive_errors()


class _Archive:
    """A .zip or .tar(.gz/.bz2/.xz) read member by member; its headers can be walked twice (the
    first pass finds the manifest, the second unpacks). Damage surfaces as ArchiveError."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        try:
            if zipfile.is_zipfile(path):
                self._zip = zipfile.ZipFile(path)
            else:
                tarfile.open(path, "r:*").close()
        except OSError as e:
            raise ArchiveError(path, f"cannot be read ({e.strerror or e})") from None
        except _ARCHIVE_ERRORS as e:
            raise ArchiveError(path, f"not a tar or zip archive ({e})") from None

    def members(self):
        if self._zip is not None:
            return _zip_members(self.path, self._zip)
        if self._tar is not None:
            self._tar.close()
        self._tar = tarfile.open(self.path, "r:*")
        return _tar_members(self.path, self._tar)

    def open(self, info):
        if self._zip is not None:
            return self._zip.open(info)
        f = self._tar.extractfile(info)
        if f is None:
            raise ArchiveError(self.path, f"member {info.name!r} has no data")
        return f

    def close(self) -> None:
        for f in (self._zip, self._tar):
            if f is not None:
                f.close()


@contextmanager
def _open_archive(archive: Path):
    arc = _Archive(archive)
    try:
        yield arc
    except ReplicheckError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise ArchiveError(archive, f"is damaged or truncated ({type(e).__name__}: {e})") from None
    except OSError as e:
        if e.errno is None:  # gzip's and bz2's "not a valid stream"
            raise ArchiveError(archive, f"is damaged or truncated ({type(e).__name__}: {e})") from None
        raise ArchiveError(archive, f"cannot be read: {e.strerror or e}") from None
    finally:
        arc.close()


def _find_manifest(archive: Path, arc: _Archive, max_bytes: int) -> tuple[tuple[str, ...], Manifest]:
    """First pass over the headers, up to the pack's manifest.json (at the top or in one top
    folder), which is read and parsed; the members before it are judged (path, kind, count,
    bytes). The second pass judges every member against the manifest before writing it, so this
    one can stop early: a pack archive that starts with its manifest is decompressed once.

    Returns (prefix, manifest)."""
    from lib_replicheck.packs import manifest as mf

    found: tuple[tuple[str, ...], bytes] | None = None
    total = 0
    for m, info in arc.members():
        if m.kind == "other":
            raise ArchiveError(archive, f"member {m.name!r} is a link or special file")
        if m.kind != "file":
            continue
        total += m.size
        if total > max_bytes:
            raise ArchiveError(archive, f"unpacks to more than {max_bytes} bytes")
        if m.parts and m.parts[-1] == MANIFEST and len(m.parts) <= 2:
            if m.size > MAX_MANIFEST_BYTES:
                raise ArchiveError(archive, f"{m.name} is larger than {MAX_MANIFEST_BYTES} bytes")
            with arc.open(info) as f:
                found = (m.parts[:-1], f.read(MAX_MANIFEST_BYTES + 1))
            break
    if found is None:
        raise ArchiveError(archive, f"no {MANIFEST} at the top of the archive or in its only folder")
    prefix, text = found
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(archive, f"{MANIFEST} is not valid JSON ({e})") from None
    except RecursionError:
        raise ArchiveError(archive, f"{MANIFEST} is nested too deeply") from None
    try:
        return prefix, mf.parse(data, f"{archive.name}:{MANIFEST}")
    except ReplicheckError:
        raise
    except Exception as e:  # noqa: BLE001 - a shape the parser did not foresee is still a bad manifest
        raise ArchiveError(archive, f"{MANIFEST} is malformed ({type(e).__name__}: {e})") from None


def safe_extract(archive: Path, target: Path, max_bytes: int = MAX_EXTRACTED_BYTES, *,
                 disk_free: Callable[[Path], int] | None = None) -> Manifest:
    """Unpack a pack archive (.tar(.gz) or .zip) into `target`; return its manifest.

    The pack's folder (the archive's top, or its only top folder) becomes `target`. Refused before
    anything is written: an archive without a manifest.json, a manifest listing more than
    `max_bytes` bytes or more than the free disk holds. Refused before the member is written (what
    was written is removed by the caller): absolute paths, '..', links, devices, sparse files, more
    than MAX_MEMBERS members, a member the manifest does not list, a size other than the listed
    one, a member given twice, a second manifest; and while it is written: damaged data (bad CRC,
    truncated stream).
    """
    archive, target = Path(archive), Path(target)
    free = disk_free or free_bytes
    with _open_archive(archive) as arc:
        prefix, manifest = _find_manifest(archive, arc, max_bytes)
        listed: dict[tuple[str, ...], int | None] = {tuple(PurePosixPath(f.path).parts): f.size
                                                     for f in manifest.files}
        listed.setdefault((MANIFEST,), None)  # the manifest itself: any size up to its bound
        dirs = {k[:i] for k in listed for i in range(1, len(k))}
        # what pass two can write: only listed members, each of its listed size
        will_write = sum(v for v in listed.values() if v)
        if will_write > max_bytes:
            raise ArchiveError(archive, f"unpacks to more than {max_bytes} bytes")
        have = free(target)
        if have < will_write + DISK_MARGIN:
            raise ArchiveError(archive, f"unpacks to {megabytes(will_write)}, and the disk of {target} has "
                                        f"{megabytes(have)} free")
        seen: set[tuple[str, ...]] = set()
        for m, info in arc.members():
            if m.parts[: len(prefix)] != prefix:
                raise ArchiveError(archive, f"member {m.name!r} is outside the pack folder {'/'.join(prefix)}")
            rel = m.parts[len(prefix):]
            if not rel:
                continue  # the pack folder itself
            if m.kind == "dir":
                if rel not in dirs:
                    raise ArchiveError(archive, f"member {m.name!r} is not a folder of any file listed in "
                                                f"{MANIFEST}")
                _write_dir(archive, target, rel, m)
                continue
            if m.kind != "file":
                raise ArchiveError(archive, f"member {m.name!r} is a link or special file")
            if rel not in listed:
                raise ArchiveError(archive, f"member {m.name!r} is not listed in {MANIFEST}")
            if rel in seen:
                raise ArchiveError(archive, f"member {m.name!r} appears twice")
            seen.add(rel)
            expect = listed[rel]
            if expect is not None and m.size != expect:
                raise ArchiveError(archive, f"member {m.name!r} is {m.size} bytes, {MANIFEST} lists {expect}")
            _write_file(archive, target, rel, m, arc.open(info), MAX_MANIFEST_BYTES if expect is None else expect)
    return manifest


def _write_dir(archive: Path, target: Path, rel: tuple[str, ...], m: _Member) -> None:
    dest = target.joinpath(*rel)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArchiveError(archive, f"member {m.name!r} cannot be created: {e.strerror or e} "
                                    "(a file and a folder of the same name?)") from None


def _write_file(archive: Path, target: Path, rel: tuple[str, ...], m: _Member, src, size: int) -> None:
    dest = target.joinpath(*rel)
    written = 0
    try:
        with src:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "xb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > size:
                        raise ArchiveError(archive, f"member {m.name!r} holds more than its {size} bytes")
                    out.write(chunk)
    except ReplicheckError:
        raise
    except FileExistsError:
        raise ArchiveError(archive, f"member {m.name!r} cannot be created: a folder or file of that name "
                                    "is already there") from None
    except _ARCHIVE_ERRORS as e:
        raise ArchiveError(archive, f"member {m.name!r} is damaged ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise ArchiveError(archive, f"member {m.name!r} cannot be written: {e.strerror or e}"
                                    + (" (a file and a folder of the same name?)" if e.errno in (17, 20, 21) else ""))\
            from None
    if written != m.size:
        raise ArchiveError(archive, f"member {m.name!r} holds {written} bytes, its header says {m.size}")


__all__ = ["ArchiveError", "safe_extract", "MAX_EXTRACTED_BYTES", "DISK_MARGIN"]
