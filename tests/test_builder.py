"""The pack builder: webdataset shards, a LAION-style parquet downloaded by img2dataset from a real
HTTP server on 127.0.0.1 (with broken rows), exclusion lists, Ray, resuming a killed build, corrupt
shards, and the index chosen and tuned for the vector count."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, edits, jpeg_bytes, webdataset_tar
from httpfaults import FaultServer
from lib_replicheck.builder.options import BuildOptions
from lib_replicheck.builder.pipeline import build
from lib_replicheck.builder import index_factory as fac
from lib_replicheck.builder.shards import ShardStore
from lib_replicheck.checker import Checker
from lib_replicheck.errors import PackError
from lib_replicheck.images import load_image
from lib_replicheck.packs.pack import Pack


@pytest.fixture(scope="module")
def photos_small(pack_photos):
    out = []
    for p in pack_photos[:10]:
        im = load_image(p)
        im.thumbnail((640, 640))
        out.append((p.stem, im))
    return out


def _opts(**kw) -> BuildOptions:
    kw.setdefault("embedder", "pdq")
    kw.setdefault("shard_size", 4)
    return BuildOptions(**kw)


def test_webdataset_shards(tmp_path, photos_small):
    shards = tmp_path / "wds"
    shards.mkdir()
    for s in range(2):
        samples = []
        for i, (stem, im) in enumerate(photos_small[s * 5:(s + 1) * 5]):
            key = f"{s:05d}{i:04d}"
            meta = {"url": f"https://example.org/{stem}.jpg", "caption": f"caption {stem}", "hash": f"h{stem}"}
            samples.append((key, {"jpg": jpeg_bytes(im), "txt": f"caption {stem}".encode(), "json": json.dumps(meta).encode()}))
        samples.append((f"{s:05d}9999", {"jpg": b"this is not a jpeg", "txt": b"broken"}))
        samples.append((f"{s:05d}9998", {"json": b'{"status": "failed_to_download"}'}))  # no image: not a sample
        webdataset_tar(shards / f"{s:05d}.tar", samples)
    report = build(shards, tmp_path / "pack", _opts(), log=lambda s: None)
    assert report.count == 10 and report.vectors == 50
    assert sorted(s.split(":")[0] for s in report.skipped) == ["00000.tar/000009999", "00001.tar/000019999"]
    pack = Pack(report.path)
    assert pack.manifest.index["type"] == "BFlat" and pack.manifest.index["recall_at_10"] == 1.0
    stem, im = photos_small[7]
    r = Checker([pack]).check([edits(im)["JPEG q=30"]])[0]
    assert r.is_copy and r.best.url == f"https://example.org/{stem}.jpg" and r.best.caption == f"caption {stem}"
    assert r.best.source == "00001.tar/000010002"


@pytest.fixture
def laion(tmp_path, photos_small):
    """A LAION-style parquet whose URLs point at a real HTTP server: 8 good rows, and a 404, a stalled
    server, a text file and a 400-megapixel image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    server = FaultServer()
    rows = []
    for stem, im in photos_small[:8]:
        rows.append((server.add(f"/img/{stem}.jpg", jpeg_bytes(im)), f"a photo of {stem}", f"hash-{stem}"))
    rows.append((server.url + "/img/missing.jpg", "gone", "hash-404"))
    rows.append((server.add("/img/slow.jpg", jpeg_bytes(photos_small[8][1]), "stall", stall=6), "slow", "hash-slow"))
    rows.append((server.add("/img/notes.jpg", b"just some text, not an image at all" * 20), "text", "hash-text"))
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    rows.append((server.add("/img/huge.png", bomb.getvalue()), "huge", "hash-huge"))
    table = pa.table({"URL": [r[0] for r in rows], "TEXT": [r[1] for r in rows], "hash": [r[2] for r in rows],
                      "WIDTH": [640] * len(rows), "HEIGHT": [480] * len(rows)})
    path = tmp_path / "laion.parquet"
    pq.write_table(table, path)
    yield path, server, photos_small
    server.close()


