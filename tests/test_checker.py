"""The checker on a real pack (PDQ codes in a faiss index, SQLite metadata, thumbnails) built from
drawings made here with PIL: unit tests of the check that need neither Debian's photos nor a
model's weights, so they run in the fast tier (`pytest -m "not slow"`)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import jpeg
from lib_replicheck import embedders
from lib_replicheck.builder import sources
from lib_replicheck.builder.pipeline import build_from_items
from lib_replicheck.checker import Checker, best_per_item, per_pack
from lib_replicheck.cli.main import main
from lib_replicheck.embedders import Embedder, EmbedderOptions, EmbedderSpec
from lib_replicheck.embedders.base import l2_normalise
from lib_replicheck.errors import EmbedderError, ReplicheckError
from lib_replicheck.item import Item
from lib_replicheck.packs.pack import Pack
from lib_replicheck.regions import Region
from lib_replicheck.report import Match
from lib_replicheck.thresholds import Verdict, with_overrides

IN_PACK = 8


def drawing(seed: int, size: tuple[int, int] = (320, 256)) -> Image.Image:
    """Forty random ellipses, boxes and lines: detailed enough for PDQ (quality 100), and each
    seed a different picture."""
    rng = random.Random(seed)
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x0, y0, x0 + rng.randrange(10, 120), y0 + rng.randrange(10, 120))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (d.ellipse if rng.randrange(2) else d.rectangle)(box, fill=fill)
        d.line([(rng.randrange(size[0]), rng.randrange(size[1])) for _ in range(2)], fill=fill,
               width=rng.randrange(1, 6))
    return im


FLAT = Image.new("RGB", (256, 256), (120, 130, 140))


@pytest.fixture(scope="module")
def drawings() -> list[Image.Image]:
    return [drawing(seed) for seed in range(IN_PACK + 4)]


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory, drawings):
    """A pack of the first IN_PACK drawings, built through the builder's stages."""
    folder = tmp_path_factory.mktemp("drawings")
    for i, im in enumerate(drawings[:IN_PACK]):
        im.save(folder / f"drawing{i}.png")
        (folder / f"drawing{i}.txt").write_text(f"drawing {i}")
    out = tmp_path_factory.mktemp("packs") / "drawings"
    build_from_items(sources.folder(folder, license="CC0"), embedders.load("pdq"), out, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def checker(pack_dir) -> Checker:
    return Checker([Pack(pack_dir)], top_k=3)


def test_edited_copies_are_found_and_new_drawings_are_not(checker, drawings):
    reports = checker.check([jpeg(drawings[2], 40), drawings[3].resize((160, 128)), drawings[IN_PACK + 1]],
                            ["jpeg", "half size", "novel"])
    assert [r.image for r in reports] == ["jpeg", "half size", "novel"]
    for r, i in zip(reports[:2], (2, 3)):
        assert r.verdict is Verdict.LIKELY and r.is_copy and r.best.distance <= 31
        assert r.best.caption == f"drawing {i}" and r.best.license == "CC0" and r.best.pack == "drawings"
        assert r.best.thumbnail and r.summary().startswith("likely copy (best ")
    novel = reports[2]
    assert novel.verdict is Verdict.NONE and not novel.is_copy and novel.best.distance > 31
    assert len(novel.matches) == 3 and all(m.verdict is Verdict.NONE for m in novel.matches)
    assert [m.distance for m in novel.matches] == sorted(m.distance for m in novel.matches)


def test_top_k_and_tiers_apply_to_one_call(checker, drawings):
    exact = drawings[5]
    assert checker.check([exact])[0].verdict is Verdict.LIKELY
    r = checker.check([exact], top_k=1, tiers=with_overrides(["pdq.duplicate=4"]))[0]
    assert r.verdict is Verdict.DUPLICATE and r.best.distance <= 4 and len(r.matches) == 1
    off = checker.check([exact], tiers=with_overrides(["pdq.likely=off"]))[0]
    assert off.verdict is Verdict.NONE and off.best.caption == "drawing 5"
    assert checker.check([exact])[0].verdict is Verdict.LIKELY and len(checker.check([exact])[0].matches) == 3


def test_a_flat_image_gets_no_verdict_from_pdq_and_says_why(checker, drawings):
    flat, fine = checker.check([FLAT, drawings[1]], ["flat", "fine"])
    assert flat.verdict is Verdict.NONE and flat.matches and all(m.verdict is Verdict.NONE for m in flat.matches)
    assert any(n.startswith("PDQ hash quality 0 is below 50") for n in flat.notes)
    assert fine.verdict is Verdict.LIKELY and not any("PDQ hash quality" in n for n in fine.notes)


def test_regions_leave_a_pack_of_an_embedder_without_regions_as_it_was(checker, drawings):
    copy = jpeg(drawings[4], 50)
    off, thorough = checker.check([copy], regions="off")[0], checker.check([copy], regions="thorough")[0]
    assert [(m.item.id, m.distance, m.region) for m in thorough.matches] == \
        [(m.item.id, m.distance, None) for m in off.matches]
    assert not any(n.startswith("regions") for n in thorough.notes)
    with pytest.raises(ReplicheckError, match="regions 'tiles': choose one of off, fast, thorough"):
        checker.check([copy], regions="tiles")


def test_files_that_cannot_be_read_get_their_report_in_place(checker, drawings, tmp_path):
    good, bad = tmp_path / "copy.jpg", tmp_path / "broken.png"
    jpeg(drawings[6], 60).save(good)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    reports = list(checker.check_files([bad, good]))
    assert [r.image for r in reports] == [str(bad), str(good)]
    assert reports[0].error and not reports[0].checked and reports[0].verdict_text == "not checked"
    assert reports[1].verdict is Verdict.LIKELY and reports[1].best.caption == "drawing 6"


def test_embedder_options_are_checked_when_the_checker_is_made(pack_dir):
    pack = Pack(pack_dir)
    with pytest.raises(EmbedderError, match="runtime 'onnxx': choose one of auto, onnx, torchscript"):
        Checker([pack], embedder=EmbedderOptions(runtime="onnxx"))
    with pytest.raises(EmbedderError, match="device 'cuda; rm': give a torch device"):
        Checker([pack], embedder=EmbedderOptions(device="cuda; rm"))
    ok = Checker([pack], embedder=EmbedderOptions(device="cuda:1", offline=True))
    assert ok.embedder_options.offline and ok.embedder_options.device == "cuda:1"
    with pytest.raises(ReplicheckError, match="no pack to search"):
        Checker([])


def test_the_command_line_refuses_a_bad_device_by_name(pack_dir, drawings, tmp_path, capsys):
    image = tmp_path / "copy.png"
    drawings[2].save(image)
    assert main(["check", str(image), "--pack", str(pack_dir), "--json", "--progress", "off"]) == 1
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0])["verdict"] == "likely copy"
    assert main(["check", str(image), "--pack", str(pack_dir), "--device", "gpu please"]) == 2
    err = capsys.readouterr().err
    assert "device 'gpu please': give a torch device such as cpu, cuda, cuda:1 or mps" in err
    assert "Traceback" not in err


