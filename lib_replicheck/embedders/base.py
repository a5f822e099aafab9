"""What every embedder is: a spec that a pack records, and an `embed` that turns images into vectors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

COSINE = "cosine"  # float32 vectors, L2-normalised: similarity is the dot product, higher is closer
HAMMING = "hamming"  # packed bit codes: distance is the number of differing bits, lower is closer
METRICS = (COSINE, HAMMING)


@dataclass(frozen=True)
class WeightsFile:
    """One file of model weights: where it comes from and what it must hash to."""

    runtime: str  # "torchscript", "onnx", "open_clip"
    url: str | None = None
    sha256: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class EmbedderSpec:
    """Everything needed to reproduce a pack's vectors; stored in its manifest.

    `id` is what packs are matched on: a pack built with `sscd_disc_mixup` can only be searched
    with `sscd_disc_mixup` vectors, whatever runtime computed them.
    """

    id: str
    kind: str  # "sscd", "clip", "pdq"
    model: str
    dim: int
    metric: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    weights: tuple[WeightsFile, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = [asdict(w) for w in self.weights]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EmbedderSpec":
        weights = tuple(WeightsFile(**w) for w in d.get("weights") or ())
        return cls(
            id=str(d["id"]),
            kind=str(d["kind"]),
            model=str(d["model"]),
            dim=int(d["dim"]),
            metric=str(d["metric"]),
            preprocessing=dict(d.get("preprocessing") or {}),
            weights=weights,
        )

    def weights_for(self, runtime: str) -> WeightsFile | None:
        return next((w for w in self.weights if w.runtime == runtime), None)


class Embedder(ABC):
    """Turns RGB PIL images into one vector each, deterministically.

    cosine embedders return float32 [n, dim], rows L2-normalised; hamming embedders return
    uint8 [n, dim // 8], the bits packed as faiss's binary indexes expect.

    The checker reads nothing else of an embedder than what this class declares: the attributes
    below say how its matches are judged, so the checker needs no branch per family.
    """

    spec: EmbedderSpec
    batch_size: int = 16
    #: a copy descriptor whose feature map gives regions: its packs are also searched with regions
    #: of the image (`embed_regions`) when the check asks for them
    searches_regions: bool = False
    #: a learned descriptor: it maps every flat image (images.is_flat) close to every other, so a
    #: flat image gets no verdict from it
    withholds_flat: bool = False
    #: its similarity says the same subject or style, not a copy: each report says so
    semantic: bool = False
    #: where its model runs ("cpu", "cuda", "cuda:1"): the web UI frees a model that sits on a GPU
    #: when a generation starts
    device: str = "cpu"

    @abstractmethod
    def embed(self, images: Sequence) -> "Any":
        ...

    @property
    def family(self) -> str:
        """'sscd', 'clip' or 'pdq': what the tiers (thresholds.py) are looked up by."""
        return self.spec.kind

    @property
    def regions_available(self) -> str | None:
        """None when `embed_regions` can run; otherwise why not, in one line."""
        return "this model does not search regions"

    def embed_regions(self, images: Sequence, mode: str) -> tuple["Any", list]:
        """The whole images' vectors, exactly as `embed` gives them, and the regions searched beside
        them: a list of (image index, regions.Region, vector)."""
        from lib_replicheck.errors import EmbedderError

        raise EmbedderError(self.regions_available or "this model does not search regions")

    def unjudged(self) -> dict[int, str]:
        """Images of the last `embed` call too poor for this model to judge (their matches are shown
        without a verdict), by index, each with the note that says why; none by default."""
        return {}

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def runtime(self) -> str:
        return "builtin"

    def memory_bytes(self) -> int:
        """Bytes its loaded model holds, what `close` gives back (the web UI's status says it for
        CLIP); 0 for an embedder that does not count them."""
        return 0

    def close(self) -> None:
        """Free the model (the web UI's 'unload after each job' setting)."""


#: The longest side an embedder's resize may produce, in multiples of its short-side target. Every
#: shape from 1:4 to 4:1 (all generation sizes the web UIs offer, 2048x512 panoramas included) is
#: resized exactly as before; a longer strip is scaled to fit, so a model never sees more than 4
#: times the pixels of a square image (without it, an 8x2000 PNG became 288x72000: 40 s, 3.4 GB).
MAX_ASPECT = 4


def resize_short_side(im, size: int, max_aspect: int = MAX_ASPECT):
    """Resize so the shorter side is `size` pixels, keeping the aspect ratio (SSCD's eval setting),
    unless the long side would then exceed `size * max_aspect`: then the long side is that and the
    short side is smaller than `size`."""
    from PIL import Image

    w, h = im.size
    longest = size * max_aspect
    if max(w, h) * size > longest * min(w, h):  # the aspect ratio is over max_aspect
        if w >= h:
            nw, nh = longest, max(1, round(h * longest / w))
        else:
            nw, nh = max(1, round(w * longest / h)), longest
    elif min(w, h) == size:
        return im
    elif w <= h:
        nw, nh = size, max(1, round(h * size / w))
    else:
        nw, nh = max(1, round(w * size / h)), size
    if (nw, nh) == (w, h):
        return im
    return im.resize((nw, nh), Image.Resampling.BILINEAR)


def centre_crop_aspect(im, max_aspect: int = MAX_ASPECT):
    """The centre of `im` cut to an aspect ratio of at most `max_aspect`; for embedders that
    centre-crop a square anyway (CLIP), so the result they see is the same, only cheaper."""
    w, h = im.size
    if w > h * max_aspect:
        left = (w - h * max_aspect) // 2
        return im.crop((left, 0, left + h * max_aspect, h))
    if h > w * max_aspect:
        top = (h - w * max_aspect) // 2
        return im.crop((0, top, w, top + w * max_aspect))
    return im


def l2_normalise(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def group_by_size(arrays: Sequence) -> dict[tuple, list[int]]:
    """Indices of same-shaped arrays, so each group can run as one batch."""
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(tuple(a.shape), []).append(i)
    return groups
