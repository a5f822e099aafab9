"""The embedding recipes as a user meets them: `packs available` with their sizes and times (from
bench/embedding_build.py's figures in the shipped registry), `packs get pd12m-clip --sample 1` from
a mirror of the hub's layout on 127.0.0.1 named by $REPLICHECK_HF_MIRROR, and the web UI tab's
Build for such a recipe, which offers the choices it needs (files without a published sha256, a
sample of the files) instead of sending the user to the command line."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.embedding_layouts import distractors, pd12m_folder


def test_packs_available_gives_download_disk_and_time_of_each_embedding_recipe(monkeypatch, capsys, tmp_path):
    from lib_replicheck.cli.main import main

    monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REPLICHECK_REGISTRY", raising=False)
    assert main(["packs", "available"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    # 12.4M and 3.3M rows at bench/embedding_build.py's 1,049 bytes per row and 462 rows/s
    assert "download ~40.5 GB" in lines["pd12m-clip"] and "pack ~13.0 GB on disk" in lines["pd12m-clip"]
    assert "~7.5 h on CPU (build from local files)" in lines["pd12m-clip"]
    assert "download ~10.8 GB" in lines["pd3m-clip"] and "pack ~3.5 GB on disk" in lines["pd3m-clip"]
    assert "~2.0 h on CPU" in lines["pd3m-clip"]
    assert "per 1,000,000 rows: ~36 min on CPU, pack ~1.05 GB on disk" in lines["laion-clip"]


# -- pd12m-clip from a local mirror of the hub ($HF_ENDPOINT) -------------------------------------------

ROWS = 150


def shipped_entry(name: str) -> dict:
    from conftest import REPO

    return next(e for e in json.loads((REPO / "registry" / "packs.json").read_text())["packs"] if e["name"] == name)


def mirror_of_pd12m(tmp_path, server):
    """The hub's layout of PD12M's first file pair, served on 127.0.0.1 under the hub's own paths, and a
    registry file holding the shipped pd12m-clip entry as it is, except the sha256 (and size) of what
    the mirror serves: its files are random rows, not Spawning's, so the hub's digests cannot match."""
    import hashlib

    meta = [{"id": f"id-{i}", "url": f"https://pd12m.example/{i}.jpeg", "caption": f"caption {i}", "width": 800,
             "height": 600} for i in range(ROWS)]
    folder = pd12m_folder(tmp_path / "mirror", [(distractors(ROWS, 768), meta)])
    entry = shipped_entry("pd12m-clip")
    for f in entry["list"]["files"]:
        path = f["urls"][0].removeprefix("https://huggingface.co")
        local = folder / "/".join(path.split("/")[-2:])
        if local.is_file():
            server.add(path, local.read_bytes())
            if "sha256" in f:
                f["sha256"] = hashlib.sha256(local.read_bytes()).hexdigest()
            if "size" in f:
                f["size"] = local.stat().st_size
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"format": "replicheck-registry", "format_version": 1, "packs": [entry]}))
    return registry


def assert_built_from_the_mirror(packs_dir, server):
    from lib_replicheck.packs.pack import Pack

    fetched = sorted("/".join(path.split("/")[-2:]) for path, _ in server.log)
    assert fetched == ["embeddings/pd12m.00.npy", "metadata/pd12m.00.parquet"]  # --sample 1, nothing else
    assert all(path.startswith("/datasets/Spawning/PD12M/resolve/") for path, _ in server.log)
    pack = Pack(packs_dir / "pd12m-clip")
    assert pack.embedder.id == "clip:ViT-L-14/openai" and pack.embedder.dim == 768 and pack.manifest.count == ROWS
    assert pack.metadata.get([7])[7].url == "https://pd12m.example/7.jpeg"
    pins = json.loads((packs_dir / ".recipe-pins.json").read_text())["pd12m-clip"]
    assert list(pins) == [shipped_entry("pd12m-clip")["list"]["files"][1]["urls"][0]]  # keyed by the hub's URL
    assert not list(packs_dir.glob(".pd12m-clip.*"))  # no work folder left
    pack.close()


def test_packs_get_pd12m_clip_sample_1_from_a_mirror_named_by_hf_endpoint(tmp_path, monkeypatch, capsys):
    from lib_replicheck.cli.main import main
    from tests.httpfaults import FaultServer

    server = FaultServer()
    try:
        registry = mirror_of_pd12m(tmp_path, server)
        monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
        monkeypatch.delenv("REPLICHECK_REGISTRY", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", server.url + "/")
        args = ["packs", "get", "pd12m-clip", "--sample", "1", "--registry", str(registry), "--progress", "off"]
        assert main(args) == 2
        assert "--accept-unpinned" in capsys.readouterr().err  # the metadata files have no published sha256
        assert server.log == []
        assert main(args + ["--accept-unpinned"]) == 0, capsys.readouterr().err
        assert f"built pd12m-clip: {ROWS} images in the pack" in capsys.readouterr().out
        assert_built_from_the_mirror(tmp_path / "home" / "packs", server)
    finally:
        server.close()


def test_an_hf_endpoint_that_is_no_url_is_refused_by_name(tmp_path, monkeypatch, capsys):
    from lib_replicheck.cli.main import main

    monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_ENDPOINT", "file:///etc")
    assert main(["packs", "get", "pd12m-clip", "--sample", "1", "--accept-unpinned", "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert "$HF_ENDPOINT='file:///etc': not the http(s) URL of a mirror" in err
    assert not (tmp_path / "home" / "packs" / "pd12m-clip").exists()


@pytest.fixture
def webui_mirror(webui, tmp_path, monkeypatch):
    """The web UI reading a registry of pd12m-clip whose files come from a mirror on 127.0.0.1 (the
    server, yielded); afterwards the pack, its pins and the registry setting are gone again."""
    from tests.httpfaults import FaultServer

    m = webui.module
    server = FaultServer()
    try:
        registry = mirror_of_pd12m(tmp_path, server)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        webui.set_option("replicheck_registries", str(registry))
        m.manager.available, m.manager.refreshed = [], None
        m.manager.jobs.pop("pd12m-clip", None)  # an earlier test's build
        yield server
    finally:
        server.close()
        webui.set_option("replicheck_registries", "")
        m.manager.available, m.manager.refreshed = [], None
        m.manager.jobs.pop("pd12m-clip", None)
        shutil.rmtree(webui.packs_dir / "pd12m-clip", ignore_errors=True)
        (webui.packs_dir / ".recipe-pins.json").unlink(missing_ok=True)
        m.service.packs_changed()


def test_the_tabs_build_offers_the_choices_an_embedding_recipe_needs(webui, webui_mirror):
    """Build in the web UI's tab on pd12m-clip: without the choice its unpinned files need, the tab names
    its own checkbox (not the command line); ticked, with a sample of 1 file, the recipe is built from
    the mirror in the background and installed."""
    m, server = webui.module, webui_mirror
    m.packs_tab.refresh()
    assert "recipe: Build, accepting files without a published sha256" in m.packs_tab.page()
    _, msg = m.packs_tab.build_recipe("pd12m-clip")
    assert "Accept files without a published sha256: pd12m-clip: some of its files" in msg
    assert "command line" not in msg
    assert server.log == [] and "pd12m-clip" not in m.manager.jobs
    _, msg = m.packs_tab.build_recipe("pd12m-clip", True, -3, "")
    assert "Sample" in msg and "rc-error-text" in msg
    _, msg = m.packs_tab.build_recipe("pd12m-clip", True, 1, "")
    assert "Building pd12m-clip here: downloading its embedding files" in msg
    final = m.manager.wait("pd12m-clip", timeout=600)
    assert final.state == "installed", final.error
    assert_built_from_the_mirror(webui.packs_dir, server)
    assert "pd12m-clip" in m.packs_tab.names()


def test_the_download_route_builds_with_the_choices_in_its_body(webui, webui_mirror):
    """POST /replicheck/v1/packs/pd12m-clip/download over real HTTP, with the tab's choices in its JSON
    body: without accepting its unpinned files, a 422 naming the field and nothing fetched; with them
    and a sample of 1 file, the recipe is built from the mirror, only the first file pair fetched (the
    mirror serves no other: a build of every file would fail), and installed."""
    import httpx

    from browser import serve

    m, server = webui.module, webui_mirror
    route, panel = "/replicheck/v1/packs/pd12m-clip/download", {"X-Replicheck-Request": "1"}
    with serve(webui.app) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.post(route, json={"sample": 1}, headers=panel)
        assert r.status_code == 422 and r.json()["detail"].startswith("field 'accept_unpinned': pd12m-clip: "), r.text
        assert server.log == [] and "pd12m-clip" not in m.manager.jobs
        r = client.post(route, json={"accept_unpinned": True, "sample": 1, "list_path": None}, headers=panel)
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == "recipe" and r.json()["name"] == "pd12m-clip"
        final = m.manager.wait("pd12m-clip", timeout=600)
        assert final.state == "installed", final.error
        job = next(j for j in client.get("/replicheck/v1/downloads").json() if j["name"] == "pd12m-clip")
        assert job["state"] == "installed" and f"{ROWS:,} images in the pack" in job["message"], job
    assert_built_from_the_mirror(webui.packs_dir, server)
