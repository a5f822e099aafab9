"""What a check says about one image: the nearest training images (Match) and the verdict (Report).

The web UI panel, the HTTP API, the infotext, the command line, the folder report and the ComfyUI
nodes all read these, and take from here the words of each verdict (VERDICT_WORDS) and the one rule
of what counts as flagged (Report.flagged, is_flagged).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lib_replicheck.item import Item
from lib_replicheck.regions import Region
from lib_replicheck.thresholds import CANDIDATE_FAMILIES, Verdict

#: What every output calls an image that got no verdict (an error, or a flat image): the JSON and
#: CSV `verdict`, the HTML report, the panel, the API and the command line's text.
NOT_CHECKED = "not checked"
#: Every word a verdict is shown with: 'no copy', 'possible copy', 'likely copy', 'duplicate', 'not checked'.
VERDICT_WORDS = tuple(v.value for v in Verdict) + (NOT_CHECKED,)
#: The tiers an image can be flagged at, lowest first (the command line's --fail-on, the Gate node's choice).
COPY_TIERS = tuple(v for v in Verdict if v.is_copy)


def verdict_from_word(word: object) -> Verdict | None:
    """The Verdict a written report or record names ('likely copy'...); None for 'not checked' or
    any other text."""
    return Verdict._value2member_map_.get(word) if isinstance(word, str) else None


def is_flagged(verdict: Verdict | None, at: Verdict = Verdict.POSSIBLE, from_input: bool = False) -> bool:
    """The one rule of what is flagged, for a Report (Report.flagged) and for one written out (the
    ComfyUI report JSON, a signed record): a verdict (None: not checked) that is a copy at or above
    the tier `at`, and a copy the generation made. A match the hook found already in the img2img
    input image (`from_input`) is still shown with its verdict, and is not flagged: the copy came in
    with the user's own input, so neither the panel's count, 'do not save copies' nor an exit
    status holds it against the generation."""
    return verdict is not None and verdict.is_copy and verdict.rank >= at.rank and not from_input


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
    #: what fetching the training image and comparing it found, for a candidate (verification_status.
    #: Verification, set by lib_replicheck/verification/); None: verification never looked at it
    verification: "Verification | None" = None
    #: what matching local features with the stored training image found (verification_status.Geometry,
    #: set by the checker for a candidate between "possible" and "likely"); None: not looked at
    geometry: "Geometry | None" = None

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
        return "" if above is None else f"{_label(above)} above the pack's background, which its verdict is judged on"

    def judged_score(self) -> float:
        """The number the verdict was judged on: the similarity, or for a region judged against the
        pack's background, how far above the background it stood."""
        above = self.normalised
        return self.similarity if above is None else above

    @property
    def judged_on(self) -> str:
        """What `judged_score` is: 'whole image', 'region' (a region's similarity, judged by the
        region tiers) or 'region above background' (judged by the normalised region tiers)."""
        if self.region is None:
            return "whole image"
        return "region" if self.background is None else "region above background"

    def judged_text(self) -> str:
        """The judged number in words, as every output shows it: 'best 0.81', 'region 0.72', or
        'region 0.42 above background; raw 0.67' (no comma or colon: it goes into the infotext)."""
        if self.region is None:
            return f"best {self.score_label()}"
        if self.background is None:
            return f"region {self.score_label()}"
        return f"region {_label(self.judged_score())} above background; raw {self.score_label()}"

    @property
    def unverified(self) -> bool:
        """A copy verdict from a family whose matches are candidates only (CLIP): not evidence."""
        return (self.verdict.is_copy and self.embedder.split(":", 1)[0] in CANDIDATE_FAMILIES
                and not self.verified)

    @property
    def verified(self) -> bool:
        """A candidate whose training image was fetched and compared: its verdict is SSCD's on the pair."""
        return self.verification is not None and self.verification.verified

    def verdict_text(self, where: str = "") -> str:
        """The verdict in words: 'likely copy', ..., or for a candidate 'possible copy (unverified: CLIP
        0.93)', with what verification found when it looked ('possible copy (unverified: CLIP 0.93; dead
        URL (HTTP Error 404: Not Found))', 'likely copy (verified: SSCD 0.87)'); `where` goes after the
        score (' in pd12m-clip')."""
        status = f"; {self.verification.text()}" if self.verification is not None else ""
        if self.unverified:
            family = self.embedder.split(':', 1)[0].upper()
            return f"{self.verdict.value} (unverified: {family} {self.score_label()}{where}{status})"
        if self.verified:
            return f"{self.verdict.value} ({self.verification.text()}{where})"
        return self.verdict.value

    def score_text(self) -> str:
        return f"d={self.distance}" if self.distance is not None else f"{self.similarity:.3f}"

    def score_label(self) -> str:
        """The similarity as users read it everywhere (panel, infotext, report, command line): two
        decimals, rounded down so that a score shown at a tier's cut is at or above it. PDQ's
        Hamming distance reads as its similarity, 1 - d/256."""
        return _label(self.similarity)

    def to_dict(self) -> dict:
        """Flat, as reports have always been written: the item's fields beside the score."""
        item = asdict(self.item)
        return {"pack": self.pack, "id": self.item.id, "similarity": self.similarity, "distance": self.distance,
                "verdict": self.verdict.value, "verdict_text": self.verdict_text(), "unverified": self.unverified,
                "embedder": self.embedder,
                **{k: v for k, v in item.items() if k not in ("id", "thumbnail")}, "thumbnail": self.thumbnail,
                "region": self.region.to_dict() if self.region else None,
                "background": None if self.background is None else round(self.background, 4),
                "normalised": None if self.background is None else round(self.normalised, 4),
                "judged_on": self.judged_on, "judged_score": round(self.judged_score(), 4),
                "verification": self.verification.to_dict() if self.verification is not None else None,
                "geometry": self.geometry.to_dict() if self.geometry is not None else None}


