"""Recipes: registry entries built into packs here, against a real HTTP server on 127.0.0.1 serving
the list and real photos, with dead, stalled, non-image, oversized and bomb URLs; img2dataset does
the fetching (in its own process), the builder embeds and indexes, the pack is installed atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, edits, jpeg_bytes
from httpfaults import FaultServer
from lib_replicheck.builder.build_recipe import GetOptions, RecipeError, get_recipe, work_dir
from lib_replicheck.download import Cancelled, Policy
from lib_replicheck.images import load_image
from lib_replicheck.packs import installed
from lib_replicheck.registry import registry
from lib_replicheck.registry.recipe_choices import ChoiceError

FAST = Policy(connect_timeout=2, read_timeout=1, retries=1, backoff=0.01)
#: the broken rows every list below ends with, and why img2dataset fails each
BAD = ("missing", "slow", "notes", "huge", "bomb")


@pytest.fixture(scope="module")
def photos_small(pack_photos):
    out = []
    for p in pack_photos[:24]:
        im = load_image(p)
        im.thumbnail((480, 480))
        out.append((p.stem, im))
    return out


@pytest.fixture(scope="module")
def bad_bodies():
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")  # 400 megapixels in a few kB
    return {"notes": b"just some text, not an image at all\n" * 40, "huge": b"\xff\xd8" + b"\0" * (40 * 1024**2),
            "bomb": bomb.getvalue()}


class Site:
    """The test server with a list of `good` photos and the BAD rows, and a registry naming it."""

    def __init__(self, server: FaultServer, photos, bad_bodies, good: int, *, fmt: str = "csv", edit=None,
                 stall: float = 6.0):
        self.server, self.photos = server, photos[:good]
        rows = []
        for i, (stem, im) in enumerate(self.photos):
            rows.append((server.add(f"/img/{i}-{stem}.jpg", jpeg_bytes(im)), f"a photo of {stem}", f"row-{i}"))
        rows.append((server.url + "/img/missing.jpg", "gone", "row-missing"))
        rows.append((server.add("/img/slow.jpg", jpeg_bytes(photos[-1][1]), "stall", stall=stall), "slow", "row-slow"))
        rows.append((server.add("/img/notes.jpg", bad_bodies["notes"]), "text", "row-notes"))
        rows.append((server.add("/img/huge.jpg", bad_bodies["huge"]), "huge", "row-huge"))
        rows.append((server.add("/img/bomb.png", bad_bodies["bomb"]), "bomb", "row-bomb"))
        self.rows = rows
        if fmt == "csv":
            lines = ["n;Caption;URL;Index"] + [f"{i};{c};{u};{k}" for i, (u, c, k) in enumerate(rows)]
            body = ("\n".join(lines) + "\n").encode()
            columns = {"url": "URL", "caption": "Caption", "key": "Index"}
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            buf = io.BytesIO()
            pq.write_table(pa.table({"url": [r[0] for r in rows], "caption": [r[1] for r in rows],
                                     "id": [r[2] for r in rows]}), buf)
            body = buf.getvalue()
            columns = {"url": "url", "caption": "caption", "key": "id"}
        self.list_body = body
        self.list_url = server.add(f"/lists/list.{fmt}", body)
        self.entry = {"kind": "recipe", "name": "local-test", "title": "photos on 127.0.0.1",
                      "source": {"dataset": "test photos", "license": "test"}, "embedder": {"id": "pdq"},
                      "list": {"format": fmt, "delimiter": ";", "columns": columns,
                               "files": [{"urls": [f"lists/list.{fmt}"], "size": len(body),
                                          "sha256": hashlib.sha256(body).hexdigest()}]},
                      "build": {"image_size": 256, "download_timeout": 2, "thumbnails": True},
                      "expected": {"count": len(rows)}, "embed_rate": {"cpu": 50.0}}
        if edit:
            edit(self.entry)
        self.registry_url = server.add("/registry.json", json.dumps(
            {"format": "replicheck-registry", "format_version": 1, "packs": [self.entry]}).encode())

    def recipe(self):
        return registry.load(self.registry_url).packs[0]

    def requests(self, path_prefix: str) -> int:
        return sum(1 for p, _ in self.server.log if p.startswith(path_prefix))


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def cli(*args, home: Path, timeout=600, env: dict | None = None, **kw):
    e = dict(os.environ, REPLICHECK_HOME=str(home), **(env or {}))
    e.pop("REPLICHECK_REGISTRY", None)
    return subprocess.run([sys.executable, "-m", "lib_replicheck", *args], cwd=REPO, env=e, capture_output=True,
                          text=True, timeout=timeout, **kw)


def pack_rows(path: Path) -> list[tuple]:
    """(url, caption, source key) of every image of a pack, sorted."""
    from lib_replicheck.packs.pack import Pack

    pack = Pack(path)
    try:
        rows = pack.metadata.get(list(range(pack.manifest.count)))
        return sorted((r.url, r.caption, r.source) for r in rows.values())
    finally:
        pack.close()


def test_get_builds_a_recipe_end_to_end_and_check_uses_it(server, photos_small, bad_bodies, tmp_path):
    site = Site(server, photos_small, bad_bodies, good=6)
    home = tmp_path / "home"
    r = cli("packs", "available", "--registry", site.registry_url, home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("local-test ") and " recipe " in r.stdout
    assert "built here: about 11 images" in r.stdout and "with pdq on CPU" in r.stdout
    r = cli("packs", "get", "local-test", "--registry", site.registry_url, "--json", home=home)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert (res["listed"], res["fetched"], res["failed"], res["count"]) == (11, 6, 5, 6), res
    assert res["failures"] == {"HTTP Error 404: Not Found": 1, "timed out": 1, "not an image": 1,
                               "larger than 33554432 bytes": 1,  # the 40 MB body, cut at 32 MB
                               "more than 100 megapixels": 1}, res["failures"]  # the PNG bomb, never decoded
    packs_dir = home / "packs"
    assert [p.name for p in installed(packs_dir)] == ["local-test"]
    assert not work_dir(packs_dir, "local-test").exists()  # the work folder goes once the pack is in
    rows = pack_rows(packs_dir / "local-test")
    assert [r[2] for r in rows] == sorted(f"row-{i}" for i in range(6))  # the list's own keys
    assert not any(u.endswith(tuple(f"/img/{b}" for b in ("missing.jpg", "slow.jpg", "notes.jpg", "huge.jpg",
                                                            "bomb.png"))) for u, _, _ in rows)
    stem, im = site.photos[3]
    edits(im)["resized 0.5x"].save(tmp_path / "copy.png")
    r = cli("check", str(tmp_path / "copy.png"), "--json", home=home)
    assert r.returncode == 1, r.stderr
    best = json.loads(r.stdout)["best"]
    assert best["url"].endswith(f"/img/3-{stem}.jpg") and best["caption"] == f"a photo of {stem}"
    r = cli("packs", "get", "local-test", "--registry", site.registry_url, home=home)
    assert r.returncode == 2 and "already exists" in r.stderr


def test_a_killed_build_resumes_to_the_same_pack(server, photos_small, bad_bodies, tmp_path):
    """Killed (SIGKILL, its img2dataset too) after the first shard of images is fetched; the rerun
    fetches only what was not done and installs the same pack as an uninterrupted build."""
    site = Site(server, photos_small, bad_bodies, good=24, fmt="parquet", stall=4)
    home = tmp_path / "home"
    packs_dir = home / "packs"
    env = dict(os.environ, REPLICHECK_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "lib_replicheck", "packs", "get", "local-test", "--registry",
                             site.registry_url], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    images = work_dir(packs_dir, "local-test") / "images"
    end = time.time() + 120
    while time.time() < end and not list(images.glob("*_stats.json")):
        time.sleep(0.1)
    assert list(images.glob("*_stats.json")), proc.communicate(timeout=60)
    proc.kill()  # no cleanup runs: what a power cut or the OOM killer leaves
    proc.wait(30)
    assert not (packs_dir / "local-test").exists()
    done = json.loads(sorted(images.glob("*_stats.json"))[0].read_text())
    first_rows = int(done["count"])
    hits_before = {p: n for p, n in _hits(server).items()}
    time.sleep(1.5)  # the orphaned img2dataset notices its parent is gone and stops
    r = cli("packs", "get", "local-test", "--registry", site.registry_url, "--json", home=home)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert (res["listed"], res["fetched"], res["failed"]) == (29, 24, 5), res
    assert res["count"] == 24 - res["skipped"] and res["skipped"] <= 1  # a photo too flat for PDQ is skipped
    again = {p: n - hits_before.get(p, 0) for p, n in _hits(server).items()}
    refetched = sum(1 for i in range(first_rows) if again.get(site.rows[i][0].removeprefix(server.url), 0))
    assert refetched == 0, "the rows of the shard finished before the kill were fetched again"
    ref = cli("packs", "get", "local-test", "--registry", site.registry_url, "--json", home=tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    assert pack_rows(packs_dir / "local-test") == pack_rows(tmp_path / "ref" / "packs" / "local-test")


def _hits(server) -> dict[str, int]:
    out: dict[str, int] = {}
    for p, _ in server.log:
        out[p] = out.get(p, 0) + 1
    return out


def test_cancel_leaves_no_half_pack_and_the_next_run_resumes(server, photos_small, bad_bodies, tmp_path):
    site = Site(server, photos_small, bad_bodies, good=20, stall=30)
    recipe = site.recipe()
    packs_dir = tmp_path / "packs"
    stages, niceness = [], []

    def run(cancel_at: str | None):
        cancel = threading.Event()

        def progress(p):
            stages.append(p.stage)
            if p.stage == "fetch":
                niceness.extend(_fetch_niceness())
            if cancel_at and p.stage == cancel_at and (p.stage != "embed" or p.done >= 8):
                cancel.set()

        return get_recipe(recipe, packs_dir, GetOptions(), progress=progress, cancel=cancel, policy=FAST,
                          log=lambda s: None)

    started = time.perf_counter()
    with pytest.raises(Cancelled):
        run("fetch")  # the stalled URL holds img2dataset for 30 s: the cancel must not wait for it
    assert time.perf_counter() - started < 25
    assert installed(packs_dir) == [] and not (packs_dir / "local-test").exists()
    assert not [p for p in packs_dir.iterdir() if ".partial-" in p.name]
    with pytest.raises(Cancelled):
        run("embed")
    assert installed(packs_dir) == []
    assert (work_dir(packs_dir, "local-test") / "images" / ".complete").is_file()  # the fetch is kept
    fetched = site.requests("/img/")
    res = run(None)
    assert site.requests("/img/") == fetched  # resumed: no image fetched again
    assert (res.fetched, res.failed) == (20, 5) and res.count == 20 - res.skipped and res.skipped <= 1
    assert [p.name for p in installed(packs_dir)] == ["local-test"]
    assert {"list", "fetch", "embed", "index"} <= set(stages)
    assert niceness and max(niceness) >= os.nice(0) + 10  # the fetch yields the CPU to generations


def _fetch_niceness() -> list[int]:
    """The niceness of the fetch process this test started (img2dataset's workers inherit it)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            cmd = (stat.parent / "cmdline").read_bytes()
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (b"lib_replicheck.builder.fetch" in cmd or b"lib_replicheck.builder.sources" in cmd) \
                and int(fields[1]) == os.getpid():  # field 4: parent
            out.append(int(fields[16]))  # field 19: nice
    return out


def test_a_list_failing_its_sha256_is_refused_naming_the_field(server, photos_small, bad_bodies, tmp_path):
    site = Site(server, photos_small, bad_bodies, good=2,
                edit=lambda e: e["list"]["files"][0].update(sha256="0" * 64))
    with pytest.raises(RecipeError, match=r"list\.files\[0\]\.sha256"):
        get_recipe(site.recipe(), tmp_path / "packs", policy=FAST, log=lambda s: None)
    assert site.requests("/img/") == 0 and installed(tmp_path / "packs") == []


def test_a_list_without_a_named_column_is_refused_naming_the_field(server, photos_small, bad_bodies, tmp_path):
    site = Site(server, photos_small, bad_bodies, good=2,
                edit=lambda e: e["list"]["columns"].update(caption="TEXT"))
    r = cli("packs", "get", "local-test", "--registry", site.registry_url, home=tmp_path / "home")
    assert r.returncode == 2
    assert "no column 'TEXT'" in r.stderr and "list.columns.caption" in r.stderr and "Traceback" not in r.stderr
    assert site.requests("/img/") == 0


@pytest.mark.parametrize("edit,field", [
    (lambda e: e.update(kind="script"), "packs[0].kind"),
    (lambda e: e["list"].update(format="xlsx"), "packs[0].list.format"),
    (lambda e: e["list"].update(columns={"caption": "x"}), "packs[0].list.columns"),
    (lambda e: e["list"]["columns"].update(evil="x"), "packs[0].list.columns.evil"),
    (lambda e: e["list"]["files"][0].update(urls=["file:///etc/passwd"]), "not an http(s) URL"),
    (lambda e: e["list"]["files"][0].update(sha256="abc"), "packs[0].list.files[0].sha256"),
    (lambda e: e["list"].update(user=True), "packs[0].list"),
    (lambda e: e["list"].update(files=[{"shipped": "../../etc/passwd", "sha256": "0" * 64}]),
     "packs[0].list.files[0].shipped"),
    (lambda e: e["build"].update(image_size=10**9), "packs[0].build.image_size"),
    (lambda e: e["build"].update(run="rm -rf /"), "packs[0].build.run"),
    (lambda e: e.update(embedder={}), "packs[0].embedder"),
    (lambda e: e["expected"].update(count=-1), "packs[0].expected.count"),
    (lambda e: e["embed_rate"].update(cpu="fast"), "packs[0].embed_rate.cpu"),
])
def test_hostile_recipes_are_refused_naming_the_field(server, photos_small, bad_bodies, edit, field):
    site = Site(server, photos_small, bad_bodies, good=1, edit=edit)
    with pytest.raises(registry.RegistryError) as e:
        registry.load(site.registry_url)
    assert field in str(e.value) and site.registry_url in str(e.value)


def test_an_unpinned_list_needs_consent_then_is_pinned(server, photos_small, bad_bodies, tmp_path):
    """A list nobody published a sha256 for (as PD12M's parquets): refused without --accept-unpinned;
    with it, its sha256 is recorded on first use, and a different file later is refused."""
    site = Site(server, photos_small, bad_bodies, good=3,
                edit=lambda e: (e["list"].pop("files"), e["list"].update(url_pattern="lists/list.{i}.csv", parts=1),
                                e.update(sample=True)))
    server.add("/lists/list.0.csv", site.list_body)
    recipe = site.recipe()
    packs = tmp_path / "packs"
    with pytest.raises(ChoiceError, match="^accept_unpinned: local-test: some of its files have no published sha256"):
        get_recipe(recipe, packs, policy=FAST, log=lambda s: None)
    assert site.requests("/lists/") == 0
    logs = []
    res = get_recipe(recipe, packs, GetOptions(accept_unpinned=True, sample=4), policy=FAST, log=logs.append)
    assert (res.listed, res.fetched, res.count) == (4, 3, 3)  # the first 4 rows: 3 photos and the 404
    pins = json.loads((packs / ".recipe-pins.json").read_text())
    assert pins["local-test"] == {server.url + "/lists/list.0.csv": hashlib.sha256(site.list_body).hexdigest()}
    assert any("pinned on first use" in line for line in logs)
    server.add("/lists/list.0.csv", site.list_body.replace(b"a photo of", b"another photo of"))
    with pytest.raises(RecipeError, match=r"list\.files\[0\]\.sha256"):
        get_recipe(recipe, packs, GetOptions(accept_unpinned=True, sample=4, overwrite=True), policy=FAST,
                   log=lambda s: None)


def test_a_users_own_parquet(server, photos_small, bad_bodies, tmp_path):
    """The laion-parquet recipe as shipped, with a LAION-style parquet of the user's (URL, TEXT, hash)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    site = Site(server, photos_small, bad_bodies, good=3)
    own = tmp_path / "laion-aesthetics-6.5.parquet"
    pq.write_table(pa.table({"URL": [r[0] for r in site.rows[:4]], "TEXT": [r[1] for r in site.rows[:4]],
                             "hash": [r[2] for r in site.rows[:4]], "AESTHETIC_SCORE": [6.6] * 4}), own)
    shipped = next(p for p in registry.load(registry.DEFAULT_REGISTRY).packs if p.name == "laion-parquet")
    with pytest.raises(ChoiceError, match=r"^list_path: laion-parquet builds from your own list: give your list file "
                                          r"\(a parquet file with the columns URL, TEXT"):
        get_recipe(shipped, tmp_path / "packs", log=lambda s: None)
    from dataclasses import replace

    from lib_replicheck.registry.parse_recipe import ListFile

    # an exclusion list (opt-outs, Re-LAION's removals): one URL and one hash, dropped before fetching
    excl = f"# removed\n{site.rows[0][0]}\n{site.rows[2][2]}\n".encode()
    excl_url = server.add("/exclude.txt", excl)
    fast = replace(shipped, embedder={"id": "pdq"}, build={**shipped.build, "download_timeout": 2},
                   exclude=ListFile(urls=(excl_url,), size=len(excl), sha256=hashlib.sha256(excl).hexdigest()))
    res = get_recipe(fast, tmp_path / "packs", GetOptions(list_path=str(own)), policy=FAST, log=lambda s: None)
    assert (res.listed, res.excluded, res.fetched, res.failed, res.count) == (2, 2, 1, 1, 1)
    assert site.requests(site.rows[0][0].removeprefix(server.url)) == 0
    assert site.requests(site.rows[2][0].removeprefix(server.url)) == 0
    assert pack_rows(res.path)[0][0] == site.rows[1][0]


def test_the_shipped_registry_is_read_from_disk_with_the_recipes(tmp_path):
    """No network: the default registry is this repository's file; it lists the demo and the three
    recipes, and the demo installs from it."""
    assert registry.DEFAULT_REGISTRY == str(REPO / "registry" / "packs.json")
    env = dict(os.environ, REPLICHECK_HOME=str(tmp_path / "home"), HTTP_PROXY="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9")
    env.pop("REPLICHECK_REGISTRY", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "lib_replicheck", *a], cwd=REPO, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    r = run("packs", "available")
    assert r.returncode == 0, r.stderr
    names = [line.split()[:2] for line in r.stdout.splitlines() if not line.startswith("embedder license: ")]
    assert names == [["demo", "pack"], ["sd1-memorized", "recipe"], ["pd12m", "recipe"], ["laion-parquet", "recipe"],
                     ["pd12m-clip", "recipe"], ["pd3m-clip", "recipe"], ["laion-clip", "recipe"]]
    r = run("packs", "get", "demo")
    assert r.returncode == 0 and "installed demo" in r.stdout, r.stderr


def test_the_sd1_memorized_list_is_shipped_and_readable():
    from lib_replicheck.builder.fetch_lists import csv_rows

    recipe = next(p for p in registry.load(registry.DEFAULT_REGISTRY).packs if p.name == "sd1-memorized")
    f = recipe.list.files[0]
    path = f.shipped_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
    rows = list(csv_rows(path, recipe.list.columns, delimiter=recipe.list.delimiter))
    assert len(rows) == 500 == recipe.count
    assert all(r["URL"].startswith(("http://", "https://")) for r in rows)
    assert rows[0]["source_key"] == "1030727993"  # LAION-2B-en row index of the first row
    assert recipe.missing_packages() == []  # fetched by replicheck itself: requirements.txt is enough


def test_the_tab_builds_a_recipe_with_progress_and_waits_for_generations(webui, server, photos_small, bad_bodies):
    """The web UI: the registries' recipes listed by the same route, Build in the background with its
    stage in /downloads, the UI answering meanwhile, and no embedding while a generation runs."""
    from fastapi.testclient import TestClient

    panel = {"X-Replicheck-Request": "1"}
    site = Site(server, photos_small, bad_bodies, good=4)
    m = webui.module
    m.manager.installer.policy = FAST
    webui.set_option("replicheck_registries", site.registry_url)
    client = TestClient(webui.app)
    try:
        r = client.get("/replicheck/v1/packs", params={"refresh": "true"}, headers=panel).json()
        entry = next(p for p in r["available"] if p["name"] == "local-test")
        assert entry["kind"] == "recipe" and entry["count"] == 9
        assert "recipe: Build" in m.packs_tab.page()
        _, msg = m.packs_tab.download("demo-that-is-not-listed")
        assert "no registry lists" in msg
        webui.shared.state.job = "txt2img"  # a generation is running: the build must not embed
        _, msg = m.packs_tab.build_recipe("local-test")
        assert "Building local-test" in msg
        assert client.post("/replicheck/v1/packs/local-test/download", headers=panel).status_code == 409
        seen, slowest = set(), 0.0
        end = time.time() + 240
        while time.time() < end:
            t = time.perf_counter()
            assert client.get("/replicheck/v1/status").status_code == 200
            slowest = max(slowest, time.perf_counter() - t)
            job = next(j for j in client.get("/replicheck/v1/downloads").json() if j["name"] == "local-test")
            seen.add(job["stage"])
            if job["stage"] == "embed":
                break
            time.sleep(0.2)
        assert seen >= {"fetch", "embed"} and job["state"] == "building" and job["kind"] == "recipe", (seen, job)
        time.sleep(2)
        job = next(j for j in client.get("/replicheck/v1/downloads").json() if j["name"] == "local-test")
        assert job["stage"] == "embed" and job["done"] == 0  # held while the generation runs
        webui.shared.state.job = ""
        final = m.manager.wait("local-test", timeout=240)
        assert final.state == "installed", final.error
        assert "4 images in the pack: 4 of 9 fetched, 5 failed" in final.message
        assert slowest < 2.0  # the UI kept answering while the build ran
        assert (webui.packs_dir / "local-test" / "manifest.json").is_file()
    finally:
        webui.shared.state.job = ""
        webui.set_option("replicheck_registries", "")
        m.manager.available, m.manager.refreshed = [], None
        import shutil

        shutil.rmtree(webui.packs_dir / "local-test", ignore_errors=True)
        m.service.packs_changed()


def test_leftovers_of_killed_builds_are_cleaned(tmp_path):
    """A build killed while writing its pack leaves `.NAME.partial-PID`; a recipe's work folder left
    for weeks is not worth resuming. Both go when the next Installer is made; a recent work folder
    stays for the next build to resume."""
    from lib_replicheck.registry.pack_lock import STALE_DOWNLOAD_SECONDS, clean_stale

    packs = tmp_path / "packs"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    partial = packs / f".local-test.partial-{gone.pid}"
    (partial / "thumbnails").mkdir(parents=True)
    (partial / "index.faiss").write_bytes(b"half")
    old, young = work_dir(packs, "old-build"), work_dir(packs, "young-build")
    for w in (old, young):
        (w / "images").mkdir(parents=True)
        (w / "images" / "00000.tar").write_bytes(b"x")
    weeks = time.time() - STALE_DOWNLOAD_SECONDS - 3600
    for p in [old, *old.rglob("*")]:
        os.utime(p, (weeks, weeks))
    removed = clean_stale(packs)
    assert sorted(removed) == sorted([partial.name, old.name])
    assert not partial.exists() and not old.exists() and young.is_dir()


def test_build_progress_in_headless_chromium(server, photos_small, bad_bodies, tmp_path):
    """The tab's progress line in a real Chromium: a Build started through the route shows its stage
    and counts as javascript/replicheck.js renders /replicheck/v1/downloads, then the result."""
    from fastapi import FastAPI

    from browser import add_page, chromium, serve
    from browser import wait_for
    from lib_replicheck.builder.build_recipe import build_for_manager
    from lib_replicheck.webui.pack_jobs import PackManager
    from lib_replicheck.webui import api
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    site = Site(server, photos_small, bad_bodies, good=4, edit=lambda e: e.update(
        title='<img src=x onerror="window.__pwned=1">'))
    home = tmp_path / "home"
    manager = PackManager(home / "packs", home, lambda: [site.registry_url], policy=FAST,
                          build_recipe=build_for_manager)
    app = FastAPI()
    api.mount(app, CheckService(home / "packs", home), Settings, manager=manager)
    add_page(app, "", extra_html=(
        "<div id='replicheck_downloads'></div><button id='build' onclick=\"fetch('./replicheck/v1/packs/"
        "local-test/download', {method: 'POST', headers: {'X-Replicheck-Request': '1'}})\">Build</button>"))
    manager.refresh()
    driver = chromium(tmp_path / "chromium-profile")
    try:
        with serve(app) as url:
            driver.get(url)
            driver.find_element("id", "build").click()
            wait_for(driver, "return /local-test: fetch building \\d+% - /.test("
                             "document.querySelector('#replicheck_downloads').textContent)", timeout=120)
            wait_for(driver, "return document.querySelector('#replicheck_downloads').textContent.includes("
                             "'installed')", timeout=240)
            text = driver.execute_script("return document.querySelector('#replicheck_downloads').textContent")
            assert text == "local-test: installed - 4 images in the pack: 4 of 9 fetched, 5 failed"
            assert driver.execute_script("return document.querySelector('#replicheck_downloads progress').value") == 1
            assert driver.execute_script("return window.__pwned") is None
    finally:
        driver.quit()
    assert [p.name for p in installed(home / "packs")] == ["local-test"]


def test_the_image_fetch_is_bounded_and_http_only(server, bad_bodies):
    """What img2dataset's workers run for each row (they import the fetch module as their main):
    http(s) only, redirects too, and no body over MAX_IMAGE_BYTES read into memory."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from lib_replicheck.builder import fetch_img2dataset as sources

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd" if self.path == "/file" else "ftp://127.0.0.1/x")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    redirect = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirect.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{redirect.server_address[1]}"
    try:
        for url, why in (("file:///etc/passwd", "not an http(s) URL"), (base + "/file", "is not allowed"),
                         (base + "/ftp", "redirect to a non-http(s) URL")):
            key, stream, err = sources._bounded_download((1, url), 2, None, [])
            assert stream is None and why in err, (url, err)
        server.add("/huge", bad_bodies["huge"])
        server.add("/huge-unannounced", bad_bodies["huge"], "endless", limit=64 * 1024**2)
        for path in ("/huge", "/huge-unannounced"):
            key, stream, err = sources._bounded_download((2, server.url + path), 5, None, [])
            assert stream is None and err == f"larger than {sources.MAX_IMAGE_BYTES} bytes", err
        key, stream, err = sources._bounded_download((3, server.add("/ok", b"\xff\xd8 tiny")), 2, None, [])
        assert err is None and stream.read() == b"\xff\xd8 tiny"
    finally:
        redirect.shutdown()


def test_the_tab_suggests_sd1_memorized_before_any_click(webui):
    """With the default registry (a file), the tab lists the demo and the recipes at once, without
    the network, and suggests building sd1-memorized."""
    m = webui.module
    webui.set_option("replicheck_registries", "")
    m.manager.available, m.manager.refreshed = [], None
    try:
        page = m.packs_tab.page()
        assert "Suggested: <b>sd1-memorized</b>" in page and "recipe: Build" in page
        assert [p.name for p in m.manager.available] == ["demo", "sd1-memorized", "pd12m", "laion-parquet",
                                                         "pd12m-clip", "pd3m-clip", "laion-clip"]
        assert m.manager.refreshed is None and "Refresh list" in page  # remote registries: still on a click
        assert m.packs_tab.suggested() == "sd1-memorized" and "sd1-memorized" in m.packs_tab.names()
    finally:
        m.manager.available, m.manager.refreshed = [], None


def test_a_build_cut_off_from_the_network_resumes(server, photos_small, tmp_path):
    """The images' host is unreachable during the first run (connection refused): the build stops
    saying the network seems down and keeps what it got; the next run, with the network back,
    fetches only the rows that failed to connect and installs the whole pack."""
    port = _dead_ports(1)[0]
    down = f"http://127.0.0.1:{port}"
    bodies = {f"/img/{i}.jpg": jpeg_bytes(im) for i, (_, im) in enumerate(photos_small[:20])}
    rows = [f"{down}/img/{i}.jpg;far photo {i}" for i in range(20)]
    rows += [f"{server.add(f'/near/{i}.jpg', jpeg_bytes(photos_small[20 + i][1]))};near photo {i}" for i in range(2)]
    url = csv_registry(server, "cut", rows)
    recipe = registry.load(url).packs[0]
    packs = tmp_path / "packs"
    with pytest.raises(RecipeError, match="1 shard.*network seems down"):
        get_recipe(recipe, packs, policy=FAST, log=lambda s: None)
    assert installed(packs) == [] and sum(1 for p, _ in server.log if p.startswith("/near/")) == 2

    back = _serve(port, bodies)
    try:
        res = get_recipe(recipe, packs, policy=FAST, log=lambda s: None)
    finally:
        back.shutdown()
    assert (res.listed, res.fetched, res.failed) == (22, 22, 0)
    assert sum(1 for p, _ in server.log if p.startswith("/near/")) == 2  # the shard that got through is kept
    assert [p.name for p in installed(packs)] == ["cut"]


# -- what a stock web UI has: requirements.txt only --------------------------------------------------

BLOCKER = '''
import sys


class _NotInstalled:
    """pyarrow and img2dataset, as if not installed (requirements.txt only)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyarrow", "img2dataset"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


@pytest.fixture
def without_builder_packages(tmp_path):
    """An environment for subprocesses (and theirs) where pyarrow and img2dataset cannot be imported."""
    site = tmp_path / "no-builder-packages"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": os.pathsep.join([str(site)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH")
                                                        else []))}
    probe = subprocess.run([sys.executable, "-c", "import pyarrow"], env=dict(os.environ, **env), capture_output=True,
                           text=True)
    assert probe.returncode == 1 and "No module named 'pyarrow'" in probe.stderr
    return env


def test_a_csv_recipe_builds_with_requirements_txt_alone(server, photos_small, bad_bodies, tmp_path,
                                                         without_builder_packages):
    """sd1-memorized's path: a CSV list fetched by replicheck's own bounded downloader, with neither
    pyarrow nor img2dataset importable (in the build nor in the fetch process); the broken rows fail
    for the same reasons as through img2dataset, and the pack is used by `check`."""
    site = Site(server, photos_small, bad_bodies, good=5)
    home = tmp_path / "home"
    r = cli("packs", "get", "local-test", "--registry", site.registry_url, "--json", home=home,
            env=without_builder_packages)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert (res["listed"], res["fetched"], res["failed"], res["count"]) == (10, 5, 5, 5), res
    assert res["failures"] == {"HTTP Error 404: Not Found": 1, "timed out": 1, "not an image": 1,
                               "larger than 33554432 bytes": 1, "more than 100 megapixels": 1}, res["failures"]
    assert [r[2] for r in pack_rows(home / "packs" / "local-test")] == sorted(f"row-{i}" for i in range(5))
    stem, im = site.photos[2]
    edits(im)["resized 0.5x"].save(tmp_path / "copy.png")
    r = cli("check", str(tmp_path / "copy.png"), "--json", home=home)
    assert r.returncode == 1 and json.loads(r.stdout)["best"]["url"].endswith(f"/img/2-{stem}.jpg"), r.stdout


def test_a_parquet_recipe_without_the_builder_packages_says_what_to_install(server, photos_small, bad_bodies,
                                                                            tmp_path, without_builder_packages):
    """Said before anything starts: nothing is downloaded, not even the list, and the command that
    installs exactly what is missing is in the message."""
    site = Site(server, photos_small, bad_bodies, good=2, fmt="parquet")
    home = tmp_path / "home"
    r = cli("packs", "get", "local-test", "--registry", site.registry_url, home=home,
            env=without_builder_packages)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "ModuleNotFoundError" not in r.stderr, r.stderr
    assert f'"{sys.executable}" -m pip install "pyarrow<18" "img2dataset"' in r.stderr, r.stderr
    assert "recipe local-test: its list is a parquet file" in r.stderr
    assert site.requests("/lists/") == 0 and site.requests("/img/") == 0
    assert not work_dir(home / "packs", "local-test").exists()


def test_the_builder_packages_are_those_requirements_builder_names():
    from lib_replicheck.registry.parse_recipe import BUILDER_PACKAGES

    lines = {ln.split("#")[0].strip() for ln in (REPO / "requirements-builder.txt").read_text().splitlines()}
    assert {spec for spec, _ in BUILDER_PACKAGES} <= lines


# -- without a network ------------------------------------------------------------------------------

def _dead_ports(n: int) -> list[int]:
    import socket

    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


def _serve(port: int, bodies: dict[str, bytes]):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Images(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            data = bodies.get(self.path)
            self.send_response(200 if data else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Images)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def csv_registry(server, name: str, rows: list[str], *, download_timeout: int = 2) -> str:
    """A registry on `server` with one recipe, `name`, whose CSV list holds `rows` (URL;Caption)."""
    body = ("URL;Caption\n" + "\n".join(rows) + "\n").encode()
    server.add(f"/{name}.csv", body)
    entry = {"kind": "recipe", "name": name, "embedder": {"id": "pdq"},
             "list": {"format": "csv", "delimiter": ";", "columns": {"url": "URL", "caption": "Caption"},
                      "files": [{"urls": [f"{name}.csv"], "size": len(body),
                                 "sha256": hashlib.sha256(body).hexdigest()}]},
             "build": {"image_size": 256, "download_timeout": download_timeout}}
    return server.add(f"/{name}.json", json.dumps({"format": "replicheck-registry", "format_version": 1,
                                                    "packs": [entry]}).encode())


def test_an_offline_build_stops_early_and_the_next_one_fetches(server, photos_small, tmp_path):
    """Every image host unreachable (three of them, connection refused): the build stops after the
    first answers saying there is no network, marks nothing done, and the next build, with the
    hosts back, fetches every row and installs the pack."""
    ports = _dead_ports(3)
    bodies = {f"/img/{i}.jpg": jpeg_bytes(im) for i, (_, im) in enumerate(photos_small[:24])}
    rows = [f"http://127.0.0.1:{ports[i % 3]}/img/{i}.jpg;photo {i}" for i in range(24)]
    url = csv_registry(server, "offline", rows)
    home = tmp_path / "home"
    work = work_dir(home / "packs", "offline")
    r = cli("packs", "get", "offline", "--registry", url, home=home)
    assert r.returncode == 2, r.stderr
    assert "recipe offline: no network: the first 24 images, from 3 hosts, all failed to connect" in r.stderr
    assert "Connection refused: 24" in r.stderr and "Traceback" not in r.stderr
    assert not (work / "images" / ".complete").exists() and not list((work / "images").glob("*_stats.json"))
    servers = [_serve(p, bodies) for p in ports]
    try:
        r = cli("packs", "get", "offline", "--registry", url, "--json", home=home)
    finally:
        for s in servers:
            s.shutdown()
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert (res["listed"], res["fetched"], res["failed"]) == (24, 24, 0), res


def test_a_name_that_does_not_resolve_counts_as_no_network(server, tmp_path):
    """The DNS error of a machine without network ('Name or service not known'): stopped early, not
    two minutes of silence ending in a fetch marked done with no image."""
    rows = [f"http://img{i % 4}.replicheck-test.invalid/{i}.jpg;photo {i}" for i in range(30)]
    url = csv_registry(server, "nodns", rows)
    home = tmp_path / "home"
    r = cli("packs", "get", "nodns", "--registry", url, home=home)
    assert r.returncode == 2 and "no network" in r.stderr and "Name or service not known" in r.stderr, r.stderr
    assert not (work_dir(home / "packs", "nodns") / "images" / ".complete").exists()


def test_a_fetch_marked_done_with_nothing_is_fetched_again_and_remove_clears_it(server, photos_small, tmp_path):
    """What an older version left after an offline run (`.complete` with "ok": 0) poisons nothing:
    the next build fetches; `packs remove NAME` removes the work folder of an unfinished build, and
    `--force` starts a build over from an empty one."""
    rows = [f"{server.add(f'/p/{i}.jpg', jpeg_bytes(im))};photo {i}" for i, (_, im) in enumerate(photos_small[:3])]
    url = csv_registry(server, "poisoned", rows)
    home = tmp_path / "home"
    packs = home / "packs"
    work = work_dir(packs, "poisoned")

    def poison():
        (work / "images").mkdir(parents=True, exist_ok=True)
        (work / "images" / ".complete").write_text(json.dumps({"done": 3, "ok": 0, "failed": 3, "errors": {}}))

    poison()
    r = cli("packs", "remove", "poisoned", home=home)
    assert r.returncode == 0 and not work.exists(), r.stderr
    assert f"removed {work} (an unfinished build or download)" in r.stdout
    r = cli("packs", "remove", "poisoned", home=home)
    assert r.returncode == 2 and "no installed pack named 'poisoned'" in r.stderr
    poison()
    r = cli("packs", "get", "poisoned", "--registry", url, "--json", home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fetched"] == 3 and server.routes["/p/0.jpg"].hits == 1
    poison()
    (work / "lists").mkdir()
    (work / "lists" / "stray").write_text("x")
    r = cli("packs", "get", "poisoned", "--registry", url, "--force", home=home)
    assert r.returncode == 0, r.stderr
    assert "--force: the work folder of an earlier build" in r.stderr and server.routes["/p/0.jpg"].hits == 2
    assert not work.exists() and [p.name for p in installed(packs)] == ["poisoned"]
    r = cli("packs", "remove", "poisoned", home=home)
    assert r.returncode == 0 and r.stdout.strip() == f"removed {packs / 'poisoned'}" and installed(packs) == []


# -- the pins file, and options that do not apply -----------------------------------------------------

@pytest.mark.parametrize("pins,why", [
    ("{not json", "not JSON"),
    ('["a", "list"]', "not a JSON object"),
    ('{"local-test": ["http://x"]}', "'local-test': not an object of URL: sha256"),
    ('{"local-test": {"http://x/list.0.csv": 42}}', "'http://x/list.0.csv': not a sha256"),
])
def test_a_pins_file_that_cannot_be_read_is_refused_naming_it(server, photos_small, bad_bodies, tmp_path, pins, why):
    """Ignoring it would pin a changed list again; a wrong-typed entry must not crash either."""
    site = Site(server, photos_small, bad_bodies, good=2,
                edit=lambda e: (e["list"].pop("files"), e["list"].update(url_pattern="lists/list.{i}.csv", parts=1)))
    server.add("/lists/list.0.csv", site.list_body)
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / ".recipe-pins.json").write_text(pins)
    with pytest.raises(RecipeError) as e:
        get_recipe(site.recipe(), packs, GetOptions(accept_unpinned=True), policy=FAST, log=lambda s: None)
    assert str(packs / ".recipe-pins.json") in str(e.value) and why in str(e.value), str(e.value)
    assert (packs / ".recipe-pins.json").read_text() == pins and site.requests("/lists/") == 0


def test_options_that_do_not_apply_are_refused_naming_them(server, photos_small, bad_bodies, tmp_path):
    home = tmp_path / "home"
    r = cli("packs", "get", "demo", "--sample", "10", "--list", "/etc/passwd", home=home)
    assert r.returncode == 2 and "--sample, --list: only for building a recipe" in r.stderr, r.stderr
    assert "demo is a prebuilt pack" in r.stderr and installed(home / "packs") == []
    r = cli("packs", "verify", "demo", "--accept-unpinned", home=home)
    assert r.returncode == 2 and "--accept-unpinned: only for building a recipe" in r.stderr
    site = Site(server, photos_small, bad_bodies, good=1)
    r = cli("packs", "get", "local-test", "--registry", site.registry_url, "--list", "/etc/passwd", "--sample", "3",
            home=home)
    assert r.returncode == 2 and "--list: local-test names its own list and takes none of yours; --sample: " \
                                 "local-test offers no sample (recipes of large lists do)" in r.stderr, r.stderr
    assert site.requests("/") == 0 or site.requests("/img/") == 0


def test_get_shows_its_progress_when_asked(tmp_path):
    """`--progress on` draws the bar on stderr even when stderr is not a terminal; `off` (and a
    pipe, by default) draws none."""
    r = cli("packs", "get", "demo", "--progress", "on", home=tmp_path / "a")
    assert r.returncode == 0 and "demo: 100%" in r.stderr, r.stderr
    r = cli("packs", "get", "demo", home=tmp_path / "b")
    assert r.returncode == 0 and "100%" not in r.stderr, r.stderr


# -- the tab: builder packages, and a build that fails --------------------------------------------------

def test_the_tab_offers_to_install_the_builder_packages_with_the_web_uis_pip(webui, server, photos_small,
                                                                              bad_bodies, monkeypatch):
    """Build on a parquet recipe in a web UI without img2dataset: said before anything starts,
    naming the button; Install builder packages runs the web UI's own pip (modules.launch_utils)
    for exactly what is missing, with every installed package as a constraint (install.py's rule),
    and says what got installed."""
    sys.path.insert(0, str(REPO / "tests" / "webui"))
    import launch

    sys.path.pop(0)
    site = Site(server, photos_small, bad_bodies, good=2, fmt="parquet")
    m = webui.module
    webui.set_option("replicheck_registries", site.registry_url)
    monkeypatch.setitem(sys.modules, "img2dataset", None)  # not installed in this web UI
    calls = []

    def run_pip(command, desc=None, live=False):
        calls.append((command, desc, Path(command.split('-c "')[1].rstrip('"')).read_text().split()))

    monkeypatch.setattr(launch, "run_pip", run_pip)
    try:
        m.packs_tab.refresh()
        before = m.manager.jobs.get("local-test")  # an earlier test's build, if any
        _, msg = m.packs_tab.build_recipe("local-test")
        assert "img2dataset is not installed in this web UI. Press Install builder packages" in msg, msg
        assert m.manager.jobs.get("local-test") is before and site.requests("/lists/") == 0  # nothing started
        msg = m.packs_tab.install_builder()
        assert [c[:2] for c in calls] == [('install "img2dataset" -c "' + calls[0][0].split('-c "')[1],
                                           "replicheck builder package: img2dataset")]
        pins = calls[0][2]
        assert any(p.startswith("numpy==") for p in pins) and not any(p.startswith("img2dataset==") for p in pins)
        from importlib.metadata import version

        assert f"Installed img2dataset {version('img2dataset')} with the web UI&#x27;s pip" in msg, msg
    finally:
        webui.set_option("replicheck_registries", "")
        m.manager.available, m.manager.refreshed = [], None


def test_a_failed_build_does_not_show_a_full_bar(webui, server, photos_small, bad_bodies):
    """A build that fails after its list stage: the job says failed with why, its bar is empty and
    its words are not those of a stage that ended ("list ready")."""
    from fastapi.testclient import TestClient

    rows = [f"{server.url}/gone/{i}.jpg;gone {i}" for i in range(3)]
    url = csv_registry(server, "all-dead", rows)
    m = webui.module
    m.manager.installer.policy = FAST
    webui.set_option("replicheck_registries", url)
    try:
        m.packs_tab.refresh()
        _, msg = m.packs_tab.build_recipe("all-dead")
        assert "Building all-dead" in msg
        final = m.manager.wait("all-dead", timeout=240)
        assert final.state == "failed" and "none of the 3 images could be fetched" in final.error, final
        job = next(j for j in TestClient(webui.app).get("/replicheck/v1/downloads").json() if j["name"] == "all-dead")
        assert job["fraction"] == 0.0 and job["message"] == "stopped in the fetch stage", job
        assert not (work_dir(webui.packs_dir, "all-dead") / "images").exists()
        _, msg = m.packs_tab.remove("all-dead")
        assert msg.endswith("Removed all-dead: the work folder of an unfinished build or download.</p>"), msg
        assert not work_dir(webui.packs_dir, "all-dead").exists()
    finally:
        webui.set_option("replicheck_registries", "")
        m.manager.available, m.manager.refreshed = [], None


def test_an_sscd_recipe_without_a_way_to_run_the_model_says_so_before_fetching(server, photos_small, bad_bodies,
                                                                               tmp_path, without_builder_packages):
    """requirements.txt alone (onnxruntime, no torch) and no ONNX file yet: the build stops before
    any image is fetched, naming the command that gets Meta's model on any Python."""
    site = Site(server, photos_small, bad_bodies, good=2, edit=lambda e: e.update(embedder={"id": "sscd"}))
    blocker = Path(without_builder_packages["PYTHONPATH"].split(os.pathsep)[0]) / "sitecustomize.py"
    blocker.write_text(BLOCKER.replace('("pyarrow", "img2dataset")', '("pyarrow", "img2dataset", "torch")'))
    home = tmp_path / "home"
    r = cli("packs", "get", "local-test", "--registry", site.registry_url, home=home, env=without_builder_packages)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "`python -m lib_replicheck weights get sscd`" in r.stderr and "no ONNX file of sscd_disc_mixup" in r.stderr
    assert site.requests("/img/") == 0


def test_a_sampled_recipe_gets_a_background_from_rows_outside_its_sample(server, photos_small, bad_bodies, tmp_path,
                                                                         sscd_onnx):
    """`--sample 8` of a list of 14 photos and the 5 broken rows: the pack holds the first 8 rows, and
    its background comes from the rows after them, fetched through the same bounded fetch (the
    broken ones fail there as they would in the pack) and embedded by the recipe's SSCD; `packs
    list` says the pack uses its own background and where it came from."""
    import numpy as np

    from lib_replicheck import embedders
    from lib_replicheck.builder.recipe_background import SOURCE
    from lib_replicheck.embedders import EmbedderOptions
    from lib_replicheck.packs.pack import Pack

    site = Site(server, photos_small, bad_bodies, good=14, stall=2.0,
                edit=lambda e: e.update(embedder={"id": "sscd_disc_mixup"}, sample=True))
    packs = tmp_path / "home" / "packs"
    logs = []
    res = get_recipe(site.recipe(), packs, GetOptions(sample=8, embedding=EmbedderOptions(runtime="onnx",
                                                                                             weights=str(sscd_onnx))),
                     policy=FAST, log=logs.append)
    assert (res.listed, res.count) == (8, 8), res
    assert [r[2] for r in pack_rows(packs / "local-test")] == sorted(f"row-{i}" for i in range(8))
    assert any("11 rows of the list outside the pack drawn at random" in line for line in logs), logs
    for i, (stem, _) in enumerate(site.photos):
        assert site.requests(f"/img/{i}-{stem}.jpg") >= 1  # the pack's 8 and the background's 6
    pack = Pack(packs / "local-test")
    entry = pack.manifest.background
    assert entry["source"] == SOURCE and entry["count"] + entry["dropped_as_copies"] == 6 and entry["count"] >= 5
    assert pack.default_background is None and len(pack.background) == entry["count"]
    sscd = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    photos = np.asarray(sscd.embed([im for _, im in site.photos]))
    nearest = (pack.background @ photos.T).argmax(axis=1)
    assert set(nearest.tolist()) <= set(range(8, 14)) and len(set(nearest.tolist())) == entry["count"]
    assert not work_dir(packs, "local-test").exists()
    r = cli("packs", "list", home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert f"background own: {entry['count']} rows ({SOURCE})" in r.stdout, r.stdout


def test_a_sampled_laion_parquet_gets_its_background_from_rows_outside_its_sample(server, photos_small, tmp_path,
                                                                                  sscd_onnx):
    """The laion-parquet recipe as shipped, `--sample 10` of a parquet of the user's in LAION's column
    layout (URL, TEXT, WIDTH, HEIGHT, similarity, hash as int64, ...; row groups of 7, so the sample
    ends inside one): the background is drawn from the rows after the sample, rows_for(10) of them,
    less the exclusion list's, and fetched through img2dataset; no sampled row is fetched for it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from dataclasses import replace

    from lib_replicheck import embedders
    from lib_replicheck.builder.recipe_background import SOURCE, rows_for
    from lib_replicheck.embedders import EmbedderOptions
    from lib_replicheck.packs.pack import Pack
    from lib_replicheck.registry.parse_recipe import ListFile

    sample, good = 10, photos_small[:16]  # the pack's 10, then 6 photos among 290 dead links
    urls = [server.add(f"/img/{i}-{stem}.jpg", jpeg_bytes(im)) for i, (stem, im) in enumerate(good)]
    urls += [f"{server.url}/gone/{i}.jpg" for i in range(290)]
    order = list(range(sample)) + sorted(range(sample, len(urls)), key=lambda i: (i * 7919) % len(urls))
    urls = [urls[i] for i in order]
    hashes = [1_000_000_007 * (i + 1) - 2**62 for i in range(len(urls))]
    n = len(urls)
    own = tmp_path / "laion-aesthetics-6.5.parquet"
    pq.write_table(pa.table({
        "URL": urls, "TEXT": [f"caption {i}" for i in range(n)],
        "WIDTH": pa.array([480.0] * n), "HEIGHT": pa.array([360.0] * n),
        "similarity": pa.array([0.31] * n), "hash": pa.array(hashes, pa.int64()),
        "punsafe": pa.array([0.01] * n), "pwatermark": pa.array([0.05] * n),
        "AESTHETIC_SCORE": pa.array([6.6] * n)}), own, row_group_size=7)
    # an exclusion list naming one photo outside the sample by URL and another by hash
    outside_photos = [i for i in range(sample, n) if "/img/" in urls[i]]
    by_url, by_hash = outside_photos[0], outside_photos[1]
    excl = f"# removed\n{urls[by_url]}\n{hashes[by_hash]}\n".encode()
    excl_url = server.add("/exclude.txt", excl)
    shipped = next(p for p in registry.load(registry.DEFAULT_REGISTRY).packs if p.name == "laion-parquet")
    recipe = replace(shipped, build={**shipped.build, "download_timeout": 2},
                     exclude=ListFile(urls=(excl_url,), size=len(excl), sha256=hashlib.sha256(excl).hexdigest()))
    logs = []
    res = get_recipe(recipe, tmp_path / "packs", GetOptions(
        list_path=str(own), sample=sample, embedding=EmbedderOptions(runtime="onnx", weights=str(sscd_onnx))),
        policy=FAST, log=logs.append)
    assert (res.listed, res.count) == (sample, sample), res
    assert [r[0] for r in pack_rows(res.path)] == sorted(urls[:sample])

    drawn = rows_for(sample)
    assert drawn < n - sample - 2  # the bound, not the rows left, decides how many are drawn
    assert any(f"{drawn:,} rows of the list outside the pack drawn at random" in line for line in logs), logs
    requested = [p for p, _ in server.log]
    paths = [u.removeprefix(server.url) for u in urls]
    assert all(requested.count(p) == 1 for p in paths[:sample])  # the pack's fetch only
    outside = {p for p in requested if p in set(paths[sample:])}
    assert len(outside) == drawn and all(requested.count(p) == 1 for p in outside)
    assert paths[by_url] not in requested and paths[by_hash] not in requested  # excluded
    fetched = [i for i in outside_photos if paths[i] in outside]
    assert fetched, "no photo outside the sample was drawn"

    pack = Pack(res.path)
    entry = pack.manifest.background
    assert entry["source"] == SOURCE and entry["count"] + entry.get("dropped_as_copies", 0) == len(fetched)
    assert pack.default_background is None and len(pack.background) == entry["count"]
    sscd = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    photos = np.asarray(sscd.embed([im for _, im in good]))
    index_of = {f"/img/{j}-{stem}.jpg": j for j, (stem, _) in enumerate(good)}
    sims = pack.background @ photos.T
    nearest = {int(j) for j in sims.argmax(axis=1)}
    assert nearest == {index_of[paths[i]] for i in fetched} and sims.max(axis=1).min() > 0.9
    pack.close()
