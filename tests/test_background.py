"""Every SSCD pack is normalised against a background: a pack built without one uses the default that
ships with replicheck (public-domain drawings, verified by its sha256), `packs list` says which
background each pack uses, and a tampered default is refused by name. Real photos, Meta's SSCD
(int8 ONNX), real faiss packs."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from conftest import photo_folder
from lib_replicheck import embedders
from lib_replicheck.builder import sources
from lib_replicheck.builder.pipeline import build_from_items
from lib_replicheck.checker import Checker
from lib_replicheck.cli.main import main
from lib_replicheck.embedders import EmbedderOptions
from lib_replicheck.errors import PackError
from lib_replicheck.images import load_image
from lib_replicheck.packs import background as bg
from lib_replicheck.packs.pack import Pack


@pytest.fixture(scope="module")
def sscd(sscd_onnx):
    return embedders.load("sscd", runtime="onnx", weights=sscd_onnx)


@pytest.fixture(scope="module")
def packs_dir(tmp_path_factory, pack_photos, sscd, clipart):
    """Two packs of the real photos: one built without a background, one with its own."""
    root = tmp_path_factory.mktemp("packs")
    folder = photo_folder(tmp_path_factory.mktemp("photos"), pack_photos[0::2])
    build_from_items(sources.folder(folder), sscd, root / "plain", thumbnails=False, log=lambda s: None)
    drawings = tmp_path_factory.mktemp("drawings")
    for i, p in enumerate(clipart[1::2][:30]):
        (drawings / f"{i:03d}-{p.name}").symlink_to(p)
    build_from_items(sources.folder(folder), sscd, root / "own", thumbnails=False,
                     background=sources.folder(drawings), log=lambda s: None)
    return root


def test_the_shipped_default_is_small_verified_and_documented():
    """float16 unit rows, a few hundred KB, sha256 and provenance beside it (public-domain images)."""
    default = bg.default_for("sscd_disc_mixup")
    data = default.path.read_bytes()
    provenance = json.loads(default.path.with_suffix(".json").read_text())
    assert len(data) <= 420_000 and hashlib.sha256(data).hexdigest() == default.sha256 == provenance["sha256"]
    assert provenance["dtype"] == "float16" and provenance["images"]["license"].startswith("CC0")
    assert len(provenance["images"]["files"]) == default.rows == len(bg.load_default(default, 512))
    assert "public domain" in open(provenance["images"]["license_file"], encoding="utf-8").read().lower()
    assert bg.default_for("clip:ViT-B-32/openai") is None  # none ships for other embedders


def test_a_pack_without_a_background_uses_the_default_and_says_so(packs_dir, capsys):
    plain, own = Pack(packs_dir / "plain"), Pack(packs_dir / "own")
    assert plain.manifest.background is None
    assert plain.default_background is not None and plain.default_background.name == "sscd_disc_mixup"
    assert 0 < len(plain.background) <= plain.default_background.rows
    assert own.default_background is None and len(own.background) == own.manifest.background["count"]
    assert main(["packs", "list", "--packs-dir", str(packs_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    plain_at = next(i for i, line in enumerate(lines) if line.startswith("plain "))
    own_at = next(i for i, line in enumerate(lines) if line.startswith("own "))
    assert "background default: sscd_disc_mixup (406 OpenClipart drawings (CC0))" in lines[plain_at + 1]
    count = own.manifest.background["count"]
    assert f"background own: {count:,} rows (images named by --background)" in lines[own_at + 1]
    assert main(["packs", "list", "--packs-dir", str(packs_dir), "--json"]) == 0
    listed = {r["name"]: r["background"] for r in json.loads(capsys.readouterr().out)}
    assert listed["plain"].startswith("default: sscd_disc_mixup") and listed["own"].startswith("own: ")


def test_regions_of_a_pack_without_a_background_are_judged_normalised(packs_dir, pack_photos, sscd_onnx):
    """A photo of the pack pasted into a novel photo: the region's verdict is judged above the
    default background, and no note says the pack has no background."""
    import random
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "bench"))
    from regions import paste, random_crop, shrink

    rng = random.Random(3)
    checker = Checker([Pack(packs_dir / "plain")], top_k=1,
                      embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True))
    im, _ = paste(rng, shrink(load_image(pack_photos[0::2][1])),
                  random_crop(rng, shrink(load_image(pack_photos[1::2][0])), (512, 512)), 0.55)
    report = checker.check([im], regions="thorough")[0]
    assert not any("no background set" in n for n in report.notes), report.notes
    regions = [m for m in report.matches if m.region is not None]
    assert regions and all(m.background is not None for m in regions)


def test_a_tampered_default_background_is_refused_by_name(packs_dir, pack_photos, sscd_onnx, tmp_path, monkeypatch,
                                                          capsys):
    shipped = tmp_path / "backgrounds"
    shutil.copytree(bg.DEFAULTS_DIR, shipped)
    monkeypatch.setattr(bg, "DEFAULTS_DIR", shipped)
    data = bytearray((shipped / "sscd_disc_mixup.npy").read_bytes())
    data[-7] ^= 0x40  # one value of the last row changed
    (shipped / "sscd_disc_mixup.npy").write_bytes(bytes(data))
    with pytest.raises(PackError, match="default background sscd_disc_mixup.npy fails its sha256 check"):
        Pack(packs_dir / "plain")
    Pack(packs_dir / "own").close()  # a pack with its own background does not need it
    image = tmp_path / "photo.jpg"
    shutil.copy(pack_photos[0], image)
    assert main(["check", "--packs-dir", str(packs_dir), "--pack", "plain", "--runtime", "onnx",
                 "--weights", str(sscd_onnx), "--offline", str(image)]) not in (0, 1)
    err = capsys.readouterr().err
    assert "fails its sha256 check" in err and "Traceback" not in err


def _background_cells(page: str) -> dict[str, str]:
    """Pack name -> the text of its row's background cell, read from the tab's HTML as a browser would."""
    from html.parser import HTMLParser

    class Table(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    table = Table()
    table.feed(page)
    head = table.rows[0]
    return {row[0]: row[head.index("background")] for row in table.rows[1:]}


def test_the_tab_shows_each_packs_background_escaped(packs_dir, tmp_path, capsys):
    """The Replicheck tab's table says which background each installed pack uses, in the words of
    `packs list` (one rule), escaped like every cell: the source is written by the pack's maker."""
    from lib_replicheck.packs import manifest as mf
    from lib_replicheck.webui.pack_jobs import PackManager
    from lib_replicheck.webui.tab import PacksTab

    shown = tmp_path / "packs"
    for name in ("plain", "own"):
        shutil.copytree(packs_dir / name, shown / name)
    hostile = shutil.copytree(packs_dir / "own", shown / "hostile")
    data = json.loads((hostile / mf.MANIFEST).read_text())
    data["name"], data["background"]["source"] = "hostile", "<img src=x onerror=alert(1)>"
    (hostile / mf.MANIFEST).write_text(json.dumps(data))

    tab = PacksTab(None, PackManager(shown, tmp_path / "models", lambda: []), None)
    page = tab.page()
    cells = _background_cells(page)
    assert main(["packs", "list", "--packs-dir", str(shown), "--json"]) == 0
    listed = {r["name"]: r["background"] for r in json.loads(capsys.readouterr().out)}
    assert cells == listed
    assert cells["plain"] == "default: sscd_disc_mixup (406 OpenClipart drawings (CC0))"
    count = Pack(packs_dir / "own").manifest.background["count"]
    assert cells["own"] == f"own: {count:,} rows (images named by --background)"
    assert cells["hostile"] == f"own: {count:,} rows (<img src=x onerror=alert(1)>)"
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
