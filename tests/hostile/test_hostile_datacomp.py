"""Hostile DataComp npz files for `build --embeddings`: an npz is a zip of npy files, so it can lie in
either. Each is refused with one line naming the file and what is wrong, exit status 2, no pack, and
nothing is decompressed or allocated beyond the bounds."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.embedding_layouts import datacomp_folder, distractors
from tests.hostile.test_hostile_embeddings import build, raw_npy


def meta(n: int) -> list[dict]:
    return [{"url": f"https://dc.example/{i}.jpg", "caption": f"c{i}", "width": 64, "height": 48} for i in range(n)]


def one_shard(tmp_path: Path, n: int = 20) -> tuple[Path, Path]:
    folder = datacomp_folder(tmp_path / "src", [(distractors(n, 512), meta(n))])
    return folder, next((folder / "metadata").glob("*.npz"))


def npy_bytes(tmp_path: Path, header: str, data: bytes) -> bytes:
    raw_npy(tmp_path / "member.npy", header, data)
    return (tmp_path / "member.npy").read_bytes()


def write_npz(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, body in members.items():
            z.writestr(f"{name}.npy", body)


def test_row_counts_that_differ_name_both_files(tmp_path, capsys):
    folder, npz = one_shard(tmp_path)
    np.savez(npz, b32_img=distractors(21, 512).astype(np.float16))
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and f"{npz.name}, array b32_img holds 21 rows but its metadata file" in err
    assert f"{npz.with_suffix('.parquet').name} holds 20" in err


@pytest.mark.parametrize("header,data,expected", [
    ("{'descr': '<f2', 'fortran_order': False, 'shape': (20, 512), }", b"\0" * 2 * 512 * 5,
     "declares 20,480 bytes of data, the file holds 5,120"),
    ("{'descr': '<f2', 'fortran_order': False, 'shape': (10000000000000, 512), }", b"\0" * 16, "at most"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (20,) + __import__('os').getpid(), }", b"",
     "not a plain dict"),
])
def test_a_member_whose_npy_header_lies_is_refused(tmp_path, capsys, header, data, expected):
    folder, npz = one_shard(tmp_path)
    write_npz(npz, {"b32_img": npy_bytes(tmp_path, header, data)})
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and npz.name in err and "array b32_img" in err and expected in err


def test_a_pickled_object_array_is_refused_unread(tmp_path, capsys, monkeypatch):
    folder, npz = one_shard(tmp_path)
    np.savez(npz, b32_img=np.array([{"x": 1}] * 20, dtype=object))  # pickled by np.save
    monkeypatch.setattr(np, "load", None)  # numpy's reader, which could unpickle, is never called
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and npz.name in err and "data type '|O' is not one packs use" in err


def test_a_zip_bomb_member_is_refused_before_it_is_decompressed(tmp_path, capsys, monkeypatch):
    """20 rows declared in the header, then 200 MB of zeros behind it that deflate to 200 kB: refused
    from the sizes in the zip directory, and no rows are ever decompressed."""
    from lib_replicheck.builder import embedding_datacomp

    folder, npz = one_shard(tmp_path)
    header = "{'descr': '<f2', 'fortran_order': False, 'shape': (204800, 512), }"
    with zipfile.ZipFile(npz, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("b32_img.npy", "w") as m:
        m.write(npy_bytes(tmp_path, header, b""))
        zeros = bytes(1024 * 1024)
        for _ in range(200):
            m.write(zeros)
    assert npz.stat().st_size < 1024**2
    monkeypatch.setattr(embedding_datacomp, "MemberRows", None)
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and npz.name in err and "more than 20 to 1: a zip bomb" in err


def test_a_deflated_member_cut_or_corrupted_is_refused_naming_it(tmp_path, capsys):
    folder, npz = one_shard(tmp_path)
    np.savez_compressed(npz, b32_img=distractors(20, 512).astype(np.float16))
    body = bytearray(npz.read_bytes())
    with zipfile.ZipFile(npz) as z:
        info = z.getinfo("b32_img.npy")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size - 40
    body[at:at + 8] = b"\xff" * 8  # the deflate stream's last bytes: the header reads, the rows do not
    npz.write_bytes(body)
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and npz.name in err and "array b32_img" in err and "Traceback" not in err


def test_a_zip_directory_of_too_many_members_is_refused_before_it_is_read(tmp_path, capsys):
    folder, npz = one_shard(tmp_path)
    write_npz(npz, {f"a{i}": b"" for i in range(100)})
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and npz.name in err and "declares 100 members" in err


@pytest.mark.parametrize("content,expected", [
    (b"PK\x03\x04 not a zip at all", "not a zip file"),
    (None, "holds no array b32_img (it holds l14_img)"),
])
def test_npz_files_that_are_not_datacomps_are_refused(tmp_path, capsys, content, expected):
    folder, npz = one_shard(tmp_path)
    if content is None:
        np.savez(npz, l14_img=distractors(20, 768).astype(np.float16))
    else:
        npz.write_bytes(content)
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and npz.name in err and expected in err


def test_a_row_that_is_not_finite_names_the_file_and_row(tmp_path, capsys):
    vectors = distractors(20, 512)
    vectors[12, 3] = np.nan
    folder = datacomp_folder(tmp_path / "src", [(vectors, meta(20))], compressed=True)
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and ".npz: row 12 is not finite" in err


def test_an_npz_without_its_parquet_is_named(tmp_path, capsys):
    folder, npz = one_shard(tmp_path)
    npz.with_suffix(".parquet").unlink()
    rc, err = build(tmp_path, folder, capsys)
    assert rc == 2 and f"{npz.name} has no metadata file" in err
