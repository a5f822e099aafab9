"""Recipes against hostile lists and image hosts, built as a user builds them (`packs get`, in a
process of its own with its memory bounded), against a real HTTP server on 127.0.0.1.

- a parquet list of a few hundred kB that expands to gigabytes (one dictionary value on every
  row) is refused, naming the file, before it is expanded;
- a list whose URL column is a struct, list or map is refused naming the column and the recipe field;
- an image host that trickles its body or its headers a byte at a time is cut at the request's
  wall-clock limit: the row is counted as timed out and the other images are built.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, jpeg_bytes
from httpfaults import FaultServer
from test_recipes import csv_registry

#: the address space a build may take here: far below what the list bombs expand to
MEMORY = 3 * 1024**3


def get(*args, home: Path, memory: int | None = MEMORY, timeout: float = 300):
    def limit():
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = dict(os.environ, REPLICHECK_HOME=str(home), OMP_NUM_THREADS="1")
    env.pop("REPLICHECK_REGISTRY", None)
    return subprocess.run([sys.executable, "-m", "lib_replicheck", "packs", "get", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def one_error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("replicheck: error: ")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return lines[0]


def _dictionary_bomb(path: Path, rows: int, value_bytes: int) -> Path:
    """A LAION-style parquet (URL, TEXT) whose TEXT is one value of `value_bytes` used by every row:
    small on disk, rows x value_bytes once read as plain strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * value_bytes]))
    urls = pa.array([f"http://127.0.0.1:9/img/{i}.jpg" for i in range(rows)])
    pq.write_table(pa.table({"URL": urls, "TEXT": text}), path, compression="zstd",
                   dictionary_pagesize_limit=4 * value_bytes)
    return path


def test_a_parquet_list_bomb_is_refused_naming_the_file(tmp_path):
    """8,000 rows sharing one 512 kB caption: about 200 kB on disk, 4 GB as read by pq.read_table."""
    bomb = _dictionary_bomb(tmp_path / "aesthetics.parquet", 8000, 512 * 1024)
    assert bomb.stat().st_size < 1024**2
    r = get("laion-parquet", "--list", bomb, "--json", home=tmp_path / "home")
    line = one_error_line(r)
    assert str(bomb) in line and "bytes of text" in line, line
    assert not list((tmp_path / "home" / "packs").glob("laion-parquet"))


def test_build_of_a_parquet_bomb_is_refused_naming_the_file(tmp_path):
    """`build FILE.parquet` reads its parquet as a recipe's list is read, a batch at a time within the
    bounds: the same bomb is refused naming the file, in a process whose memory is bounded far below
    what reading the whole file would take."""
    bomb = _dictionary_bomb(tmp_path / "laion.parquet", 8000, 512 * 1024)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    r = subprocess.run([sys.executable, "-m", "lib_replicheck", "build", str(bomb), "--out", str(tmp_path / "pack"),
                        "--embedder", "pdq"], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                       text=True, timeout=300, preexec_fn=limit)
    line = one_error_line(r)
    assert str(bomb) in line and "bytes of text" in line, line
    assert not (tmp_path / "pack").exists()


def test_a_parquet_list_over_the_row_group_bound_is_refused_before_reading(tmp_path):
    """Plain-encoded, compressed text: the metadata's uncompressed size says what reading would take."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 700  # 700 MB of text in one row group, a few MB on disk
    big = tmp_path / "zeros.parquet"
    pq.write_table(pa.table({"URL": [f"http://127.0.0.1:9/{i}" for i in range(rows)],
                             "TEXT": ["\0" * (1024**2)] * rows}), big, compression="zstd", use_dictionary=False)
    assert big.stat().st_size < 8 * 1024**2
    r = get("laion-parquet", "--list", big, "--json", home=tmp_path / "home")
    line = one_error_line(r)
    assert str(big) in line and "row group 0" in line and "smaller row groups" in line, line


@pytest.mark.parametrize("kind", ["struct", "list", "map"])
def test_a_url_column_that_is_not_text_is_refused_naming_the_field(tmp_path, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls = {"struct": pa.array([{"href": "http://127.0.0.1:9/a.jpg"}]),
            "list": pa.array([["http://127.0.0.1:9/a.jpg"]]),
            "map": pa.array([[("href", "http://127.0.0.1:9/a.jpg")]], pa.map_(pa.string(), pa.string()))}[kind]
    own = tmp_path / f"{kind}.parquet"
    pq.write_table(pa.table({"URL": urls, "TEXT": ["a caption"]}), own)
    r = get("laion-parquet", "--list", own, home=tmp_path / "home")
    line = one_error_line(r)
    assert str(own) in line and "column 'URL'" in line and "list.columns.url" in line and kind in line, line
    assert "Arrow" not in line


@pytest.mark.parametrize("fault", ["trickle", "slow-headers"])
def test_a_trickling_image_host_is_cut_at_the_time_limit(server, pack_photos, tmp_path, fault):
    """One image host sends a byte every half second (its body, or its headers): the row fails as
    timed out at the request's wall-clock limit (3 x download_timeout) and the other images are
    built; without the limit this build would wait for the whole trickle (over 15 minutes)."""
    from lib_replicheck.images import load_image

    rows = []
    for i, p in enumerate(pack_photos[:4]):
        im = load_image(p)
        im.thumbnail((320, 320))
        rows.append(f"{server.add(f'/img/{i}.jpg', jpeg_bytes(im))};photo {i}")
    rows.append(f"{server.add('/img/slow.jpg', b'x' * 2000, fault, stall=0.5)};slow")
    registry = csv_registry(server, "slow-host", rows, download_timeout=1)
    r = get("slow-host", "--registry", registry, "--json", home=tmp_path / "home", memory=None, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert (res["listed"], res["fetched"], res["failed"]) == (5, 4, 1), res
    assert res["failures"] == {"timed out (3 s in all)": 1}, res["failures"]
    assert res["count"] == 4 - res["skipped"]
    sent = server.routes["/img/slow.jpg"].sent
    assert sent < 100, f"the trickling host sent {sent} bytes before the request was cut"
