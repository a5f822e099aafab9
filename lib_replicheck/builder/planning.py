"""Choosing the index of a pack from its vector count and the budgets it is built for, the way
autofaiss chooses (see science.md), best design first among those that fit:

- `flat`: exact search while a flat index is small (under 100k vectors) and fits the memory budget;
- `ivf-flat`: IVF with uncompressed vectors whenever they fit the memory budget: 4*sqrt(N) lists (at
  most 65k), with an HNSW coarse quantiser from 1M vectors;
- `pq-rerank`: the same IVF + PQ (with an OPQ rotation up to 64 bytes), as many PQ bytes per vector
  as the memory budget allows, candidates re-ranked exactly from float16 vectors on disk; chosen
  while those vectors fit the disk budget (none by default);
- `pca-sq8`: PCA to 256 dimensions (128 where 256 does not fit the disk budget) and 8-bit scalar
  codes in the IVF lists, no re-ranking file: a pack a quarter of the float16 one, whose first hit
  is a copy's original as often (bench/index_scale.py);
- `opq-pq`: OPQ + PQ codes alone, as many bytes as the disk budget allows, for budgets below that.

Binary (PDQ) packs: BFlat under 1M codes, else binary IVF. The memory budget bounds what the
searching process holds of its own; an index's inverted lists are memory-mapped, and pages of a
mapped file the kernel can drop do not count against it, but the designs above keep uncompressed
vectors only where they fit it, so that the page cache can hold what a query reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GB = 1024**3
DESIGNS = ("auto", "flat", "ivf-flat", "pq-rerank", "pca-sq8", "opq-pq")
PCA_DIMS = (256, 128)  # PCA output sizes tried for `pca-sq8`, largest first
ID_BYTES = 8  # an IVF list stores each vector's 64-bit id beside its code
SLACK = 1.1  # list overheads, the quantiser and the manifest on top of the codes


@dataclass
class Plan:
    factory: str
    metric: str
    nlist: int = 0
    exact: bool = False
    rerank: bool = False  # a lossy (PQ) index: exact re-ranking from float16 vectors on disk
    train_size: int = 0
    notes: list[str] = field(default_factory=list)
    design: str = ""
    disk_bytes: int = 0  # what the index (and re-ranking file) will take on disk, estimated


def _pow2(x: float) -> int:
    return 2 ** max(0, round(math.log2(max(1.0, x))))


def _fits(nbytes: float, budget: int | None) -> bool:
    return budget is None or nbytes * SLACK <= budget


def choose(n: int, dim: int, metric: str, memory_budget: int = 4 * GB, disk_budget: int | None = None,
           design: str = "auto") -> Plan:
    """The index for `n` vectors of `dim`: the first design of the module's list that fits both
    budgets (bytes; `disk_budget` None: no limit), or the one `design` names."""
    if design not in DESIGNS:
        raise ValueError(f"unknown index design {design!r}; one of {', '.join(DESIGNS)}")
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
    m = _pq_bytes(n, dim, memory_budget)
    rerank_disk = n * (m + ID_BYTES + dim * 2)
    if design == "pq-rerank" or design == "auto" and _fits(rerank_disk, disk_budget):
        return _pq_plan(n, dim, metric, coarse, nlist, m, rerank=True, disk=rerank_disk,
                        why=f"{m} PQ bytes per vector fit a memory budget of {memory_budget / GB:.1f} GB; "
                            f"candidates re-ranked exactly from {n * dim * 2 / GB:.1f} GB of float16 vectors on disk")
    for p in (PCA_DIMS if dim > PCA_DIMS[0] else (dim,)):
        if design == "pca-sq8" or design == "auto" and _fits(n * (p + ID_BYTES), disk_budget):
            prefix = f"PCA{p}," if p < dim else ""
            plan = Plan(f"{prefix}{coarse},SQ8", metric, nlist=nlist, train_size=ivf_train, design="pca-sq8",
                        disk_bytes=n * (p + ID_BYTES))
            plan.notes.append(f"{'PCA to ' + str(p) + ' dimensions and ' if prefix else ''}8-bit codes: "
                              f"{n * (p + ID_BYTES) / GB:.1f} GB on disk"
                              + (f" within a disk budget of {disk_budget / GB:.1f} GB" if disk_budget else ""))
            return plan
    m = _pq_bytes(n, dim, disk_budget if disk_budget is not None else memory_budget)
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
