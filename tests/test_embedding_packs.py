"""Packs from published CLIP embeddings (`build --embeddings`): clip-retrieval's and PD12M's layouts,
from a folder or from URLs served on 127.0.0.1, built without fetching an image or running a model.

The vectors are those of the model the manifest names: real photos embedded by replicheck's own CLIP
embedder (ViT-B-32 architecture, random weights: they cannot be fetched here), so a check with the
same embedder must find each photo, among random distractor rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.embedding_layouts import clip_retrieval_folder, distractors, pd12m_folder
from tests.httpfaults import FaultServer

EMBEDDER = "clip:ViT-B-32/random"
PHOTO_ROWS = (17, 150, 230, 299)  # where the photos sit among 300 rows (two files: 200 + 100)


@pytest.fixture(scope="module")
def clip():
    from lib_replicheck.embedders.clip import ClipEmbedder

    return ClipEmbedder("ViT-B-32", pretrained=None)


@pytest.fixture(scope="module")
def rows(clip, photos):
    """300 rows: (vectors, metadata) with the first four photos' real CLIP vectors at PHOTO_ROWS."""
    vectors = distractors(300, clip.dim)
    vectors[list(PHOTO_ROWS)] = clip.embed(photos[:4])
    meta = [{"image_path": f"{i:09d}.jpg", "caption": f"caption {i}", "url": f"https://img.example/{i}.jpg",
             "key": f"{i:09d}", "id": f"id-{i}", "width": 640, "height": 480} for i in range(300)]
    return vectors, meta


def split(rows, at: int = 200):
    vectors, meta = rows
    return [(vectors[:at], meta[:at]), (vectors[at:], meta[at:])]


def checker_for(pack_path: Path, clip):
    from lib_replicheck.checker import Checker
    from lib_replicheck.packs.pack import Pack

    pack = Pack(pack_path)
    checker = Checker([pack])
    checker._embedders[clip.id] = clip  # random weights cannot be re-created from the spec's tag
    return pack, checker


def assert_finds_photos(pack_path: Path, clip, photos):
    pack, checker = checker_for(pack_path, clip)
    for photo, row in zip(photos[:4], PHOTO_ROWS):
        best = checker.check([photo])[0].best
        assert best.url == f"https://img.example/{row}.jpg" and best.similarity > 0.99
    return pack


def test_clip_retrieval_folder_builds_a_pack_that_finds_the_photos(tmp_path, rows, clip, photos, capsys,
                                                                     monkeypatch):
    from lib_replicheck import embedders
    from lib_replicheck.cli.main import main

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded while building from embeddings")

    monkeypatch.setattr(embedders, "load", no_model)

    folder = clip_retrieval_folder(tmp_path / "laion", split(rows))
    assert (folder / "img_emb" / "img_emb_0.npy").is_file() and (folder / "metadata" / "metadata_1.parquet").is_file()
    rc = main(["build", "--embeddings", str(folder), "--out", str(tmp_path / "packs" / "laion-clip"),
               "--embedder", EMBEDDER, "--shard-size", "64", "--progress", "off"])
    assert rc == 0, capsys.readouterr().err
    assert "300 images from published embeddings" in capsys.readouterr().out
    monkeypatch.undo()
    pack = assert_finds_photos(tmp_path / "packs" / "laion-clip", clip, photos)
    manifest = json.loads((pack.path / "manifest.json").read_text())
    assert manifest["embedder"]["id"] == EMBEDDER and manifest["embedder"]["dim"] == 512
    assert manifest["count"] == 300 and manifest["source"]["embeddings"]["layout"] == "clip-retrieval"
    item = pack.metadata.get([PHOTO_ROWS[0]])[PHOTO_ROWS[0]]
    assert item.caption == f"caption {PHOTO_ROWS[0]}" and item.source == f"{PHOTO_ROWS[0]:09d}"
    assert (item.width, item.height) == (640, 480)
    assert not (tmp_path / "packs" / ".laion-clip.work").exists()  # the work folder is removed


