"""Crafted packs: index files that lie about their sizes or name other files, metadata that runs
away or holds the wrong types, manifests of the wrong shape, and files that change under an open pack.

Anything that could allocate what a file declares, hang, or die of a signal runs in a child
process under a memory limit and a timeout, so a regression fails here instead of taking the test
run (or 16 GB) with it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess

import numpy as np
import pytest

from _craft_packs import (OPEN_IN_CHILD, faiss_bytes, flat_index, fourcc, index_header, items_sql, relist,
                          run_child, unit_vectors, vector, write_pack)
from lib_replicheck.errors import PackError
from lib_replicheck.packs import index_check
from lib_replicheck.packs import index_search
from lib_replicheck.packs.pack import Pack

DIM = 16
GB = 1024**3


def _open_error(folder) -> str:
    with pytest.raises(PackError) as e:
        Pack(folder)
    return str(e.value)


# -- index files that declare more than they hold (issue: 2^32 vectors in 109 bytes) ------------------


def test_index_declaring_2_pow_32_vectors_is_refused_before_any_allocation(tmp_path):
    """109 bytes declaring 2^32 vectors of one float: faiss would resize its array to 16 GB before
    reading. Opened in a child limited to 2 GB: the refusal must come from the size check (which
    names what the header declares), not from a failed allocation."""
    index = (fourcc("IxFI") + index_header(1, 2**32) + vector(2**32)).ljust(109, b"\0")
    assert len(index) == 109
    pack = write_pack(tmp_path / "p", index, dim=1, count=4, vectors=2**32)
    out = run_child(OPEN_IN_CHILD, str(pack), timeout=120, memory_bytes=2 * GB)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr[-2000:])
    assert "declares 4294967296 vectors in a file of 109 bytes" in out.stdout
    assert "bad_alloc" not in out.stdout + out.stderr


def _ivf_flat(n=300, nlist=4):
    import faiss

    x = unit_vectors(n, DIM)
    idx = faiss.index_factory(DIM, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    idx.train(x)
    idx.add(x)
    return idx, faiss_bytes(idx)


def _patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    return data[:offset] + struct.pack("<" + fmt, value) + data[offset + struct.calcsize("<" + fmt):]


def _lists_offset(data: bytes) -> int:
    return data.index(b"ilar")


def _crafted_indexes():
    """(label, index bytes, manifest vectors, expected message) for lies inside real index files."""
    flat = flat_index(10, DIM)
    _, ivf = _ivf_flat()
    at = _lists_offset(ivf)
    sizes = at + 4 + 8 + 8 + 4 + 8  # 'ilar', nlist, code_size, 'full', count: then the list sizes
    first = struct.unpack_from("<Q", ivf, sizes)[0]
    import faiss

    idmap = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
    idmap.add_with_ids(unit_vectors(10, DIM), np.arange(10))
    idmap_bytes = faiss_bytes(idmap)
    return [
        ("flat vector count beyond the file", _patch(flat, 4 + 33, "Q", 10**12), 10, "declares"),
        ("flat ntotal differs from its vectors", _patch(flat, 4 + 4, "q", 11), 11, "declares 11 vectors of 16 floats"),
        ("ntotal larger than the manifest", flat_index(11, DIM), 10, "index holds 11 vectors, the manifest says 10"),
        ("dimension differs from the manifest", flat_index(10, DIM * 2), 10, "index dimension 32"),
        ("trailing bytes", flat + b"\0" * 8, 10, "8 bytes follow the index"),
        ("inverted list larger than the index", _patch(ivf, sizes, "Q", 2**40), 300, "more vectors than the index"),
        ("inverted lists hold more than ntotal", _patch(ivf, sizes, "Q", first + 1), 300, "inverted lists hold 301"),
        ("nlist of a billion", _patch(ivf, 4 + 33, "Q", 10**9), 300, "declares 1000000000 lists"),
        ("id map shorter than ntotal", idmap_bytes[:-8 * 11] + vector(9, b"\0" * 72), 10, "id map size"),
        ("unknown index type", b"IxHE" + flat[4:], 10, "type 'IxHE'"),
        ("metric with an argument", _patch(flat, 4 + 29, "i", 3), 10, "metric type 3"),
        ("empty file", b"", 10, "needs 4 bytes"),
    ]


CRAFTED = _crafted_indexes()


@pytest.mark.parametrize("label,index,vectors,message", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_index_that_lies_about_its_sizes_is_refused_by_name(tmp_path, label, index, vectors, message):
    pack = write_pack(tmp_path / "p", index, dim=DIM, count=10 if vectors <= 11 else vectors, vectors=vectors)
    out = run_child(OPEN_IN_CHILD, str(pack), timeout=120, memory_bytes=2 * GB)
    assert out.returncode == 3, (label, out.returncode, out.stdout, out.stderr[-2000:])
    assert "index.faiss is corrupt or not a faiss index that packs use" in out.stdout and message in out.stdout, \
        (label, out.stdout)


def test_truncated_and_bit_flipped_headers_never_crash_the_process(tmp_path):
    """Every prefix of the structure of an IVF-over-HNSW file, and every header byte flipped: a
    PackError or a working index, never a signal or a runaway allocation."""
    code = r"""