class MeanColour(Embedder):
    """A real, if crude, cosine embedder: each image's mean colour, normalised. It overrides only
    `embed`, so everything else is what the base class declares."""

    spec = EmbedderSpec(id="mean", kind="mean", model="mean", dim=3, metric="cosine")

    def embed(self, images):
        return l2_normalise([np.asarray(im.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) for im in images])


def test_the_base_class_declares_everything_the_checker_reads(drawings):
    e = MeanColour()
    assert e.embed([drawings[0], FLAT]).shape == (2, 3)
    assert (e.family, e.searches_regions, e.withholds_flat, e.semantic) == ("mean", False, False, False)
    assert e.unjudged() == {} and e.regions_available == "this model does not search regions"
    with pytest.raises(EmbedderError, match="this model does not search regions"):
        e.embed_regions([drawings[0]], "fast")
    pdq = embedders.load("pdq")
    pdq.embed([drawings[0], FLAT, drawings[1]])
    assert list(pdq.unjudged()) == [1] and "PDQ hash quality 0 is below 50" in pdq.unjudged()[1]
    assert (pdq.family, pdq.searches_regions, pdq.withholds_flat, pdq.semantic) == ("pdq", False, False, False)


def _match(pack: str, item: int, similarity: float, verdict: Verdict = Verdict.NONE, region: Region | None = None):
    return Match(pack=pack, item=Item(id=item), similarity=similarity, distance=None, verdict=verdict,
                 embedder="sscd_disc_mixup", region=region)


def test_one_match_per_training_image_ranked_by_verdict_then_pack_then_score():
    box = Region(0, 0, 10, 10, 100, 100)
    matches = [_match("b", 1, 0.90), _match("a", 1, 0.40), _match("a", 2, 0.55, Verdict.POSSIBLE),
               _match("a", 1, 0.45), _match("a", 2, 0.70, Verdict.LIKELY, box), _match("b", 3, 0.95)]
    ranked = best_per_item(matches, ["a", "b"])
    assert [(m.pack, m.item.id, m.similarity) for m in ranked] == [("a", 2, 0.70), ("a", 1, 0.45), ("b", 3, 0.95),
                                                                  ("b", 1, 0.90)]
    assert ranked[0].region == box  # the region's likely copy beats the whole image's possible one
    tie = best_per_item([_match("a", 7, 0.5, region=box), _match("a", 7, 0.5)])
    assert len(tie) == 1 and tie[0].region is None  # on a tie the whole image is kept
    many = [_match("a", i, 0.9 - i / 100) for i in range(5)] + [_match("b", i, 0.5) for i in range(5)]
    kept = per_pack(many, 2)
    assert [(m.pack, m.item.id) for m in kept] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_regions_of_a_training_image_the_whole_image_already_calls_likely_are_not_compared():
    """A whole-image "likely copy" settles its training image: a region match of the same image is not
    verified geometrically (it would add nothing) and stays below it; a region of another image is."""
    from lib_replicheck.checker import verify_geometry

    box = Region(0, 0, 128, 128, 512, 512)

    def match(item, similarity, verdict, region=None):
        return Match(pack="a", item=Item(id=item), similarity=similarity, distance=None, verdict=verdict,
                     embedder="sscd_disc_mixup", region=region)

    whole, same = match(1, 0.8, Verdict.LIKELY), match(1, 0.7, Verdict.LIKELY, box)
    other = match(2, 0.6, Verdict.LIKELY, box)
    notes: list[str] = []
    verify_geometry(Image.new("RGB", (512, 512)), [whole, same, other], {}, notes)
    assert same.geometry is None and same.verdict is Verdict.POSSIBLE
    assert other.geometry is not None and other.verdict is Verdict.POSSIBLE  # compared: no thumbnail, so not verified
    assert "stores no thumbnail" in other.geometry.detail
    assert best_per_item([whole, same, other], ["a"])[0] is whole
