"""The `fastscan` index design, the one a 12M pack gets within a 4 GB download: 4-bit fast-scan PQ
codes in the lists, their candidates re-ranked from 4-bit scalar codes or, where those do not fit
the disk budget beside the metadata, from PQ codes with a length factor on disk. Real photos and
their edited copies (Meta's SSCD, int8 ONNX) are hidden among clustered distractors, and the copies
must find their original first through the pack users open, with similarities close to the exact
ones; the files such a pack adds are checked before faiss or numpy trusts them."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from lib_replicheck.builder import index_factory as fac
from lib_replicheck.builder.options import BuildOptions
from lib_replicheck.builder.shards import ShardStore
from lib_replicheck.errors import PackError
from lib_replicheck.packs import index_check
from lib_replicheck.packs import index_search
from lib_replicheck.packs.pack import Pack
from lib_replicheck.packs.rerank import (PQ_CODEBOOK, PQ_FILE, SQ4_FILE, pq_decode, pq_encode, pq_train, sq4_decode,
                                         sq4_encode, sq4_range)

HAYSTACK = 3 * 12_000


def _laion_row(s, i):
    """A metadata row of LAION's typical sizes: a 100-character URL, a 60-character caption."""
    return {"key": f"{s}-{i}", "url": f"https://images.example-cdn.com/uploads/2019/{s:04d}/{i:012d}-a-photo-of-"
                                      f"something-large-{i * 7919 % 100003:06d}.jpg",
            "caption": f"A photograph of item {i:06d} on a wooden table, soft light {i % 13:02d}", "width": 1024,
            "height": 768}


def _centres(rng, originals, copies):
    real = np.concatenate([originals, copies])
    mixed = rng.standard_normal((200, len(real))).astype("float32") @ (real - real.mean(0))
    return real.mean(0) + 0.5 * mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


def _haystack(tmp_path, originals, copies, meta=lambda s, i: {"key": f"{s}-{i}"}):
    """Clustered unit vectors in three shards, the originals hidden at spread-out rows. The cluster
    centres are random mixtures of the real descriptors, so that the haystack lies where SSCD
    descriptors lie (clusters of random directions would leave the originals in no list's region)."""
    rng = np.random.default_rng(0)
    centres = _centres(rng, originals, copies)
    hidden = np.linspace(0, HAYSTACK - 1, len(originals) + 2).astype(int)[1:-1]
    store = ShardStore(tmp_path / "work")
    per = HAYSTACK // 3
    for s in range(3):
        v = centres[rng.integers(0, 200, per)] + 0.03 * rng.standard_normal((per, 512)).astype("float32")
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        inside = (hidden >= s * per) & (hidden < (s + 1) * per)
        v[hidden[inside] - s * per] = originals[inside]
        store.write(s, v[:, None, :], [meta(s, i) for i in range(per)], [])
    return store, hidden


def _refused(folder, manifest: dict, match: str) -> None:
    """The pack in `folder`, with `manifest` written over its own, is refused with an error matching `match`."""
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match=match):
        Pack(folder)


def test_sq4_codes_keep_similarities_of_real_copies(real_copies):
    """4-bit codes on one range: a real copy's similarity to its coded original stays within 0.02 of
    the exact one (what the re-ranked score shows the user), and the codes are a quarter of float16."""
    originals, copies, copy_of = real_copies
    rng = np.random.default_rng(3)
    lo, hi = sq4_range(np.concatenate([originals, copies, rng.standard_normal((200, 512)).astype("float32") * 0.045]))
    codes = sq4_encode(originals, lo, hi)
    assert codes.shape == (len(originals), 256) and codes.dtype == np.uint8
    exact = (copies * originals[copy_of]).sum(1)
    coded = (copies * sq4_decode(codes, 512, lo, hi)[copy_of]).sum(1)
    assert np.abs(coded - exact).max() < 0.02
    odd = sq4_decode(sq4_encode(np.full((1, 3), lo), lo, hi), 3, lo, hi)  # odd dimension counts round-trip
    assert odd.shape == (1, 3) and np.allclose(odd, lo + (hi - lo) / 32)