def test_pd12m_folder_builds_a_pack_with_its_licenses(tmp_path, rows, clip, photos, capsys):
    from lib_replicheck.cli.main import main

    folder = pd12m_folder(tmp_path / "pd12m", split(rows, 120))
    rc = main(["build", "--embeddings", str(folder), "--out", str(tmp_path / "pd12m-clip"), "--embedder", EMBEDDER,
               "--progress", "off"])
    assert rc == 0, capsys.readouterr().err
    pack = assert_finds_photos(tmp_path / "pd12m-clip", clip, photos)
    _, checker = checker_for(pack.path, clip)
    best = checker.check([photos[0]])[0].best
    assert best.item.license == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert best.item.caption == f"caption {PHOTO_ROWS[0]}"


def test_the_work_folder_holds_the_rows_at_half_their_published_size(tmp_path, rows, clip, photos, capsys):
    """PD12M publishes float32 rows; the build's shards hold them as float16 (a full PD12M build's work
    folder holds 19 GB of them, not 38), which changes a unit row's similarity by under 0.001: each
    photo still finds its own row at 0.999 or more."""
    import numpy as np

    from lib_replicheck.cli.main import main

    folder = pd12m_folder(tmp_path / "pd12m", split(rows, 120))
    work = tmp_path / "work"
    rc = main(["build", "--embeddings", str(folder), "--out", str(tmp_path / "pd12m-clip"), "--embedder", EMBEDDER,
               "--work", str(work), "--keep-work", "--progress", "off"])
    assert rc == 0, capsys.readouterr().err
    source = np.load(folder / "embeddings" / "pd12m.00.npy")
    assert source.dtype == np.float32
    shards = sorted((work / "shards").glob("*.npy"))
    stored = np.concatenate([np.load(p) for p in shards]).reshape(300, -1)
    assert stored.dtype == np.float16 and sum(p.stat().st_size for p in shards) < 0.55 * 300 * source.shape[1] * 4
    unit = rows[0] / np.linalg.norm(rows[0], axis=1, keepdims=True)
    assert np.abs((stored.astype(np.float32) * unit).sum(axis=1) - 1).max() < 1e-3
    pack, checker = checker_for(tmp_path / "pd12m-clip", clip)
    for photo, row in zip(photos[:4], PHOTO_ROWS):
        best = checker.check([photo])[0].best
        assert best.url == f"https://img.example/{row}.jpg" and best.similarity >= 0.999, best


