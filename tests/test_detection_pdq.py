"""PDQ on real photos: edited copies of pack images are found, a few hundred other images are not."""

from __future__ import annotations

import pytest

from conftest import edits, photo_folder
from lib_replicheck import embedders
from lib_replicheck.checker import Checker
from lib_replicheck.images import load_image
from lib_replicheck.builder import sources
from lib_replicheck.builder.pipeline import build_from_items
from lib_replicheck.packs.pack import Pack
from lib_replicheck.thresholds import Verdict

#: Edits PDQ is robust to, given the centre-crop variants stored in PDQ packs. PDQ is not robust to
#: rotation (3 degrees moves a hash by 34-68 bits on these photos): SSCD's tests cover that.
PDQ_EDITS = ("resized 0.5x", "JPEG q=30", "cropped 90% centre", "brightened +15%")


@pytest.fixture(scope="module")
def pdq_pack(tmp_path_factory, pack_photos):
    folder = photo_folder(tmp_path_factory.mktemp("photos"), pack_photos)
    result = build_from_items(sources.folder(folder), embedders.load("pdq"),
                              tmp_path_factory.mktemp("packs") / "photos", thumbnails=False, log=lambda s: None)
    return result, Pack(result.path)


def test_low_quality_photos_are_left_out_with_a_reason(pdq_pack, pack_photos):
    result, pack = pdq_pack
    assert result.count + len(result.skipped) == len(pack_photos)
    assert all("PDQ hash quality" in s and "too flat or featureless" in s for s in result.skipped)
    assert result.count >= 25
    assert result.vectors == result.count * 5  # whole image + 4 centre crops


def test_edited_copies_are_found(pdq_pack, pack_photos):
    _, pack = pdq_pack
    by_name = {p.name: p for p in pack_photos}
    checker = Checker([pack], top_k=3)
    misses = []
    for row in range(pack.manifest.count):
        item = pack.metadata.get([row])[row]
        original = load_image(by_name[item.source])
        variants = edits(original)
        reports = checker.check([variants[e] for e in PDQ_EDITS], list(PDQ_EDITS))
        for edit, r in zip(PDQ_EDITS, reports):
            if not (r.is_copy and r.best.id == item.id):
                misses.append((item.source, edit, r.best.distance if r.best else None))
            else:
                assert r.verdict is Verdict.LIKELY and r.best.distance <= 31
    assert misses == []


def test_different_images_do_not_match(pdq_pack, clipart, other_photos):
    _, pack = pdq_pack
    checker = Checker([pack], top_k=1)
    judged = flagged = 0
    for start in range(0, len(clipart) + len(other_photos), 50):
        paths = (clipart + other_photos)[start:start + 50]
        for r in checker.check([load_image(p) for p in paths], [str(p) for p in paths]):
            if any("quality" in n for n in r.notes):
                continue  # PDQ declines to judge flat drawings; they cannot be flagged
            judged += 1
            if r.is_copy:
                flagged += 1
                print("false match:", r.image, r.best.distance)
    assert judged >= 250, f"only {judged} images had a usable PDQ hash"
    assert flagged == 0



def test_exif_orientation_does_not_change_the_verdict(pdq_pack, pack_photos, tmp_path):
    """PDQ is not rotation-invariant: without the Orientation tag applied it missed all three."""
    from PIL import Image

    _, pack = pdq_pack
    turn = {6: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180, 8: Image.Transpose.ROTATE_270}
    row_sources = {pack.metadata.get([r])[r].source for r in range(pack.manifest.count)}
    path = next(p for p in pack_photos if p.name in row_sources)
    photo = load_image(path)
    upright = tmp_path / "upright.jpg"
    photo.save(upright, quality=92)
    files = [upright]
    for o, t in turn.items():
        exif = Image.Exif()
        exif[0x0112] = o
        photo.transpose(t).save(tmp_path / f"orientation{o}.jpg", quality=92, exif=exif.tobytes())
        files.append(tmp_path / f"orientation{o}.jpg")
    reports = list(Checker([pack], top_k=1).check_files(files))
    ref = reports[0]
    assert ref.is_copy and ref.best.source == path.name
    for r in reports[1:]:
        print(f"{r.image}: d={r.best.distance} (upright d={ref.best.distance})")
        assert r.verdict is ref.verdict and r.best.id == ref.best.id and abs(r.best.distance - ref.best.distance) <= 4


def test_check_files_keeps_input_order_and_leaves_the_model_load_out(pdq_pack, pack_photos, tmp_path, monkeypatch):
    """Unreadable files are reported in their place, and a report's seconds never include loading
    the model (a clock that jumps 100 s during the load tells them apart without timing anything)."""
    import types

    from lib_replicheck import checker as check_module

    _, pack = pdq_pack
    clock = {"offset": 0.0}
    real = check_module.time.perf_counter
    monkeypatch.setattr(check_module, "time", types.SimpleNamespace(perf_counter=lambda: real() + clock["offset"]))
    load = embedders.load

    def slow_load(*a, **k):
        clock["offset"] += 100.0
        return load(*a, **k)

    monkeypatch.setattr(embedders, "load", slow_load)
    (tmp_path / "text.png").write_text("not an image")
    files = [pack_photos[0], tmp_path / "text.png", pack_photos[1], tmp_path / "missing.jpg", pack_photos[2]]
    checker = Checker([pack], top_k=1)
    reports = list(checker.check_files(files, batch=2))
    assert [r.image for r in reports] == [str(f) for f in files]
    assert [r.error is not None for r in reports] == [False, True, False, True, False]
    assert "not an image" in reports[1].error and "no such file" in reports[3].error
    assert all(r.best is not None for r in reports if not r.error)
    assert 100.0 <= checker.load_seconds < 150.0
    assert all(r.seconds < 50.0 for r in reports), [r.seconds for r in reports]


def test_top_k_and_tiers_passed_to_a_check_apply_to_that_check_only(pdq_pack, pack_photos):
    """The web UI passes its current settings with each check; the checker it keeps loaded is not
    changed by them, so a later check with other settings (or none) is judged by its own."""
    from lib_replicheck.thresholds import Tiers

    _, pack = pdq_pack
    checker = Checker([pack], top_k=3)
    item = pack.metadata.get([0])[0]
    image = load_image({p.name: p for p in pack_photos}[item.source])
    strict = {"pdq": Tiers("distance", likely=-1)}  # no distance is at or below -1: nothing is flagged
    r = checker.check([image], ["x"], top_k=1, tiers=strict)[0]
    assert len(r.matches) == 1 and r.best.id == item.id and not r.is_copy
    again = checker.check([image], ["x"])[0]
    assert len(again.matches) == 3 and again.is_copy and checker.top_k == 3