import sys, random
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from _craft_packs import write_pack, relist
from lib_replicheck.errors import PackError
from lib_replicheck.packs.pack import Pack
pack = Path(sys.argv[1])
good = (pack / "index.faiss").read_bytes()
cuts = list(range(0, 600)) + list(range(600, len(good), 997))
flips = [(i, b) for i in range(0, 600, 3) for b in (0x01, 0x80)]
outcomes = {"refused": 0, "opened": 0}
for label, data in [("cut", good[:c]) for c in cuts] + [("flip", good[:i] + bytes([good[i] ^ b]) + good[i+1:])
                                                      for i, b in flips]:
    (pack / "index.faiss").write_bytes(data)
    relist(pack, "index.faiss")
    try:
        Pack(pack).close()
        outcomes["opened"] += 1
    except PackError:
        outcomes["refused"] += 1
print(outcomes)
"""
    import faiss

    x = unit_vectors(2000, DIM)
    idx = faiss.index_factory(DIM, "IVF16_HNSW4,Flat", faiss.METRIC_INNER_PRODUCT)
    idx.train(x)
    idx.add(x)
    pack = write_pack(tmp_path / "p", faiss_bytes(idx), dim=DIM, count=2000)
    out = run_child(code, str(pack), str(os.path.dirname(__file__)), timeout=600, memory_bytes=2 * GB)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-3000:])
    assert "'refused'" in out.stdout


# -- index files that name other files (on-disk inverted lists) ----------------------------------------


def test_on_disk_inverted_lists_naming_a_fifo_outside_the_pack_are_refused(tmp_path):
    """faiss would open the absolute path stored in the file; a FIFO there would hang it."""
    import faiss

    x = unit_vectors(300, DIM)
    idx = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 4, faiss.METRIC_INNER_PRODUCT)
    idx.train(x)
    outside = tmp_path / "outside.ilod"
    ondisk = faiss.OnDiskInvertedLists(idx.nlist, idx.code_size, str(outside))
    idx.replace_invlists(ondisk, True)
    ondisk.this.disown()  # the index owns it now
    data = faiss_bytes(idx)
    assert str(outside).encode() in data and b"ilod" in data
    outside.unlink(missing_ok=True)
    os.mkfifo(outside)
    pack = write_pack(tmp_path / "p", data, dim=DIM, count=0)
    try:
        out = run_child(OPEN_IN_CHILD, str(pack), timeout=60, memory_bytes=2 * GB)
    except subprocess.TimeoutExpired:
        pytest.fail("opening the pack blocked on the FIFO its index names")
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr[-2000:])
    assert "on-disk inverted lists" in out.stdout and "not accepted" in out.stdout


# -- metadata that runs away or holds the wrong types ---------------------------------------------------

ENDLESS_VIEW = """
CREATE TABLE real_items (id INTEGER PRIMARY KEY, url TEXT, caption TEXT, width INTEGER, height INTEGER,
                         source TEXT, license TEXT, thumbnail TEXT);
