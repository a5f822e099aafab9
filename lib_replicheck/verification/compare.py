"""The checked image against one fetched training image: SSCD on the whole image and on regions of
the checked image (the checker's own embedding and region code), and PDQ.

The verdict is SSCD's tier on the pair, judged as the checker judges an SSCD pack's match: the whole
image by the SSCD tiers, a region by the region tiers (a single pair has no background set to
normalise against); the higher verdict wins, the whole image on a tie.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib_replicheck.regions import Region
from lib_replicheck.thresholds import DEFAULT_TIERS, REGION_TIERS, Tiers, Verdict


@dataclass(frozen=True)
class PairScore:
    verdict: Verdict
    sscd: float  # the similarity the verdict was judged on
    region: Region | None  # where in the checked image; None: the whole image
    pdq: int | None  # Hamming distance, None when PDQ is not installed or a hash is too flat to trust


class CheckedImage:
    """The checked image's SSCD vectors (whole image and regions), computed once for all its candidates."""

    def __init__(self, image, sscd, regions: str = "fast"):
        from lib_replicheck.checker import embed
        from lib_replicheck.report import Report

        self.image = image
        self.notes = Report(image="")  # embed() says here why regions could not be searched
        whole, self.regions = embed(sscd, [image], regions, [self.notes])
        self.whole = whole[0]


def compare(checked: CheckedImage, training, sscd, tiers: dict[str, Tiers] | None = None) -> PairScore:
    """How close `training` (a PIL image) is to the checked image, and SSCD's verdict on the pair."""
    import numpy as np

    whole_tiers = (tiers or DEFAULT_TIERS).get("sscd", DEFAULT_TIERS["sscd"])
    vector = np.asarray(sscd.embed([training]))[0]
    best = PairScore(whole_tiers.verdict(float(checked.whole @ vector)), float(checked.whole @ vector), None, None)
    for _, box, v in checked.regions:
        score = float(np.asarray(v) @ vector)
        verdict = REGION_TIERS["sscd"].verdict(score)
        if verdict.rank > best.verdict.rank:
            best = PairScore(verdict, score, box, None)
    return PairScore(best.verdict, best.sscd, best.region, pdq_distance(checked, training))


def pdq_distance(checked: CheckedImage, training) -> int | None:
    """PDQ's Hamming distance between the pair; None without pdqhash, or when either hash's quality is
    below Meta's floor (a flat image)."""
    from lib_replicheck.errors import EmbedderError

    try:
        from lib_replicheck.embedders.pdq import MIN_QUALITY, PDQEmbedder, hamming

        pdq = PDQEmbedder()
    except EmbedderError:
        return None
    codes = pdq.embed([checked.image, training])
    if min(pdq.last_quality) < MIN_QUALITY:
        return None
    return hamming(codes[0], codes[1])
