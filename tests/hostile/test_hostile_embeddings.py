"""Hostile embedding files for `build --embeddings`: each is refused with one line naming the file (and
row or field), exit status 2, and no pack; metadata text that is too long is cut, not stored whole."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tests.embedding_layouts import clip_retrieval_folder, distractors, pd12m_folder

EMBEDDER = "clip:ViT-B-32/random"


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"image_path": f"{i}.jpg", "caption": f"c{i}", "url": f"https://x.example/{i}.jpg", "key": f"{i:05d}",
             "id": f"id{i}", "width": 64, "height": 48} for i in range(start, start + n)]


def build(tmp_path: Path, source: Path, capsys) -> tuple[int, str]:
    from lib_replicheck.cli.main import main

    rc = main(["build", "--embeddings", str(source), "--out", str(tmp_path / "pack"), "--embedder", EMBEDDER,
               "--progress", "off"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc != 0:
        assert not (tmp_path / "pack").exists()
    return rc, err


def raw_npy(path: Path, header: str, data: bytes) -> None:
    """A version 1.0 .npy file with this header text, padded as numpy pads it."""
    text = header.encode("latin-1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data)


def test_row_counts_that_differ_name_both_files(tmp_path, capsys):
    folder = pd12m_folder(tmp_path / "src", [(distractors(20, 512), rows(19) + rows(1, 19))])
    np.save(folder / "embeddings" / "pd12m.00.npy", distractors(21, 512))
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2
    assert "pd12m.00.npy holds 21 rows but its metadata file" in err and "pd12m.00.parquet holds 20" in err


@pytest.mark.parametrize("bad,what", [(np.nan, "not finite"), (np.inf, "not finite"), (0.0, "zero")])
def test_rows_that_are_not_finite_or_zero_are_refused_naming_the_row(tmp_path, capsys, bad, what):
    vectors = distractors(30, 512)
    vectors[12] = bad if what == "zero" else vectors[12]
    if what != "zero":
        vectors[12, 7] = bad
    folder = clip_retrieval_folder(tmp_path / "src", [(vectors, rows(30))])
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and f"img_emb_0.npy: row 12 is {what}" in err


@pytest.mark.parametrize("header,data,expected", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (20, 512), }", b"\0" * 4 * 512 * 5,
     "declares 40,960 bytes of data, the file holds 10,240"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000, 512), }", b"\0" * 16,
     "at most"),
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (20, 512), }", b"\0" * 8 * 512 * 20, "'<f8'"),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (20,), }", b"\x80\x04N.", "'|O'"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (20,) + __import__('os').getpid(), }", b"",
     "not a plain dict"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (10240,), }", b"\0" * 4 * 10240,
     "not rows of float16 or float32"),
])
def test_npy_headers_that_lie_or_ask_for_more_are_refused(tmp_path, capsys, header, data, expected):
    folder = pd12m_folder(tmp_path / "src", [(distractors(20, 512), rows(20))])
    raw_npy(folder / "embeddings" / "pd12m.00.npy", header, data)
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and "pd12m.00.npy" in err and expected in err


def test_huge_metadata_strings_are_cut(tmp_path, capsys):
    from lib_replicheck.builder.embedding_layouts import MAX_CAPTION, MAX_KEY, MAX_URL
    from lib_replicheck.packs.pack import Pack

    meta = rows(20)
    meta[3] = {**meta[3], "caption": "A" * 3_000_000, "url": "https://x.example/" + "u" * 200_000,
               "key": "k" * 100_000}
    folder = clip_retrieval_folder(tmp_path / "src", [(distractors(20, 512), meta)])
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 0, err
    item = Pack(tmp_path / "pack").metadata.get([3])[3]
    assert len(item.caption) == MAX_CAPTION and len(item.url) == MAX_URL and len(item.source) == MAX_KEY


def test_metadata_of_the_wrong_kind_is_refused(tmp_path, capsys):
    import pandas as pd

    folder = pd12m_folder(tmp_path / "src", [(distractors(20, 512), rows(20))])
    pd.DataFrame({"id": range(20), "url": range(20), "caption": ["c"] * 20}).to_parquet(
        folder / "metadata" / "pd12m.00.parquet")
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and "pd12m.00.parquet: column url is int64, not text" in err
    (folder / "metadata" / "pd12m.00.parquet").write_bytes(b"PAR1 not really")
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and "pd12m.00.parquet: not a readable parquet" in err
    (folder / "metadata" / "pd12m.00.parquet").unlink()
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and "pd12m.00.npy has no metadata file" in err


@pytest.mark.parametrize("line,expected", [
    ("file:///etc/passwd", "only http(s)"),
    ("ftp://host.example/img_emb/img_emb_0.npy", "only http(s)"),
    ("https://host.example/img_emb/..%2F..%2Fevil.npy", "not a file of clip-retrieval's"),
    ("https://host.example/somewhere/else.npy", "not a file of clip-retrieval's"),
    ("https://host.example/img_emb/img_emb_0.npy notasha", "give a URL and, optionally, its sha256"),
])
def test_url_lists_name_only_layout_files_over_http(tmp_path, capsys, line, expected):
    listing = tmp_path / "urls.txt"
    listing.write_text(line + "\n")
    rc, err = build(tmp_path, listing, capsys)
    assert rc == 2 and expected in err and not (tmp_path / ".pack.work" / "downloads").exists()


def test_a_metadata_row_group_too_large_to_read_at_once_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    from lib_replicheck.builder import embedding_layouts

    meta = rows(20)
    meta[5] = {**meta[5], "caption": "B" * 200_000}
    folder = clip_retrieval_folder(tmp_path / "src", [(distractors(20, 512), meta)])
    monkeypatch.setattr(embedding_layouts, "MAX_ROW_GROUP_BYTES", 100_000)
    monkeypatch.setattr(embedding_layouts, "_metadata_batches", None)  # nothing may be read
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and "metadata_0.parquet: row group 0 holds" in err and "at most 100,000" in err
