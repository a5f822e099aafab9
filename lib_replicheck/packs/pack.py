"""An opened pack: validated manifest, faiss index and metadata, ready to search."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PackError
from . import index as faiss_index
from . import manifest as mf
from .metadata import Item, Metadata


@dataclass(frozen=True)
class Hit:
    """One neighbour of one query in one pack (metadata resolved)."""

    item: Item
    similarity: float
    distance: int | None


class Pack:
    """A pack folder, opened for searching.

    Opening checks the manifest, that every listed file exists with its listed size (the full
    sha256 check is `verify()`, which reads every byte), that the index and metadata agree with
    the manifest, and, with `expect_embedder`, that the pack was built with that embedder.
    """

    def __init__(self, path: str | Path, expect_embedder: str | None = None, mmap: bool = True):
        self.path = Path(path)
        if not self.path.is_dir():
            raise PackError(self.path, "no such pack folder")
        self.manifest = mf.read(self.path)
        m = self.manifest
        if expect_embedder and expect_embedder not in (m.embedder.id, m.embedder.kind):
            raise PackError(self.path, f"was built with the embedder {m.embedder.id!r}, not {expect_embedder!r}; "
                                       "its vectors cannot be compared")
        for f in m.files:
            p = self.path / f.path
            if not p.is_file():
                raise PackError(self.path, f"file {f.path} listed in the manifest is missing")
            if p.stat().st_size != f.size:
                raise PackError(self.path, f"file {f.path} is {p.stat().st_size} bytes, the manifest says "
                                           f"{f.size} (truncated or replaced?)")
        self.index = faiss_index.read(self.path / m.index.get("file", mf.INDEX_FILE), m.metric, mmap=mmap)
        faiss_index.set_search_params(self.index, m.index.get("search_params") or {})
        if self.index.d != m.embedder.dim:
            raise PackError(self.path, f"index dimension {self.index.d} != embedder dimension {m.embedder.dim}")
        if self.index.ntotal != m.vectors:
            raise PackError(self.path, f"index holds {self.index.ntotal} vectors, the manifest says {m.vectors}")
        self.metadata = Metadata(self.path / mf.METADATA_FILE)
        rows = self.metadata.count()
        if rows != m.count:
            raise PackError(self.path, f"metadata holds {rows} rows, the manifest says {m.count}")
        self.variants = max(1, m.vectors // max(1, m.count)) if m.count else 1
        self.reranker, self.candidates = None, 0
        rerank = m.index.get("rerank")
        if rerank:
            from .rerank import Reranker

            self.reranker = Reranker(self.path / rerank["file"], m.vectors, m.embedder.dim, self.variants)
            self.candidates = int(rerank["candidates"])

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def embedder(self):
        return self.manifest.embedder

    def search(self, queries, k: int = 5) -> list[list[Hit]]:
        """The k nearest training images of each query, closest first, one hit per image."""
        import numpy as np

        if self.manifest.count == 0:
            return [[] for _ in range(len(queries))]
        q = np.ascontiguousarray(queries, dtype=np.uint8 if self.manifest.metric == "hamming" else np.float32)
        if q.ndim != 2 or q.shape[1] != (self.embedder.dim // 8 if self.manifest.metric == "hamming" else self.embedder.dim):
            raise PackError(self.path, f"query vectors of shape {q.shape} do not fit this pack's embedder "
                                       f"{self.embedder.id}")
        sim, dist, ids = faiss_index.search(self.index, q, max(k * self.variants, self.candidates))
        if self.reranker is not None:  # a compressed index: exact similarities decide the order
            sim, ids = self.reranker.rescore(q, ids)
        best = []  # per query: (id, column) of its k closest distinct images
        for r in range(len(q)):
            seen, row = set(), []
            for c in range(ids.shape[1]):
                i = int(ids[r, c])
                if i >= 0 and i not in seen:
                    seen.add(i)
                    row.append((i, c))
                    if len(row) == k:
                        break
            best.append(row)
        items = self.metadata.get({i for row in best for i, _ in row})
        out = []
        for r, row in enumerate(best):
            hits = []
            for i, c in row:
                item = items.get(i)
                if item is None:
                    raise PackError(self.path, f"index id {i} has no metadata row (index and metadata disagree)")
                hits.append(Hit(item, float(sim[r, c]), None if dist is None else int(dist[r, c])))
            out.append(hits)
        return out

    def thumbnail_path(self, item: Item) -> Path | None:
        """The local thumbnail of an item, only if it is a file listed inside the pack."""
        if not item.thumbnail:
            return None
        try:
            mf.check_relative_path(item.thumbnail, "thumbnail")
        except ValueError:
            return None
        if self.manifest.file(item.thumbnail) is None:
            return None
        p = self.path / item.thumbnail
        return p if p.is_file() else None

    def verify(self) -> None:
        """Read every file and compare its sha256 with the manifest."""
        from ..weights import sha256_file

        for f in self.manifest.files:
            actual = sha256_file(self.path / f.path)
            if actual != f.sha256:
                raise PackError(self.path, f"file {f.path} fails its sha256 check (corrupt or tampered with)")

    def close(self) -> None:
        self.metadata.close()
        if self.reranker is not None:
            self.reranker.close()
        self.index = self.reranker = None
