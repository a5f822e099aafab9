"""A pack's arrays (.npy files) and re-ranking rows, crafted to cost gigabytes or to break numpy's
header reader: a header declaring 10^12 rows, one with an unbalanced '(', a manifest asking for
100,000 candidates with a 512 x 12-bit codebook, and a pack within every bound whose re-ranking
would still have taken gigabytes a query before its rows were decoded in chunks.

What could allocate what a file declares runs in a child process under a memory limit.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from _craft_packs import OPEN_IN_CHILD, faiss_bytes, flat_index, relist, run_child, write_pack
from test_hostile_routes import home  # noqa: F401 - the fixture of a small real PDQ pack

GB = 1024**3
DIM = 16


def npy_bytes(header: str, data: bytes = b"") -> bytes:
    """A version 1.0 .npy file with `header` as its dict text (padded as numpy pads it)."""
    text = header.encode("latin-1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


HOSTILE_HEADERS = [
    ("10^12 rows", "{'descr': '<f2', 'fortran_order': False, 'shape': (1000000000000, 16), }",
     "declares 32,000,000,000,000 bytes"),
    ("unbalanced parenthesis", "{'descr': '<f2', 'fortran_order': False, 'shape': (10, }",
     "header is not a plain dict"),
    ("a call in the header", "{'descr': '<f2', 'fortran_order': False, 'shape': __import__('os').getpid()}",
     "not a plain dict"),
    ("an object dtype", "{'descr': '|O', 'fortran_order': False, 'shape': (4, 16), }", "data type '|O'"),
    ("more rows than the file holds", "{'descr': '<f2', 'fortran_order': False, 'shape': (40, 16), }",
     "the file holds 128"),
]


def _with_background(folder, header: str, count: int = 4):
    """`folder`'s pack given a background set whose file is `header` over 4 x 16 float16 values."""
    (folder / "background.npy").write_bytes(npy_bytes(header, np.zeros((4, 16), np.float16).tobytes()))
    m = json.loads((folder / "manifest.json").read_text())
    m["background"] = {"file": "background.npy", "count": count}
    m["files"].append({"path": "background.npy", "size": 0, "sha256": "0" * 64})
    (folder / "manifest.json").write_text(json.dumps(m))
    relist(folder, "background.npy")


@pytest.mark.parametrize("label,header,message", HOSTILE_HEADERS, ids=[h[0] for h in HOSTILE_HEADERS])
def test_hostile_npy_headers_are_pack_errors_naming_the_file(tmp_path, label, header, message):
    """A background set's header that numpy would evaluate (TokenError) or allocate (MemoryError):
    refused by name, in a child limited to 2 GB."""
    pack = write_pack(tmp_path / "p", flat_index(4, DIM), dim=DIM, count=4)
    _with_background(pack, header)
    out = run_child(OPEN_IN_CHILD, str(pack), timeout=120, memory_bytes=2 * GB)
    assert out.returncode == 3, (label, out.returncode, out.stdout, out.stderr[-2000:])
    assert "background background.npy cannot be read" in out.stdout and message in out.stdout, (label, out.stdout)


@pytest.mark.parametrize("target", ["rows", "codebook"])
def test_hostile_headers_of_reranking_files_are_refused_by_name(tmp_path, target):
    """The re-ranking rows and the PQ codebook go through the same reader."""
    book = np.tile(np.linspace(-1, 1, 16, dtype=np.float32), (8, 1)).reshape(8, 16, 1)
    rows = np.zeros((4, 4 + 2), np.uint8)  # 8 codes of 4 bits, then the float16 factor

    def edit(m):
        m["index"]["rerank"] = {"file": "vectors.pq.npy", "dtype": "pq", "codebook": "rerank.pq-codebook.npy",
                                "candidates": 4}

    pack = tmp_path / "p"
    pack.mkdir()
    np.save(pack / "vectors.pq.npy", rows)
    np.save(pack / "rerank.pq-codebook.npy", book)
    write_pack(pack, flat_index(4, 8), dim=8, count=4, manifest_edit=edit)
    name = "vectors.pq.npy" if target == "rows" else "rerank.pq-codebook.npy"
    (pack / name).write_bytes(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, (, }"))
    relist(pack, name)
    out = run_child(OPEN_IN_CHILD, str(pack), timeout=120, memory_bytes=2 * GB)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr[-2000:])
    what = "re-ranking file" if target == "rows" else "re-ranking codebook"
    assert f"{what} {name} cannot be read (header is not a plain dict" in out.stdout, out.stdout


# -- re-ranking bounds ----------------------------------------------------------------------------------------


