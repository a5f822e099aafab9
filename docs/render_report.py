"""Render the README's screenshot of the HTML report: the real command line on a folder, then Chromium.

    python docs/render_report.py [OUT.png]

A PDQ pack of the demo photos; a folder of edited copies of three of them, the Hubble deep field
(not in the pack) and a file that is no image; `python -m lib_replicheck check FOLDER --report`;
the report opened from disk in headless Chromium.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "report.png"
    with tempfile.TemporaryDirectory(prefix="replicheck-report-") as work:  # removed however it ends
        render(Path(work), out)
    print(f"wrote {out}")


def render(work: Path, out: Path) -> None:
    from PIL import ImageEnhance

    from browser import chromium
    from lib_replicheck import embedders
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.cli.demo import DEMO_DIR, edited_copy
    from lib_replicheck.images import centre_crop, load_image

    pack = work / "packs" / "demo"
    build_from_items(sources.folder(DEMO_DIR / "pack", license="CC0 / public domain"), embedders.load("pdq"), pack,
                     log=lambda s: None, source={"dataset": "demo photos", "license": "CC0 / public domain"})
    folder = work / "outputs" / "2024-05-01"
    folder.mkdir(parents=True)
    edited_copy(DEMO_DIR / "pack" / "coffee.jpg").save(folder / "00012-coffee-edit.jpg", quality=90)
    centre_crop(load_image(DEMO_DIR / "pack" / "astronaut.jpg"), 0.9).save(folder / "00013-portrait.jpg", quality=60)
    ImageEnhance.Brightness(load_image(DEMO_DIR / "pack" / "rocket.jpg")).enhance(1.2).save(
        folder / "00014-launch.jpg", quality=85)
    load_image(DEMO_DIR / "novel" / "hubble_deep_field.jpg").save(folder / "00015-deep-space.jpg", quality=90)
    (folder / "00016-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    report = work / "report.html"
    subprocess.run([sys.executable, "-m", "lib_replicheck", "check", str(folder), "--pack", str(pack), "--top-k", "3",
                    "--report", str(report)], cwd=REPO, check=False, capture_output=True)
    with tempfile.TemporaryDirectory() as profile:
        driver = chromium(profile, width=1180, height=1320)
        try:
            driver.get(report.as_uri())
            time.sleep(0.8)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