def test_the_model_must_be_named_and_match_the_files(tmp_path, rows, capsys):
    from lib_replicheck.cli.main import main

    folder = pd12m_folder(tmp_path / "pd12m", split(rows))
    assert main(["build", "--embeddings", str(folder), "--out", str(tmp_path / "p")]) == 2
    assert "--embedder clip:MODEL/TAG" in capsys.readouterr().err
    assert main(["build", "--embeddings", str(folder), "--out", str(tmp_path / "p"),
                 "--embedder", "clip:ViT-L-14/openai"]) == 2
    err = capsys.readouterr().err
    assert "512 dimensions but CLIP ViT-L-14 makes 768" in err
    assert not (tmp_path / "p").exists()
    assert main(["build", "--out", str(tmp_path / "p")]) == 2
    assert "give a SOURCE of images, or --embeddings" in capsys.readouterr().err
    assert main(["build", str(folder), "--embeddings", str(folder), "--out", str(tmp_path / "p"),
                 "--embedder", EMBEDDER]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_build_stopped_by_a_bad_file_resumes_from_the_finished_shards(tmp_path, rows, clip, photos):
    import numpy as np

    from lib_replicheck.builder.embedding_source import EmbeddingSourceError, build_from_embeddings
    from lib_replicheck.builder.options import BuildOptions

    folder = pd12m_folder(tmp_path / "pd12m", split(rows))
    good = np.load(folder / "embeddings" / "pd12m.01.npy")
    bad = good.copy()
    bad[50, 3] = np.nan
    np.save(folder / "embeddings" / "pd12m.01.npy", bad)
    opts = BuildOptions(embedder=EMBEDDER, shard_size=50)
    logs: list[str] = []
    with pytest.raises(EmbeddingSourceError, match=r"pd12m\.01\.npy: row 50 is not finite"):
        build_from_embeddings(folder, tmp_path / "pack", opts, log=logs.append)
    assert not (tmp_path / "pack").exists()
    np.save(folder / "embeddings" / "pd12m.01.npy", good)
    logs.clear()
    build_from_embeddings(folder, tmp_path / "pack", opts, log=logs.append)
    read = [line for line in logs if line.startswith("shard ") and " rows of " in line]
    assert sum("kept from an earlier run (pd12m.00.npy" in line for line in logs) == 4
    assert all("pd12m.01.npy" in line for line in read) and len(read) == 2  # only the replaced file again
    assert_finds_photos(tmp_path / "pack", clip, photos)


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def serve(server: FaultServer, folder: Path, prefix: str = "/hub") -> list[str]:
    urls = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            urls.append(server.add(f"{prefix}/{p.relative_to(folder).as_posix()}", p.read_bytes()))
    return urls


def test_a_url_list_is_downloaded_verified_and_built(tmp_path, rows, clip, photos, server, capsys):
    import hashlib

    from lib_replicheck.cli.main import main

    folder = pd12m_folder(tmp_path / "pd12m", split(rows))
    urls = serve(server, folder)
    pinned = hashlib.sha256((folder / "metadata" / "pd12m.00.parquet").read_bytes()).hexdigest()
    lines = [u + (f" {pinned}" if u.endswith("metadata/pd12m.00.parquet") else "") for u in urls]
    listing = tmp_path / "urls.txt"
    listing.write_text("# PD12M, two files\n" + "\n".join(lines) + "\n")
    rc = main(["build", "--embeddings", str(listing), "--out", str(tmp_path / "pack"), "--embedder", EMBEDDER,
               "--progress", "off"])
    assert rc == 0, capsys.readouterr().err
    pack = assert_finds_photos(tmp_path / "pack", clip, photos)
    files = json.loads((pack.path / "manifest.json").read_text())["source"]["embeddings"]["files"]
    by_path = {f["path"]: f for f in files}
    assert by_path["metadata/pd12m.00.parquet"]["sha256"] == pinned
    npy = folder / "embeddings" / "pd12m.01.npy"
    assert by_path["embeddings/pd12m.01.npy"]["sha256"] == hashlib.sha256(npy.read_bytes()).hexdigest()


def test_a_stall_and_a_404_stop_the_build_and_the_next_run_goes_on(tmp_path, rows, clip, photos, server):
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.options import BuildOptions
    from lib_replicheck.download import DownloadError, Policy

    fast = Policy(connect_timeout=2, read_timeout=0.5, retries=1, backoff=0.01)
    folder = pd12m_folder(tmp_path / "pd12m", split(rows))
    urls = serve(server, folder)
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    opts = BuildOptions(embedder=EMBEDDER)
    stalled = "/hub/embeddings/pd12m.01.npy"
    server.routes[stalled].fault, server.routes[stalled].stall = "stall", 2.0
    with pytest.raises(DownloadError, match=r"pd12m\.01\.npy: could not be downloaded"):
        build_from_embeddings(listing, tmp_path / "pack", opts, log=lambda s: None, policy=fast)
    assert not (tmp_path / "pack").exists()
    server.routes[stalled].fault = ""
    listing.write_text("\n".join(urls + [server.url + "/hub/embeddings/pd12m.02.npy"]) + "\n")
    server.log.clear()
    with pytest.raises(DownloadError, match=r"pd12m\.02\.npy.*404"):
        build_from_embeddings(listing, tmp_path / "pack", opts, log=lambda s: None, policy=fast)
    assert "/hub/embeddings/pd12m.00.npy" not in [path for path, _ in server.log]  # kept from the first run
    assert stalled in [path for path, _ in server.log]  # fetched again once it answers
    listing.write_text("\n".join(urls) + "\n")
    server.log.clear()
    build_from_embeddings(listing, tmp_path / "pack", opts, log=lambda s: None, policy=fast)
    assert server.log == []  # every file was there
    assert_finds_photos(tmp_path / "pack", clip, photos)


def shipped_entry(name: str) -> dict:
    from conftest import REPO

    return next(e for e in json.loads((REPO / "registry" / "packs.json").read_text())["packs"] if e["name"] == name)


def test_packs_get_pd12m_clip_sample_1_from_a_local_mirror(tmp_path, server, monkeypatch, capsys):
    """The shipped pd12m-clip recipe, its URLs pointed at a mirror of the hub's layout on 127.0.0.1:
    `--sample 1` fetches the first embedding file and its metadata file only, pins what has no sha256,
    refuses nothing it should accept, and installs a pack of ViT-L-14 rows (768 float32, as published)."""
    import hashlib

    from lib_replicheck.cli.main import main
    from lib_replicheck.packs.pack import Pack

    meta = [{"id": f"id-{i}", "url": f"https://pd12m.example/{i}.jpeg", "caption": f"caption {i}", "width": 800,
             "height": 600} for i in range(150)]
    mirror = pd12m_folder(tmp_path / "mirror", [(distractors(150, 768), meta)])
    entry = shipped_entry("pd12m-clip")
    for f in entry["list"]["files"]:
        path = f["urls"][0].removeprefix("https://huggingface.co")
        f["urls"] = [server.url + path]
        local = mirror / "/".join(path.split("/")[-2:])
        if local.is_file():
            server.add(path, local.read_bytes())
            if "sha256" in f:  # the hub's sha256 of the real file: here the mirror's
                f["sha256"] = hashlib.sha256(local.read_bytes()).hexdigest()
            if path.endswith(".parquet"):
                f["size"] = local.stat().st_size  # a size the registry declares is checked too
    registry = {"format": "replicheck-registry", "format_version": 1, "packs": [entry]}
    url = server.add("/registry.json", json.dumps(registry).encode())
    monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REPLICHECK_REGISTRY", raising=False)
    args = ["packs", "get", "pd12m-clip", "--sample", "1", "--registry", url]
    assert main(args) == 2
    assert "--accept-unpinned" in capsys.readouterr().err  # the metadata files have no published sha256
    assert main(args + ["--accept-unpinned"]) == 0, capsys.readouterr().err
    assert "built pd12m-clip: 150 images in the pack" in capsys.readouterr().out
    fetched = {path for path, _ in server.log if path != "/registry.json"}
    assert {p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in fetched} == {
        "embeddings/pd12m.00.npy", "metadata/pd12m.00.parquet"}
    pack = Pack(tmp_path / "home" / "packs" / "pd12m-clip")
    assert pack.embedder.id == "clip:ViT-L-14/openai" and pack.embedder.dim == 768 and pack.manifest.count == 150
    assert pack.metadata.get([7])[7].url == "https://pd12m.example/7.jpeg"
    pins = json.loads((tmp_path / "home" / "packs" / ".recipe-pins.json").read_text())["pd12m-clip"]
    assert list(pins) == [server.url + next(iter(p for p in fetched if p.endswith(".parquet")))]
    assert not list((tmp_path / "home" / "packs").glob(".pd12m-clip.*"))  # no work folder left


def test_packs_available_lists_the_embedding_recipes(monkeypatch, capsys, tmp_path):
    from lib_replicheck.cli.main import main

    monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REPLICHECK_REGISTRY", raising=False)
    assert main(["packs", "available"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name in ("pd12m-clip", "pd3m-clip", "laion-clip"):
        assert lines[name].split()[1] == "recipe"
    assert "download ~" in lines["pd12m-clip"] and "build" in lines["pd12m-clip"]


def test_a_clip_match_is_a_candidate_never_likely(tmp_path, rows, clip, photos):
    """Even at similarity 1 and with the user's CLIP tiers up to 'duplicate', a match from a CLIP pack
    is at most a possible copy, and reads as unverified in the text, the JSON and the summary (the
    words the panel's infotext carries)."""
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.options import BuildOptions
    from lib_replicheck.cli.text import format_report
    from lib_replicheck.thresholds import Verdict, with_overrides

    folder = clip_retrieval_folder(tmp_path / "laion", split(rows))
    build_from_embeddings(folder, tmp_path / "laion-clip", BuildOptions(embedder=EMBEDDER), log=lambda s: None)
    _, checker = checker_for(tmp_path / "laion-clip", clip)
    tiers = with_overrides(["clip.possible=0.9", "clip.likely=0.95", "clip.duplicate=0.99"])
    report = checker.check([photos[0]], tiers=tiers)[0]
    assert report.best.similarity > 0.99 and report.verdict is Verdict.POSSIBLE and report.is_copy
    label = f"possible copy (unverified: CLIP {report.best.score_label()})"
    assert report.best.verdict_text() == label
    assert report.summary() == f"{label[:-1]} in laion-clip)"
    assert label in format_report(report).splitlines()[1]
    best = report.to_dict()["best"]
    assert best["verdict"] == "possible copy" and best["unverified"] and best["verdict_text"] == label
    assert not any(m.verdict is Verdict.LIKELY or m.verdict is Verdict.DUPLICATE for m in report.matches)
    assert checker.check([photos[0]])[0].verdict is Verdict.NONE  # no default CLIP tiers


def test_reads_that_do_not_line_up_with_shards_keep_rows_and_metadata_together(tmp_path, rows, clip, photos,
                                                                             monkeypatch):
    """Rows are read 7 at a time into shards of 50, and a build resumes with two shards missing from
    the middle of a file: every pack row still holds its own vector and metadata."""
    from lib_replicheck.builder import embedding_source
    from lib_replicheck.builder.options import BuildOptions
    from lib_replicheck.builder.shards import ShardStore

    monkeypatch.setattr(embedding_source, "READ_ROWS", 7)
    folder = pd12m_folder(tmp_path / "pd12m", split(rows))
    opts = BuildOptions(embedder=EMBEDDER, shard_size=50)
    work = tmp_path / "work"
    embedding_source.build_from_embeddings(folder, tmp_path / "first", opts, work=work, keep_work=True,
                                           log=lambda s: None)
    store = ShardStore(work)
    store.discard(1)
    store.discard(2)  # rows 50 to 149 of pd12m.00.npy, as if the build had been killed there
    logs: list[str] = []
    embedding_source.build_from_embeddings(folder, tmp_path / "pack", opts, work=work, log=logs.append)
    assert [line.split(":")[0] for line in logs if line.startswith("shard ") and " rows of " in line] == [
        "shard 00001", "shard 00002"]
    pack = assert_finds_photos(tmp_path / "pack", clip, photos)
    items = pack.metadata.get(list(range(300)))
    assert [items[k].url for k in range(300)] == [f"https://img.example/{k}.jpg" for k in range(300)]


def test_a_clip_pack_says_verification_judges_its_candidates_against_the_default_background(tmp_path, capsys):
    """A CLIP pack has no background of its own, and none is needed: its matches are candidates, and
    online verification judges a fetched candidate's regions against the default SSCD background.
    `packs list` and the tab's table say so (one rule, packs/info.py), not a bare 'none'."""
    from lib_replicheck.cli.main import main
    from lib_replicheck.webui.pack_jobs import PackManager
    from lib_replicheck.webui.tab import PacksTab

    vectors = distractors(40, 512)
    meta = [{"image_path": f"{i:09d}.jpg", "caption": f"caption {i}", "url": f"https://img.example/{i}.jpg",
             "key": f"{i:09d}", "id": f"id-{i}", "width": 64, "height": 64} for i in range(40)]
    folder = pd12m_folder(tmp_path / "pd12m", [(vectors, meta)])
    packs = tmp_path / "packs"
    assert main(["build", "--embeddings", str(folder), "--out", str(packs / "pd12m-clip"), "--embedder", EMBEDDER,
                 "--progress", "off"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    said = "none (CLIP candidates; verifying them online judges regions against default: sscd_disc_mixup)"
    assert main(["packs", "list", "--packs-dir", str(packs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("pd12m-clip "))
    assert lines[at + 1].split() == ["background", *said.split()]
    assert main(["packs", "list", "--packs-dir", str(packs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["background"] == said
    page = PacksTab(None, PackManager(packs, tmp_path / "models", lambda: []), None).page()
    assert f"<td>{said}</td>" in page