def test_fastscan_pack_finds_real_copies_first(tmp_path, real_copies, monkeypatch):
    """Built by the builder's own index stage with design auto and a disk budget that 8-bit codes do
    not fit; opened as `check` opens it; every real edited copy finds its original first."""
    from lib_replicheck.builder.stages import index_stage, metadata_stage
    from lib_replicheck.embedders import sscd
    from lib_replicheck.packs.publish import seal, staging_dir

    originals, copies, copy_of = real_copies
    store, hidden = _haystack(tmp_path, originals, copies)
    spec = sscd.spec_for("sscd_disc_mixup")
    sq8 = HAYSTACK * (512 + 8)
    plan = fac.choose(HAYSTACK, 512, "cosine", 1024**3, sq8)
    assert plan.design == "fastscan" and plan.factory == "IVF1024,PQ64x4fs" \
        and plan.disk_bytes < fac.choose(HAYSTACK, 512, "cosine", design="sq8").disk_bytes * 0.7
    tmp, logs = staging_dir(tmp_path / "fs"), []
    opts = BuildOptions(embedder="sscd", memory_budget=1024**3, disk_budget=sq8, max_query_ms=50)
    info, count, vectors = index_stage(store, spec, tmp, opts, logs.append)
    metadata_stage(store, tmp)
    seal(tmp, tmp_path / "fs", name="fs", title=None, description="", source={}, spec=spec,
         count=count, vectors=vectors, index=info)
    assert info["design"] == "fastscan" and info["rerank"]["file"] == SQ4_FILE and info["rerank"]["dtype"] == "sq4"
    assert info["rerank"]["candidates"] == 200 and len(info["rerank"]["range"]) == 2
    assert any("fast-scan" in line for line in logs)
    assert (tmp_path / "fs" / SQ4_FILE).stat().st_size < HAYSTACK * 260

    monkeypatch.setattr(index_search, "MMAP_MIN_BYTES", 1)
    pack = Pack(tmp_path / "fs")
    assert SQ4_FILE in {f.path for f in pack.manifest.files}
    hits = pack.search(copies, k=5)
    first = np.array([row[0].item.id for row in hits])
    assert (first == hidden[copy_of]).all()
    exact = (copies * originals[copy_of]).sum(1)
    shown = np.array([row[0].similarity for row in hits])
    assert np.abs(shown - exact).max() < 0.02
    # the fast-scan codes alone would show scores far off: the re-ranking is what makes them usable
    raw, _ = pack.index.search(copies, 1)
    assert np.abs(raw[:, 0] - exact).max() > 0.05
    pack.close()

    # a re-ranking file of the wrong shape, or a manifest without the codes' range, is refused by name
    m = json.loads((tmp_path / "fs" / "manifest.json").read_text())
    bad = json.loads(json.dumps(m))
    del bad["index"]["rerank"]["range"]
    _refused(tmp_path / "fs", bad, "index.rerank.range")
    bad["index"]["rerank"]["range"], bad["index"]["rerank"]["dtype"] = [0.2, -0.2], "sq4"
    _refused(tmp_path / "fs", bad, "index.rerank.range")
    bad["index"]["rerank"]["dtype"] = "int3"
    _refused(tmp_path / "fs", bad, "index.rerank.dtype")
    np.save(tmp_path / "fs" / SQ4_FILE, np.zeros((count, 512), dtype=np.uint8))
    for f in m["files"]:
        if f["path"] == SQ4_FILE:
            f["size"] = (tmp_path / "fs" / SQ4_FILE).stat().st_size
    _refused(tmp_path / "fs", m, f"re-ranking file {SQ4_FILE}")