def test_laion_parquet_through_img2dataset(laion, tmp_path):
    parquet, server, photos = laion
    excl = tmp_path / "exclude.txt"
    excl.write_text(f"# opt-outs\n{server.url}/img/{photos[2][0]}.jpg\nhash-{photos[5][0]}\n")
    logs = []
    report = build(parquet, tmp_path / "laion-pack", _opts(exclude=str(excl), download_timeout=2),
                   log=logs.append)
    requested = {p for p, _ in server.log}
    assert f"/img/{photos[2][0]}.jpg" not in requested and f"/img/{photos[5][0]}.jpg" not in requested
    assert any("2 of 12 rows dropped before downloading" in line for line in logs)
    assert report.count == 6  # 8 good rows less the 2 excluded
    assert any("img2dataset:" in line and "rows failed" in line for line in logs)
    pack = Pack(report.path)
    stem, im = photos[0]
    r = Checker([pack]).check([edits(im)["resized 0.5x"]])[0]
    assert r.is_copy and r.best.caption == f"a photo of {stem}" and r.best.url.endswith(f"/img/{stem}.jpg")
    urls = {pack.metadata.get([i])[i].url for i in range(pack.manifest.count)}
    assert not any(u.endswith(("missing.jpg", "slow.jpg", "notes.jpg", "huge.png")) for u in urls)


def test_build_parquet_fetches_through_the_bounded_process(tmp_path, photos_small):
    """`build FILE.parquet` on the command line fetches its images as a recipe does: in a process of
    its own, through the bounded request (an endless body is cut at MAX_IMAGE_BYTES, a server trickling
    a byte now and then at 3 x --download-timeout), not img2dataset's own unbounded download."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lib_replicheck.builder.fetch_http import MAX_IMAGE_BYTES

    server = FaultServer()
    try:
        urls = [server.add(f"/img/{stem}.jpg", jpeg_bytes(im)) for stem, im in photos_small[:3]]
        urls.append(server.add("/endless.jpg", b"\xff\xd8" + b"\0" * 1024**2, "endless", limit=64 * 1024**2))
        urls.append(server.add("/trickle.jpg", jpeg_bytes(photos_small[3][1])[:400], "trickle", stall=0.5))
        path = tmp_path / "list.parquet"
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"row {i}" for i in range(len(urls))]}), path)
        out = tmp_path / "pack"
        r = subprocess.run([sys.executable, "-m", "lib_replicheck", "build", str(path), "--out", str(out), "--embedder",
                            "pdq", "--download-timeout", "1", "--progress", "off"], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert f"larger than {MAX_IMAGE_BYTES} bytes: 1" in r.stderr and "timed out (3 s in all): 1" in r.stderr, r.stderr
    assert "fetch: 0 of 5 rows done" in r.stderr and "Traceback" not in r.stderr  # the fetch says it started
    pack = Pack(out)
    assert pack.manifest.count == 3
    assert sorted(pack.metadata.get([i])[i].url for i in range(3)) == sorted(urls[:3])
    assert not list(tmp_path.glob(".pack.work*"))  # the work folder (rows, fetched shards) is removed


def test_ray_two_workers_match_sequential(tmp_path, photos_small):
    src = tmp_path / "src"
    src.mkdir()
    for stem, im in photos_small:
        im.save(src / f"{stem}.jpg")
    seq = build(src, tmp_path / "seq", _opts(), work=tmp_path / "w1", keep_work=True, log=lambda s: None)
    par = build(src, tmp_path / "ray", _opts(ray=True, workers=2), work=tmp_path / "w2", keep_work=True,
                log=lambda s: None)
    a, b = ShardStore(tmp_path / "w1"), ShardStore(tmp_path / "w2")
    assert a.indices() == b.indices() == [0, 1, 2]
    for i in a.indices():
        va, ma = a.read(i)
        vb, mb = b.read(i)
        assert np.array_equal(np.asarray(va), np.asarray(vb)) and ma == mb
    assert seq.count == par.count == 10
    assert (tmp_path / "seq" / "index.faiss").read_bytes() == (tmp_path / "ray" / "index.faiss").read_bytes()


KILLER = """
import os, sys
sys.path.insert(0, {repo!r})
import lib_replicheck.builder.embed as e
import lib_replicheck.builder.options as o
import lib_replicheck.builder.pipeline as p
real, calls = e.embed_items, []


