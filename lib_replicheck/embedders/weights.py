"""Model weights on disk: where they live, how they are fetched, and that they are what they claim.

Weights are fetched only when a user asks for a model that is not on disk (with a progress bar),
never at import and never while generating with `offline=True`. Every file a pack names a sha256
for is refused when it does not match, whether downloaded or placed by hand.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lib_replicheck.errors import WeightsError
from lib_replicheck.home import default_models_dir

CHUNK = 1 << 20


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
             desc: str | None = None) -> Path:
    """Fetch `url` to `dest` with lib_replicheck.download (resumed, retried, verified, then renamed),
    with a tqdm progress bar in the terminal."""
    from lib_replicheck.download import DownloadError, fetch

    dest = Path(dest)
    bar = _progress_bar(0, 0, desc or dest.name) if progress else None
    try:
        return fetch([url], dest, size=None, sha256=sha256, progress=bar.update if bar is not None else None)
    except DownloadError as e:
        if "sha256" in str(e):
            raise WeightsError(f"{dest}: {e}") from None
        raise WeightsError(f"could not download {url}: {e}") from None
    finally:
        if bar is not None:
            bar.close()


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