def test_pq_codes_with_their_factor_keep_similarities_of_real_copies(real_copies):
    """PQ codes (10 bits per 8 dimensions) with the float16 factor x . x^: a real copy's score, q . x^
    divided by the factor, lands within 0.04 of the exact one, where q . x^ alone is biased low."""
    import faiss

    originals, copies, copy_of = real_copies
    rng = np.random.default_rng(4)
    sample = _centres(rng, originals, copies)[rng.integers(0, 200, 40_000)]  # like the haystack below
    sample += 0.03 * rng.standard_normal(sample.shape).astype("float32")
    book = pq_train(sample / np.linalg.norm(sample, axis=1, keepdims=True), 64)
    assert book.shape == (64, 1024, 8) and book.dtype == np.float32
    rows = pq_encode(originals, book)
    assert rows.shape == (len(originals), 82) and rows.dtype == np.uint8
    recon, factor = pq_decode(rows, book)
    pq = faiss.ProductQuantizer(512, 64, 10)  # the bit packing is faiss's own
    faiss.copy_array_to_vector(book.ravel(), pq.centroids)
    assert np.array_equal(recon, pq.decode(np.ascontiguousarray(rows[:, :80])))
    assert np.allclose(factor, (originals * recon).sum(1), atol=2e-3)
    exact = (copies * originals[copy_of]).sum(1)
    estimate = (copies * recon[copy_of]).sum(1) / factor[copy_of]
    assert np.abs(estimate - exact).max() < 0.04
    assert np.abs((copies * recon[copy_of]).sum(1) - exact).max() > 0.04