def embed_then_die(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os._exit(9)  # dies like a killed process: no cleanup, no finally blocks
    return real(*args, **kwargs)


e.embed_items = embed_then_die
p.build({src!r}, {out!r}, o.BuildOptions(embedder="pdq", shard_size=2), work={work!r})
"""


def test_killed_build_resumes_to_the_same_pack(tmp_path, photos_small):
    src = tmp_path / "src"
    src.mkdir()
    for stem, im in photos_small:
        im.save(src / f"{stem}.jpg")
    whole = build(src, tmp_path / "whole", _opts(shard_size=2), log=lambda s: None)
    work, out = tmp_path / "work", tmp_path / "resumed"
    code = KILLER.format(repo=str(REPO), src=str(src), out=str(out), work=str(work))
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9
    store = ShardStore(work)
    assert store.indices() == [0, 1] and not out.exists()  # two shards done, the third was being embedded
    # a corrupt shard left behind is detected and embedded again
    (store.dir / "00001.npy").write_bytes(b"\x93NUMPY garbage")
    cmd = [sys.executable, "-m", "lib_replicheck", "build", str(src), "--out", str(out), "--embedder", "pdq",
           "--shard-size", "2", "--work", str(work), "--no-thumbnails"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stderr and "shard 00001.npy: cannot be read" in r.stderr
    assert Pack(whole.path).manifest.count == Pack(out).manifest.count == 10
    for name in ("index.faiss", "metadata.sqlite"):
        assert (tmp_path / "whole" / name).read_bytes() == (out / name).read_bytes()
    assert not work.exists()  # removed once the pack is built


def test_index_choice_follows_the_vector_count():
    assert fac.choose(500, 512, "cosine").factory == "Flat"
    assert fac.choose(300_000, 512, "cosine").factory == "IVF2048,Flat"
    assert fac.choose(1_000_000, 512, "cosine").factory == "IVF4096_HNSW32,Flat"  # 2 GB fit 4 GB
    assert fac.choose(1_000_000, 512, "cosine", memory_budget=1 * fac.GB).design == "sq8"  # they do not fit 1 GB
    big = fac.choose(12_000_000, 512, "cosine", memory_budget=1 * fac.GB, design="pq-rerank")
    assert big.factory == "OPQ64_512,IVF16384_HNSW32,PQ64x8"  # 64 bytes a vector fit 1 GB
    assert fac.choose(12_000_000, 512, "cosine", design="pq-rerank").factory == "IVF16384_HNSW32,PQ256x8"  # no OPQ
    assert fac.choose(5_000_000, 256, "hamming").factory.startswith("BIVF")


def test_tuning_keeps_the_latency_budget():
    """As autofaiss: the fastest setting reaching the recall target within the latency budget; when the
    target needs more time than the budget, the most accurate setting within it; when nothing is that
    fast, the fastest."""
    tried = [{"params": {"nprobe": p}, "recall_at_10": r, "query_ms": ms}
             for p, r, ms in ((1, 0.60, 0.5), (2, 0.80, 1.0), (4, 0.93, 2.0), (8, 0.96, 4.0), (16, 0.99, 8.0))]
    assert fac.pick(tried, 0.95, 10.0)["params"] == {"nprobe": 8}  # fastest reaching 0.95
    assert fac.pick(tried, 0.95, None)["params"] == {"nprobe": 8}
    assert fac.pick(tried, 0.95, 3.0)["params"] == {"nprobe": 4}  # 0.95 needs 4 ms: best within 3 ms
    assert fac.pick(tried, 0.95, 0.1)["params"] == {"nprobe": 1}  # nothing within 0.1 ms: fastest
    assert fac.pick(tried, 0.999, 100.0)["params"] == {"nprobe": 16}  # target unreachable: most accurate
    # a setting that finds the unrelated neighbours but misses copies has not reached the target
    for m, found in zip(tried, (0.5, 0.6, 0.7, 0.8, 0.97)):
        m["copies_found"] = found
    assert fac.pick(tried, 0.95, 10.0)["params"] == {"nprobe": 16}
    assert fac.pick(tried, 0.95, 5.0)["params"] == {"nprobe": 8}


def test_index_stage_records_a_missed_latency_budget(tmp_path):
    """A budget no search can keep (1 microsecond) still gives a working pack: the fastest setting is
    kept, the build log warns, and the manifest records what the index was tuned for."""
    from lib_replicheck.builder.stages import index_stage
    from lib_replicheck.embedders import sscd

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 512)).astype("float32")
    store = ShardStore(tmp_path / "work")
    for s in range(2):
        v = centres[rng.integers(0, 50, 60_000)] + 0.6 * rng.standard_normal((60_000, 512)).astype("float32")
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.write(s, v[:, None, :], [{"key": f"{s}-{i}"} for i in range(60_000)], [])
    logs = []
    info, _, _ = index_stage(store, sscd.spec_for("sscd_disc_mixup"), tmp_path, _opts(embedder="sscd", max_query_ms=0.001),
                             logs.append)
    assert info["type"].startswith("IVF") and info["search_params"]["nprobe"] == 1
    assert info["tuned_for"] == {"recall_at_10": 0.95, "max_query_ms": 0.001}
    assert ("no search setting reaches recall@10 0.95 and finds 99.9% of the edited-copy stand-ins first within "
            "0.001 ms a query; kept the fastest") in "\n".join(logs)


def test_ivf_pack_is_tuned_and_memory_mapped(tmp_path):
    """150k clustered synthetic 512-d vectors (stand-ins for SSCD descriptors): an IVF index, nprobe
    tuned to recall@10 >= 0.95, recorded in the manifest with the share of copies it finds, applied
    and memory-mapped on load."""
    from lib_replicheck.builder.stages import index_stage, metadata_stage
    from lib_replicheck.embedders import sscd
    from lib_replicheck.packs.publish import seal, staging_dir

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, 512)).astype("float32")
    store = ShardStore(tmp_path / "work")
    for s in range(3):
        v = centres[rng.integers(0, 300, 50_000)] + 0.6 * rng.standard_normal((50_000, 512)).astype("float32")
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.write(s, v[:, None, :], [{"key": f"{s}-{i}"} for i in range(50_000)], [])
    spec = sscd.spec_for("sscd_disc_mixup")
    tmp = staging_dir(tmp_path / "synthetic")
    info, count, vectors = index_stage(store, spec, tmp, _opts(embedder="sscd"), lambda s: None)
    metadata_stage(store, tmp)
    seal(tmp, tmp_path / "synthetic", name="synthetic", title=None, description="", source={}, spec=spec,
         count=count, vectors=vectors, index=info)
    assert info["type"].startswith("IVF") and info["recall_at_10"] >= 0.95 and info["search_params"]["nprobe"] >= 1
    assert info["copies_found"] >= 0.95  # stand-ins for edited copies at similarity 0.5 find their original
    pack = Pack(tmp_path / "synthetic")
    import faiss

    assert faiss.extract_index_ivf(pack.index).nprobe == info["search_params"]["nprobe"]
    assert str(tmp_path / "synthetic" / "index.faiss") in open("/proc/self/maps").read()
    hits = pack.search(np.load(store.dir / "00001.npy", mmap_mode="r")[:5, 0], k=1)
    assert [h[0].item.source for h in hits] == [f"1-{i}" for i in range(5)]


def test_compressed_pack_reranks_candidates_exactly(tmp_path, monkeypatch):
    """The re-ranking design, named, with a memory budget too small for uncompressed vectors: an IVF-PQ
    index whose candidates are re-ranked from float16 vectors on disk (read row by row), which lifts recall@10 from what PQ alone
    reaches to the target, and similarities come out exact."""
    import faiss

    from lib_replicheck.builder.stages import index_stage, metadata_stage
    from lib_replicheck.embedders import sscd
    from lib_replicheck.packs.publish import seal, staging_dir
    from lib_replicheck.packs.rerank import RERANK_FILE

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((100, 512)).astype("float32")
    store = ShardStore(tmp_path / "work")
    for s in range(3):
        v = centres[rng.integers(0, 100, 10_000)] + 0.6 * rng.standard_normal((10_000, 512)).astype("float32")
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.write(s, v[:, None, :], [{"key": f"{s}-{i}"} for i in range(10_000)], [])
    spec = sscd.spec_for("sscd_disc_mixup")
    tmp = staging_dir(tmp_path / "pq")
    logs = []
    # a latency budget no busy machine misses: the tuner then picks its search settings for recall alone
    info, count, vectors = index_stage(store, spec, tmp, _opts(embedder="sscd", memory_budget=5 * 1024**2,
                                                                 index_design="pq-rerank", max_query_ms=1000.0),
                                       logs.append)
    metadata_stage(store, tmp)
    seal(tmp, tmp_path / "pq", name="pq", title=None, description="", source={}, spec=spec,
         count=count, vectors=vectors, index=info)
    assert info["type"] == "IVF512,PQ128x8" and "float16 vectors on disk" in "\n".join(logs)
    assert info["rerank"]["file"] == RERANK_FILE and info["recall_at_10"] >= 0.95
    from lib_replicheck.packs import index_search

    monkeypatch.setattr(index_search, "MMAP_MIN_BYTES", 1)  # map this small index as a large one would be
    pack = Pack(tmp_path / "pq")
    assert RERANK_FILE in {f.path for f in pack.manifest.files}
    maps = open("/proc/self/maps").read()  # the index is mapped; the re-ranking rows are read, not mapped
    assert str(tmp_path / "pq" / "index.faiss") in maps and str(tmp_path / "pq" / RERANK_FILE) not in maps

    queries = np.ascontiguousarray(np.load(store.dir / "00002.npy", mmap_mode="r")[:100, 0])
    exact = faiss.IndexFlatIP(512)
    for s in range(3):
        exact.add(np.ascontiguousarray(np.load(store.dir / f"{s:05d}.npy")[:, 0]))
    true_sim, truth = exact.search(queries, 10)
    _, pq_only = pack.index.search(queries, 10)
    hits = pack.search(queries, k=10)
    found = [[h.item.id for h in row] for row in hits]
    assert fac.recall_at(found, truth) >= 0.95 > fac.recall_at(pq_only, truth) + 0.2
    assert [row[0].item.source for row in hits] == [f"2-{i}" for i in range(100)]
    got = np.array([[h.similarity for h in row] for row in hits])
    assert np.abs(got[:, 0] - true_sim[:, 0]).max() < 2e-3  # float16 rows: exact to about 1e-3
    pack.close()

    # a re-ranking file that does not match the manifest is refused on opening
    np.save(tmp_path / "pq" / RERANK_FILE, np.zeros((count - 1, 512), dtype=np.float16))
    m = json.loads((tmp_path / "pq" / "manifest.json").read_text())
    for f in m["files"]:
        if f["path"] == RERANK_FILE:
            f["size"] = (tmp_path / "pq" / RERANK_FILE).stat().st_size
    (tmp_path / "pq" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackError, match="re-ranking file"):
        Pack(tmp_path / "pq")


def _cli_build(src, out, *extra):
    cmd = [sys.executable, "-m", "lib_replicheck", "build", str(src), "--out", str(out), "--embedder", "pdq",
           "--shard-size", "2", "--no-thumbnails", *map(str, extra)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def _folder(path, images):
    path.mkdir()
    for j, (_, im) in enumerate(images):
        im.save(path / f"img{j}.jpg")  # the same file names in every folder: only the images differ
    return path


def test_build_after_another_source_does_not_reuse_its_shards(tmp_path, photos_small):
    """Folder A built with --keep-work, then folder B (same file names, other images) into the same
    --out with --force: the default work folder's shards came from A, so they are discarded with a
    log line and the pack holds B's images only, exactly as a fresh build of B."""
    a = _folder(tmp_path / "a", photos_small[:5])
    b = _folder(tmp_path / "b", photos_small[5:])
    out = tmp_path / "packs" / "mine"
    r = _cli_build(a, out, "--keep-work")
    assert r.returncode == 0, r.stderr
    r = _cli_build(b, out, "--force")
    assert r.returncode == 0, r.stderr
    assert "were embedded for another build" in r.stderr and "resuming" not in r.stderr
    fresh = _cli_build(b, tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr
    for name in ("index.faiss", "metadata.sqlite"):
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    assert not (tmp_path / "packs" / ".mine.work").exists()


def test_explicit_work_folder_of_another_build_is_refused(tmp_path, photos_small):
    """A work folder the user named (--work) may hold days of embedding: one left by another source
    or other options is refused with a message naming it and what differs, and left as it was."""
    a = _folder(tmp_path / "a", photos_small[:5])
    b = _folder(tmp_path / "b", photos_small[5:])
    work = tmp_path / "work"
    r = _cli_build(a, tmp_path / "pa", "--work", work, "--keep-work")
    assert r.returncode == 0, r.stderr
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (work / "shards").iterdir())
    r = _cli_build(b, tmp_path / "pb", "--work", work)
    assert r.returncode == 2 and not (tmp_path / "pb").exists()
    assert f"work folder {work} holds shards of another build (its source differs)" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (work / "shards").iterdir()) == before
    # other options are named too: the embedder's shards do not fit a build with a different license
    r = _cli_build(a, tmp_path / "pc", "--work", work, "--license", "CC0-1.0")
    assert r.returncode == 2 and "(its options differ: license)" in r.stderr
    # the same source and options resume from it
    r = _cli_build(a, tmp_path / "pa2", "--work", work)
    assert r.returncode == 0 and "resuming from" in r.stderr, r.stderr


