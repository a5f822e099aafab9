"""An opened pack: validated manifest, faiss index and metadata, ready to search."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from lib_replicheck.errors import PackError
from lib_replicheck.packs import index_search as faiss_index
from lib_replicheck.packs import manifest as mf
from lib_replicheck.packs.metadata import Item, Metadata


@dataclass(frozen=True)
class Hit:
    """One neighbour of one query in one pack (metadata resolved)."""

    item: Item
    similarity: float
    distance: int | None


class Pack:
    """A pack folder, opened for searching.

    Opening checks the manifest, that every listed file exists with its listed size (the full
    sha256 check is `verify()`, which reads every byte), that the index's declared structure fits
    its file and the manifest before faiss reads it, that the metadata is a plain table, and, with
    `expect_embedder`, that the pack was built with that embedder. Before each search the size,
    mtime and inode of the files in use are compared with those seen at opening: a pack whose files
    changed is opened again, or the search fails with a PackError (never a SIGBUS from a mapped
    file that shrank).
    """

    def __init__(self, path: str | Path, expect_embedder: str | None = None, mmap: bool = True,
                 default_background: bool = True):
        self.path = Path(path)
        self.use_default_background = default_background  # False: measures a pack without any (bench/)
        self.expect_embedder = expect_embedder
        self.mmap_min_bytes = faiss_index.MMAP_MIN_BYTES if mmap else None
        self._lock = threading.RLock()
        self.index = self.metadata = self.reranker = self.background = None
        self._open()

    def _open(self) -> None:
        if not self.path.is_dir():
            raise PackError(self.path, "no such pack folder")
        manifest_stamp = _stamp(self.path / mf.MANIFEST)
        self.manifest = mf.read(self.path)
        m = self.manifest
        if self.expect_embedder and self.expect_embedder not in (m.embedder.id, m.embedder.kind):
            raise PackError(self.path, f"was built with the embedder {m.embedder.id!r}, not "
                                       f"{self.expect_embedder!r}; its vectors cannot be compared")
        rerank = m.index.get("rerank")
        watched = [m.index.get("file", mf.INDEX_FILE), mf.METADATA_FILE] + list(mf.rerank_files(m.index)) \
            + list(mf.background_files(m.background))
        stamps = {mf.MANIFEST: manifest_stamp, **{name: _stamp(self.path / name) for name in watched}}
        problem = files_problem(self.path, m)
        if problem:
            raise PackError(self.path, problem)
        index = faiss_index.read(self.path / watched[0], m.metric, m.embedder.dim, m.vectors, self.mmap_min_bytes)
        if (index.d, index.ntotal) != (m.embedder.dim, m.vectors):  # check_layout saw the same; faiss agrees
            raise PackError(self.path, f"index holds {index.ntotal} vectors of dimension {index.d}, the manifest "
                                       f"says {m.vectors} of {m.embedder.dim}")
        faiss_index.set_search_params(index, m.index.get("search_params") or {}, self.path)
        metadata = Metadata(self.path / mf.METADATA_FILE)
        try:
            rows = metadata.count()
            if rows != m.count:
                raise PackError(self.path, f"metadata holds {rows} rows, the manifest says {m.count}")
            reranker, candidates = None, 0
            variants = max(1, m.vectors // max(1, m.count)) if m.count else 1
            if rerank:
                from lib_replicheck.packs.rerank import Reranker, load_codebook

                dtype = rerank.get("dtype", "float16")
                reranker = Reranker(self.path / rerank["file"], m.vectors, m.embedder.dim, variants, dtype,
                                    tuple(rerank["range"]) if dtype == "sq4" else None,
                                    load_codebook(self.path / rerank["codebook"], m.embedder.dim)
                                    if dtype == "pq" else None)
                candidates = rerank["candidates"]
            background = None
            if m.background:
                from lib_replicheck.packs import background as bg

                background = bg.load(self.path / m.background["file"], m.embedder.dim)
                if len(background) != m.background["count"]:
                    raise PackError(self.path, f"background {m.background['file']} holds {len(background)} rows, "
                                               f"the manifest says {m.background['count']}")
        except BaseException:
            metadata.close()
            raise
        self.index, self.metadata, self.reranker, self.background = index, metadata, reranker, background
        self.variants, self.candidates = variants, candidates
        self._stamps = stamps
        self.default_background = None
        if background is None and m.metric != "hamming" and self.use_default_background:
            try:
                self._use_default_background()
            except BaseException:
                self._release()
                raise

    def _use_default_background(self) -> None:
        """A pack without a background of its own uses the default shipped for its embedder
        (packs/background.py), less its rows that are copies of one of this pack's images."""
        from lib_replicheck.packs import background as bg
        from lib_replicheck.thresholds import DEFAULT_TIERS

        try:
            default = bg.default_for(self.manifest.embedder.id)
            if default is None or default.dim != self.manifest.embedder.dim:
                return
            rows = bg.load_default(default, default.dim)
        except PackError as e:
            raise PackError(self.path, f"it has no background of its own, and replicheck's {e.reason} "
                                       f"({e.path})") from None
        nearest = [hits[0].similarity if hits else 0.0 for hits in self._search(rows, 1)]
        keep = bg.not_copies(nearest, DEFAULT_TIERS["sscd"].likely)
        if keep.any():
            self.background, self.default_background = rows[keep], default

    def _ensure_current(self) -> None:
        """Open the pack again if any file in use changed since it was opened; PackError if it no
        longer opens. A mapped index is released before anything reads it again."""
        if self.index is not None and all(_stamp(self.path / n) == s for n, s in self._stamps.items()):
            return
        changed = [n for n, s in self._stamps.items() if _stamp(self.path / n) != s]
        self._release()
        try:
            self._open()
        except PackError as e:
            raise PackError(self.path, f"{', '.join(changed) or 'its files'} changed on disk since the pack "
                                       f"was opened, and it no longer opens: {e.reason}") from None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def embedder(self):
        return self.manifest.embedder

    def search(self, queries, k: int = 5) -> list[list[Hit]]:
        """The k nearest training images of each query, closest first, one hit per image."""
        with self._lock:
            self._ensure_current()
            return self._search(queries, k)

    def _search(self, queries, k: int) -> list[list[Hit]]:
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

    def background_offsets(self, queries):
        """Per query, what score normalisation subtracts (packs/background.py); None when the pack
        has no background set."""
        from lib_replicheck.packs import background as bg

        with self._lock:
            self._ensure_current()
            return None if self.background is None else bg.offsets(self.background, queries)

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
        from lib_replicheck.embedders.weights import sha256_file

        for f in self.manifest.files:
            actual = sha256_file(self.path / f.path)
            if actual != f.sha256:
                raise PackError(self.path, f"file {f.path} fails its sha256 check (corrupt or tampered with)")

    def _release(self) -> None:
        if self.metadata is not None:
            self.metadata.close()
        if self.reranker is not None:
            self.reranker.close()
        self.index = self.metadata = self.reranker = self.background = None

    def close(self) -> None:
        with self._lock:
            self._release()


def files_problem(path: str | Path, manifest) -> str | None:
    """Why a pack's files do not match its manifest, from a stat of each (nothing is read): a listed
    file missing, or of another size than listed; None when they match. What opening a pack
    refuses, and what `packs list` and the web UI show as the pack's damage."""
    import stat

    for f in manifest.files:
        try:
            st = os.stat(Path(path) / f.path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            return f"file {f.path} listed in the manifest is missing"
        if st.st_size != f.size:
            return f"file {f.path} is {st.st_size} bytes, the manifest says {f.size} (truncated or replaced?)"
    return None


def _stamp(path: Path) -> tuple | None:
    """What tells a file changed: device, inode, size, mtime (None: missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
