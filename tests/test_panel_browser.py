"""The panel and javascript/replicheck.js in a real headless Chromium.

A real FastAPI server on 127.0.0.1 serves a page laid out like the web UI's txt2img results (the
gallery with its thumbnails, gradioApp/onUiLoaded as the web UI's script.js defines them), our
style.css and script, and /replicheck/v1/live filled by the real hook from a pack whose captions
and URLs are hostile.
"""

from __future__ import annotations

import time

import pytest

from browser import add_page, chromium, serve
from browser import wait_for as _wait
from conftest import edits
from lib_replicheck import embedders
from lib_replicheck.images import load_image
from lib_replicheck.builder.pipeline import build_from_items
from lib_replicheck.builder.sources import SourceItem

HOSTILE = [
    ("<script>window.__pwned=1</script>", "javascript:window.__pwned=2"),
    ('<img src=x onerror="window.__pwned=3">', 'https://example.com/a"onmouseover="window.__pwned=4'),
    ("\u202eevil\u202c <svg onload=window.__pwned=5>", "data:text/html,<script>window.__pwned=6</script>"),
    ("A quiet photograph", "https://example.com/ok?a=1&b=2"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, pack_photos, other_photos):
    from fastapi import FastAPI

    from lib_replicheck.webui import api
    from lib_replicheck.webui.hook import Hook
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    home = tmp_path_factory.mktemp("home")
    photos = [load_image(p) for p in pack_photos[:4]]
    records = [SourceItem(key=f"row {i}", load=lambda im=im: im, caption=c, url=u, license="CC-BY")
               for i, (im, (c, u)) in enumerate(zip(photos, HOSTILE))]
    build_from_items(records, embedders.load("pdq"), home / "packs" / "hostile", log=lambda s: None)
    service = CheckService(home / "packs", home)
    hook = Hook(service, Settings)
    generated = [edits(photos[0])["JPEG q=30"], load_image(other_photos[0]), edits(photos[1])["resized 0.5x"],
                 edits(photos[2])["brightened +15%"]]
    state = hook.begin("txt2img", True, expected=len(generated))
    for i, im in enumerate(generated):
        hook.image(state, im, i)
    hook.end(state)

    app = FastAPI()
    api.mount(app, service, Settings)
    add_page(app, "".join(f'<button class="thumbnail-item"><span>{i}</span></button>'
                          for i in range(len(generated) + 1)))
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def test_panel_renders_safely(server, browser, tmp_path):
    browser.get(server)
    _wait(browser, "return document.querySelectorAll('#replicheck_panel_txt2img .rc-card').length === 4")
    time.sleep(1.5)  # let every scheduled poll and image load run, so anything injected would have fired
    assert browser.execute_script("return window.__pwned") is None
    panel = "document.querySelector('#replicheck_panel_txt2img')"
    # placed right after the gallery, before the generation info
    assert browser.execute_script(f"return {panel}.previousElementSibling.id") == "txt2img_gallery_container"
    assert browser.execute_script(f"return {panel}.querySelectorAll('script, svg, iframe, object').length") == 0
    handlers = browser.execute_script(f"""return Array.from({panel}.querySelectorAll('*')).flatMap(
        e => Array.from(e.attributes).map(a => a.name)).filter(n => n.startsWith('on'))""")
    assert handlers == []
    links = browser.execute_script(f"""return Array.from({panel}.querySelectorAll('a')).map(
        a => [a.getAttribute('href'), a.rel, a.getAttribute('referrerpolicy'), a.target])""")
    assert links, "no source links rendered"
    for href, rel, policy, target in links:
        assert href.startswith("https://example.com/"), href
        assert "noopener" in rel and "noreferrer" in rel and policy == "no-referrer" and target == "_blank"
    text = browser.execute_script(f"return {panel}.innerText")
    assert "<script>window.__pwned=1</script>" in text  # shown as text, not run
    assert '<img src=x onerror="window.__pwned=3">' in text
    assert "\u202e" not in browser.execute_script(f"return {panel}.textContent")  # bidi overrides dropped
    imgs = browser.execute_script(f"return Array.from({panel}.querySelectorAll('img')).map(i => i.src.slice(0, 11))")
    assert imgs and all(s == "data:image/" for s in imgs)  # local thumbnails only: no request leaves
    browser.save_screenshot(str(tmp_path / "panel.png"))
    assert (tmp_path / "panel.png").stat().st_size > 10_000


def test_badges_and_selection(server, browser):
    browser.get(server)
    _wait(browser, "return document.querySelectorAll('#replicheck_panel_txt2img .rc-card').length === 4")
    _wait(browser, "return document.querySelectorAll('#txt2img_gallery [data-replicheck]').length === 3")
    marks = browser.execute_script("""return Array.from(document.querySelectorAll('#txt2img_gallery .thumbnail-item'))
        .map(t => t.getAttribute('data-replicheck'))""")
    assert marks == [None, "likely-copy", None, "likely-copy", "likely-copy"]  # the grid first, then 4 images
    verdicts = browser.execute_script("""return Array.from(document.querySelectorAll(
        '#replicheck_panel_txt2img .rc-card .rc-badge')).map(b => b.className)""")
    assert verdicts == ["rc-badge rc-likely", "rc-badge rc-none", "rc-badge rc-likely", "rc-badge rc-likely"]
    browser.execute_script("document.querySelectorAll('#txt2img_gallery .thumbnail-item')[3].click()")
    shown = browser.execute_script("""return Array.from(document.querySelectorAll('#replicheck_panel_txt2img .rc-card'))
        .filter(c => getComputedStyle(c).display !== 'none').map(c => c.dataset.index)""")
    assert shown == ["2"]
    browser.execute_script("document.querySelector('.rc-show-all').click()")
    shown = browser.execute_script("""return Array.from(document.querySelectorAll('#replicheck_panel_txt2img .rc-card'))
        .filter(c => getComputedStyle(c).display !== 'none').length""")
    assert shown == 4


def test_download_progress_box(tmp_path_factory, browser):
    """The Replicheck tab's progress box, filled from /replicheck/v1/downloads with textContent."""
    from fastapi import FastAPI

    from lib_replicheck.webui import api
    from lib_replicheck.webui.pack_jobs import DownloadJob, PackManager
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    home = tmp_path_factory.mktemp("home")
    manager = PackManager(home / "packs", home, lambda: [])
    manager.jobs["laion-6.5"] = DownloadJob("laion-6.5", total=1000, done=500, state="downloading")
    manager.jobs["demo"] = DownloadJob("demo", total=10, state="failed",
                                       error='HTTP 500 <img src=x onerror="window.__pwned=7">')
    app = FastAPI()
    api.mount(app, CheckService(home / "packs", home), Settings, manager=manager)
    add_page(app, "", extra_html="<div id='replicheck_downloads'></div>")
    with serve(app) as url:
        browser.get(url)
        _wait(browser, "return document.querySelectorAll('#replicheck_downloads .rc-download').length === 2")
        rows = browser.execute_script("""return Array.from(document.querySelectorAll(
            '#replicheck_downloads .rc-download')).map(r => [r.querySelector('progress').value, r.textContent])""")
        assert rows[0] == [0.5, "laion-6.5: downloading 50%"]
        assert rows[1][1] == 'demo: failed - HTTP 500 <img src=x onerror="window.__pwned=7">'
        assert browser.execute_script("return document.querySelectorAll('#replicheck_downloads img').length") == 0
        assert browser.execute_script("return window.__pwned") is None


def _checked_service(home, pack_photos, other_photos):
    """A service with a small pack and one finished txt2img job (a copy and a new image)."""
    from lib_replicheck.webui.hook import Hook
    from lib_replicheck.builder import sources
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    from conftest import photo_folder

    src = photo_folder(home / "src", pack_photos[:4], "photo {stem}")
    build_from_items(sources.folder(src, license="test"), embedders.load("pdq"), home / "packs" / "photos",
                     log=lambda s: None)
    service = CheckService(home / "packs", home)
    hook = Hook(service, Settings)
    state = hook.begin("txt2img", True, expected=2)
    hook.image(state, edits(load_image(pack_photos[0]))["JPEG q=30"], 0)
    hook.image(state, load_image(other_photos[0]), 1)
    hook.end(state)
    return service


def test_panel_under_api_auth_uses_the_page_session(tmp_path_factory, pack_photos, other_photos, browser):
    """--api-auth with gradio's login (--gradio-auth): the panel's polls carry the login cookie and
    the panel's header, never the API password, and the panel fills once the user is logged in."""
    import gradio as gr
    from gradio.routes import App

    from lib_replicheck.webui import api
    from lib_replicheck.webui.settings import Settings

    service = _checked_service(tmp_path_factory.mktemp("home"), pack_photos, other_photos)
    with gr.Blocks() as blocks:
        gr.HTML("the web UI")
    blocks.auth, blocks.auth_message = [("alice", "pw")], None
    app = App.create_app(blocks)
    api.mount(app, service, Settings, api_auth="api:secret")
    add_page(app, '<button class="thumbnail-item"></button>' * 3, path="/panel")
    with serve(app) as url:
        browser.delete_all_cookies()
        browser.get(url + "panel")
        time.sleep(2.5)  # several polls, each answered 401 without the login
        assert browser.execute_script("return document.querySelectorAll('#replicheck_panel_txt2img .rc-card').length") == 0
        status = browser.execute_async_script("""var done = arguments[arguments.length - 1];
            fetch("/login", {method: "POST", body: new URLSearchParams({username: "alice", password: "pw"})})
                .then(function (r) { done(r.status); });""")
        assert status == 200
        browser.get(url + "panel")
        _wait(browser, "return document.querySelectorAll('#replicheck_panel_txt2img .rc-card').length === 2")
        _wait(browser, "return document.querySelectorAll('#txt2img_gallery [data-replicheck]').length === 1")
        badge = browser.execute_script("""var t = document.querySelector('#txt2img_gallery [data-replicheck]');
            return [t.getAttribute('data-replicheck'), getComputedStyle(t, '::after').content]""")
        assert badge[0] == "likely-copy" and badge[1] == '"copy"'
        # an image that could not be checked gets a grey '?', never a copy badge
        marks = browser.execute_script("""var s = window.replicheck.state.txt2img;
            s.verdicts = ['not checked', 'no copy']; s.flagged = [false, false]; s.seq = 1e9;
            window.replicheck.badge('txt2img');
            return Array.from(document.querySelectorAll('#txt2img_gallery .thumbnail-item')).map(
                t => [t.getAttribute('data-replicheck'), getComputedStyle(t, '::after').content])""")
        assert marks[1] == ["not-checked", '"?"'] and marks[2][0] is None


def test_error_text_is_red_inside_gradio(tmp_path_factory, browser):
    """gradio colours every element of a gr.HTML (`.gradio-container-3-41-2 .prose *`): the tab's
    error messages must still be red."""
    from fastapi import FastAPI

    app = FastAPI()
    add_page(app, "", extra_html="<div class='prose'><p class='rc-error-text' id='err'>could not read</p>"
                                 "<p class='rc-message' id='msg'>read 1 registry</p></div>", gradio_styles=True)
    with serve(app) as url:
        browser.get(url)
        _wait(browser, "return document.getElementById('err') !== null")
        err = browser.execute_script("return getComputedStyle(document.getElementById('err')).color")
        msg = browser.execute_script("return getComputedStyle(document.getElementById('msg')).color")
        assert err != msg
        r, g, b = [int(x) for x in err[err.index("(") + 1:err.index(")")].split(",")[:3]]
        assert r > 180 and g < 140 and b < 140, err


def test_table_reloads_when_a_download_ends(tmp_path_factory, browser):
    """The tab's table is gradio HTML: when a download ends the script clicks the tab's hidden
    reload button, so the table stops saying 'available' for a pack that is installed."""
    from fastapi import FastAPI

    from lib_replicheck.webui import api
    from lib_replicheck.webui.pack_jobs import DownloadJob, PackManager
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    home = tmp_path_factory.mktemp("home")
    manager = PackManager(home / "packs", home, lambda: [])
    job = manager.jobs["demo"] = DownloadJob("demo", total=10, done=5, state="downloading")
    app = FastAPI()
    api.mount(app, CheckService(home / "packs", home), Settings, manager=manager)
    add_page(app, "", extra_html="<div id='replicheck_downloads'></div><button id='replicheck_reload' "
                                 "style='display:none' onclick='window.__reloads=(window.__reloads||0)+1'></button>")
    with serve(app) as url:
        browser.get(url)
        _wait(browser, "return document.querySelectorAll('#replicheck_downloads .rc-download').length === 1")
        assert browser.execute_script("return window.__reloads || 0") == 0
        job.done, job.state = 10, "installed"
        _wait(browser, "return window.__reloads === 1")
        time.sleep(2.5)
        assert browser.execute_script("return window.__reloads") == 1  # once per download that ended
