"""Making, training and filling the index a plan names (builder.planning chooses it, builder.tuning
tunes it). IVF indexes are memory-mapped when a pack is loaded. The names of both are kept here too,
so that `index_factory.choose`, `.tune` and the others still resolve.
"""

from __future__ import annotations

import math

from lib_replicheck.builder.planning import DESIGNS, GB, Plan, choose  # noqa: F401 - kept importable here
from lib_replicheck.builder.tuning import (  # noqa: F401 - kept importable here
    CANDIDATES, COPY_SIMILARITY, TIMED_QUERIES, TIMING_PASSES, exact_topk, leave_out, moved_to, pick, query_ms,
    recall_at, score, single_threaded, tune)


def new_index(plan: Plan, dim: int, with_ids: bool = True):
    """The empty index of `plan`; `with_ids=False`: an exact index whose positions are the metadata
    rows (one vector per image), so it needs no id map."""
    import faiss

    if plan.metric == "hamming":
        if plan.factory == "BFlat":
            flat = faiss.IndexBinaryFlat(dim)
            return faiss.IndexBinaryIDMap(flat) if with_ids else flat
        quantizer = faiss.IndexBinaryFlat(dim)
        ivf = faiss.IndexBinaryIVF(quantizer, dim, plan.nlist)
        ivf.own_fields = True
        quantizer.this.disown()
        return faiss.IndexBinaryIDMap(ivf)
    index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.design == "sq8" and not plan.exact:
        # one 8-bit range for all dimensions rather than one per dimension: codes of the same size
        # whose scan took 33 instead of 50 ns a 512-d code on one thread here (the list scan is what a
        # query pays for), with similarities within 0.002 of the exact ones either way
        faiss.downcast_index(faiss.extract_index_ivf(index)).sq.qtype = faiss.ScalarQuantizer.QT_8bit_uniform
    # ids are the metadata rows (several variants of one image share one); IVF indexes store ids
    # themselves, a flat index needs an IDMap for them
    return faiss.IndexIDMap(index) if plan.exact and with_ids else index


def train(index, plan: Plan, sample) -> None:
    """Train on a sample. Float IVF indexes get their coarse centroids from faiss's two-level k-means
    (sqrt(nlist) clusters, then sub-clusters in each), far cheaper than flat k-means over many
    lists; the transform (OPQ) is trained first, the PQ codebooks last.

    The centroids are spherical (unit length): the quantiser assigns by inner product, and k-means
    centroids of unit vectors have lengths that differ (0.41 to 0.83 on 1M sscd-cov vectors), so the
    longer ones drew far more vectors (lists of up to 50 times the mean); unit centroids assign by
    cosine, and the lists came out even (at most 3 times the mean), which keeps the slowest queries
    near the typical one."""
    import faiss
    import numpy as np

    if plan.exact:
        return
    if plan.metric == "hamming":
        index.index.train(sample) if hasattr(index, "index") else index.train(sample)
        return
    from faiss.contrib.clustering import two_level_clustering

    x = np.ascontiguousarray(sample, dtype=np.float32)
    inner = index
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = index.chain.at(i)
            vt.train(x)
            x = np.ascontiguousarray(vt.apply(x))
        inner = faiss.downcast_index(index.index)
    ivf = faiss.extract_index_ivf(inner)
    nc1 = max(1, int(round(math.sqrt(plan.nlist))))
    spherical = ivf.metric_type == faiss.METRIC_INNER_PRODUCT
    centroids, _ = two_level_clustering(x, nc1, plan.nlist, clustering_niter=10, seed=1234, spherical=spherical)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if spherical:
        faiss.normalize_L2(centroids)
    ivf.quantizer.add(centroids)
    ivf = faiss.downcast_index(ivf)
    if hasattr(ivf, "do_polysemous_training"):
        # index_factory turns on polysemous training for IVF-PQ; it only serves Hamming-filtered
        # search, which packs do not use, and took 110 of the 113 s of a 64-byte PQ's training
        # on 20k vectors
        ivf.do_polysemous_training = False
    inner.train(x)  # the quantiser is complete, so only the PQ codebooks (if any) are trained
    index.is_trained = True