CREATE VIEW items AS WITH RECURSIVE n(id) AS (SELECT 0 UNION ALL SELECT id + 1 FROM n)
    SELECT id, NULL AS url, NULL AS caption, NULL AS width, NULL AS height, NULL AS source, NULL AS license,
           NULL AS thumbnail FROM n;
"""


def test_metadata_view_over_an_endless_query_is_refused_at_once(tmp_path):
    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4, metadata_sql=ENDLESS_VIEW)
    try:
        out = run_child(OPEN_IN_CHILD, str(pack), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("opening a pack whose 'items' is an endless view did not return")
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr[-2000:])
    assert "view 'items'" in out.stdout and "only the table 'items'" in out.stdout


def test_metadata_trigger_is_refused(tmp_path):
    sql = items_sql(4) + "CREATE TRIGGER t AFTER INSERT ON items BEGIN SELECT 1; END;"
    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4, metadata_sql=sql)
    assert "trigger 't'" in _open_error(pack)


def test_metadata_query_past_its_time_bound_is_stopped_with_a_message(tmp_path):
    """The progress handler stops any statement past its deadline: here a bound of zero seconds on a
    query that takes more than 10,000 SQLite steps."""
    from lib_replicheck.packs.metadata import Metadata

    db_path = tmp_path / "metadata.sqlite"
    db = sqlite3.connect(db_path)
    db.executescript(items_sql(0))
    db.executemany("INSERT INTO items (id, caption) VALUES (?, ?)", ((i, "x" * 50) for i in range(50_000)))
    db.commit()
    db.close()
    ids = range(0, 50_000, 2)
    assert len(Metadata(db_path).get(ids)) == 25_000
    with pytest.raises(PackError, match="a query took longer than 0 s and was stopped"):
        Metadata(db_path, query_seconds=0).get(ids)


@pytest.mark.parametrize("column,declared", [("width", "TEXT"), ("url", "BLOB"), ("caption", "")])
def test_metadata_declared_with_other_column_types_is_refused_naming_the_column(tmp_path, column, declared):
    sql = items_sql(4).replace(f" {column} {'INTEGER' if column == 'width' else 'TEXT'}", f" {column} {declared}")
    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4, metadata_sql=sql)
    assert f"column 'items.{column}' is declared" in _open_error(pack)


@pytest.mark.parametrize("column,value", [("width", "'wide'"), ("caption", "x'00ff'"), ("url", "x'41'"),
                                          ("height", "2.5")])
def test_metadata_value_of_another_type_fails_the_search_naming_the_field(tmp_path, column, value):
    """SQLite keeps whatever type a row was given, whatever the column's declared type."""
    sql = items_sql(4) + f"UPDATE items SET {column} = {value} WHERE id = 0;"
    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4, metadata_sql=sql)
    p = Pack(pack)
    q = unit_vectors(4, DIM)[:1]
    with pytest.raises(PackError, match=rf"row 0 has a \w+ in 'items.{column}'"):
        p.search(q, k=4)


# -- manifests of the wrong shape -------------------------------------------------------------------------


