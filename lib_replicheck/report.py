"""What a check says about one image: the nearest training images (Match) and the verdict (Report).

The web UI panel, the HTTP API, the infotext and the command line all read these.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lib_replicheck.item import Item
from lib_replicheck.regions import Region
from lib_replicheck.thresholds import Verdict


@dataclass
class Match:
    """One training image near the checked image: a pack's metadata Item with its score and verdict.
    Text fields are untrusted scraped data."""

    pack: str
    item: Item
    similarity: float  # in [0, 1] for Hamming (1 - d/bits), cosine otherwise
    distance: int | None  # Hamming distance, for PDQ packs
    verdict: Verdict
    embedder: str
    thumbnail: str | None = None  # the thumbnail's local file inside the pack, checked
    region: Region | None = None  # where in the checked image it was found; None: the whole image
    #: a region's mean similarity to the pack's nearest background images, which its verdict is
    #: judged after subtracting (packs/background.py); None: judged on the similarity itself
    background: float | None = None

    @property
    def id(self) -> int:
        return self.item.id

    @property
    def url(self) -> str | None:
        return self.item.url

    @property
    def caption(self) -> str | None:
        return self.item.caption

    @property
    def width(self) -> int | None:
        return self.item.width

    @property
    def height(self) -> int | None:
        return self.item.height

    @property
    def source(self) -> str | None:
        return self.item.source

    @property
    def license(self) -> str | None:
        return self.item.license

    @property
    def normalised(self) -> float | None:
        """The similarity less the background's, when the verdict was judged on it."""
        return None if self.background is None else self.similarity - self.background

    def background_text(self) -> str:
        """How far above the pack's background a region stood, for the panel and the HTML report;
        empty when the verdict was judged on the similarity itself."""
        above = self.normalised
        return "" if above is None else f"{above:.2f} above the pack's background, which its verdict is judged on"

    def score_text(self) -> str:
        return f"d={self.distance}" if self.distance is not None else f"{self.similarity:.3f}"

    def score_label(self) -> str:
        """The similarity as users read it everywhere (panel, infotext, report, command line): two
        decimals, rounded down so that a score shown at a tier's cut is at or above it. PDQ's
        Hamming distance reads as its similarity, 1 - d/256."""
        return f"{math.floor(self.similarity * 100 + 1e-6) / 100:.2f}"

    def to_dict(self) -> dict:
        """Flat, as reports have always been written: the item's fields beside the score."""
        item = asdict(self.item)
        return {"pack": self.pack, "id": self.item.id, "similarity": self.similarity, "distance": self.distance,
                "verdict": self.verdict.value, "embedder": self.embedder,
                **{k: v for k, v in item.items() if k not in ("id", "thumbnail")}, "thumbnail": self.thumbnail,
                "region": self.region.to_dict() if self.region else None,
                "background": None if self.background is None else round(self.background, 4),
                "normalised": None if self.background is None else round(self.normalised, 4)}


@dataclass
class Report:
    image: str
    verdict: Verdict = Verdict.NONE
    best: Match | None = None
    matches: list[Match] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    from_input: bool = False  # img2img: the best match was already in the input image

    @property
    def is_copy(self) -> bool:
        return self.verdict.is_copy

    def summary(self) -> str:
        """One line, the same words in the infotext, the panel, the HTML report and the command line:
        'no copy (best 0.31 in laion-6.5)', 'likely copy (best 0.88 in demo)', 'not checked (error)'.
        No comma or colon, so the web UI writes it into the infotext without quotes; an error is
        named without its details (paths, messages), as the infotext travels with published images."""
        if self.error:
            return "not checked (error)"
        if self.best is None:
            return self.verdict.value
        where = f"best {self.best.score_label()} in {self.best.pack}"
        if self.from_input:
            where += "; already in the input image"
        return f"{self.verdict.value} ({where})"

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "verdict": self.verdict.value,
            "summary": self.summary(),
            "is_copy": self.is_copy,
            "best": self.best.to_dict() if self.best else None,
            "matches": [m.to_dict() for m in self.matches],
            "notes": list(self.notes),
            "error": self.error,
            "from_input": self.from_input,
            "seconds": round(self.seconds, 4),
        }
