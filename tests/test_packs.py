"""Pack format v1: build -> load -> search round trips, memory-mapped loading, and broken packs."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3

import numpy as np
import pytest

from conftest import REPO
from lib_replicheck import embedders
from lib_replicheck.embedders.base import COSINE, Embedder, EmbedderSpec
from lib_replicheck.errors import ImageError, PackError
from lib_replicheck.packs import index_check
from lib_replicheck.packs import index_search
from lib_replicheck.packs import index_write
from lib_replicheck.builder import sources
from lib_replicheck.builder.pipeline import build_from_items
from lib_replicheck.builder.sources import SourceItem
from lib_replicheck.packs.pack import Pack

DEMO = REPO / "lib_replicheck" / "demo_images" / "pack"


@pytest.fixture(scope="module")
def demo_pack(tmp_path_factory):
    out = tmp_path_factory.mktemp("packs") / "demo"
    build_from_items(sources.folder(DEMO, license="CC0"), embedders.load("pdq"), out, title="Demo", log=lambda s: None)
    return out


@pytest.fixture
def pack_copy(demo_pack, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(demo_pack, dst)
    return dst


def test_round_trip(demo_pack):
    pack = Pack(demo_pack, expect_embedder="pdq")
    m = pack.manifest
    assert (m.name, m.title, m.count, m.vectors, m.metric) == ("demo", "Demo", 4, 20, "hamming")
    assert {f.path for f in m.files} >= {"index.faiss", "metadata.sqlite", "thumbnails/0.jpg"}
    pack.verify()
    embedder = embedders.load("pdq")
    from lib_replicheck.images import load_image

    images = [load_image(p) for p in sorted(DEMO.glob("*.jpg"))]
    for im, hits in zip(images, pack.search(embedder.embed(images), k=4)):
        assert hits[0].distance == 0 and hits[0].similarity == 1.0
        assert len({h.item.id for h in hits}) == 4  # one hit per image, variants folded
        assert hits[0].item.caption and hits[0].item.license == "CC0"
        assert pack.thumbnail_path(hits[0].item).is_file()


def test_manifest_records_the_embedder(demo_pack):
    data = json.loads((demo_pack / "manifest.json").read_text())
    assert data["format"] == "replicheck-pack" and data["format_version"] == 1
    assert data["embedder"]["id"] == "pdq" and data["embedder"]["preprocessing"]["max_side"] == 512
    assert data["tool"]["name"] == "replicheck" and data["built_at"]
    assert all(len(f["sha256"]) == 64 for f in data["files"])


class _Fixed(Embedder):
    """A deterministic embedder with a fixed vector per image (for the mmap and cosine path tests)."""

    def __init__(self, dim=512):
        self.spec = EmbedderSpec("sscd_disc_mixup", "sscd", "sscd_disc_mixup", dim, COSINE)

    def embed(self, images):
        rng = np.random.default_rng(0)
        return rng.standard_normal((len(images), self.spec.dim)).astype("float32")


def test_index_is_read_into_memory_below_a_size_and_mapped_above(tmp_path):
    """Below MMAP_MIN_BYTES an index is read (nothing that happens to the file reaches the process);
    above it, it is mapped where faiss can (IO_FLAG_MMAP_IFC): its file shows in /proc/self/maps."""
    import faiss

    x = np.random.default_rng(1).standard_normal((20_000, 128)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = index_write.new_index(COSINE, 128)
    idx.add(x)
    path = tmp_path / "big.faiss"
    index_write.write(idx, path)
    del idx
    assert path.stat().st_size < index_search.MMAP_MIN_BYTES
    read = index_search.read(path, COSINE, 128, 20_000)
    assert str(path) not in open("/proc/self/maps").read()
    mapped = index_search.read(path, COSINE, 128, 20_000, mmap_min_bytes=0)
    assert (str(path) in open("/proc/self/maps").read()) == hasattr(faiss, "IO_FLAG_MMAP_IFC")
    for loaded in (read, mapped):
        sim, dist, ids = index_search.search(loaded, x[:3], 2)
        assert ids[:, 0].tolist() == [0, 1, 2] and dist is None and np.allclose(sim[:, 0], 1, atol=1e-5)


def test_wrong_embedder_is_refused(demo_pack):
    with pytest.raises(PackError, match="built with the embedder 'pdq', not 'sscd_disc_mixup'"):
        Pack(demo_pack, expect_embedder="sscd_disc_mixup")


def _edit_manifest(pack, fn):
    p = pack / "manifest.json"
    data = json.loads(p.read_text())
    fn(data)
    p.write_text(json.dumps(data))


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(format_version=2), "format version 2 is not supported"),
    (lambda d: d.update(format="other"), "not a replicheck pack manifest"),
    (lambda d: d.pop("embedder"), "'embedder' is missing"),
    (lambda d: d["embedder"].update(dim="512"), "'embedder.dim' should be int"),
    (lambda d: d["embedder"].update(metric="l1"), "'embedder.metric'"),
    (lambda d: d.update(name="../evil"), "'name'"),
    (lambda d: d["files"].append({"path": "../../etc/passwd", "size": 1, "sha256": "0" * 64}), "leaves the pack"),
    (lambda d: d["files"].append({"path": "/etc/passwd", "size": 1, "sha256": "0" * 64}), "leaves the pack"),
    (lambda d: d.update(count=5), "metadata holds 4 rows, the manifest says 5"),
    (lambda d: d.update(vectors=21), "index holds 20 vectors"),
])
def test_bad_manifests(pack_copy, edit, message):
    _edit_manifest(pack_copy, edit)
    with pytest.raises(PackError) as e:
        Pack(pack_copy)
    assert message in str(e.value) and str(pack_copy) in str(e.value)


def test_manifest_not_json(pack_copy):
    (pack_copy / "manifest.json").write_text("{not json")
    with pytest.raises(PackError, match="not valid JSON"):
        Pack(pack_copy)


def test_missing_and_truncated_files(pack_copy):
    data = (pack_copy / "index.faiss").read_bytes()
    (pack_copy / "index.faiss").write_bytes(data[:-10])
    with pytest.raises(PackError, match="index.faiss is .* bytes, the manifest says"):
        Pack(pack_copy)
    (pack_copy / "index.faiss").unlink()
    with pytest.raises(PackError, match="index.faiss listed in the manifest is missing"):
        Pack(pack_copy)


def _rewrite_with_size(pack, name, payload: bytes):
    (pack / name).write_bytes(payload)
    _edit_manifest(pack, lambda d: [f.update(size=len(payload)) for f in d["files"] if f["path"] == name])


def test_corrupt_index(pack_copy):
    _rewrite_with_size(pack_copy, "index.faiss", b"garbage" * 100)
    with pytest.raises(PackError, match="index.faiss is corrupt or not a faiss binary index"):
        Pack(pack_copy)


def test_corrupt_metadata(pack_copy):
    _rewrite_with_size(pack_copy, "metadata.sqlite", b"SQLite format 3\x00" + b"\xff" * 2000)
    with pytest.raises(PackError, match="metadata.sqlite"):
        Pack(pack_copy)


def test_tampered_file_fails_verify(pack_copy):
    db = sqlite3.connect(pack_copy / "metadata.sqlite")
    db.execute("UPDATE items SET caption = 'tampered!!' WHERE id = 0")  # same length, same size
    db.commit()
    db.close()
    _edit_manifest(pack_copy, lambda d: [f.update(size=(pack_copy / f["path"]).stat().st_size)
                                         for f in d["files"] if f["path"] == "metadata.sqlite"])
    pack = Pack(pack_copy)  # sizes match: opening is cheap and does not hash
    with pytest.raises(PackError, match="metadata.sqlite fails its sha256 check"):
        pack.verify()


def test_build_skips_bad_images_and_names_them(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(DEMO, src)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    result = build_from_items(sources.folder(src), embedders.load("pdq"), tmp_path / "p", log=lambda s: None)
    assert result.count == 4
    assert any("broken.jpg" in s and "not an image" in s for s in result.skipped)


def test_failed_build_leaves_nothing_and_keeps_the_old_pack(demo_pack, tmp_path):
    out = tmp_path / "demo"
    shutil.copytree(demo_pack, out)
    before = (out / "manifest.json").read_bytes()

    def boom():
        raise RuntimeError("disk on fire")

    records = list(sources.folder(DEMO)) + [SourceItem(key="boom", load=boom)]
    with pytest.raises(RuntimeError):
        build_from_items(records, embedders.load("pdq"), out, overwrite=True, batch=2, log=lambda s: None)
    assert (out / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no partial folder left behind
    Pack(out).verify()


def test_existing_pack_is_not_overwritten_without_force(demo_pack):
    with pytest.raises(PackError, match="already exists"):
        build_from_items(sources.folder(DEMO), embedders.load("pdq"), demo_pack, log=lambda s: None)


def test_overwrite_replaces_atomically(demo_pack, tmp_path):
    out = tmp_path / "p"
    build_from_items(sources.folder(DEMO), embedders.load("pdq"), out, log=lambda s: None)
    build_from_items(sources.folder(DEMO), embedders.load("pdq"), out, title="Second", overwrite=True,
                     log=lambda s: None)
    assert Pack(out).manifest.title == "Second"
    assert sorted(os.listdir(tmp_path)) == ["p"]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackError, match="no usable images"):
        build_from_items(sources.folder(tmp_path / "empty"), embedders.load("pdq"), tmp_path / "p", log=lambda s: None)
    assert not (tmp_path / "p").exists()


def test_cosine_pack_round_trip(tmp_path):
    from PIL import Image

    recs = [SourceItem(key=f"grey{i}", load=lambda i=i: Image.new("RGB", (32, 32), (i, i, i)), caption=f"c{i}")
            for i in range(10)]
    out = build_from_items(recs, _Fixed(), tmp_path / "cos", thumbnails=False, log=lambda s: None).path
    pack = Pack(out, expect_embedder="sscd_disc_mixup")
    assert pack.manifest.vectors == 10 and index_search.describe(pack.index) == "IndexFlatIP"
    v = _Fixed().embed([None] * 10)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    hits = pack.search(v[3:4], k=3)[0]
    assert hits[0].item.caption == "c3" and hits[0].distance is None


def test_image_error_carries_path():
    e = ImageError("/x/y.png", "bad")
    assert e.path == "/x/y.png" and str(e) == "/x/y.png: bad"


def _ivf_pack(tmp_path, search_params):
    """A small IVF pack whose manifest records `search_params`."""
    import faiss

    from lib_replicheck.packs.metadata import Item, MetadataWriter

    from lib_replicheck.packs.publish import seal

    staged, out = tmp_path / "staged", tmp_path / "ivf"
    staged.mkdir()
    x = np.random.default_rng(3).standard_normal((400, 32)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = faiss.index_factory(32, "IVF8,Flat", faiss.METRIC_INNER_PRODUCT)
    idx.train(x)
    idx.add(x)
    index_write.write(idx, staged / "index.faiss")
    w = MetadataWriter(staged / "metadata.sqlite")
    w.add(Item(i, caption=f"c{i}") for i in range(400))
    w.close()
    spec = EmbedderSpec("sscd_disc_mixup", "sscd", "sscd_disc_mixup", 32, COSINE)
    seal(staged, out, name="ivf", title=None, description="", source={}, spec=spec, count=400,
         vectors=400, index={"file": "index.faiss", "type": "IVF8,Flat", "search_params": search_params})
    return out, x


def test_search_params_from_the_manifest_are_applied_or_refused_by_name(tmp_path):
    """nprobe from the manifest reaches the index; one the index does not have, or of the wrong
    type, is an error naming the field (it used to be dropped without a word)."""
    import faiss

    out, x = _ivf_pack(tmp_path, {"nprobe": 8})
    pack = Pack(out)
    assert faiss.extract_index_ivf(pack.index).nprobe == 8
    assert pack.search(x[5:6], k=1)[0][0].item.id == 5
    pack.close()
    for params, field in (({"nprobe": 8, "efSearch": 16}, "index.search_params.efSearch"),
                          ({"no_such_parameter": 2}, "index.search_params.no_such_parameter"),
                          ({"nprobe": 0}, "index.search_params.nprobe")):
        _edit_manifest(out, lambda d: d["index"].update(search_params=params))
        with pytest.raises(PackError, match=f"manifest field '{re.escape(field)}'"):
            Pack(out)


def test_a_single_query_runs_on_one_thread_and_a_batch_on_the_pool():
    """faiss's OpenMP pool costs more than the search of one query when the CPU is shared; the pool's
    size is restored afterwards and batches still use it."""
    import faiss

    threads = []

    class Recording(faiss.IndexFlatIP):  # a real faiss index that notes the thread count it searched with
        def search(self, x, k, **kw):
            threads.append(faiss.omp_get_max_threads())
            return super().search(x, k, **kw)

    idx = Recording(8)
    idx.add(np.eye(8, dtype="float32"))
    pool = faiss.omp_get_max_threads()
    index_search.search(idx, np.eye(8, dtype="float32")[:1], 2)
    index_search.search(idx, np.eye(8, dtype="float32"), 2)
    assert threads == [1, pool] and faiss.omp_get_max_threads() == pool


def test_packs_open_on_a_faiss_without_mapped_reads(demo_pack, monkeypatch, tmp_path):
    """IO_FLAG_MMAP_IFC came with faiss 1.11; requirements allow 1.8: without it indexes are read."""
    import faiss

    monkeypatch.delattr(faiss, "IO_FLAG_MMAP_IFC", raising=False)
    monkeypatch.setattr(index_search, "MMAP_MIN_BYTES", 0)
    pack = Pack(demo_pack)
    assert str(demo_pack / "index.faiss") not in open("/proc/self/maps").read()
    embedder = embedders.load("pdq")
    from lib_replicheck.images import load_image

    image = load_image(sorted(DEMO.glob("*.jpg"))[0])
    assert pack.search(embedder.embed([image]), k=1)[0][0].distance == 0


def test_metadata_schema_follows_item_and_matches_published_packs():
    """The items table is written from Item's fields and types; the statement is the one published
    packs carry (registry/demo), so packs built now are read, and written, as before."""
    from dataclasses import fields

    from lib_replicheck.packs.metadata import COLUMNS, SCHEMA, TYPES, Item

    assert COLUMNS == [f.name for f in fields(Item)]
    assert TYPES["id"] == "INTEGER" and TYPES["caption"] == "TEXT" and TYPES["width"] == "INTEGER"
    db = sqlite3.connect(f"file:{REPO / 'registry' / 'demo' / 'metadata.sqlite'}?mode=ro", uri=True)
    try:
        published = db.execute("SELECT sql FROM sqlite_master WHERE name = 'items'").fetchone()[0]
    finally:
        db.close()
    assert SCHEMA.strip().rstrip(";") == published


# -- index designs for large packs: planned by budgets, built by the builder, searched mapped --------


def test_planner_picks_the_design_that_fits_the_budgets():
    """The best design that fits: uncompressed vectors within the memory budget, else 8-bit scalar codes
    while they fit the disk budget, else fast-scan codes re-ranked from 4-bit or PQ codes, else PQ codes
    alone; 4-bit scalar codes alone, and PQ with float16 re-ranking (the design of earlier large
    packs), only when named."""
    from lib_replicheck.builder.planning import GB, choose

    assert choose(100_000, 512, "cosine", 1 * GB, 4 * GB).design == "ivf-flat"  # 205 MB of floats fit 1 GB
    assert choose(1_000_000, 512, "cosine", 1 * GB, 4 * GB).factory == "IVF4096_HNSW32,SQ8"  # 2 GB do not
    laion = choose(12_000_000, 512, "cosine", 1 * GB, 4 * GB)  # 8-bit codes (6.2 GB) do not fit 4 GB
    assert laion.factory == "IVF16384_HNSW32,PQ64x4fs" and laion.rerank and laion.rerank_dtype == "sq4"
    assert 12_000_000 * (32 + 8 + 256) < laion.disk_bytes < 12_000_000 * (32 + 8 + 256) * 1.02 < 4 * GB
    # the disk budget is the whole pack's: LAION's captions and URLs (about 200 bytes a row) leave
    # 1.8 GB for the index, where PQ re-ranking rows (82 bytes) fit and 4-bit scalar rows (256) do not
    meta = 12_000_000 * 200
    with_meta = choose(12_000_000, 512, "cosine", 1 * GB, 4 * GB, metadata_bytes=meta)
    assert with_meta.factory == laion.factory and with_meta.rerank_dtype == "pq"
    assert with_meta.disk_bytes * 1.1 + meta <= 4 * GB
    assert choose(12_000_000, 512, "cosine", 1 * GB).factory == "IVF16384_HNSW32,SQ8"  # no disk budget
    small = choose(12_000_000, 512, "cosine", 1 * GB, 1 * GB)
    assert small.design == "opq-pq" and small.factory == "OPQ64_512,IVF16384_HNSW32,PQ64x8" and not small.rerank
    old = choose(12_000_000, 512, "cosine", 1 * GB, design="pq-rerank")
    assert old.factory == "OPQ64_512,IVF16384_HNSW32,PQ64x8" and old.rerank
    assert choose(500, 512, "cosine", design="sq4").factory == "IVF64,SQ4"  # named: as asked
    with pytest.raises(ValueError, match="unknown index design 'hnsw'"):
        choose(500, 512, "cosine", design="hnsw")


@pytest.mark.parametrize("design, factory, error", [("sq8", "IVF256,SQ8", 0.005), ("sq4", "IVF256,SQ4", 0.05),
                                                   ("opq-pq", "IVF256,PQ256x8", 0.1)])
def test_compact_designs_build_and_find_a_copys_original_memory_mapped(tmp_path, monkeypatch, real_copies, design,
                                                                       factory, error):
    """The compact designs a large pack gets, built by the builder's index stage at small scale: real
    originals hidden among 4,000 unrelated vectors, the pack opened memory-mapped with no re-ranking
    file, and every real edited copy finds its original first."""
    from lib_replicheck.builder.options import BuildOptions
    from lib_replicheck.builder.shards import ShardStore
    from lib_replicheck.builder.stages import index_stage, metadata_stage
    from lib_replicheck.embedders import sscd
    from lib_replicheck.packs.publish import seal, staging_dir

    originals, copies, of = real_copies
    rng = np.random.default_rng(0)
    store = ShardStore(tmp_path / "work")
    hidden = np.arange(8) * 500 + 250
    for s in range(2):
        v = rng.standard_normal((2000, 512)).astype("float32") + 0.3 * originals.mean(0) / np.abs(originals.mean(0)).max()
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        inside = (hidden >= s * 2000) & (hidden < (s + 1) * 2000)
        v[hidden[inside] - s * 2000] = originals[inside]
        store.write(s, v[:, None, :], [{"key": str(s * 2000 + i)} for i in range(2000)], [])
    spec = sscd.spec_for("sscd_disc_mixup")
    tmp = staging_dir(tmp_path / design)
    info, count, vectors = index_stage(store, spec, tmp, BuildOptions(index_design=design), lambda s: None)
    metadata_stage(store, tmp)
    seal(tmp, tmp_path / design, name="compact", title=None, description="", source={}, spec=spec, count=count,
         vectors=vectors, index=info)
    assert info["type"] == factory and info["design"] == design and "rerank" not in info
    monkeypatch.setattr(index_search, "MMAP_MIN_BYTES", 1)  # map this small index as a large one would be
    pack = Pack(tmp_path / design)
    assert str(tmp_path / design / "index.faiss") in open("/proc/self/maps").read()
    assert pack.reranker is None
    hits = pack.search(copies, k=1)
    assert [h[0].item.source for h in hits] == [str(hidden[i]) for i in of]
    exact = (copies * originals[of]).sum(1)
    got = np.array([h[0].similarity for h in hits])
    assert np.abs(got - exact).max() < error  # compressed codes: close to, not exactly, the true similarity
    pack.close()


def test_scalar_quantised_index_files_are_checked_before_faiss_reads_them(tmp_path):
    """An 8-bit IVF index passes the layout check; one whose quantiser declares a type packs do not use,
    or codes that do not match its dimension, is refused by name."""
    import io

    import faiss

    x = np.random.default_rng(1).standard_normal((600, 32)).astype("float32")
    idx = faiss.index_factory(32, "PCA16,IVF4,SQ8", faiss.METRIC_INNER_PRODUCT)  # PCA: a transform's walk too
    idx.train(x)
    idx.add(x)
    path = tmp_path / "index.faiss"
    index_write.write(idx, path)
    data = path.read_bytes()
    with open(path, "rb") as f:
        assert index_check.check_layout(f, len(data), COSINE, 32, 600).kind == "IxPT(IwSq(IxFI))"
    # the quantiser's fields after "IwSq": index header (33 bytes), nlist, nprobe, the flat coarse
    # quantiser (fourcc, header, count, 4 x 16 floats), the empty direct map (9 bytes)
    sq = data.index(b"IwSq") + 4 + 33 + 16 + (4 + 33 + 8 + 4 * 16 * 4) + 9
    assert np.frombuffer(data[sq: sq + 4], np.int32)[0] == 0  # QT_8bit
    for offset, value, message in ((sq, np.int32(5), "scalar quantiser type 5"),
                                   (sq + 12, np.uint64(8), "codes of 16 bytes for 8 dimensions")):
        bad = bytearray(data)
        bad[offset: offset + value.nbytes] = value.tobytes()
        with pytest.raises(index_check.LayoutError, match=message):
            index_check.check_layout(io.BytesIO(bytes(bad)), len(bad), COSINE, 32, 600)