@pytest.mark.parametrize("edit,field", [
    (lambda m: m["index"].update(file={"path": "index.faiss"}), "index.file"),
    (lambda m: m["index"].update(file="../index.faiss"), "index.file"),
    (lambda m: m["index"].update(search_params=[1, 2]), "index.search_params"),
    (lambda m: m["index"].update(search_params={"nprobe": "8"}), "index.search_params.nprobe"),
    (lambda m: m["index"].update(rerank={"file": ["v.npy"], "candidates": 10}), "index.rerank.file"),
    (lambda m: m["index"].update(rerank={"file": "index.faiss", "candidates": 10**12}), "index.rerank.candidates"),
    (lambda m: m.update(title=["a"]), "title"),
    (lambda m: m.update(description=7), "description"),
    (lambda m: m.update(source="laion"), "source"),
    (lambda m: m.update(tool=[1]), "tool"),
    (lambda m: m.update(built_at={}), "built_at"),
    (lambda m: m.update(vectors="4"), "vectors"),
    (lambda m: m.update(count=True), "count"),
    (lambda m: m["embedder"].update(dim=2**40), "embedder.dim"),
    (lambda m: m["embedder"].update(preprocessing="resize"), "embedder.preprocessing"),
    (lambda m: m["embedder"].update(weights={"runtime": "onnx"}), "embedder.weights"),
    (lambda m: m["embedder"].update(weights=[{"runtime": "onnx", "url": 5}]), "embedder.weights[0].url"),
    (lambda m: m["embedder"].update(weights=[{"runtime": "onnx", "code": "x"}]), "embedder.weights[0].code"),
    (lambda m: m["files"][0].update(size="1"), "files[0].size"),
])
def test_manifest_field_of_the_wrong_type_is_named(tmp_path, edit, field):
    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4, manifest_edit=edit)
    assert f"manifest field '{field}'" in _open_error(pack)


def test_deeply_nested_manifest_is_a_pack_error(tmp_path):
    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4)
    m = json.loads((pack / "manifest.json").read_text())
    (pack / "manifest.json").write_text(json.dumps(m)[:-1] + ', "extra": ' + "[" * 50_000 + "]" * 50_000 + "}")
    assert "manifest.json is nested too deeply" in _open_error(pack)


def test_oversized_manifest_is_refused_before_it_is_read(tmp_path):
    from lib_replicheck.packs import manifest as mf

    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4)
    with open(pack / "manifest.json", "r+b") as f:
        f.truncate(mf.MAX_MANIFEST_BYTES + 1)  # sparse: nothing is written
    assert "manifest.json is larger than 16 MB" in _open_error(pack)


# -- files that change under an open pack (a truncated index killed the web UI with SIGBUS) ---------------

SEARCH_THEN_TRUNCATE = """
import os, sys
import numpy as np
from lib_replicheck.errors import PackError
from lib_replicheck.packs import index_search
from lib_replicheck.packs.pack import Pack
pack, mode, change = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "mapped":
    index_search.MMAP_MIN_BYTES = 0
p = Pack(pack)
q = np.load(os.path.join(pack, "..", "queries.npy"))
print("first", p.search(q, k=1)[0][0].item.id, flush=True)
if mode == "mapped":  # faiss < 1.11 cannot map indexes: they are read then
    import faiss
    mapped = os.path.join(pack, "index.faiss") in open("/proc/self/maps").read()
    assert mapped == hasattr(faiss, "IO_FLAG_MMAP_IFC"), mapped
target = os.path.join(pack, "index.faiss")
if change == "truncate":
    os.truncate(target, 0)
elif change == "shrink":
    os.truncate(target, os.path.getsize(target) // 2)
try:
    print("second", p.search(q, k=1)[0][0].item.id, flush=True)
except PackError as e:
    print("PackError:", e, flush=True)
"""


@pytest.mark.parametrize("mode", ["mapped", "read"])
@pytest.mark.parametrize("change", ["truncate", "shrink"])
def test_index_truncated_under_an_open_pack_gives_an_error_not_a_signal(tmp_path, mode, change):
    """Open, search, truncate index.faiss, search again, in a child process: a SIGBUS kills only the
    child, and the test sees it in the return code."""
    import faiss

    x = unit_vectors(5000, 64)
    idx = faiss.IndexFlatIP(64)
    idx.add(x)
    pack = write_pack(tmp_path / "p", faiss_bytes(idx), dim=64, count=5000)
    np.save(tmp_path / "queries.npy", x[7:8])
    out = run_child(SEARCH_THEN_TRUNCATE, str(pack), mode, change, timeout=120)
    assert out.returncode == 0, f"child ended with {out.returncode} (-7 is SIGBUS): {out.stdout} {out.stderr[-1500:]}"
    assert "first 7" in out.stdout
    assert "PackError:" in out.stdout and "index.faiss changed on disk since the pack was opened" in out.stdout
    assert "manifest says" in out.stdout  # the reopening found the file no longer matches the manifest