def test_changed_images_are_embedded_again_on_resume(tmp_path, photos_small):
    """Resuming from the same folder after one of its images was replaced: the shard holding it no
    longer matches its images and is embedded again; the pack equals a fresh build."""
    src = _folder(tmp_path / "src", photos_small[:6])
    work = tmp_path / "work"
    r = _cli_build(src, tmp_path / "first", "--work", work, "--keep-work")
    assert r.returncode == 0, r.stderr
    photos_small[8][1].save(src / "img3.jpg")  # in the second shard (rows 2 and 3)
    r = _cli_build(src, tmp_path / "second", "--work", work, "--keep-work")
    assert r.returncode == 0, r.stderr
    assert "shard 00001: its images changed since it was embedded: embedding it again" in r.stderr
    assert "shard 00000:" not in r.stderr and "shard 00002:" not in r.stderr  # the others are reused
    fresh = _cli_build(src, tmp_path / "fresh")
    for name in ("index.faiss", "metadata.sqlite"):
        assert (tmp_path / "second" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    # two images fewer: the last shard is past the source's end and is not indexed
    (src / "img4.jpg").unlink()
    (src / "img5.jpg").unlink()
    r = _cli_build(src, tmp_path / "third", "--work", work)
    assert r.returncode == 0 and "shard 00002: past the end of the source: dropped" in r.stderr, r.stderr
    assert Pack(tmp_path / "third").manifest.count == 4


PUBLISH_KILLED = """
import os, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from lib_replicheck.packs import publish as pp
if {no_exchange!r}:
    pp._exchange = lambda a, b: False  # as on a kernel or file system without renameat2
calls, real = [], os.replace


def replace_then_die(a, b):
    calls.append((a, b))
    if len(calls) == 2:
        os._exit(9)  # killed between the two renames: no cleanup, no finally blocks
    return real(a, b)


os.replace = replace_then_die
pp.swap_in(Path({new!r}), Path({out!r}))
"""


@pytest.mark.parametrize("no_exchange", [False, True], ids=["exchange", "two-renames"])
def test_publish_killed_midway_keeps_a_pack(tmp_path, photos_small, no_exchange):
    """A process killed inside the publish of a new pack over an old one: with a folder swap the
    target is the old or the new pack at every moment; with two renames it is missing until the next
    build or install, which first renames the old pack back (and so refuses to build over it)."""
    from lib_replicheck.embedders import load
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.packs.publish import check_target

    pdq = load("pdq")
    src_old, src_new = _folder(tmp_path / "old", photos_small[:2]), _folder(tmp_path / "new", photos_small[2:5])
    out = tmp_path / "packs" / "mine"
    build_from_items(sources.folder(src_old), pdq, out, log=lambda s: None)
    build_from_items(sources.folder(src_new), pdq, tmp_path / "packs" / "other", log=lambda s: None)
    new = (tmp_path / "packs" / "other").rename(tmp_path / "packs" / ".mine.partial-1")  # staged, verified
    code = PUBLISH_KILLED.format(repo=str(REPO), no_exchange=no_exchange, new=str(new), out=str(out))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if no_exchange:
        assert r.returncode == 9, r.stderr  # killed between the renames
        with pytest.raises(PackError, match="already exists"):
            check_target(out, None, overwrite=False)  # the next build: the old pack is back, not replaced
        assert Pack(out).manifest.count == 2
    else:
        assert r.returncode == 0, r.stderr  # swapped in one step: no second rename to be killed at
        assert Pack(out).manifest.count == 3
    assert not list(out.parent.glob(".mine.old-*"))


def test_publish_failing_at_the_second_rename_keeps_the_old_pack(tmp_path, photos_small, monkeypatch):
    from lib_replicheck.embedders import load
    from lib_replicheck.builder import pipeline as pb
    from lib_replicheck.builder import sources
    from lib_replicheck.packs import publish as pp

    pdq = load("pdq")
    out = tmp_path / "mine"
    pb.build_from_items(sources.folder(_folder(tmp_path / "a", photos_small[:2])), pdq, out,
                        log=lambda s: None)
    monkeypatch.setattr(pp, "_exchange", lambda a, b: False)
    real, calls = os.replace, []

    def fail_second(a, b):
        if Path(a).parent == tmp_path:  # the publish's renames, not the files of the work folder's shards
            calls.append(1)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(OSError):
        pb.build_from_items(sources.folder(_folder(tmp_path / "b", photos_small[2:5])), pdq, out,
                            overwrite=True, log=lambda s: None)
    monkeypatch.undo()
    assert Pack(out).manifest.count == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "mine"]


