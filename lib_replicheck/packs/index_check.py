"""Checking a pack's faiss index file before faiss reads it.

Index files come from the internet. Before faiss sees one, `check_layout` walks its structure
(for the index types packs are built with, and nothing else) and checks every size it declares
against the file's size and the manifest's count and dimension: faiss allocates what a header
declares before reading it, so a 109-byte file declaring 2^32 vectors would otherwise cost 16 GB.
Index types that name other files (on-disk inverted lists) are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lib_replicheck.embedders.base import HAMMING
from lib_replicheck.packs.index_fields import FieldReader, LayoutError

MAX_NLIST = 1 << 20  # inverted lists; the builder makes at most 65536
MAX_DIM = 1 << 16
MAX_PARAM = 1 << 20  # nprobe, efSearch

FLAT = {"IxFI": "IndexFlatIP", "IxF2": "IndexFlatL2"}
# the only transforms packs use: OPQ (written as a plain LinearTransform), PCA, random rotation
TRANSFORMS = ("LTra", "Pcam", "PcAm", "PCAm", "rrot")
REFUSED = {"ilod": "on-disk inverted lists, which name a file outside the pack"}


@dataclass(frozen=True)
class Layout:
    """What an index file declares, checked: its structure (e.g. 'IxMp(IxFI)'), dimension, vectors."""

    kind: str
    d: int
    ntotal: int


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise LayoutError(message)


def _header(r: FieldReader, where: str) -> tuple[int, int, int]:
    """faiss's Index header: (d, ntotal, metric_type)."""
    d = r.i32(f"{where}.d")
    ntotal = r.i64(f"{where}.ntotal")
    r.take(16, f"{where} header")
    r.flag(f"{where}.is_trained")
    metric = r.i32(f"{where}.metric_type")
    _need(0 < d <= MAX_DIM, f"{where} declares dimension {d}")
    _need(0 <= ntotal <= r.size, f"{where} declares {ntotal} vectors in a file of {r.size} bytes")
    _need(metric in (0, 1), f"{where} uses metric type {metric}; packs use inner product or L2")
    return d, ntotal, metric


def _binary_header(r: FieldReader, where: str) -> tuple[int, int]:
    """faiss's IndexBinary header: (d in bits, ntotal)."""
    d = r.i32(f"{where}.d")
    code_size = r.i32(f"{where}.code_size")
    ntotal = r.i64(f"{where}.ntotal")
    r.flag(f"{where}.is_trained")
    r.i32(f"{where}.metric_type")
    _need(0 < d <= MAX_DIM and d % 8 == 0 and code_size == d // 8,
          f"{where} declares {d} bits in codes of {code_size} bytes")
    _need(0 <= ntotal <= r.size, f"{where} declares {ntotal} vectors in a file of {r.size} bytes")
    return d, ntotal


def _direct_map(r: FieldReader, where: str) -> None:
    kind = r.take(1, f"{where}.direct_map")[0]
    n = r.u64(f"{where}.direct_map size")
    _need(kind == 0 and n == 0, f"{where} carries a direct map (type {kind}); packs have none")


