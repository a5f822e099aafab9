"""Hostile index folders for `build --embeddings FOLDER` with a `knn.index`: the index is walked by
packs/index_check.py before faiss reads it, so one that lies about its size, holds another row count than
its metadata, is of a type outside the allow-list or maps rows to ids of its own is refused with one
line naming it (exit 2, no pack) unless the folder's img_emb files can rebuild it."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from tests.embedding_layouts import clip_retrieval_folder, distractors
from tests.hostile.test_hostile_embeddings import build, rows


def index_folder(tmp_path, factory: str = "Flat", n: int = 30, indexed: int | None = None, ids: bool = False):
    import faiss

    vectors = distractors(n, 512)
    folder = clip_retrieval_folder(tmp_path / "src", [(vectors, rows(n))])
    index = faiss.index_factory(512, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(distractors(2000, 512, 1))
    kept = vectors[: indexed if indexed is not None else n]
    if ids:
        index = faiss.IndexIDMap(index)
        index.add_with_ids(kept, np.arange(len(kept), dtype=np.int64) * 7)
    else:
        index.add(kept)
    faiss.write_index(index, str(folder / "knn.index"))
    return folder


def without_vectors(folder):
    shutil.rmtree(folder / "img_emb")
    return folder


def test_an_index_of_another_row_count_than_its_metadata_is_refused(tmp_path, capsys):
    folder = without_vectors(index_folder(tmp_path, indexed=29))
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and "knn.index" in err and "index holds 29 vectors, the manifest says 30" in err
    assert "no img_emb/ files to build a new index from" in err


def test_an_index_whose_header_asks_for_terabytes_is_refused_before_faiss_reads_it(tmp_path, capsys, monkeypatch):
    import faiss

    folder = without_vectors(index_folder(tmp_path))
    body = bytearray((folder / "knn.index").read_bytes())
    body[8:16] = struct.pack("<q", 2**40)  # IndexFlatIP's ntotal, right after its d
    (folder / "knn.index").write_bytes(body)
    monkeypatch.setattr(faiss, "read_index", None)  # faiss must never see it
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and "index file knn.index is corrupt or not a faiss index that packs use" in err


@pytest.mark.parametrize("factory,ids,expected", [
    ("HNSW32", False, "type 'IHNf', not one replicheck packs use"),
    ("Flat", True, "maps rows to ids of its own"),
])
def test_an_index_that_cannot_be_kept_needs_its_vectors(tmp_path, capsys, factory, ids, expected):
    folder = index_folder(tmp_path, factory, ids=ids)
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 0, err  # img_emb/ is there: a new index is built from it
    assert expected in err and "a new index is built from its vectors" in err
    shutil.rmtree(tmp_path / "pack")
    rc, err = build(tmp_path, without_vectors(folder), capsys)
    assert rc == 2 and "knn.index" in err and expected in err and "no img_emb/ files" in err


def test_an_index_folder_without_metadata_is_named(tmp_path, capsys):
    folder = index_folder(tmp_path)
    shutil.rmtree(folder / "metadata")
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and "no metadata/metadata_N.parquet beside its index" in err
