"""Size of the HTML report of a folder of 1,000 images, against its stated bound, and the time to
check the folder and write the report.

    python bench/report_size.py [N_IMAGES]

A PDQ pack of 10 real photos (with thumbnails); a folder of N small crops of other real photos
(150 to 300 pixels) plus 20 edited copies of the pack photos; checked with the real Checker and
written by html_report.write_html.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
BACKGROUNDS = Path("/usr/share/backgrounds")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="replicheck-bench-report-") as work:
        run(Path(work), n)


def run(work: Path, n: int) -> None:
    from conftest import edits
    from lib_replicheck import embedders, html_report
    from lib_replicheck.audit import list_images, run_audit
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.builder.sources import SourceItem
    from lib_replicheck.checker import Checker
    from lib_replicheck.images import load_image
    from lib_replicheck.packs.pack import Pack

    pack_photos = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg"))[:10]
    others = [p for p in sorted(BACKGROUNDS.glob("*")) if p.suffix in (".jpg", ".png") and "_by_" not in p.name][:10]
    if len(pack_photos) < 10 or len(others) < 10:
        sys.exit("the Debian wallpaper packages are missing: run `bash tests/setup.sh` first")
    pack = work / "pack"
    build_from_items([SourceItem(key=p.name, load=lambda p=p: load_image(p), caption=f"photo {p.stem}",
                                 url=f"https://example.org/{p.name}", license="CC-BY-SA 4.0") for p in pack_photos],
                     embedders.load("pdq"), pack, log=lambda s: None)
    folder = work / "outputs"
    folder.mkdir()
    rng = random.Random(7)
    sources = [load_image(p) for p in others]
    for im in sources:
        im.thumbnail((1024, 1024))
    copies = 20
    for i in range(n - copies):
        im = sources[i % len(sources)]
        s = rng.randint(150, 300)
        x, y = rng.randrange(0, im.width - s), rng.randrange(0, im.height - s)
        im.crop((x, y, x + s, y + s)).save(folder / f"{i:05d}.jpg", quality=85)
    for i, p in enumerate(pack_photos):
        for j, name in enumerate(("resized 0.5x", "JPEG q=30")):
            e = edits(load_image(p))[name]
            e.thumbnail((512, 512))
            e.save(folder / f"copy-{i}-{j}.jpg", quality=85)
    files, _ = list_images([folder])
    t = time.perf_counter()
    audit = run_audit(Checker([Pack(pack)]), files, roots=[folder])
    checked = time.perf_counter() - t
    t = time.perf_counter()
    path = html_report.write_html(audit, work / "report.html")
    written = time.perf_counter() - t
    size = path.stat().st_size
    flagged = len(audit.flagged)
    bound = html_report.max_report_bytes(len(files), flagged)
    print(f"{len(files)} images ({flagged} flagged) checked against a PDQ pack in {checked:.1f} s; "
          f"report written in {written:.1f} s")
    print(f"report: {size / 1e6:.2f} MB, bound {bound / 1e6:.1f} MB "
          f"({size / max(1, len(files)) / 1e3:.1f} kB per image)")


if __name__ == "__main__":
    main()