def _label(score: float) -> str:
    """Two decimals, rounded down (see Match.score_label)."""
    return f"{math.floor(score * 100 + 1e-6) / 100:.2f}"


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
    #: why the image, though read, got no verdict (e.g. 'flat image'); its matches are still listed
    withheld: str | None = None
    #: the signed copy that holds the record of this check (check --sign), for the report to link
    record: str | None = None

    @property
    def is_copy(self) -> bool:
        return self.verdict.is_copy

    @property
    def checked(self) -> bool:
        """Whether the image got a verdict (it was read, and not withheld)."""
        return not self.error and not self.withheld

    def flagged(self, at: Verdict = Verdict.POSSIBLE) -> bool:
        """Whether the image is flagged at the tier `at` (is_flagged): it got a verdict (it was read and
        not withheld, as a flat image is), a copy at or above `at`, not one already in the input image.
        What the command line's exit status (--fail-on), the folder report's counts, the panel, the
        API and the ComfyUI Gate all count."""
        return is_flagged(self.verdict if self.checked else None, at, self.from_input)

    @property
    def verdict_text(self) -> str:
        """The verdict as every output names it: 'no copy', ..., 'duplicate', or 'not checked'."""
        return self.verdict.value if self.checked else NOT_CHECKED

    def summary(self) -> str:
        """One line, the same words in the infotext, the panel, the HTML report and the command line:
        'no copy (best 0.31 in laion-6.5)', 'likely copy (region 0.42 above background; raw 0.67 in
        demo)', 'not checked (error)', 'not checked (flat image)'. The number is the one the verdict
        was judged on (Match.judged_text). No comma or colon, so the web UI writes it into the
        infotext without quotes, except for a CLIP candidate, 'possible copy (unverified: CLIP 0.93
        in pd12m-clip)' (quoted there); an error is named without its details (paths, messages), as
        the infotext travels with published images."""
        if self.error:
            return f"{NOT_CHECKED} (error)"
        if self.withheld:
            return f"{NOT_CHECKED} ({self.withheld})"
        if self.best is None:
            return self.verdict.value
        if self.best.unverified or self.best.verified:  # 'possible copy (unverified: CLIP 0.93 in pd12m-clip)'
            return self.best.verdict_text(f" in {self.best.pack}")
        return f"{self.verdict.value} ({self.detail()})"

    def detail(self) -> str:
        """The summary's words in brackets: 'best 0.88 in demo', 'region 0.72 in demo; already in
        the input image'; empty without a match."""
        if self.best is None:
            return ""
        where = f"{self.best.judged_text()} in {self.best.pack}"
        if self.from_input:
            where += "; already in the input image"
        return where

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "verdict": self.verdict_text,
            "summary": self.summary(),
            "withheld": self.withheld,
            "is_copy": self.is_copy,
            "best": self.best.to_dict() if self.best else None,
            "matches": [m.to_dict() for m in self.matches],
            "notes": list(self.notes),
            "signed_record": self.record,
            "error": self.error,
            "from_input": self.from_input,
            "seconds": round(self.seconds, 4),
        }


def verdict_label(report: Report | None) -> str:
    """'no copy', 'possible copy', 'likely copy', 'duplicate', or 'not checked' (no report, an error,
    or a verdict withheld, as for a flat image)."""
    return NOT_CHECKED if report is None else report.verdict_text


def infotext(report: Report | None, reason: str = "error") -> str:
    """The verdict as it travels with a published image: e.g. 'no copy (best 0.31 in demo)',
    'likely copy (best 0.89 in demo)', 'not checked (no pack installed)'; no comma or colon, so the web UI
    writes it without quotes. An error is named without its details (paths, messages); `reason`
    says why an image was not checked."""
    if report is None or report.error:
        return f"{NOT_CHECKED} ({reason if report is None else 'error'})"
    return report.summary()  # the words of the report, the command line and the API
