"""Choosing the index of a pack from its vector count and the budgets it is built for, the way
autofaiss chooses (see science.md), best design first among those that fit:

- `flat`: exact search while a flat index is small (under 100k vectors) and fits the memory budget;
- `ivf-flat`: IVF with uncompressed vectors whenever they fit the memory budget: 4*sqrt(N) lists (at
  most 65k), with an HNSW coarse quantiser from 1M vectors;
- `sq8`: the same IVF with 8-bit scalar codes of every dimension where they fit the disk budget
  (none by default): half the size of float16 vectors, similarities within 0.002 of the exact ones. The 8-bit codes share
  one range for all dimensions (faster to scan than a range each, index_factory.new_index). PCA before the codes was
  measured and left out: without re-normalising it scored copies 0.3 too low, with it up to 0.08 off
  (bench/index_scale.py);
- `fastscan`: where 8-bit codes do not fit, the same IVF with 4-bit PQ codes of 8 dimensions each
  (faiss's fast-scan: a 512-d vector in 32 bytes, scanned from SIMD registers), whose 200 best
  candidates are re-ranked from codes on disk (packs.rerank): 4-bit scalar codes (256 bytes for
  512-d, similarities within 0.02 of the exact ones) where they fit the disk budget, else PQ codes
  with a length factor (82 bytes, within 0.04), which let a 12M pack with LAION's metadata fit 4 GB.
  At 1M vectors it scanned a quarter of the lists in 2.2 ms a query where 8-bit codes took 11: copies at similarity 0.5 need that many lists (their original's list ranks up to 1,600th
  of 4,096), so the scan's speed is what decides a large pack's query time;
- `sq4` (only when named): the IVF with 4-bit scalar codes; as small as `fastscan` but as slow to
  scan per probe as 8-bit codes, so within a latency budget it searched too few lists at 12M;
- `opq-pq`: OPQ + PQ codes alone, as many bytes as the disk budget allows, for budgets below that;
- `pq-rerank` (only when named; packs built with it stay readable): IVF + PQ, as many PQ bytes as
  the memory budget allows, candidates re-ranked exactly from float16 vectors on disk.

Binary (PDQ) packs: BFlat under 1M codes, else binary IVF. The memory budget bounds what the
searching process holds of its own; an index's inverted lists are memory-mapped, and pages of a
mapped file the kernel can drop do not count against it, but the designs above keep uncompressed
vectors only where they fit it, so that the page cache can hold what a query reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lib_replicheck.packs.rerank import PQ_NBITS

GB = 1024**3
DESIGNS = ("auto", "flat", "ivf-flat", "sq8", "fastscan", "sq4", "opq-pq", "pq-rerank")
ID_BYTES = 8  # an IVF list stores each vector's 64-bit id beside its code
SLACK = 1.1  # list overheads, the quantiser and the manifest on top of the codes


@dataclass
class Plan:
    factory: str
    metric: str
    nlist: int = 0
    exact: bool = False
    rerank: bool = False  # a lossy (PQ) index: re-ranking from vectors on disk ...
    rerank_dtype: str = "float16"  # ... stored as float16, 4-bit scalar codes or PQ codes (packs.rerank)
    train_size: int = 0
    notes: list[str] = field(default_factory=list)
    design: str = ""
    disk_bytes: int = 0  # what the index (and re-ranking file) will take on disk, estimated


def _pow2(x: float) -> int:
    return 2 ** max(0, round(math.log2(max(1.0, x))))


def _fits(nbytes: float, budget: int | None) -> bool:
    return budget is None or nbytes * SLACK <= budget


def choose(n: int, dim: int, metric: str, memory_budget: int = 4 * GB, disk_budget: int | None = None,
           design: str = "auto", metadata_bytes: int = 0) -> Plan:
    """The index for `n` vectors of `dim`: the first design of the module's list that fits both
    budgets (bytes; `disk_budget` None: no limit), or the one `design` names. The disk budget is the
    whole pack's (its download): the index gets what `metadata_bytes` leave of it."""
    if design not in DESIGNS:
        raise ValueError(f"unknown index design {design!r}; one of {', '.join(DESIGNS)}")
    within = "" if disk_budget is None else f", within a disk budget of {disk_budget / GB:.1f} GB" + (
        f" less {metadata_bytes / GB:.1f} GB of metadata" if metadata_bytes else "")
    if disk_budget is not None:
        disk_budget -= metadata_bytes
    if metric == "hamming":
        if n < 1_000_000:
            return Plan("BFlat", metric, exact=True, design="flat", disk_bytes=n * dim // 8)
        nlist = min(65536, max(1024, _pow2(4 * math.sqrt(n))))
        return Plan(f"BIVF{nlist}", metric, nlist=nlist, train_size=min(n, 64 * nlist), design="ivf-flat",
                    disk_bytes=n * (dim // 8 + ID_BYTES))
    flat_bytes = n * dim * 4
    if design == "flat" or design == "auto" and n < 100_000 and flat_bytes <= memory_budget \
            and _fits(flat_bytes, disk_budget):
        return Plan("Flat", metric, exact=True, design="flat", disk_bytes=flat_bytes)
    # 4*sqrt(N) lists at every size (autofaiss starts at 16k from 1M): on clustered vectors 16k lists
    # for 1M needed nprobe 1024 to reach recall@10 0.95 (16 ms), 4k lists nprobe 16
    nlist = min(65536, _pow2(4 * math.sqrt(n)))
    coarse = f"IVF{nlist}_HNSW32" if n >= 1_000_000 else f"IVF{nlist}"
    ivf_train = min(n, 64 * nlist)
    if design == "ivf-flat" or design == "auto" and flat_bytes * SLACK <= memory_budget \
            and _fits(n * (dim * 4 + ID_BYTES), disk_budget):
        # uncompressed vectors fit: nothing to lose to quantisation
        return Plan(f"{coarse},Flat", metric, nlist=nlist, train_size=ivf_train, design="ivf-flat",
                    disk_bytes=n * (dim * 4 + ID_BYTES))
    # beside the codes: the coarse centroids (float32) and their HNSW links
    centroids = nlist * (dim * 4 + (64 * 4 if n >= 1_000_000 else 0))
    for bits in (8, 4):  # scalar codes: 8 bits a dimension where they fit the disk budget; 4 only by name
        disk = n * (dim * bits // 8 + ID_BYTES) + centroids
        if design == f"sq{bits}" or design == "auto" and bits == 8 and _fits(disk, disk_budget):
            plan = Plan(f"{coarse},SQ{bits}", metric, nlist=nlist, train_size=ivf_train, design=f"sq{bits}",
                        disk_bytes=disk)
            plan.notes.append(f"{bits}-bit scalar codes: {disk / GB:.1f} GB on disk" + within)
            return plan
        if bits == 8 and dim % 8 == 0:
            # fast-scan lists are stored in blocks of 32 vectors: half a block of padding per list
            codes = n * (dim // 16 + ID_BYTES) + centroids + nlist * 16 * (dim // 16 + ID_BYTES)
            book = dim // 8 * 2**PQ_NBITS * 8 * 4  # the PQ codebook, float32
            sq4, pq = codes + n * ((dim + 1) // 2), codes + n * (dim // 8 * PQ_NBITS // 8 + 2) + book
            if design == "fastscan" or design == "auto" and _fits(pq, disk_budget):
                dtype, fs = ("sq4", sq4) if _fits(sq4, disk_budget) else ("pq", pq)
                plan = Plan(f"{coarse},PQ{dim // 8}x4fs", metric, nlist=nlist, train_size=ivf_train,
                            design="fastscan", rerank=True, rerank_dtype=dtype, disk_bytes=fs)
                plan.notes.append(f"4-bit fast-scan codes re-ranked from {'4-bit scalar' if dtype == 'sq4' else 'PQ'} "
                                  f"codes: {fs / GB:.1f} GB on disk" + within)
                return plan
    m = _pq_bytes(n, dim, memory_budget)
    if design == "pq-rerank":
        return _pq_plan(n, dim, metric, coarse, nlist, m, rerank=True, disk=n * (m + ID_BYTES + dim * 2),
                        why=f"{m} PQ bytes per vector fit a memory budget of {memory_budget / GB:.1f} GB; "
                            f"candidates re-ranked exactly from {n * dim * 2 / GB:.1f} GB of float16 vectors on disk")
    m = _pq_bytes(n, dim, max(0, disk_budget) if disk_budget is not None else memory_budget)
    return _pq_plan(n, dim, metric, coarse, nlist, m, rerank=False, disk=n * (m + ID_BYTES),
                    why=f"{m} PQ bytes per vector fit a disk budget of {(disk_budget or 0) / GB:.1f} GB; "
                        "no re-ranking")


def _pq_bytes(n: int, dim: int, budget: int) -> int:
    """The most PQ bytes per vector (a divisor of `dim`) whose codes and ids fit `budget`, at least 8."""
    m = 8
    for cand in (16, 32, 48, 64, 96, 128, 192, 256):
        if cand <= dim and dim % cand == 0 and n * (cand + ID_BYTES) * SLACK <= budget:
            m = cand
    return m


def _pq_plan(n: int, dim: int, metric: str, coarse: str, nlist: int, m: int, *, rerank: bool, disk: int,
             why: str) -> Plan:
    # OPQ's rotation pays for few, wide sub-quantisers; with more than 64 bytes (8 or fewer dimensions
    # each) it gains little and its training (hundreds of sub-quantisers, iterated) takes hours on a CPU
    prefix = f"OPQ{m}_{dim}," if m <= 64 else ""
    plan = Plan(f"{prefix}{coarse},PQ{m}x8", metric, nlist=nlist, train_size=min(n, max(40 * nlist, 200_000)),
                rerank=rerank, design="pq-rerank" if rerank else "opq-pq", disk_bytes=disk)
    plan.notes.append(why)
    return plan