class _LoadedClock:
    """A stand-in for `time` whose perf_counter charges each timed interval what the timed queries at
    the index's current nprobe cost (1 ms per probed list, for all of them), multiplied by a load factor that cycles through
    `load`: another process taking the CPU for part of the time. Also records faiss's thread count
    at each reading."""

    def __init__(self, index, load):
        import faiss

        self.faiss, self.ivf, self.load = faiss, faiss.extract_index_ivf(index), load
        self.now, self.calls, self.threads = 0.0, 0, []

    def perf_counter(self) -> float:
        factor = self.load[self.calls % len(self.load)]
        self.calls += 1
        self.threads.append(self.faiss.omp_get_max_threads())
        self.now += self.ivf.nprobe * 1e-3 * factor
        return self.now


def test_tuning_choice_does_not_move_with_machine_load(monkeypatch):
    """The latency that drives the choice of nprobe is timed on one thread, as the fastest of several
    passes: with a synthetic load that makes single readings 7 to 1000 times too slow, the tuning
    keeps the setting it keeps on a quiet machine."""
    import faiss

    from lib_replicheck.builder import tuning

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 64)).astype("float32")
    x = centres[rng.integers(0, 40, 8000)] + 0.8 * rng.standard_normal((8000, 64)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    plan = fac.Plan("IVF64,Flat", "cosine", nlist=64, train_size=8000)
    index = fac.new_index(plan, 64)
    fac.train(index, plan, x)
    index.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    queries = np.ascontiguousarray(x[:200])
    _, truth = fac.exact_topk(queries, [(np.arange(len(x)), x)], 11, "cosine")
    own = np.arange(200)
    truth = fac.leave_out(truth, own, 10)

    def tuned(load):
        clock = _LoadedClock(index, load)
        monkeypatch.setattr(tuning, "time", clock)  # the timing lives in builder.tuning
        m = fac.tune(index, plan, queries, truth, target=0.95, own=own, max_ms=1.0)
        monkeypatch.undo()
        return m, clock

    threads = faiss.omp_get_max_threads()
    quiet, _ = tuned([1])
    loaded, clock = tuned([1000, 300, 1, 50, 7])
    assert quiet["within_budget"] and 1 < quiet["params"]["nprobe"] <= 16
    assert loaded["params"] == quiet["params"] and loaded["query_ms"] == quiet["query_ms"]
    assert set(clock.threads) == {1} and faiss.omp_get_max_threads() == threads  # one thread, then restored


def test_build_from_items_writes_the_pack_build_writes(tmp_path, photos_small):
    """One writer: images a program holds go through the same stages as a source on disk, so the two
    entries write the same index, metadata, thumbnails and manifest (but for the time it took)."""
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.embedders import load

    src = _folder(tmp_path / "src", photos_small[:5])
    from_disk = build(src, tmp_path / "a" / "mine", _opts(thumbnails=True), log=lambda s: None)
    from_items = build_from_items(sources.folder(src), load("pdq"), tmp_path / "b" / "mine", log=lambda s: None)
    assert (from_items.count, from_items.vectors, from_items.skipped) == (from_disk.count, from_disk.vectors,
                                                                          from_disk.skipped)
    a, b = Pack(from_disk.path), Pack(from_items.path)
    rows = list(range(a.manifest.count))
    assert a.metadata.get(rows) == b.metadata.get(rows) and b.metadata.get([0])[0].thumbnail == "thumbnails/0.jpg"
    da, db = (json.loads((p / "manifest.json").read_text()) for p in (from_disk.path, from_items.path))
    for d in (da, db):
        d.pop("built_at")
        d["index"].pop("query_ms")
    assert da == db and db["index"]["type"] == "BFlat"
    assert not [p.name for p in (tmp_path / "b").iterdir() if p.name != "mine"]  # no work folder left behind


def test_the_build_says_how_to_use_the_pack_it_built(tmp_path, photos_small):
    """A pack built outside the packs folder is not searched by `check` until named or installed:
    the build's last line gives both commands, and each finds a copy of one of its photos."""
    src = tmp_path / "src"
    src.mkdir()
    for stem, im in photos_small[:4]:
        im.save(src / f"{stem}.jpg")
    edits(photos_small[1][1])["resized 0.5x"].save(tmp_path / "copy.png")
    home = tmp_path / "home"
    env = dict(os.environ, REPLICHECK_HOME=str(home),
               PYTHONPATH=os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH")
                                                         else [])))

    def run(*args):  # from the folder the pack is built in, as a user runs it
        return subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    r = run("build", src, "--out", "packs/mine", "--embedder", "pdq")
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "packs" / "mine").resolve()
    last = r.stdout.strip().splitlines()[-1]
    assert last == (f"checks search only installed packs: use this one with python -m lib_replicheck check IMAGE "
                    f"--pack {out}, or install it for every check and the web UI with python -m lib_replicheck "
                    f"packs install {out}"), last
    named = run("check", tmp_path / "copy.png", "--pack", out, "--json")
    assert named.returncode == 1 and json.loads(named.stdout)["best"]["pack"] == "mine", named.stdout
    assert run("packs", "install", out).returncode == 0
    r = run("check", tmp_path / "copy.png", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["best"]["pack"] == "mine", r.stdout
    r = run("build", src, "--out", home / "packs" / "other", "--embedder", "pdq")
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith(
        f"it is in the packs folder ({home / 'packs'}): every check and the web UI search it"), r.stdout