def test_pq_reranked_pack_with_laion_metadata_fits_its_disk_budget(tmp_path, real_copies, monkeypatch):
    """A disk budget is the whole pack's: with LAION-sized captions and URLs the planner leaves 4-bit
    scalar rows out for PQ rows, the sealed pack fits the budget, and every real edited copy still
    finds its original first with a score close to the exact one. Its codebook is checked as a
    stranger's file."""
    from lib_replicheck.builder.stages import index_stage, metadata_row_bytes, metadata_stage
    from lib_replicheck.embedders import sscd
    from lib_replicheck.packs.publish import seal, staging_dir

    originals, copies, copy_of = real_copies
    store, hidden = _haystack(tmp_path, originals, copies, meta=_laion_row)
    meta = sum(metadata_row_bytes(_laion_row(s, i)) for s in range(3) for i in range(HAYSTACK // 3))
    pq_index = fac.choose(HAYSTACK, 512, "cosine", 1024**3, design="fastscan").disk_bytes - HAYSTACK * (256 - 82) \
        + 64 * 1024 * 8 * 4  # the index with PQ rows and their codebook instead of 4-bit scalar rows
    budget = int(meta + pq_index * 1.15)  # sq4 rows (174 more bytes a vector) do not fit
    plan = fac.choose(HAYSTACK, 512, "cosine", 1024**3, budget, metadata_bytes=meta)
    assert plan.design == "fastscan" and plan.rerank_dtype == "pq"
    assert fac.choose(HAYSTACK, 512, "cosine", 1024**3, budget).rerank_dtype == "sq4"  # the index alone fits
    tmp = staging_dir(tmp_path / "pq")
    opts = BuildOptions(embedder="sscd", memory_budget=1024**3, disk_budget=budget, max_query_ms=50)
    info, count, vectors = index_stage(store, spec := sscd.spec_for("sscd_disc_mixup"), tmp, opts, lambda *a: None)
    metadata_stage(store, tmp)
    # the estimate that planned the budget is close to what SQLite writes
    assert 0.9 < meta / (tmp / "metadata.sqlite").stat().st_size < 1.1
    seal(tmp, tmp_path / "pq", name="pq", title=None, description="", source={}, spec=spec,
         count=count, vectors=vectors, index=info)
    assert info["rerank"]["dtype"] == "pq" and info["rerank"]["file"] == PQ_FILE
    assert info["rerank"]["codebook"] == PQ_CODEBOOK
    assert sum(p.stat().st_size for p in (tmp_path / "pq").iterdir()) <= budget

    monkeypatch.setattr(index_search, "MMAP_MIN_BYTES", 1)
    pack = Pack(tmp_path / "pq")
    assert {PQ_FILE, PQ_CODEBOOK} <= {f.path for f in pack.manifest.files}
    hits = pack.search(copies, k=5)
    assert (np.array([row[0].item.id for row in hits]) == hidden[copy_of]).all()
    exact = (copies * originals[copy_of]).sum(1)
    assert np.abs(np.array([row[0].similarity for row in hits]) - exact).max() < 0.04
    assert hits[0][0].item.caption.startswith("A photograph of item")
    # rows whose length factor is zero or not finite (a stranger's file) are no match, not a division by 0
    rows = np.load(tmp_path / "pq" / PQ_FILE, mmap_mode="r+")
    own = hidden[copy_of[0]]
    rows[own, -2:] = np.array([0.0], dtype=np.float16).view(np.uint8)
    rows[hidden[copy_of[-1]], -2:] = np.array([np.nan], dtype=np.float16).view(np.uint8)
    rows.flush()
    del rows
    sims, ids = pack.reranker.rescore(copies[[0, -1]], np.array([[own, 5], [hidden[copy_of[-1]], -1]]))
    assert ids.tolist() == [[5, -1], [-1, -1]] and np.isfinite(sims[0, 0]) and (sims[0, 1:] == -np.inf).all()
    pack.close()

    m = json.loads((tmp_path / "pq" / "manifest.json").read_text())
    bad = json.loads(json.dumps(m))
    del bad["index"]["rerank"]["codebook"]
    _refused(tmp_path / "pq", bad, "index.rerank.codebook")
    book = np.load(tmp_path / "pq" / PQ_CODEBOOK)
    for hostile, why in [(book[:, :1000], r"holds float32 \(64, 1000, 8\), not float32"),
                         (np.where(book > 0, np.nan, book).astype("float32"), "holds values that are not finite"),
                         (np.array([{"a": 1}], dtype=object), "cannot be read")]:
        buf = io.BytesIO()
        np.save(buf, hostile, allow_pickle=True)
        (tmp_path / "pq" / PQ_CODEBOOK).write_bytes(buf.getvalue())
        for f in m["files"]:
            if f["path"] == PQ_CODEBOOK:
                f["size"] = len(buf.getvalue())
        _refused(tmp_path / "pq", m, f"re-ranking codebook {re.escape(PQ_CODEBOOK)} {why}")


def test_fastscan_index_file_is_checked_before_faiss_reads_it(tmp_path):
    """Block lists declare their sizes list by list; a cut or inflated one is a clear error naming the
    list, before faiss allocates what it declares."""
    import faiss

    rng = np.random.default_rng(1)
    x = rng.standard_normal((6000, 64)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.index_factory(64, "IVF32_HNSW32,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    path = tmp_path / "index.faiss"
    faiss.write_index(index, str(path))
    data = path.read_bytes()
    layout = index_check.check_layout(io.BytesIO(data), len(data), "cosine", 64, 6000)
    assert layout.kind == "IwPf(IHNf(IxFI))"
    assert index_search.read(path, "cosine", 64, 6000).ntotal == 6000
    for cut in (len(data) // 2, len(data) - 1):
        with pytest.raises(index_check.LayoutError, match=r"IwPf.invlists\[\d+\]"):
            index_check.check_layout(io.BytesIO(data[:cut]), cut, "cosine", 64, 6000)
    # the first list's id count set to 2^40: refused from its declared size, nothing allocated
    il = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    first = data.rindex(b"ilbl") + 4 + 4 * 8
    assert int.from_bytes(data[first: first + 8], "little") == il.list_size(0)
    bad = data[:first] + (1 << 40).to_bytes(8, "little") + data[first + 8:]
    with pytest.raises(index_check.LayoutError, match=r"IwPf.invlists\[0\].ids declares"):
        index_check.check_layout(io.BytesIO(bad), len(bad), "cosine", 64, 6000)
    path.write_bytes(bad)
    with pytest.raises(PackError, match="index.faiss is corrupt"):
        index_search.read(path, "cosine", 64, 6000)
