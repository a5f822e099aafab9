"""Hostile downloads and archives, served from 127.0.0.1 or crafted on disk.

Each case is an attack that once filled the disk, left hundreds of megabytes of partial files
behind, kept unlisted files inside an installed pack, or escaped as a traceback: now each is
refused, bounded before anything is written, and cleaned up.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from httpfaults import FaultServer
from lib_replicheck.download import DownloadError, Policy
from lib_replicheck.errors import PackError, ReplicheckError
from lib_replicheck.registry import registry
from lib_replicheck.registry.archive import safe_extract
from lib_replicheck.registry.pack_install import Installer
from lib_replicheck.packs.pack import Pack

DEMO = REPO / "registry" / "demo"
FAST = Policy(connect_timeout=2, read_timeout=1, retries=1, backoff=0.01)
MB, GB = 1024**2, 1024**3


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def demo_files() -> dict[str, bytes]:
    """The demo pack's files, manifest.json first."""
    m = json.loads((DEMO / "manifest.json").read_bytes())
    return {"manifest.json": (DEMO / "manifest.json").read_bytes(),
            **{f["path"]: (DEMO / f["path"]).read_bytes() for f in m["files"]}}


def manifest_with(edit) -> bytes:
    m = json.loads((DEMO / "manifest.json").read_bytes())
    edit(m)
    return json.dumps(m).encode()


