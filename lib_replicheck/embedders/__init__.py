"""Embedders chosen by name: `sscd` (`sscd_disc_mixup`, `sscd_disc_large`, ...), `clip[:MODEL/TAG]`, `pdq`.

Nothing heavy is imported here; each embedder imports its own framework when it is built.
"""

from __future__ import annotations

from pathlib import Path

from lib_replicheck.errors import EmbedderError, WeightsError
from lib_replicheck.embedders.base import COSINE, HAMMING, Embedder, EmbedderSpec, WeightsFile
from lib_replicheck.embedders.options import EmbedderOptions

__all__ = ["COSINE", "HAMMING", "Embedder", "EmbedderOptions", "EmbedderSpec", "WeightsFile", "load", "kind_of",
           "ensure_for", "declared", "NAMES"]

NAMES = ("sscd", "sscd_disc_mixup", "sscd_disc_large", "clip", "clip:MODEL/PRETRAINED", "pdq")


def kind_of(name: str) -> str:
    """The family of an embedder name or id: 'sscd', 'clip' or 'pdq'."""
    if name == "pdq":
        return "pdq"
    if name == "sscd" or name.startswith("sscd_"):
        return "sscd"
    if name == "clip" or name.startswith("clip:"):
        return "clip"
    raise EmbedderError(f"unknown embedder {name!r}; choose one of: {', '.join(NAMES)}")


def declared(family: str) -> type[Embedder] | None:
    """The embedder class of a family ('sscd', 'clip', 'pdq'), for what it declares (`semantic`,
    `searches_regions`) without loading a model; None for a family replicheck does not know."""
    if family == "pdq":
        from lib_replicheck.embedders.pdq import PDQEmbedder

        return PDQEmbedder
    if family == "sscd":
        from lib_replicheck.embedders.sscd import SSCDEmbedder

        return SSCDEmbedder
    if family == "clip":
        from lib_replicheck.embedders.clip import ClipEmbedder

        return ClipEmbedder
    return None


def load(name: str | EmbedderSpec, options: EmbedderOptions | None = None, **changes) -> Embedder:
    """Build the embedder `name`, or the one a pack's spec describes (its sha256s then enforced),
    as `options` say; `changes` are fields of EmbedderOptions that replace those of `options`
    (e.g. `load("sscd", runtime="onnx", weights=path)`)."""
    options = (options or EmbedderOptions()).but(**changes).validated()
    expected = name if isinstance(name, EmbedderSpec) else None
    name = expected.id if expected else name
    kind = kind_of(name)
    cls = declared(kind)
    if kind == "pdq":
        return cls()
    if kind == "sscd":
        from lib_replicheck.embedders.sscd import DEFAULT_MODEL

        return cls(DEFAULT_MODEL if name == "sscd" else name, options, expected=expected)
    from lib_replicheck.embedders.clip import parse_id

    model, pretrained = parse_id(name)
    return cls(model, pretrained, device=options.device, models_dir=options.models_dir,
               offline=options.offline, checkpoint=options.weights)


def ensure_for(spec, models_dir: str | Path | None = None, *, offline: bool = False,
               progress: bool = True) -> Path | None:
    """Fetch the weights a pack's embedder needs, if they are not on disk yet; None if it needs none.

    SSCD: an ONNX file when one is there, else the TorchScript file (downloaded, sha256-checked
    when the pack names one) if torch is installed to run it. PDQ needs nothing; CLIP weights
    come through open_clip on first use.
    """
    if spec.kind != "sscd":
        return None
    from lib_replicheck.embedders.sscd_weights import find_onnx, has_module, no_runtime_message, torchscript_source
    from lib_replicheck.embedders.weights import resolve

    onnx = find_onnx(spec.model, None, models_dir)
    if onnx is not None:
        return onnx
    if not has_module("torch"):  # TorchScript weights could not be run: say what to install instead
        raise WeightsError(no_runtime_message(spec.model, models_dir, have_onnx=False))
    filename, url, sha = torchscript_source(spec.model, spec)
    return resolve(None, models_dir, filename, url, sha, offline=offline, progress=progress)
