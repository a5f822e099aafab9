"""Published embedding files named by URL: a bounded URL list, each file fetched with the project's
downloader into the place its layout gives it (`img_emb/..`, `embeddings/..`, `metadata/..`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lib_replicheck.builder.embedding_layouts import MAX_EMBEDDING_BYTES, EmbeddingSourceError
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.hashing import sha256_file


@dataclass(frozen=True)
class FetchedFile:
    url: str
    path: str  # relative to the download folder
    size: int
    sha256: str


MAX_URL_LIST_BYTES = 1024**2
MAX_URL_LIST_LINES = 20_000
_FILE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def read_url_list(path: Path) -> list[tuple[str, str | None]]:
    """(URL, sha256 or None) per line of a URL list (`URL [SHA256]`, `#` comments), bounded."""
    from lib_replicheck.download import check_url

    try:
        if path.stat().st_size > MAX_URL_LIST_BYTES:
            raise EmbeddingSourceError(f"URL list {path}: larger than {MAX_URL_LIST_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EmbeddingSourceError(f"URL list {path}: cannot be read ({e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2 or (len(fields) == 2 and not re.fullmatch(r"[0-9a-f]{64}", fields[1])):
            raise EmbeddingSourceError(f"URL list {path}, line {n}: give a URL and, optionally, its sha256")
        try:
            check_url(fields[0])
        except ReplicheckError as e:
            raise EmbeddingSourceError(f"URL list {path}, line {n}: {e}") from None
        if fields[0].startswith("file:"):
            raise EmbeddingSourceError(f"URL list {path}, line {n}: only http(s) URLs are downloaded")
        out.append((fields[0], fields[1] if len(fields) == 2 else None))
        if len(out) > MAX_URL_LIST_LINES:
            raise EmbeddingSourceError(f"URL list {path}: more than {MAX_URL_LIST_LINES:,} URLs")
    if not out:
        raise EmbeddingSourceError(f"URL list {path}: no URLs")
    return out


def local_name(url: str) -> str:
    """Where a URL's file goes under the download folder: its last folder and file name, which say
    the layout (`img_emb/img_emb_0.npy`, `metadata/pd12m.00.parquet`, ...); DataComp's shards
    (`NAME.npz`, `NAME.parquet`, wherever the hub keeps them) go to `metadata/`, as its
    download_upstream.py puts them."""
    from urllib.parse import unquote, urlsplit

    parts = [unquote(p) for p in urlsplit(url).path.split("/") if p]
    name = parts[-1] if parts else ""
    if not _FILE_NAME.fullmatch(name) or name.startswith("."):
        parts = []
    elif name.endswith((".npz", ".parquet")) and (len(parts) < 2 or parts[-2] not in ("img_emb", "embeddings")):
        return f"metadata/{name}"
    if len(parts) < 2 or parts[-2] not in ("img_emb", "embeddings", "metadata"):
        raise EmbeddingSourceError(f"{url}: not a file of clip-retrieval's (img_emb/, metadata/), PD12M's "
                                   "(embeddings/, metadata/) or DataComp's (NAME.npz, NAME.parquet) layout")
    return f"{parts[-2]}/{parts[-1]}"


def fetch_files(urls: list[tuple[str, str | None]], folder: Path, log, policy=None,
                sizes: dict[str, int] | None = None) -> list[FetchedFile]:
    """Download each URL into `folder` with the project's downloader (resumable, bounded; the sha256
    and the size in `sizes`, where given, checked); files already there from a killed build are kept.
    Returns each file's sha256, recorded in the manifest."""
    from lib_replicheck.download import MAX_UNSIZED_BYTES, fetch

    out = []
    for url, sha in urls:
        rel = local_name(url)
        dest = folder / rel
        if not dest.is_file():
            log(f"downloading {url}")
            fetch([url], dest, size=(sizes or {}).get(url), sha256=sha, policy=policy,
                  max_bytes=min(MAX_UNSIZED_BYTES, MAX_EMBEDDING_BYTES))
        digest = sha256_file(dest)
        if sha and digest != sha:
            dest.unlink(missing_ok=True)
            raise EmbeddingSourceError(f"{url}: sha256 {digest} is not the {sha} the list names")
        out.append(FetchedFile(url, rel, dest.stat().st_size, digest))
    return out
