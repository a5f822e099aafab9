"""Packs from DataComp's published CLIP features (`build --embeddings`): its metadata folder of
`NAME.npz` + `NAME.parquet` shards, as np.savez and np.savez_compressed write them, from a folder and
from URLs served on 127.0.0.1; the array read is the one of the model named (`b32_img`, `l14_img`)."""

from __future__ import annotations

import json

import pytest

from tests.embedding_layouts import datacomp_folder, distractors
from tests.test_embedding_packs import (EMBEDDER, PHOTO_ROWS, assert_finds_photos, clip, rows, serve,  # noqa: F401
                                        server, split)


def datacomp_rows(rows):
    vectors, meta = rows
    return vectors, [{"url": m["url"], "caption": m["caption"], "width": 640, "height": 480} for m in meta]


@pytest.mark.parametrize("compressed", [False, True], ids=["np.savez", "np.savez_compressed"])
def test_a_datacomp_folder_builds_a_pack_that_finds_the_photos(tmp_path, rows, clip, photos, capsys, monkeypatch,
                                                               compressed):
    import hashlib

    from lib_replicheck import embedders
    from lib_replicheck.builder import embedding_datacomp
    from lib_replicheck.cli.main import main

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded while building from embeddings")

    monkeypatch.setattr(embedders, "load", no_model)
    monkeypatch.setattr(embedding_datacomp, "READ_BYTES", 4096)  # a deflated member in many small reads
    folder = datacomp_folder(tmp_path / "datacomp", split(datacomp_rows(rows)), compressed=compressed)
    rc = main(["build", "--embeddings", str(folder), "--out", str(tmp_path / "pack"), "--embedder", EMBEDDER,
               "--shard-size", "64", "--progress", "off"])
    assert rc == 0, capsys.readouterr().err
    assert "300 images from published embeddings" in capsys.readouterr().out
    monkeypatch.undo()
    pack = assert_finds_photos(tmp_path / "pack", clip, photos)
    manifest = json.loads((pack.path / "manifest.json").read_text())
    assert manifest["source"]["embeddings"]["layout"] == "datacomp"
    assert manifest["source"]["embeddings"]["array"] == "b32_img"
    items = pack.metadata.get(list(range(300)))
    assert [items[k].url for k in range(300)] == [f"https://img.example/{k}.jpg" for k in range(300)]
    row = PHOTO_ROWS[1]
    assert items[row].caption == f"caption {row}" and (items[row].width, items[row].height) == (640, 480)
    assert items[row].source == hashlib.md5(f"https://img.example/{row}.jpg".encode()).hexdigest()  # the uid


def test_a_deflated_member_resumes_past_the_shards_already_built(tmp_path, rows, clip, photos):
    """Rows before a missing shard cannot be skipped in a deflate stream: they are read and passed
    over, and the rebuilt shard holds its own rows."""
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.options import BuildOptions
    from lib_replicheck.builder.shards import ShardStore

    folder = datacomp_folder(tmp_path / "datacomp", split(datacomp_rows(rows)), compressed=True)
    opts = BuildOptions(embedder=EMBEDDER, shard_size=50)
    work = tmp_path / "work"
    build_from_embeddings(folder, tmp_path / "first", opts, work=work, keep_work=True, log=lambda s: None)
    ShardStore(work).discard(3)  # rows 150 to 199 of the first npz
    logs: list[str] = []
    build_from_embeddings(folder, tmp_path / "pack", opts, work=work, log=logs.append)
    assert [line.split(":")[0] for line in logs if line.startswith("shard ") and " rows of " in line] == [
        "shard 00003"]
    pack = assert_finds_photos(tmp_path / "pack", clip, photos)
    items = pack.metadata.get(list(range(150, 200)))
    assert [items[k].url for k in range(150, 200)] == [f"https://img.example/{k}.jpg" for k in range(150, 200)]


def test_the_array_is_the_named_models(tmp_path, capsys):
    """clip:ViT-L-14/openai reads `l14_img` (768 columns), as DataComp's own baselines do; a model
    DataComp published no features of is refused naming the arrays there are."""
    from lib_replicheck.cli.main import main
    from lib_replicheck.packs.pack import Pack

    meta = [{"url": f"https://dc.example/{i}.jpg", "caption": f"c{i}", "width": 64, "height": 48} for i in range(40)]
    folder = datacomp_folder(tmp_path / "dc", [(distractors(40, 768, 5), meta)], model_dim=768)
    args = ["build", "--embeddings", str(folder), "--progress", "off"]
    assert main(args + ["--out", str(tmp_path / "l14"), "--embedder", "clip:ViT-L-14/openai"]) == 0
    pack = Pack(tmp_path / "l14")
    assert pack.embedder.id == "clip:ViT-L-14/openai" and pack.embedder.dim == 768 and pack.manifest.count == 40
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "rn"), "--embedder", "clip:RN50/openai"]) == 2
    err = capsys.readouterr().err
    assert "ViT-L-14 (l14_img) and ViT-B-32 (b32_img), not of RN50" in err and not (tmp_path / "rn").exists()


def test_a_url_list_of_hub_files_is_downloaded_and_built(tmp_path, rows, clip, photos, server, capsys):
    """DataComp's pools keep NAME.npz and NAME.parquet side by side at the top of the hub's dataset;
    a list of their URLs on 127.0.0.1 is fetched into metadata/ and built."""
    from lib_replicheck.cli.main import main

    folder = datacomp_folder(tmp_path / "dc", split(datacomp_rows(rows)))
    urls = serve(server, folder / "metadata", "/datasets/mlfoundations/datacomp_small/resolve/main")
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    rc = main(["build", "--embeddings", str(tmp_path / "urls.txt"), "--out", str(tmp_path / "pack"),
               "--embedder", EMBEDDER, "--progress", "off"])
    assert rc == 0, capsys.readouterr().err
    pack = assert_finds_photos(tmp_path / "pack", clip, photos)
    files = json.loads((pack.path / "manifest.json").read_text())["source"]["embeddings"]["files"]
    assert sorted(f["path"] for f in files) == sorted(f"metadata/{p.name}" for p in (folder / "metadata").iterdir())