def tar_bytes(members: list[tuple[str, bytes | None]], *, declared: dict[str, int] | None = None,
              mode: str = "w:gz") -> bytes:
    """A tar of (name, data) members; data None makes a folder; `declared` overrides a member's
    header size (the data written stays what it is, so the archive lies)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
                continue
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if declared:
        raw = _lie_about_sizes(raw, mode, declared)
    return raw


def _lie_about_sizes(raw: bytes, mode: str, declared: dict[str, int]) -> bytes:
    """Rewrite the size field of the named members' headers (uncompressed tar, then recompressed)."""
    import gzip

    tar = bytearray(gzip.decompress(raw) if mode.endswith("gz") else raw)
    pos = 0
    while pos + 512 <= len(tar) and tar[pos:pos + 512] != b"\0" * 512:
        header = tarfile.TarInfo.frombuf(bytes(tar[pos:pos + 512]), "utf-8", "surrogateescape")
        real = header.size
        if header.name in declared:
            h = bytearray(tar[pos:pos + 512])
            size = declared[header.name]
            h[124:136] = b"\x80" + size.to_bytes(11, "big")  # GNU base-256 size field
            h[148:156] = b" " * 8
            h[148:156] = b"%06o\0 " % sum(h)
            tar[pos:pos + 512] = h
        pos += 512 + ((real + 511) // 512) * 512
    return gzip.compress(bytes(tar)) if mode.endswith("gz") else bytes(tar)


def leftovers(packs_dir: Path) -> list[str]:
    """Everything in the packs folder but lock files and finished packs."""
    if not packs_dir.exists():
        return []
    return sorted(p.name for p in packs_dir.iterdir()
                  if not p.name.endswith(".lock") and not (p / "manifest.json").is_file())


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


# -- downloads of undeclared size ------------------------------------------------------------------

def test_install_url_with_an_endless_body_stops_before_the_disk_fills(server, tmp_path):
    """`packs install URL` against a body that never ends: the download watches the free space
    (here a disk with 100 MB free) and stops with a clear message, leaving nothing behind."""
    url = server.add("/endless.tar.gz", b"\0" * 4096, "endless", limit=160 * MB)
    packs = tmp_path / "packs"
    free = lambda p: 100 * MB - disk_bytes(packs)  # noqa: E731 - a small disk that fills as we write
    with pytest.raises(DownloadError, match="free disk"):
        Installer(packs, policy=FAST, disk_usage=free).install(url)
    assert server.routes["/endless.tar.gz"].sent < 100 * MB
    assert leftovers(packs) == [] and disk_bytes(packs) == 0


def test_install_url_is_bounded_by_max_size(server, tmp_path):
    url = server.add("/endless.zip", b"PK" * 2048, "endless", limit=160 * MB)
    with pytest.raises(DownloadError, match="more than the 4 MB accepted"):
        Installer(tmp_path / "packs", policy=FAST, max_bytes=4 * MB).install(url)
    assert server.routes["/endless.zip"].sent < 64 * MB
    assert leftovers(tmp_path / "packs") == []
    # and from the command line, with --max-size
    r = subprocess.run([sys.executable, "-m", "lib_replicheck", "packs", "install", url, "--max-size", "3M",
                        "--packs-dir", str(tmp_path / "cli")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "more than the 3 MB accepted" in r.stderr and "Traceback" not in r.stderr
    assert leftovers(tmp_path / "cli") == []


def test_weights_of_undeclared_size_are_bounded(server, tmp_path, monkeypatch):
    """Weights named by a pack's manifest carry a URL and a sha256 but no size: an endless body
    stops at the stated maximum (MAX_UNSIZED_BYTES, made small here) and its .part is removed."""
    from lib_replicheck import download
    from lib_replicheck.embedders.weights import download as download_weights

    monkeypatch.setattr(download, "MAX_UNSIZED_BYTES", 2 * MB, raising=False)
    url = server.add("/w/sscd.pt", b"w" * 4096, "endless", limit=48 * MB)
    with pytest.raises(ReplicheckError, match="more than the 2 MB accepted"):
        download_weights(url, tmp_path / "models" / "sscd.pt", "0" * 64, progress=False)
    assert server.routes["/w/sscd.pt"].sent < 32 * MB
    assert list((tmp_path / "models").iterdir()) == []


def test_free_space_is_checked_before_a_sized_download(server, tmp_path):
    from lib_replicheck.download import fetch

    url = server.add("/big", b"b" * (3 * MB))
    server.log.clear()
    with pytest.raises(DownloadError, match="not enough free disk"):
        fetch([url], tmp_path / "big", size=3 * MB, sha256=None, policy=FAST, disk_free=lambda p: 2 * MB, reserve=0)
    assert not (tmp_path / "big.part").exists() and not (tmp_path / "big").exists()


# -- archives from a registry -------------------------------------------------------------------------

def serve_archive(server, archive: bytes, prefix: str = "/a") -> registry.RegistryPack:
    """A registry whose demo pack is one archive, unpacked after its sha256 is checked."""
    url = server.add(f"{prefix}/demo/pack.tar.gz", archive)
    data = {"format": registry.FORMAT, "format_version": registry.FORMAT_VERSION, "packs": [{
        "name": "demo", "embedder": {"id": "pdq"}, "count": 4,
        "files": [{"path": "pack.tar.gz", "size": len(archive), "sha256": hashlib.sha256(archive).hexdigest(),
                   "urls": [url], "extract": True}]}]}
    return registry.load(server.add(f"{prefix}/packs.json", json.dumps(data).encode())).packs[0]


def lying_archive(manifest: bytes, declared_index: int) -> bytes:
    """The demo pack's manifest and index, the index's header declaring `declared_index` bytes
    (2 MB of data follow it, then the archive ends: a 50 GB claim in a few kilobytes)."""
    members = [("manifest.json", manifest), ("index.faiss", demo_files()["index.faiss"] + b"\0" * (2 * MB))]
    return tar_bytes(members, declared={"index.faiss": declared_index})


@pytest.mark.parametrize("manifest_says", [50 * GB, 866])
def test_archive_declaring_50_gb_is_refused_before_writing(server, tmp_path, manifest_says):
    """A tar.gz of 12 KB whose index.faiss declares 50 GB, with a manifest that says the same or
    the truth: refused before a byte is unpacked, and the verified archive removed too (it left
    hundreds of megabytes of partial files behind)."""
    manifest = manifest_with(lambda m: m["files"][0].update(size=manifest_says))
    archive = lying_archive(manifest, 50 * GB)
    assert len(archive) < 64 * 1024
    rp = serve_archive(server, archive)
    packs = tmp_path / "packs"
    with pytest.raises(ReplicheckError, match="truncated|unpacks to|manifest.json lists"):
        Installer(packs, policy=FAST, disk_usage=lambda p: 20 * GB).download(rp)
    assert leftovers(packs) == [] and disk_bytes(packs) == 0


def test_free_space_is_checked_against_the_unpacked_size(server, tmp_path):
    """A small archive that honestly unpacks to 8 MB more than the disk can spare: refused before
    unpacking (the check used to count the archive's size only)."""
    big = b"\0" * (8 * MB)
    manifest = manifest_with(lambda m: m["files"].append(
        {"path": "thumbnails/big.bin", "size": len(big), "sha256": hashlib.sha256(big).hexdigest()}))
    files = {**demo_files(), "manifest.json": manifest, "thumbnails/big.bin": big}
    archive = tar_bytes(list(files.items()))
    rp = serve_archive(server, archive)
    packs = tmp_path / "packs"
    with pytest.raises(ReplicheckError, match="unpacks to 8 MB, and the disk .* has 70 MB free"):
        Installer(packs, policy=FAST, disk_usage=lambda p: 70 * MB).download(rp)
    assert leftovers(packs) == [] and disk_bytes(packs) == 0
    Pack(Installer(packs, policy=FAST).download(serve_archive(server, archive, "/b"))).verify()


def test_archive_member_larger_than_its_manifest_says(server, tmp_path):
    files = demo_files()
    archive = tar_bytes([("manifest.json", files["manifest.json"]), ("index.faiss", b"\0" * (2 * MB))])
    rp = serve_archive(server, archive)
    packs = tmp_path / "packs"
    with pytest.raises(ReplicheckError, match=r"index.faiss' is 2097152 bytes, manifest.json lists 866"):
        Installer(packs, policy=FAST).download(rp)
    assert leftovers(packs) == [] and disk_bytes(packs) == 0


def test_registry_archive_installs_when_honest(server, tmp_path):
    files = demo_files()
    archive = tar_bytes([("demo", None), *((f"demo/{k}", v) for k, v in files.items())])
    rp = serve_archive(server, archive)
    Pack(Installer(tmp_path / "packs", policy=FAST).download(rp)).verify()
    assert sorted(p.name for p in (tmp_path / "packs" / "demo").iterdir()) == [
        "index.faiss", "manifest.json", "metadata.sqlite", "thumbnails"]
    assert leftovers(tmp_path / "packs") == []


# -- members the manifest does not list ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_unlisted_members_are_refused(tmp_path, kind):
    """A pack archive with 1,000 extra files: refused (they were kept inside the installed pack)."""
    members = [(f"demo/{k}", v) for k, v in demo_files().items()]
    members += [(f"demo/junk/{i}.txt", b"x" * 100) for i in range(1000)]
    archive = tmp_path / f"demo.{'tar.gz' if kind == 'tar' else 'zip'}"
    if kind == "tar":
        archive.write_bytes(tar_bytes(members))
    else:
        with zipfile.ZipFile(archive, "w") as z:
            for name, data in members:
                z.writestr(name, data)
    packs = tmp_path / "packs"
    with pytest.raises(ReplicheckError, match=r"junk/0.txt' is not listed in manifest.json"):
        Installer(packs, policy=FAST).install(str(archive))
    assert not (packs / "demo").exists() and leftovers(packs) == []


def test_folder_install_copies_only_what_the_manifest_lists(tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(DEMO, src)
    (src / "notes").mkdir()
    (src / "notes" / "big.bin").write_bytes(b"z" * 100_000)
    (src / "passwd").symlink_to("/etc/passwd")
    path = Installer(tmp_path / "packs", policy=FAST).install(str(src))
    Pack(path).verify()
    assert not (path / "notes").exists() and not (path / "passwd").exists()


# -- damaged archives: one clear error, never a traceback ------------------------------------------------

def test_file_then_folder_of_the_same_name(tmp_path):
    x = b"x"
    manifest = manifest_with(lambda m: m["files"].extend([
        {"path": "extra", "size": 1, "sha256": hashlib.sha256(x).hexdigest()},
        {"path": "extra/inner", "size": 1, "sha256": hashlib.sha256(x).hexdigest()}]))
    for members in ([("manifest.json", manifest), ("extra", x), ("extra/inner", x)],
                    [("manifest.json", manifest), ("extra", x), ("extra", None)]):
        archive = tmp_path / "a.tar.gz"
        archive.write_bytes(tar_bytes(members))
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        with pytest.raises(ReplicheckError, match="extra") as e:
            safe_extract(archive, out)
        assert isinstance(e.value, PackError), type(e.value)


def test_bad_zip_crc_is_a_pack_error(tmp_path):
    archive = tmp_path / "demo.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for name, data in demo_files().items():
            z.writestr(name, data)
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"SQLite format 3")  # the metadata's bytes, stored as they are
    raw[at + 100] ^= 0xFF
    archive.write_bytes(bytes(raw))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ReplicheckError, match="CRC") as e:
        safe_extract(archive, out)
    assert isinstance(e.value, PackError), type(e.value)
    with pytest.raises(ReplicheckError, match="CRC"):
        Installer(tmp_path / "packs", policy=FAST).install(str(archive))
    assert leftovers(tmp_path / "packs") == []


@pytest.mark.parametrize("raw,message", [
    (b"\x1f\x8b\x08\x00" + b"\0" * 200, "damaged|not a tar"),
    (b"not an archive at all" * 30, "not a tar or zip"),
])
def test_garbage_archives(tmp_path, raw, message):
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(raw)
    with pytest.raises(ReplicheckError, match=message):
        Installer(tmp_path / "packs", policy=FAST).install(str(archive))


def test_deeply_nested_manifest_in_an_archive(tmp_path):
    archive = tmp_path / "deep.tar.gz"
    archive.write_bytes(tar_bytes([("manifest.json", b"[" * 100_000 + b"]" * 100_000)]))
    with pytest.raises(ReplicheckError, match="manifest.json"):
        Installer(tmp_path / "packs", policy=FAST).install(str(archive))


# -- what killed installs leave behind -----------------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_folders_are_cleaned_when_an_installer_starts(tmp_path):
    packs = tmp_path / "packs"
    packs.mkdir()
    dead = dead_pid()
    (packs / f".install-{dead}-140000").mkdir()
    (packs / f".install-{dead}-140000" / "demo.tar.gz.part").write_bytes(b"p" * 1000)
    (packs / f".demo.removing-{dead}").mkdir()
    old = packs / ".gone.download"
    old.mkdir()
    (old / "index.faiss.part").write_bytes(b"o" * 1000)
    week_ago = time.time() - 8 * 24 * 3600
    for p in (old / "index.faiss.part", old):
        os.utime(p, (week_ago, week_ago))
    fresh = packs / ".resumable.download"
    fresh.mkdir()
    (fresh / "index.faiss.part").write_bytes(b"r" * 1000)
    mine = packs / f".install-{os.getpid()}-1"  # this process's: in use
    mine.mkdir()
    (packs / f".kept.old-{dead}").mkdir()  # a replaced pack whose replacement never arrived
    (packs / f".kept.old-{dead}" / "manifest.json").write_text("{}")

    Installer(packs, policy=FAST)
    assert sorted(p.name for p in packs.iterdir() if not p.name.endswith(".lock")) == sorted(
        [fresh.name, mine.name, "kept"])


def test_killed_install_is_cleaned_by_the_next_command(server, tmp_path):
    """`packs install URL` killed mid-download (kill -9): the next `packs` command removes its
    work folder."""
    url = server.add("/slow.tar.gz", b"s" * 4096, "trickle", stall=0.05)
    packs = tmp_path / "packs"
    cmd = [sys.executable, "-m", "lib_replicheck", "packs", "install", url, "--packs-dir", str(packs)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 60
        while time.time() < end and not list(packs.glob(".install-*/*.part")):
            time.sleep(0.1)
        assert list(packs.glob(".install-*/*.part")), "the install never started writing"
    finally:
        proc.kill()
        proc.wait()
    assert list(packs.glob(".install-*"))
    r = subprocess.run([sys.executable, "-m", "lib_replicheck", "packs", "list", "--packs-dir", str(packs)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert leftovers(packs) == []