def _inverted_lists(r: FieldReader, where: str, nlist: int, code_size: int, ntotal: int) -> None:
    """ArrayInvertedLists stored in the file: per list, its codes then its ids."""
    import numpy as np

    h = r.fourcc(f"{where}.invlists")
    if h in REFUSED:
        raise LayoutError(f"{where} uses {REFUSED[h]} ('{h}'): not accepted")
    _need(h == "ilar", f"{where} stores its inverted lists as '{h}'; only lists inside the file ('ilar') are accepted")
    _need(r.u64(f"{where}.invlists.nlist") == nlist, f"{where}: inverted lists and index disagree on nlist")
    _need(r.u64(f"{where}.invlists.code_size") == code_size, f"{where}: inverted lists declare another code size")
    kind = r.fourcc(f"{where}.invlists sizes")
    if kind == "full":
        sizes = r.array("<u8", f"{where}.invlists sizes", expect=nlist)
    elif kind == "sprs":
        pairs = r.array("<u8", f"{where}.invlists sizes")
        _need(len(pairs) % 2 == 0 and len(pairs) // 2 <= nlist, f"{where}: malformed sparse list sizes")
        pairs = pairs.reshape(-1, 2)
        _need(bool((pairs[:, 0] < nlist).all()) and len(np.unique(pairs[:, 0])) == len(pairs),
              f"{where}: a list number is out of range or repeated")
        sizes = pairs[:, 1]
    else:
        raise LayoutError(f"{where}: unknown list size encoding '{kind}'")
    _need(bool((sizes <= ntotal).all()), f"{where}: a list declares more vectors than the index")
    total = int(sizes.sum(dtype=np.uint64))
    _need(total == ntotal, f"{where}: inverted lists hold {total} vectors, the index says {ntotal}")
    r.skip(total * (code_size + 8), f"{where} inverted lists")


def _block_inverted_lists(r: FieldReader, where: str, nlist: int, code_size: int, ntotal: int, bbs: int,
                          m2: int) -> None:
    """BlockInvertedLists (fast-scan codes in blocks of `bbs` vectors): per list, its ids then its
    codes, each block `bbs` * `m2` / 2 bytes."""
    h = r.fourcc(f"{where}.invlists")
    if h in REFUSED:
        raise LayoutError(f"{where} uses {REFUSED[h]} ('{h}'): not accepted")
    _need(h == "ilbl", f"{where} stores its fast-scan lists as '{h}'; only blocks inside the file ('ilbl') are accepted")
    _need(r.u64(f"{where}.invlists.nlist") == nlist, f"{where}: inverted lists and index disagree on nlist")
    # faiss writes INVALID_CODE_SIZE (size_t -1) here: a block list's codes are not one per vector
    _need(r.u64(f"{where}.invlists.code_size") == 2**64 - 1, f"{where}: block lists declare a code size")
    per_block, block = r.u64(f"{where}.invlists.n_per_block"), r.u64(f"{where}.invlists.block_size")
    _need(per_block == bbs and block == bbs * m2 // 2, f"{where}: blocks of {per_block} vectors in {block} bytes "
                                                       f"for a fast-scan index of bbs {bbs}, M2 {m2}")
    total = 0
    for i in range(nlist):
        n = r.vector(8, f"{where}.invlists[{i}].ids")
        total += n
        _need(total <= ntotal, f"{where}: inverted lists hold more vectors than the index's {ntotal}")
        codes = r.vector(1, f"{where}.invlists[{i}].codes")
        _need(codes == -(-n // per_block) * block, f"{where}: list {i} holds {n} ids but {codes} code bytes")
    _need(total == ntotal, f"{where}: inverted lists hold {total} vectors, the index says {ntotal}")


def _hnsw(r: FieldReader, where: str, ntotal: int) -> None:
    """An HNSW graph (a coarse quantiser's): every neighbour and offset checked, as faiss < 1.15 does not."""
    import numpy as np

    r.vector(8, f"{where}.assign_probas")
    cum = r.array("<i4", f"{where}.cum_nneighbor_per_level").astype(np.int64)
    levels = r.array("<i4", f"{where}.levels", expect=ntotal).astype(np.int64)
    offsets = r.array("<u8", f"{where}.offsets", expect=ntotal + 1)
    neighbors = r.array("<i4", f"{where}.neighbors")
    entry, max_level = r.i32(f"{where}.entry_point"), r.i32(f"{where}.max_level")
    r.i32(f"{where}.efConstruction")
    ef = r.i32(f"{where}.efSearch")
    r.i32(f"{where}.upper_beam")
    _need(1 <= len(cum) <= 64 and cum[0] == 0 and bool((np.diff(cum) >= 0).all()), f"{where}: malformed levels")
    _need(ntotal == 0 or bool(((levels >= 1) & (levels < len(cum))).all()), f"{where}: a level is out of range")
    _need(int(offsets[0]) == 0 and int(offsets[-1]) == len(neighbors), f"{where}: offsets do not match neighbours")
    _need(bool((np.diff(offsets.astype(np.int64)) == cum[levels]).all()), f"{where}: offsets do not match levels")
    _need(bool(((neighbors >= -1) & (neighbors < ntotal)).all()), f"{where}: a neighbour is out of range")
    _need(ntotal == 0 or (0 <= entry < ntotal and max_level == int(levels.max()) - 1 == int(levels[entry]) - 1),
          f"{where}: entry point or top level out of range")
    _need(0 < ef <= MAX_PARAM, f"{where}: efSearch {ef} out of range")
    # a neighbour listed at level l must itself reach level l, or a search would read past its lists
    node = np.repeat(np.arange(ntotal), np.diff(offsets.astype(np.int64)))
    slot_level = np.searchsorted(cum, np.arange(len(neighbors)) - offsets[node].astype(np.int64), side="right") - 1
    linked = neighbors >= 0
    _need(bool((levels[neighbors[linked]] > slot_level[linked]).all()), f"{where}: a neighbour is linked above its level")


def _product_quantizer(r: FieldReader, where: str, d: int) -> tuple[int, int]:
    """(M, nbits) of a ProductQuantizer over `d` dimensions."""
    pq_d, m, nbits = r.u64(f"{where}.d"), r.u64(f"{where}.M"), r.u64(f"{where}.nbits")
    _need(pq_d == d and 0 < m <= d and d % m == 0 and 1 <= nbits <= 16,
          f"{where}: PQ{m}x{nbits} over {pq_d} dimensions does not fit an index of {d}")
    centroids = r.vector(4, f"{where}.centroids")
    _need(centroids == d * (1 << nbits), f"{where}: {centroids} centroid values, expected {d * (1 << nbits)}")
    return m, nbits


# faiss ScalarQuantizer types packs may use: qtype -> (code bytes for d dimensions, trained values)
SQ_TYPES = {0: (lambda d: d, lambda d: 2 * d),  # QT_8bit: a range per dimension
            1: (lambda d: (d + 1) // 2, lambda d: 2 * d),  # QT_4bit: a range per dimension
            2: (lambda d: d, lambda d: 2),  # QT_8bit_uniform: one range
            4: (lambda d: 2 * d, lambda d: 0)}  # QT_fp16


def _scalar_quantizer(r: FieldReader, where: str, d: int) -> int:
    """A ScalarQuantizer over `d` dimensions (8-bit, 4-bit or float16 codes); returns its code size."""
    qtype = r.i32(f"{where}.qtype")
    _need(qtype in SQ_TYPES, f"{where}: scalar quantiser type {qtype} is not one packs use")
    r.i32(f"{where}.rangestat")
    r.f32(f"{where}.rangestat_arg")
    sq_d, code_size = r.u64(f"{where}.d"), r.u64(f"{where}.code_size")
    size, trained = SQ_TYPES[qtype]
    _need(sq_d == d and code_size == size(d), f"{where}: codes of {code_size} bytes for {sq_d} dimensions "
                                              f"in an index of {d}")
    r.array("<f4", f"{where}.trained", expect=trained(d))
    return code_size


def _transform(r: FieldReader, where: str) -> tuple[int, int]:
    """A linear pre-transform (OPQ rotation, PCA, random rotation): (d_in, d_out)."""
    h = r.fourcc(where)
    _need(h in TRANSFORMS, f"{where}: transform '{h}' is not one packs use")
    if h in ("Pcam", "PcAm", "PCAm"):
        r.f32(f"{where}.eigen_power")
        if h == "Pcam":
            r.f32(f"{where}.epsilon")
        r.flag(f"{where}.random_rotation")
        if h != "PCAm":
            r.i32(f"{where}.balanced_bins")
        for part in ("mean", "eigenvalues", "PCAMat"):
            r.vector(4, f"{where}.{part}")
    have_bias = r.flag(f"{where}.have_bias")
    a = r.vector(4, f"{where}.A")
    b = r.vector(4, f"{where}.b")
    d_in, d_out = r.i32(f"{where}.d_in"), r.i32(f"{where}.d_out")
    r.flag(f"{where}.is_trained")
    _need(0 < d_in <= MAX_DIM and 0 < d_out <= MAX_DIM and a == d_in * d_out,
          f"{where}: a {d_in} -> {d_out} transform with {a} matrix values")
    _need(b == d_out if have_bias else b in (0, d_out), f"{where}: bias of {b} values")
    return d_in, d_out


def _float_index(r: FieldReader, where: str, depth: int, top: bool) -> Layout:
    _need(depth < 6, f"{where}: nested too deeply")
    h = r.fourcc(where)
    if h in FLAT:
        d, ntotal, _ = _header(r, h)
        codes = r.u64(f"{h}.codes size")  # in units of 4 bytes
        _need(codes == ntotal * d, f"{h} declares {ntotal} vectors of {d} floats but {codes} values")
        r.skip(codes * 4, f"{h} vectors")
        return Layout(h, d, ntotal)
    if h == "IxMp" and top:
        d, ntotal, _ = _header(r, h)
        sub = _float_index(r, f"{h}.index", depth + 1, top=False)
        _need(sub.kind in FLAT and sub.d == d and sub.ntotal == ntotal, f"{h}: its index does not match it")
        _need(r.vector(8, f"{h}.id_map") == ntotal, f"{h}: id map size differs from its {ntotal} vectors")
        return Layout(f"{h}({sub.kind})", d, ntotal)
    if h == "IxPT" and top:
        d, ntotal, _ = _header(r, h)
        nt = r.i32(f"{h}.chain length")
        _need(1 <= nt <= 4, f"{h}: chain of {nt} transforms")
        dim = d
        for i in range(nt):
            d_in, d_out = _transform(r, f"{h}.chain[{i}]")
            _need(d_in == dim, f"{h}.chain[{i}] takes {d_in} dimensions, gets {dim}")
            dim = d_out
        sub = _float_index(r, f"{h}.index", depth + 1, top=False)
        _need(sub.kind.startswith(("IwFl", "IwPQ", "IwSq", "IwPf")) or sub.kind in FLAT,
              f"{h}: index {sub.kind} under a transform")
        _need(sub.d == dim and sub.ntotal == ntotal, f"{h}: its index does not match it")
        return Layout(f"{h}({sub.kind})", d, ntotal)
    if h in ("IwFl", "IwPQ", "IwSq", "IwPf"):
        d, ntotal, metric = _header(r, h)
        nlist = r.u64(f"{h}.nlist")
        r.u64(f"{h}.nprobe")  # faiss searches at most nlist lists whatever this says
        _need(0 < nlist <= MAX_NLIST, f"{h} declares {nlist} lists")
        q = _quantizer(r, f"{h}.quantizer", depth)
        _need(q.d == d and q.ntotal == nlist, f"{h}: quantiser of {q.ntotal} x {q.d} for {nlist} lists of {d}")
        _direct_map(r, h)
        if h == "IwPf":  # fast-scan PQ: 4-bit codes, stored in blocks
            _need(not r.flag(f"{h}.by_residual"), f"{h}: codes by residual (packs encode vectors as they are)")
            code_size = r.u64(f"{h}.code_size")
            bbs, m2 = r.i32(f"{h}.bbs"), r.u64(f"{h}.M2")
            r.i32(f"{h}.implem")
            r.u64(f"{h}.qbs2")
            m, nbits = _product_quantizer(r, f"{h}.pq", d)
            _need(nbits == 4 and code_size == (m * nbits + 7) // 8 and m2 == m + m % 2 and 0 < bbs <= 1024
                  and bbs % 32 == 0, f"{h}: PQ{m}x{nbits} in codes of {code_size} bytes, bbs {bbs}, M2 {m2}")
            _block_inverted_lists(r, h, nlist, code_size, ntotal, bbs, m2)
            return Layout(f"{h}({q.kind})", d, ntotal)
        if h == "IwFl":
            code_size = d * 4
        elif h == "IwSq":
            code_size = _scalar_quantizer(r, f"{h}.sq", d)
            _need(r.u64(f"{h}.code_size") == code_size, f"{h}: code size differs from its quantiser's")
            r.flag(f"{h}.by_residual")
        else:
            by_residual = r.flag(f"{h}.by_residual")
            code_size = r.u64(f"{h}.code_size")
            m, nbits = _product_quantizer(r, f"{h}.pq", d)
            _need(code_size == (m * nbits + 7) // 8, f"{h}: code size {code_size} for PQ{m}x{nbits}")
            table = nlist * m * (1 << nbits) * 4  # faiss precomputes this for L2 with residuals
            _need(metric == 0 or not by_residual or table <= max(64 * 1024**2, 4 * r.size),
                  f"{h}: its precomputed tables would take {table} bytes")
        _inverted_lists(r, h, nlist, code_size, ntotal)
        return Layout(f"{h}({q.kind})", d, ntotal)
    if h in REFUSED:
        raise LayoutError(f"{where} uses {REFUSED[h]} ('{h}'): not accepted")
    raise LayoutError(f"{where} is a faiss index of type '{h}'{'' if top else ' inside another'}, "
                      "not one replicheck packs use")


def _quantizer(r: FieldReader, where: str, depth: int) -> Layout:
    """The coarse quantiser of an IVF index: flat, or HNSW over flat storage."""
    h = r.fourcc(where)
    if h in FLAT:
        r.f.seek(-4, os.SEEK_CUR)
        return _float_index(r, where, depth + 1, top=False)
    _need(h == "IHNf", f"{where}: quantiser '{h}' is not one packs use")
    d, ntotal, _ = _header(r, h)
    _hnsw(r, f"{h}.hnsw", ntotal)
    storage = _float_index(r, f"{h}.storage", depth + 1, top=False)
    _need(storage.kind in FLAT and storage.d == d and storage.ntotal == ntotal, f"{h}: storage does not match it")
    return Layout(f"{h}({storage.kind})", d, ntotal)


def _binary_index(r: FieldReader, where: str, top: bool) -> Layout:
    h = r.fourcc(where)
    if h == "IBxF":
        d, ntotal = _binary_header(r, h)
        codes = r.u64(f"{h}.codes size")
        _need(codes == ntotal * (d // 8), f"{h} declares {ntotal} codes of {d // 8} bytes but {codes} bytes")
        r.skip(codes, f"{h} codes")
        return Layout(h, d, ntotal)
    if h == "IBMp" and top:
        d, ntotal = _binary_header(r, h)
        sub = _binary_index(r, f"{h}.index", top=False)
        _need(sub.d == d and sub.ntotal == ntotal, f"{h}: its index does not match it")
        _need(r.vector(8, f"{h}.id_map") == ntotal, f"{h}: id map size differs from its {ntotal} vectors")
        return Layout(f"{h}({sub.kind})", d, ntotal)
    if h == "IBwF" and top:
        d, ntotal = _binary_header(r, h)
        nlist = r.u64(f"{h}.nlist")
        r.u64(f"{h}.nprobe")  # faiss searches at most nlist lists whatever this says
        _need(0 < nlist <= MAX_NLIST, f"{h} declares {nlist} lists")
        q = _binary_index(r, f"{h}.quantizer", top=False)
        _need(q.d == d and q.ntotal == nlist, f"{h}: quantiser of {q.ntotal} x {q.d} for {nlist} lists of {d}")
        _direct_map(r, h)
        _inverted_lists(r, h, nlist, d // 8, ntotal)
        return Layout(f"{h}({q.kind})", d, ntotal)
    if h in REFUSED:
        raise LayoutError(f"{where} uses {REFUSED[h]} ('{h}'): not accepted")
    raise LayoutError(f"{where} is a faiss binary index of type '{h}'{'' if top else ' inside another'}, "
                      "not one replicheck packs use")


def check_layout(f, size: int, metric: str, dim: int, count: int) -> Layout:
    """Walk an index file (`f`, seekable, `size` bytes) and check what it declares against the file
    size and the manifest's `dim` and vector `count`; raises LayoutError. Leaves `f` at its start."""
    r = FieldReader(f, size)
    f.seek(0)
    layout = _binary_index(r, "index", top=True) if metric == HAMMING else _float_index(r, "index", 0, top=True)
    if r.left():
        raise LayoutError(f"{r.left()} bytes follow the index")
    if layout.d != dim:
        raise LayoutError(f"index dimension {layout.d} != embedder dimension {dim} in the manifest")
    if layout.ntotal != count:
        raise LayoutError(f"index holds {layout.ntotal} vectors, the manifest says {count}")
    f.seek(0)
    return layout
