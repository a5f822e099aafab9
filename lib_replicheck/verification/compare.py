"""The checked image against one fetched training image: SSCD on the whole image and on regions of
the checked image (the checker's own embedding and region code), and PDQ.

The verdict is SSCD's tier on the pair, judged by the checker's own rule (thresholds.verdict_for): the
whole image by the SSCD tiers; a region on its score normalised against the default background that
ships for SSCD (packs/background.py: a single pair has no background set of its own), above the raw
floor, as an SSCD pack's region matches are; the higher verdict wins, the whole image on a tie.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib_replicheck.regions import Region
from lib_replicheck.thresholds import DEFAULT_TIERS, Tiers, Verdict, verdict_for


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
        self.offsets = region_offsets(self.regions, sscd)  # one per region, for every candidate


def compare(checked: CheckedImage, training, sscd, tiers: dict[str, Tiers] | None = None) -> PairScore:
    """How close `training` (a PIL image) is to the checked image, and SSCD's verdict on the pair."""
    import numpy as np

    whole_tiers = (tiers or DEFAULT_TIERS).get("sscd", DEFAULT_TIERS["sscd"])
    vector = np.asarray(sscd.embed([training]))[0]
    best = PairScore(whole_tiers.verdict(float(checked.whole @ vector)), float(checked.whole @ vector), None, None)
    best_judged = None  # the score the best region so far was judged on; the whole image wins a tie of verdicts
    for n, (_, box, v) in enumerate(checked.regions):
        score = float(np.asarray(v) @ vector)
        offset = None if checked.offsets is None else float(checked.offsets[n])
        verdict = verdict_for("sscd", score, region=True, offset=offset)
        judged = score - (offset or 0.0)
        if verdict.rank > best.verdict.rank or (best_judged is not None and verdict.rank == best.verdict.rank
                                                and judged > best_judged):
            best, best_judged = PairScore(verdict, score, box, None), judged
    return PairScore(best.verdict, best.sscd, best.region, pdq_distance(checked, training))


def region_offsets(regions, sscd):
    """What score normalisation subtracts from each of the checked image's `regions`: its mean
    similarity to its nearest rows of the default background shipped for `sscd`; None without
    regions, or when no usable default ships for it (the regions are then judged on raw similarity,
    at the raw region tiers; a damaged default is said where a pack uses it)."""
    import numpy as np

    from lib_replicheck.errors import ReplicheckError
    from lib_replicheck.packs import background as bg

    if not regions:
        return None
    try:
        default = bg.default_for(sscd.id)
        if default is None or default.dim != sscd.dim:
            return None
        rows = bg.load_default(default, default.dim)
    except ReplicheckError:
        return None
    return bg.offsets(rows, np.stack([v for _, _, v in regions]))


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
