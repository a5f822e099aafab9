"""Render the README's screenshot of the panel: the real hook, pack, panel and script in Chromium.

    python docs/render_panel.py [OUT.png]

A PDQ pack of the demo photos; a "generation" of three images: an edited copy of coffee.jpg, the
Hubble deep field (not in the pack) and a cropped copy of astronaut.jpg. The gallery shows them.
"""

from __future__ import annotations

import base64
import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "panel.png"
    with tempfile.TemporaryDirectory(prefix="replicheck-panel-") as home:  # removed however it ends
        render(Path(home), out)
    print(f"wrote {out}")


def render(home: Path, out: Path) -> None:
    """The demo pack under `home`, a generation through the real hook, a screenshot of the panel."""
    from fastapi import FastAPI
    from PIL import ImageOps

    from browser import add_page, chromium, serve, wait_for
    from lib_replicheck import embedders
    from lib_replicheck.webui import api
    from lib_replicheck.cli.demo import DEMO_DIR, edited_copy
    from lib_replicheck.webui.hook import Hook
    from lib_replicheck.images import load_image
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.images import centre_crop
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    build_from_items(sources.folder(DEMO_DIR / "pack", license="CC0 / public domain"), embedders.load("pdq"),
                     home / "packs" / "demo", log=lambda s: None)
    service = CheckService(home / "packs", home)
    hook = Hook(service, lambda: Settings(top_k=3))
    generated = [edited_copy(DEMO_DIR / "pack" / "coffee.jpg"), load_image(DEMO_DIR / "novel" / "hubble_deep_field.jpg"),
                 centre_crop(load_image(DEMO_DIR / "pack" / "astronaut.jpg"), 0.85)]
    state = hook.begin("txt2img", True, expected=len(generated))
    for i, im in enumerate(generated):
        hook.image(state, im, i)
    hook.end(state)

    def thumb(im):
        buf = io.BytesIO()
        ImageOps.fit(im, (120, 120)).save(buf, "JPEG", quality=85)
        return f'<button class="thumbnail-item"><img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}"></button>'

    app = FastAPI()
    api.mount(app, service, lambda: Settings(top_k=3))
    add_page(app, "".join(thumb(im) for im in generated))
    with serve(app) as url, tempfile.TemporaryDirectory() as profile:
        driver = chromium(profile, width=940, height=500)
        try:
            driver.get(url)
            wait_for(driver, "return document.querySelectorAll('#replicheck_panel_txt2img .rc-card').length === 3")
            time.sleep(0.5)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
