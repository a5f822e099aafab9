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
        self.offsets = None  # per region, set by region_offsets once a candidate needs them


def compare(checked: CheckedImage, training, sscd, tiers: dict[str, Tiers] | None = None) -> PairScore:
    """How close `training` (a PIL image) is to the checked image, and SSCD's verdict on the pair."""
    import numpy as np

    whole_tiers = (tiers or DEFAULT_TIERS).get("sscd", DEFAULT_TIERS["sscd"])
    vector = np.asarray(sscd.embed([training]))[0]
    best = PairScore(whole_tiers.verdict(float(checked.whole @ vector)), float(checked.whole @ vector), None, None)
    offsets = region_offsets(checked, sscd)
    key = (best.verdict.rank, 1.0)  # a region must give a higher verdict; among those the highest score judged
    for n, (_, box, v) in enumerate(checked.regions):
        score = float(np.asarray(v) @ vector)
        offset = None if offsets is None else float(offsets[n])
        verdict = verdict_for("sscd", score, region=True, offset=offset)
        if verdict.rank > best.verdict.rank or (best.region is not None and (verdict.rank, score - (offset or 0.0)) > key):
            best, key = PairScore(verdict, score, box, None), (verdict.rank, score - (offset or 0.0))
    return PairScore(best.verdict, best.sscd, best.region, pdq_distance(checked, training))


def region_offsets(checked: CheckedImage, sscd):
    """What score normalisation subtracts from each region of the checked image: its mean similarity
    to its nearest rows of the default background shipped for `sscd`; None without regions, or when
    none ships for it (the regions are then judged on raw similarity, at the raw region tiers)."""
    import numpy as np

    from lib_replicheck.errors import ReplicheckError
    from lib_replicheck.packs import background as bg

    if not checked.regions:
        return None
    if checked.offsets is None:
        default = bg.default_for(sscd.id)
        if default is None or default.dim != sscd.dim:
            return None
        try:
            rows = bg.load_default(default, default.dim)
        except ReplicheckError:  # a damaged default: the pack check says so; here the raw tiers judge
            return None
        checked.offsets = bg.offsets(rows, np.stack([v for _, _, v in checked.regions]))
    return checked.offsets


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