def test_pack_replaced_consistently_is_reopened_with_its_new_contents(tmp_path):
    """A pack folder swapped for another (as an update does) is searched with its new contents."""
    a = unit_vectors(50, DIM, seed=1)
    b = unit_vectors(60, DIM, seed=2)
    import faiss

    def pack_of(folder, x, name):
        idx = faiss.IndexFlatIP(DIM)
        idx.add(x)
        return write_pack(folder, faiss_bytes(idx), dim=DIM, count=len(x), name=name)

    live = pack_of(tmp_path / "live", a, "crafted")
    p = Pack(live)
    assert p.search(a[3:4], k=1)[0][0].similarity == pytest.approx(1, abs=1e-5)
    new = pack_of(tmp_path / "new", b, "crafted")
    shutil.rmtree(live)
    os.rename(new, live)
    hits = p.search(b[42:43], k=1)[0]
    assert hits[0].item.id == 42 and hits[0].similarity == pytest.approx(1, abs=1e-5)
    assert p.manifest.count == 60


def test_metadata_changed_under_an_open_pack_is_noticed(tmp_path):
    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4)
    p = Pack(pack)
    q = unit_vectors(4, DIM)[:1]
    assert p.search(q, k=1)[0][0].item.id == 0
    db = sqlite3.connect(pack / "metadata.sqlite")
    db.execute("DELETE FROM items WHERE id = 3")
    db.commit()
    db.close()
    with pytest.raises(PackError, match="metadata.sqlite changed on disk since the pack was opened"):
        p.search(q, k=1)
    relist(pack, "metadata.sqlite")  # still fails: 3 rows, the manifest says 4
    with pytest.raises(PackError, match="metadata holds 3 rows, the manifest says 4"):
        p.search(q, k=1)


def test_layout_check_accepts_every_index_the_builder_makes():
    """The structures `check_layout` walks are those faiss writes for the builder's index types."""
    import io

    import faiss

    x = unit_vectors(1000, 16)
    kinds = {}
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # tiny trainings: a thread pool only adds waiting on a loaded machine
    try:
        _build_each_kind(faiss, x, kinds)
    finally:
        faiss.omp_set_num_threads(threads)
    assert kinds["OPQ4_16,IVF8_HNSW32,PQ4x8"] == "IxPT(IwPQ(IHNf(IxFI)))"
    assert kinds["IVF8_HNSW32,Flat"] == "IwFl(IHNf(IxFI))"
    b = np.random.default_rng(0).integers(0, 256, (3000, 32), dtype=np.uint8)
    ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(256), 256, 16)
    ivf.train(b)
    ivf.add(b)
    idmap = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(256))
    idmap.add_with_ids(b, np.arange(3000))
    for idx in (ivf, idmap):
        data = faiss_bytes(idx)
        assert index_check.check_layout(io.BytesIO(data), len(data), "hamming", 256, 3000).ntotal == 3000


def _build_each_kind(faiss, x, kinds):
    import io

    for factory in ("Flat", "IVF8,Flat", "IVF8_HNSW32,Flat", "OPQ4_16,IVF8,PQ4x8", "IVF8,PQ8x8",
                    "PCA16,IVF8,Flat", "OPQ4_16,IVF8_HNSW32,PQ4x8"):
        idx = faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)
        opq = faiss.downcast_VectorTransform(idx.chain.at(0)) if isinstance(idx, faiss.IndexPreTransform) else None
        if isinstance(opq, faiss.OPQMatrix):  # trained quickly: only the layout matters
            opq.niter = opq.niter_pq = opq.niter_pq_0 = 1
        ivf = faiss.try_extract_index_ivf(idx)
        if ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
            pq = faiss.downcast_index(ivf)
            pq.do_polysemous_training, pq.pq.cp.niter = False, 2
        idx.train(x)
        idx.add(x)
        data = faiss_bytes(idx)
        layout = index_check.check_layout(io.BytesIO(data), len(data), "cosine", 16, 1000)
        assert layout.ntotal == 1000 and layout.d == 16, factory
        kinds[factory] = layout.kind
