"""Verdict tiers and their default thresholds, per embedder family, from the literature.

- SSCD (cosine similarity): >= 0.50 "possible copy", the replication cut of Somepalli et al.
  (CVPR 2023); >= 0.75 "likely copy", about 90% precision for sscd_disc_mixup on DISC2021
  (Pizzi et al., CVPR 2022); >= 0.95 "duplicate", Somepalli et al.'s duplicate cut.
- PDQ (Hamming distance of 256 bits): <= 31 is Meta's match threshold; a match is reported as a
  "likely copy". PDQ has no published cut for the other tiers.
- CLIP: none. CLIP similarity is semantic (same subject, style or layout), not evidence of a copy;
  a user may still set thresholds for it. A CLIP match at a threshold the user set is a candidate,
  never evidence: its verdict is at most "possible copy", and it reads "possible copy (unverified:
  CLIP 0.93)" (CANDIDATE_FAMILIES). No default cut is set: one would have to be measured on real
  CLIP weights (copies and look-alikes), which this project's tests cannot download.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from lib_replicheck.errors import ReplicheckError


class Verdict(str, Enum):
    NONE = "no copy"  # the word users read everywhere: panel, infotext, API, command line
    POSSIBLE = "possible copy"
    LIKELY = "likely copy"
    DUPLICATE = "duplicate"

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)

    @property
    def is_copy(self) -> bool:
        return self is not Verdict.NONE


TIER_NAMES = ("possible", "likely", "duplicate")


@dataclass(frozen=True)
class Tiers:
    """Thresholds of one embedder family; None switches a tier off.

    measure 'similarity': a tier applies when similarity >= its threshold;
    measure 'distance' (Hamming): when distance <= its threshold.
    """

    measure: str
    possible: float | None = None
    likely: float | None = None
    duplicate: float | None = None

    def verdict(self, similarity: float, distance: int | None = None) -> Verdict:
        for tier, verdict in (("duplicate", Verdict.DUPLICATE), ("likely", Verdict.LIKELY),
                              ("possible", Verdict.POSSIBLE)):
            t = getattr(self, tier)
            if t is None:
                continue
            if self.measure == "distance":
                if distance is not None and distance <= t:
                    return verdict
            elif similarity >= t:
                return verdict
        return Verdict.NONE


#: Families whose matches are candidates to verify on the image itself, never evidence: their verdict
#: is capped at "possible copy" and reads as unverified (report.Match.verdict_text).
CANDIDATE_FAMILIES = ("clip",)


def candidate_verdict(family: str, verdict: Verdict) -> Verdict:
    """`verdict` as a family of CANDIDATE_FAMILIES may give it: at most 'possible copy'."""
    return Verdict.POSSIBLE if family in CANDIDATE_FAMILIES and verdict.is_copy else verdict


DEFAULT_TIERS: dict[str, Tiers] = {
    "sscd": Tiers("similarity", possible=0.50, likely=0.75, duplicate=0.95),
    "pdq": Tiers("distance", likely=31),
    "clip": Tiers("similarity"),
}

#: Tiers for matches found through a region of the checked image (lib_replicheck/regions.py), set
#: from measurement, not assumed (`bench/regions.py`): each region is one more query, so one more
#: chance of a chance hit on an unrelated image. "possible" is the lowest cut in steps of 0.05 above
#: the best region score of every novel photo in the tuning run (`--seed 0`, 300 novel crops,
#: thorough mode: highest 0.581, a region of a photo against a drawing); "likely" is 0.10 above it;
#: the duplicate cut stays the whole image's.
REGION_TIERS: dict[str, Tiers] = {
    "sscd": Tiers("similarity", possible=0.60, likely=0.70, duplicate=0.95),
}

#: Tiers for region matches in a pack with a background set, on the normalised score: the
#: similarity less the mean similarity of the region to its three nearest background images
#: (SSCD's score normalisation, Pizzi et al. CVPR 2022, beta 1; lib_replicheck/packs/background.py).
#: Set the same way as REGION_TIERS (`bench/regions.py --seed 0 --negatives 600 --region-negatives
#: 600`: 600 novel crops in thorough mode, every region searched, against a pack whose background
#: set is 1411 other drawings; the best normalised region score was 0.217): "possible" is the lowest
#: cut in steps of 0.05 above it, "likely" 0.10 above that. No region reaches "duplicate".
NORMALISED_REGION_TIERS: dict[str, Tiers] = {
    "sscd": Tiers("similarity", possible=0.25, likely=0.35),
}

#: A region's raw similarity below which it is no copy, whatever its normalised score: on a pack with a
#: background set, normalisation alone let unrelated textures through (a sunset sky, a dark noisy
#: surface against a fabric texture, at raw 0.37 and 0.49-0.52). Set from `bench/geometry.py --seed 0`,
#: with the floor off: the region matches that found their own pasted original scored raw 0.412 at the
#: lowest (17 matches), so the floor is the highest cut in steps of 0.05 below them all. It stops the
#: 0.37 texture; the 0.49-0.52 ones stay "possible" at most, as a region reaches "likely" only through
#: geometric verification. Today's run of the same seed (fast's sparser boxes) counts 21 such matches,
#: the lowest at raw 0.380 (5th percentile 0.397): below the floor, a region's nearest image is still
#: verified (GEOMETRY_SHORTLIST).
REGION_RAW_FLOOR: dict[str, float] = {"sscd": 0.40}

#: Geometric verification (verification/geometry.py): a candidate between "possible" and "likely"
#: (a whole-image "possible copy", or any copy found through a region) becomes "likely copy" when at
#: least this many distinct spots of the checked image map onto its stored training image under one
#: homography; with fewer it stays "possible copy". A region reaches "likely" only this way: repeated
#: patterns and textures score high on a region's learned descriptor but share no placed features.
#: Set from `bench/geometry.py --seed 0`: novel crops against pack thumbnails reached 6 inliers at most
#: (450 pairs), drawn checkerboards of other sizes against a checkerboard up to 13 (a 16x16 board holds an
#: 8x8 one at half the scale); the cut is the lowest multiple of 5 above both. 82% of the copies verified
#: in that run reached it with SIFT, 54% with ORB (which is 9x faster), hence SIFT.
GEOMETRY_INLIERS = 15
#: Candidates verified per image at most (the highest similarities first); the others stay "possible".
GEOMETRY_CANDIDATES = 3
#: A region's nearest training image is a candidate for geometric verification from this normalised
#: score on, below the region tiers: a pasted copy's regions nearly always find their own original
#: first, but at scores novel photos reach too; placed local features then tell them apart. Verified,
#: it is a "likely copy" (found through the region); not verified, it is no copy and is not shown. Set
#: from `bench/geometry.py --seed 0` (regions fast): the top region candidates of pastes at 55% and 35%
#: of the side were their own original in 36 of 40, at 0.073 at the lowest, 34 of them at or above 0.10.
#: A lower cut keeps the other two but costs more: novel crops' top candidates score 0.068 at the
#: median, and at 0.10 18.1% of 598 pay for one comparison (about 55 ms). Their three best candidates
#: reached 7 inliers at most (1,539 pairs). Packs without a background set (raw region scores) have none.
GEOMETRY_SHORTLIST: dict[str, float] = {"sscd": 0.10}
#: Such below-tier region candidates verified per image at most (the highest normalised score first),
#: within GEOMETRY_CANDIDATES: each costs one comparison of local features.
GEOMETRY_SHORTLISTED = 1


def verdict_for(family: str, similarity: float, distance: int | None = None, *, tiers: Tiers | None = None,
                region: bool = False, offset: float | None = None) -> Verdict:
    """The verdict on one match, by the one rule the checker, the verification of a fetched pair and the
    benches share. A whole image: `tiers` (the family's, DEFAULT_TIERS unless the user set others),
    at most "possible copy" for a candidate family. A region: with `offset` (what its background
    set's score normalisation subtracts) NORMALISED_REGION_TIERS on the normalised score, and no copy
    under REGION_RAW_FLOOR whatever that score; without one REGION_TIERS (else `tiers`) on the raw
    similarity."""
    whole = tiers or DEFAULT_TIERS.get(family, Tiers("similarity"))
    if not region:
        return candidate_verdict(family, whole.verdict(similarity, distance))
    if offset is not None and family in NORMALISED_REGION_TIERS:
        if similarity < REGION_RAW_FLOOR.get(family, -1.0):
            return Verdict.NONE  # a texture far from any training image, however normalised
        return NORMALISED_REGION_TIERS[family].verdict(similarity - offset)
    return candidate_verdict(family, REGION_TIERS.get(family, whole).verdict(similarity, distance))


def with_overrides(overrides: list[str] | None, base: dict[str, Tiers] | None = None) -> dict[str, Tiers]:
    """Apply 'family.tier=value' strings, e.g. 'sscd.possible=0.6' or 'pdq.likely=24' ('off' disables)."""
    tiers = dict(base or DEFAULT_TIERS)
    for o in overrides or ():
        key, sep, value = o.partition("=")
        family, _, tier = key.strip().partition(".")
        if not sep or family not in tiers or tier not in TIER_NAMES:
            raise ReplicheckError(f"threshold {o!r}: write FAMILY.TIER=VALUE with FAMILY in "
                                  f"{', '.join(tiers)} and TIER in {', '.join(TIER_NAMES)}")
        if value.strip().lower() in ("off", "none", ""):
            v = None
        else:
            try:
                v = float(value)
            except ValueError:
                raise ReplicheckError(f"threshold {o!r}: {value!r} is not a number") from None
            if tiers[family].measure == "similarity" and not -1.0 <= v <= 1.0:
                raise ReplicheckError(f"threshold {o!r}: a similarity lies between -1 and 1")
            if tiers[family].measure == "distance" and not 0 <= v <= 256:
                raise ReplicheckError(f"threshold {o!r}: a Hamming distance lies between 0 and 256")
        tiers[family] = replace(tiers[family], **{tier: v})
    for family, t in tiers.items():
        check_order(family, t)
    return tiers


def check_order(family: str, tiers: Tiers) -> None:
    """ReplicheckError naming the tiers when they are out of order: each tier that is on must be at
    least as strict as the ones below it (similarity: possible <= likely <= duplicate; Hamming
    distance: the other way round), or a 'likely copy' would be judged on a lower cut than a
    'possible copy'."""
    on = [(name, getattr(tiers, name)) for name in TIER_NAMES if getattr(tiers, name) is not None]
    for (low, a), (high, b) in zip(on, on[1:]):
        similarity = tiers.measure == "similarity"
        if b < a if similarity else b > a:
            rule = ("each tier's similarity must be at least the one below it" if similarity
                    else "each tier's Hamming distance must be at most the one below it")
            raise ReplicheckError(f"threshold {family}.{high}={b:g} is {'below' if similarity else 'above'} "
                                  f"{family}.{low}={a:g}: {rule} ({', '.join(TIER_NAMES)}); set {family}.{low} "
                                  f"too, or switch it off with {family}.{low}=off")
