"""Model weights on disk: where they live, how they are fetched, and that they are what they claim.

Weights are fetched only when a user asks for a model that is not on disk (with a progress bar),
never at import and never while generating with `offline=True`. Every file a pack names a sha256
for is refused when it does not match, whether downloaded or placed by hand.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import WeightsError

CHUNK = 1 << 20


def default_home() -> Path:
    """Where replicheck keeps models and packs outside the web UI (`$REPLICHECK_HOME`)."""
    env = os.environ.get("REPLICHECK_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "replicheck"


def default_models_dir() -> Path:
    return default_home() / "models"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str | None) -> None:
    """Raise WeightsError when `path` does not hash to `expected` (no-op without an expectation)."""
    if not expected:
        return
    actual = sha256_file(path)
    if actual.lower() != expected.lower():
        raise WeightsError(
            f"{path}: sha256 is {actual}, but {expected} was expected; the file is corrupt or not "
            "the one the pack was built with. Delete it and let replicheck download it again."
        )


def download(url: str, dest: str | Path, sha256: str | None = None, *, progress: bool = True,
             timeout: float = 30.0, desc: str | None = None) -> Path:
    """Fetch `url` to `dest` through a `.part` file, resuming it, and verify before renaming.

    `dest` only ever appears complete and verified: a broken or interrupted download leaves at
    most the `.part` file, which the next call resumes with an HTTP Range request.
    """
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if not url.startswith(("http://", "https://")):
        raise WeightsError(f"{url}: only http(s) URLs are downloaded")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
            if r.status_code == 416:  # the part file is already complete
                pass
            else:
                r.raise_for_status()
                if have and r.status_code != 206:  # the server ignored Range: start again
                    have = 0
                total = int(r.headers.get("Content-Length") or 0) + have
                bar = _progress_bar(total, have, desc or dest.name) if progress else None
                with open(part, "ab" if have else "wb") as f:
                    for chunk in r.iter_content(CHUNK):
                        f.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                if bar is not None:
                    bar.close()
    except requests.RequestException as e:
        raise WeightsError(f"could not download {url}: {e}") from None
    try:
        verify_sha256(part, sha256)
    except WeightsError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def _progress_bar(total: int, initial: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total or None, initial=initial, unit="B", unit_scale=True, desc=desc)


def resolve(weights_path: str | Path | None, models_dir: str | Path | None, filename: str,
            url: str | None, sha256: str | None, *, offline: bool = False, progress: bool = True) -> Path:
    """Find a weights file: an explicit path, then `models_dir/filename`, then a download.

    With `offline=True` a missing file is an error that says where to put it.
    """
    if weights_path:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise WeightsError(f"{p}: weights file not found")
        verify_sha256(p, sha256)
        return p
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    p = models_dir / filename
    if p.is_file():
        verify_sha256(p, sha256)
        return p
    if offline or not url:
        how = f"download it from {url} " if url else "place it "
        raise WeightsError(f"{filename} is not in {models_dir}: {how}into that folder"
                           + (" (network access is off)" if offline and url else ""))
    return download(url, p, sha256, progress=progress)
