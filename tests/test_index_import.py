"""An existing clip-retrieval / autofaiss index folder as a pack (`build --embeddings FOLDER` with a
`knn.index`): the index made by the real autofaiss (2.18.0, installed without its dependencies into
.cache/autofaiss by tests/setup.sh) on clip-retrieval's layout, kept as it is when packs/index_check.py
accepts it, otherwise rebuilt from its vectors (read back from the index, or from img_emb/)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from tests.conftest import REPO
from tests.embedding_layouts import clip_retrieval_folder
from tests.test_embedding_packs import EMBEDDER, assert_finds_photos, clip, rows, split  # noqa: F401

AUTOFAISS = REPO / ".cache" / "autofaiss"


@pytest.fixture(scope="module")
def build_index():
    if not (AUTOFAISS / "autofaiss" / "__init__.py").is_file():
        pytest.fail(f"{AUTOFAISS} is missing; run `bash tests/setup.sh` (it installs autofaiss there)")
    sys.path.append(str(AUTOFAISS))  # after the environment's own packages (numpy, faiss, pyarrow)
    from autofaiss import build_index

    yield build_index
    sys.path.remove(str(AUTOFAISS))


def index_folder(tmp_path, rows, build_index, **kw):
    """clip-retrieval's folder of the 300 rows, indexed by autofaiss as `clip-retrieval index` does
    (inner product, the img_emb folder), into `knn.index` beside them."""
    folder = clip_retrieval_folder(tmp_path / "laion-index", split(rows))
    build_index(embeddings=str(folder / "img_emb"), index_path=str(folder / "knn.index"),
                index_infos_path=str(folder / "infos.json"), metric_type=kw.pop("metric_type", "ip"),
                max_index_memory_usage="1G", current_memory_available="2G", verbose=30, **kw)
    return folder


def build(folder, out, capsys) -> str:
    from lib_replicheck.cli.main import main

    rc = main(["build", "--embeddings", str(folder), "--out", str(out), "--embedder", EMBEDDER, "--progress", "off"])
    err = capsys.readouterr().err
    assert rc == 0, err
    return err


def test_an_autofaiss_index_is_kept_as_it_is(tmp_path, rows, clip, photos, build_index, capsys):
    folder = index_folder(tmp_path, rows, build_index)
    assert json.loads((folder / "infos.json").read_text())["index_key"] == "Flat"  # autofaiss's choice here
    err = build(folder, tmp_path / "pack", capsys)
    assert "knn.index: IndexFlatIP of 300 vectors, kept as it is" in err
    pack = assert_finds_photos(tmp_path / "pack", clip, photos)
    assert (pack.path / "index.faiss").read_bytes() == (folder / "knn.index").read_bytes()
    index = json.loads((pack.path / "manifest.json").read_text())["index"]
    assert index["design"] == "imported" and index["imported_from"] == "knn.index" and index["recall_at_10"] == 1.0


def test_an_index_without_its_embeddings_gives_its_vectors_back(tmp_path, rows, clip, photos, build_index, capsys):
    folder = index_folder(tmp_path, rows, build_index, index_key="IVF4,Flat")
    shutil.rmtree(folder / "img_emb")
    err = build(folder, tmp_path / "pack", capsys)
    assert "knn.index: IndexIVFFlat of 300 vectors, kept as it is" in err
    assert "300 vectors read back from the index" in err
    pack = assert_finds_photos(tmp_path / "pack", clip, photos)
    items = pack.metadata.get(list(range(300)))
    assert [items[k].url for k in range(300)] == [f"https://img.example/{k}.jpg" for k in range(300)]
    assert not (tmp_path / ".pack.work").exists()


def test_an_l2_index_is_rebuilt_from_the_vectors_it_gives_back(tmp_path, rows, clip, photos, build_index, capsys):
    folder = index_folder(tmp_path, rows, build_index, metric_type="l2")
    shutil.rmtree(folder / "img_emb")
    err = build(folder, tmp_path / "pack", capsys)
    assert "searching by L2 distance (packs score by inner product); a new index is built from its vectors" in err
    pack = assert_finds_photos(tmp_path / "pack", clip, photos)
    assert json.loads((pack.path / "manifest.json").read_text())["index"]["design"] != "imported"


def test_an_index_type_outside_the_allow_list_is_rebuilt_from_img_emb(tmp_path, rows, clip, photos, build_index,
                                                                      capsys):
    folder = index_folder(tmp_path, rows, build_index, index_key="HNSW32", metric_type="l2")
    err = build(folder, tmp_path / "pack", capsys)
    assert "knn.index: index file knn.index is corrupt or not a faiss index that packs use" in err
    assert "type 'IHNf', not one replicheck packs use" in err and "a new index is built from its vectors" in err
    assert_finds_photos(tmp_path / "pack", clip, photos)