def _pq_pack(folder, *, count: int, variants: int, dim: int, candidates: int, seed: int = 0):
    """A pack of `count` images x `variants` vectors whose re-ranking rows are PQ codes of one
    sub-quantiser of 12 bits a dimension (all sharing one 1-d codebook of 4,096 values), random
    codes; the index holds the unit vectors the codes reconstruct."""
    import faiss

    rng = np.random.default_rng(seed)
    n, m = count * variants, dim
    centroids = np.linspace(-1, 1, 4096, dtype=np.float32)
    book = np.ascontiguousarray(np.broadcast_to(centroids[None, :, None], (m, 4096, 1)))
    codes = rng.integers(0, 4096, (n, m), dtype=np.uint32)
    recon = centroids[codes]
    norms = np.linalg.norm(recon, axis=1)
    vectors = (recon / norms[:, None]).astype(np.float32)
    pairs = codes.reshape(n, m // 2, 2)  # 12-bit codes, least significant bit first: two codes in 3 bytes
    packed = np.stack([pairs[..., 0] & 255, (pairs[..., 0] >> 8) | ((pairs[..., 1] & 15) << 4), pairs[..., 1] >> 4],
                      axis=2).astype(np.uint8).reshape(n, m * 12 // 8)
    rows = np.concatenate([packed, norms.astype(np.float16).view(np.uint8).reshape(n, 2)], axis=1)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.pq.npy", rows)
    np.save(folder / "rerank.pq-codebook.npy", book)
    index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    index.add_with_ids(vectors, np.repeat(np.arange(count), variants))

    def edit(manifest):
        manifest["index"]["rerank"] = {"file": "vectors.pq.npy", "dtype": "pq", "codebook": "rerank.pq-codebook.npy",
                                       "candidates": candidates}

    write_pack(folder, faiss_bytes(index), dim=dim, count=count, vectors=n, manifest_edit=edit)
    np.save(folder.parent / "queries.npy", vectors[[7, n - 1]])
    return folder


def test_reranking_beyond_its_bounds_is_refused_naming_the_field(tmp_path):
    """The reported pack: 100,000 candidates, a codebook of 512 sub-quantisers of 12 bits."""
    from lib_replicheck.errors import PackError
    from lib_replicheck.packs.pack import Pack

    pack = _pq_pack(tmp_path / "p", count=64, variants=1, dim=512, candidates=100_000)
    with pytest.raises(PackError, match=r"manifest field 'index.rerank.candidates' should be from 1 to 2,000, "
                                        r"not 100000"):
        Pack(pack)
    m = json.loads((pack / "manifest.json").read_text())
    m["index"]["rerank"]["candidates"] = 2000
    (pack / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackError, match=r"re-ranking codebook rerank.pq-codebook.npy has 512 sub-quantisers \(m\), "
                                        r"at most 256"):
        Pack(pack)


SEARCH_IN_CHILD = """
import os, sys, tracemalloc
import numpy as np
from lib_replicheck.packs.pack import Pack
p = Pack(sys.argv[1])
q = np.load(os.path.join(sys.argv[1], "..", "queries.npy"))
tracemalloc.start()  # numpy's arrays are traced: the most the search held at once
hits = p.search(q, k=3)
peak = tracemalloc.get_traced_memory()[1]
print("hits", [h[0].item.id for h in hits], round(min(h[0].similarity for h in hits), 3), "peak_mb", peak >> 20)
"""


def test_reranking_within_the_bounds_decodes_in_chunks(tmp_path):
    """2,000 candidates of 32 variants each, codes of 256 x 12 bits: every bound is met, and the old
    decoding (one int64 a bit of 64,000 rows) took over 3 GB a query. Decoded in chunks, the search
    runs under a 2 GB address-space limit, holds less than 32 MB of arrays at once, and each query
    finds its own image first."""
    pack = _pq_pack(tmp_path / "p", count=2000, variants=32, dim=256, candidates=2000)
    out = run_child(SEARCH_IN_CHILD, str(pack), timeout=300, memory_bytes=2 * GB)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-2000:])
    words = out.stdout.split()
    assert out.stdout.startswith("hits [0, 1999]"), out.stdout  # rows 7 and 63,999: images 0 and 1,999
    assert float(words[3]) > 0.99, out.stdout
    assert int(words[-1]) < 32, out.stdout


# -- through the HTTP API: /check says which file, the pack list shows the pack as broken -------------------


@pytest.mark.parametrize("label,header,message", HOSTILE_HEADERS[:2], ids=[h[0] for h in HOSTILE_HEADERS[:2]])
def test_check_route_names_the_broken_file_and_the_pack_list_shows_it(home, tmp_path, pack_photos, label,  # noqa: F811
                                                                      header, message):
    """Before, every /check said 'unexpected error: TokenError' (or ran out of memory) while the
    pack list showed the pack as fine."""
    import shutil

    import httpx
    from fastapi import FastAPI

    from browser import serve
    from lib_replicheck.webui import api
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    packs = tmp_path / "packs"
    shutil.copytree(home / "packs", packs)  # the small real PDQ pack 'photos'
    _with_background(packs / "photos", header)
    app = FastAPI()
    api.mount(app, CheckService(packs, tmp_path), Settings)
    image = base64.b64encode(pack_photos[0].read_bytes()).decode()
    with serve(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/replicheck/v1/check", json={"image": image})
        assert r.status_code == 200, r.text
        error = r.json()["error"] or ""
        assert "background background.npy cannot be read" in error and message in error, (label, error)
        listed = c.get("/replicheck/v1/packs").json()["installed"]
        assert len(listed) == 1 and "background.npy" in (listed[0]["error"] or ""), listed


def test_npy_reader_reads_what_numpy_writes(tmp_path):
    """Every shape and type packs write, in .npy versions 1.0 and 2.0, reads back equal."""
    from lib_replicheck.packs import npy

    arrays = [np.arange(12, dtype=np.float16).reshape(3, 4), np.ones((2, 3, 5), np.float32),
              np.arange(7, dtype=np.uint8), np.zeros((0, 4), np.float32)]
    for i, a in enumerate(arrays):
        for version in ((1, 0), (2, 0)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, version=version)
            (tmp_path / f"{i}.npy").write_bytes(buf.getvalue())
            got = npy.load(tmp_path / f"{i}.npy", "array", 1 << 20)
            assert got.dtype == a.dtype and np.array_equal(got, a)
