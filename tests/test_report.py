"""What a report says: the summary line every output shares, the score labels, and its JSON."""

from __future__ import annotations

import json

from lib_replicheck.item import Item
from lib_replicheck.regions import Region
from lib_replicheck.report import NOT_CHECKED, Match, Report
from lib_replicheck.thresholds import Verdict


def match(similarity: float = 0.8765, verdict: Verdict = Verdict.LIKELY, *, embedder: str = "sscd_disc_mixup",
          distance: int | None = None, region: Region | None = None, background: float | None = None) -> Match:
    return Match(pack="demo", item=Item(id=7, url="https://example.org/a.jpg", caption="a <b>cat</b>",
                                        license="CC0"),
                 similarity=similarity, distance=distance, verdict=verdict, embedder=embedder, region=region,
                 background=background)


def report(best: Match | None, **kw) -> Report:
    return Report(image="out.png", verdict=best.verdict if best else Verdict.NONE, best=best,
                  matches=[best] if best else [], **kw)


def test_the_summary_names_the_verdict_the_score_and_the_pack():
    assert report(match()).summary() == "likely copy (best 0.87 in demo)"  # rounded down, never up to a cut
    assert report(match(0.4999, Verdict.NONE)).summary() == "no copy (best 0.49 in demo)"
    assert report(None).summary() == "no copy"
    assert report(match(), from_input=True).summary() == "likely copy (best 0.87 in demo; already in the input image)"
    assert match(0.5).score_label() == "0.50" and match(0.0).score_label() == "0.00"


def test_an_image_without_a_verdict_reads_not_checked_and_hides_the_details():
    err = Report(image="x.png", error="/home/me/secret/x.png: cannot identify image file")
    assert err.summary() == f"{NOT_CHECKED} (error)" and not err.checked and err.verdict_text == NOT_CHECKED
    flat = report(match(0.99, Verdict.NONE), withheld="flat image")
    assert flat.summary() == "not checked (flat image)" and flat.to_dict()["verdict"] == NOT_CHECKED
    assert flat.to_dict()["withheld"] == "flat image" and flat.to_dict()["matches"][0]["similarity"] == 0.99


def test_a_clip_match_is_a_candidate_not_evidence():
    m = match(0.931, Verdict.POSSIBLE, embedder="clip:ViT-L-14/openai")
    assert m.unverified and m.verdict_text() == "possible copy (unverified: CLIP 0.93)"
    assert report(m).summary() == "possible copy (unverified: CLIP 0.93 in demo)"
    assert not match(0.3, Verdict.NONE, embedder="clip:ViT-L-14/openai").unverified
    assert not match().unverified and match().verdict_text() == "likely copy"


def test_a_region_match_says_what_it_was_judged_on():
    box = Region(10, 20, 300, 200, 768, 512)
    raw = match(0.72, region=box)
    assert raw.judged_on == "region" and match().judged_on == "whole image" and report(raw).summary() == "likely copy (region 0.72 in demo)"
    normalised = match(0.67, region=box, background=0.25)
    assert normalised.judged_on == "region above background" and abs(normalised.judged_score() - 0.42) < 1e-9
    assert report(normalised).summary() == "likely copy (region 0.42 above background; raw 0.67 in demo)"
    d = normalised.to_dict()
    assert d["region"] == {"x": 10, "y": 20, "w": 300, "h": 200, "image_w": 768, "image_h": 512}
    assert d["background"] == 0.25 and d["normalised"] == 0.42 and d["judged_score"] == 0.42
    assert box.crop_box() == (10, 20, 310, 220) and box.text() == "300x200 at (10, 20)"


def test_the_json_holds_the_item_beside_its_score_and_survives_a_round_trip():
    pdq = match(1 - 12 / 256, Verdict.LIKELY, embedder="pdq", distance=12)
    d = report(pdq, notes=["a note"], seconds=0.123456).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["verdict"] == "likely copy" and d["is_copy"] and d["seconds"] == 0.1235 and d["notes"] == ["a note"]
    best = d["best"]
    assert best["distance"] == 12 and best["id"] == 7 and best["caption"] == "a <b>cat</b>"  # escaped by the outputs
    assert best["url"] == "https://example.org/a.jpg" and best["license"] == "CC0" and best["region"] is None
    assert pdq.score_text() == "d=12" and match(0.5).score_text() == "0.500"
