"""Verdict tiers: which verdict a score gets, and how the user's overrides are read and refused."""

from __future__ import annotations

import pytest

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.thresholds import (DEFAULT_TIERS, NORMALISED_REGION_TIERS, REGION_TIERS, Tiers, Verdict,
                                      candidate_verdict, with_overrides)


def test_similarity_tiers_take_the_highest_cut_reached():
    sscd = DEFAULT_TIERS["sscd"]
    assert [sscd.verdict(s) for s in (0.10, 0.4999, 0.50, 0.74, 0.75, 0.9499, 0.95, 1.0)] == [
        Verdict.NONE, Verdict.NONE, Verdict.POSSIBLE, Verdict.POSSIBLE, Verdict.LIKELY, Verdict.LIKELY,
        Verdict.DUPLICATE, Verdict.DUPLICATE]
    # a region is one more chance of a chance hit: its cuts are higher, but the duplicate cut is the same
    region = REGION_TIERS["sscd"]
    assert region.verdict(0.55) is Verdict.NONE and region.verdict(0.65) is Verdict.POSSIBLE
    assert region.verdict(0.95) is Verdict.DUPLICATE
    normalised = NORMALISED_REGION_TIERS["sscd"]
    assert normalised.verdict(0.2) is Verdict.NONE and normalised.verdict(0.36) is Verdict.LIKELY
    assert normalised.verdict(0.99) is Verdict.LIKELY  # no region reaches "duplicate" on a normalised score


def test_distance_tiers_judge_the_hamming_distance_not_the_similarity():
    pdq = DEFAULT_TIERS["pdq"]
    assert pdq.verdict(0.0, 31) is Verdict.LIKELY and pdq.verdict(1.0, 32) is Verdict.NONE
    assert pdq.verdict(1.0, None) is Verdict.NONE  # a similarity alone never reaches a distance tier
    strict = Tiers("distance", likely=31, duplicate=4)
    assert [strict.verdict(0.0, d) for d in (0, 4, 5, 31, 32)] == [
        Verdict.DUPLICATE, Verdict.DUPLICATE, Verdict.LIKELY, Verdict.LIKELY, Verdict.NONE]


def test_clip_has_no_default_cut_and_its_matches_are_candidates_at_most():
    assert DEFAULT_TIERS["clip"].verdict(0.999) is Verdict.NONE
    clip = with_overrides(["clip.possible=0.8", "clip.duplicate=0.9"])["clip"]
    assert clip.verdict(0.95) is Verdict.DUPLICATE
    assert candidate_verdict("clip", clip.verdict(0.95)) is Verdict.POSSIBLE
    assert candidate_verdict("clip", Verdict.NONE) is Verdict.NONE
    assert candidate_verdict("sscd", Verdict.DUPLICATE) is Verdict.DUPLICATE


def test_verdicts_rank_in_order():
    assert [v.rank for v in (Verdict.NONE, Verdict.POSSIBLE, Verdict.LIKELY, Verdict.DUPLICATE)] == [0, 1, 2, 3]
    assert not Verdict.NONE.is_copy and all(v.is_copy for v in (Verdict.POSSIBLE, Verdict.LIKELY, Verdict.DUPLICATE))
    assert Verdict.LIKELY.value == "likely copy"


def test_overrides_change_one_tier_and_leave_the_defaults_alone():
    tiers = with_overrides(["sscd.possible=0.6", "pdq.likely=24", "sscd.duplicate=off"])
    assert tiers["sscd"] == Tiers("similarity", possible=0.6, likely=0.75, duplicate=None)
    assert tiers["pdq"].likely == 24 and tiers["pdq"].verdict(0.0, 25) is Verdict.NONE
    assert DEFAULT_TIERS["sscd"].possible == 0.50 and DEFAULT_TIERS["pdq"].likely == 31
    assert with_overrides(None) == DEFAULT_TIERS


@pytest.mark.parametrize("override, message", [
    ("sscd.possible", "write FAMILY.TIER=VALUE"),
    ("dino.possible=0.5", "write FAMILY.TIER=VALUE with FAMILY in sscd, pdq, clip"),
    ("sscd.probable=0.5", "TIER in possible, likely, duplicate"),
    ("sscd.likely=high", "'high' is not a number"),
    ("sscd.likely=1.5", "a similarity lies between -1 and 1"),
    ("pdq.likely=300", "a Hamming distance lies between 0 and 256"),
    ("sscd.likely=0.4", "threshold sscd.likely=0.4 is below sscd.possible=0.5"),
    ("pdq.duplicate=40", "threshold pdq.duplicate=40 is above pdq.likely=31"),
])
def test_bad_overrides_are_refused_naming_the_override(override, message):
    with pytest.raises(ReplicheckError, match=message.replace(".", r"\.").replace("(", r"\(")):
        with_overrides([override])
