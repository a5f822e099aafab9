"""A page laid out like the web UI's txt2img results, served on 127.0.0.1, and headless Chromium.

Used by the panel's browser test and by docs/render_panel.py (the README's screenshot).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/style.css">
<script>
  var uiLoaded = [], uiUpdate = [];
  function gradioApp() { return document.querySelector('gradio-app'); }
  function onUiLoaded(cb) { uiLoaded.push(cb); }
  function onAfterUiUpdate(cb) { uiUpdate.push(cb); }
  window.addEventListener('load', function () { uiLoaded.forEach(function (cb) { cb(); }); });
</script>
<script src="/javascript/replicheck.js"></script>
<style>body { font-family: sans-serif; width: 900px; margin: 12px; }
  #txt2img_gallery { display: flex; gap: 6px; }
  .thumbnail-item { padding: 0; border: 1px solid #ccc; border-radius: 6px; background: #eee; min-width: 40px;
                    min-height: 40px; }
  .thumbnail-item img { width: 120px; height: 120px; object-fit: cover; display: block; border-radius: 6px; }
</style></head>
<body><gradio-app>
 <div id="txt2img_results">
  <div id="txt2img_gallery_container"><div id="txt2img_gallery">THUMBS</div></div>
  <div id="html_info_txt2img"></div>
 </div>
 EXTRA
</gradio-app></body></html>"""


def gradio_css() -> str:
    """gradio 3.41's own stylesheet (the one that colours every `.prose *` in gr.HTML)."""
    import gradio

    assets = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
    return "\n".join(p.read_text() for p in sorted(assets.glob("index-*.css")))


def add_page(app, thumbs_html: str, extra_html: str = "", path: str = "/", gradio_styles: bool = False) -> None:
    """Serve the page at `path`, our style.css and javascript/replicheck.js from `app` (a FastAPI
    app); `extra_html` goes after the results (e.g. the Replicheck tab's download box);
    `gradio_styles` puts gradio's stylesheet first, and the page inside gradio's container, as the
    web UI does."""
    from fastapi.responses import FileResponse, HTMLResponse, Response

    html = PAGE.replace("THUMBS", thumbs_html).replace("EXTRA", extra_html)
    if gradio_styles:
        html = html.replace('<link rel="stylesheet" href="/style.css">',
                            '<link rel="stylesheet" href="/gradio.css"><link rel="stylesheet" href="/style.css">')
        html = html.replace("<gradio-app>", '<gradio-app><div class="gradio-container gradio-container-3-41-2">')
        html = html.replace("</gradio-app>", "</div></gradio-app>")

    app.add_api_route(path, lambda: HTMLResponse(html), methods=["GET"])
    app.add_api_route("/gradio.css", lambda: Response(gradio_css(), media_type="text/css"), methods=["GET"])
    app.add_api_route("/style.css", lambda: FileResponse(REPO / "style.css"), methods=["GET"])
    app.add_api_route("/javascript/replicheck.js", lambda: FileResponse(REPO / "javascript" / "replicheck.js"),
                      methods=["GET"])


@contextlib.contextmanager
def serve(app):
    """Run `app` with uvicorn on a free port of 127.0.0.1; yields the base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(5)


def chromium(profile_dir, width: int = 1000, height: int = 1400, flags: tuple[str, ...] = ()):
    """Debian's headless Chromium through its chromedriver (no driver or browser download); `flags`
    are added to its command line."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--window-size={width},{height}", f"--user-data-dir={profile_dir}", *flags):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait_for(driver, script: str, timeout: float = 15) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if driver.execute_script(script):
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")
