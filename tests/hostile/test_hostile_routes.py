"""Hostile requests to /replicheck/v1 over real HTTP on 127.0.0.1 (uvicorn, as the web UI serves it).

A page of another site in a real headless Chromium tries every request a page can send without
the web UI's consent (no-cors fetches, a form); a client streams a 400 MB chunked body; images
that take long to decode arrive together; a registry answers garbage next to a good one.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from browser import chromium, serve, wait_for
from conftest import photo_folder

HEADER = {"X-Replicheck-Request": "1"}


@pytest.fixture(scope="module")
def home(tmp_path_factory, pack_photos):
    """A packs folder with one small real pack, 'photos' (PDQ, faiss, SQLite)."""
    from lib_replicheck import embedders
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items

    home = tmp_path_factory.mktemp("home")
    src = photo_folder(home / "src", pack_photos[:4], "photo {stem}")
    build_from_items(sources.folder(src, license="test"), embedders.load("pdq"), home / "packs" / "photos",
                     log=lambda s: None)
    return home


class Calls:
    """What the routes were asked to do, and every request that reached the server."""

    def __init__(self):
        self.actions: list[str] = []
        self.requests: list[tuple[str, str]] = []


def _app(home: Path, calls: Calls, registries=lambda: [], **kw):
    from fastapi import FastAPI

    from lib_replicheck.webui import api
    from lib_replicheck.webui.pack_jobs import PackManager
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    service = CheckService(home / "packs", home)
    manager = PackManager(home / "packs", home, registries)
    for name in ("start_download", "verify", "remove", "cancel", "refresh"):
        original = getattr(manager, name)

        def record(*args, _name=name, _original=original):
            calls.actions.append(_name)
            return _original(*args)

        setattr(manager, name, record)
    original_check = service.check

    def check(*args):
        calls.actions.append("check")
        return original_check(*args)

    service.check = check
    app = FastAPI()

    @app.middleware("http")
    async def log(request, call_next):
        calls.requests.append((request.method, request.url.path))
        return await call_next(request)

    api.mount(app, service, Settings, manager=manager, measure=lambda prompt, seed: 1.0, **kw)
    return app


EVIL = """<!doctype html><html><body><form id="f" method="POST" enctype="text/plain"
 action="TARGET/replicheck/v1/packs/photos/verify" target="sink"><input name='{"image":"' value='x"}'></form>
<iframe name="sink"></iframe>
<script>
  var T = "TARGET/replicheck/v1";
  var body = JSON.stringify({image: "iVBORw0KGgo="});
  var tries = [
    fetch(T + "/packs/photos/verify", {method: "POST", mode: "no-cors"}),
    fetch(T + "/packs/demo/download", {method: "POST", mode: "no-cors"}),
    fetch(T + "/downloads/demo/cancel", {method: "POST", mode: "no-cors", credentials: "include"}),
    fetch(T + "/calibrate", {method: "POST", mode: "no-cors", body: '{"memorized": ["a"], "ordinary": ["b"]}'}),
    fetch(T + "/check", {method: "POST", mode: "no-cors", body: body}),
    fetch(T + "/check", {method: "POST", mode: "no-cors", body: body, headers: {"Content-Type": "text/plain"}}),
    fetch(T + "/packs?refresh=true", {mode: "no-cors"}),
    // with the panel's header: the browser asks first (CORS preflight), and the web UI says no
    fetch(T + "/packs/photos", {method: "DELETE", headers: {"X-Replicheck-Request": "1"}}),
    fetch(T + "/packs/photos/verify", {method: "POST", headers: {"X-Replicheck-Request": "1"}}),
  ];
  Promise.allSettled(tries).then(function () {
    document.getElementById("f").submit();
    setTimeout(function () { window.__done = true; }, 1500);
  });
</script></body></html>"""


def test_cross_site_pages_cannot_change_anything(home, tmp_path):
    """Another origin's page (another port of 127.0.0.1) sends no-cors POSTs, a form and preflighted
    requests: each reaches the server, none is acted on; the panel's own request is."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    calls = Calls()
    app = _app(home, calls)
    evil = FastAPI()
    driver = chromium(tmp_path / "profile")
    try:
        with serve(app) as target, serve(evil) as evil_url:
            page = EVIL.replace("TARGET", target.rstrip("/"))
            evil.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"])
            driver.get(evil_url)
            wait_for(driver, "return window.__done === true", timeout=30)
            time.sleep(0.5)
            reached = [r for r in calls.requests if r[1].startswith("/replicheck/v1")]
            assert len(reached) >= 8, reached  # the requests did arrive: refusing them is what is tested
            assert ("POST", "/replicheck/v1/packs/photos/verify") in reached
            assert calls.actions == [], calls.actions
            assert (home / "packs" / "photos" / "manifest.json").is_file()
            # the web UI's own page, same origin, with the header: acted on
            driver.get(target + "replicheck/v1/status")
            ok = driver.execute_async_script("""var done = arguments[arguments.length - 1];
                fetch("./packs/photos/verify", {method: "POST", headers: {"X-Replicheck-Request": "1"}})
                    .then(function (r) { done(r.status); });""")
            assert ok in (200, 409) and calls.actions == ["verify"]  # 409: verify ran and found a mismatch
    finally:
        driver.quit()


def test_changing_routes_need_the_header_and_the_origin(home):
    import httpx

    calls = Calls()
    with serve(_app(home, calls)) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/replicheck/v1/packs/photos/verify").status_code == 403
            r = c.post("/replicheck/v1/packs/photos/verify", headers={**HEADER, "Origin": "https://evil.example"})
            assert r.status_code == 403
            r = c.post("/replicheck/v1/packs/photos/verify", headers={**HEADER, "Origin": "null"})
            assert r.status_code == 403
            r = c.post("/replicheck/v1/packs/photos/verify", headers={**HEADER, "Referer": "https://evil.example/x"})
            assert r.status_code == 403
            assert c.delete("/replicheck/v1/packs/photos").status_code == 403
            assert calls.actions == []
            host = url.split("//")[1].rstrip("/")
            r = c.post("/replicheck/v1/packs/photos/verify", headers={**HEADER, "Origin": f"http://{host}"})
            assert r.status_code in (200, 409) and calls.actions == ["verify"]
            assert c.get("/replicheck/v1/status").status_code == 200  # read-only routes stay simple


def _chunked_post(url: str, path: str, total: int, chunk: int = 1 << 20, deadline: float = 120.0):
    """POST `total` bytes of JSON-looking body in chunks, made as they are sent; stops as soon as
    the server answers. Returns (status line, bytes sent)."""
    import select
    from urllib.parse import urlsplit

    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode())
    piece = b'{"image": "' + b"A" * (chunk - 11)
    sent, answer, end = 0, b"", time.monotonic() + deadline
    try:
        while sent < total and time.monotonic() < end:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            data = piece if sent == 0 else piece[11:] + b"A" * 11
            try:
                s.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(data)
        s.settimeout(30)
        try:
            answer = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            answer = b""
    finally:
        s.close()
    return answer.split(b"\r\n", 1)[0].decode("latin-1"), sent


def test_chunked_400mb_body_is_cut_off_at_the_cap(home):
    from lib_replicheck.webui.api import MAX_REQUEST_BYTES

    calls = Calls()
    with serve(_app(home, calls)) as url:
        status, sent = _chunked_post(url, "/replicheck/v1/check", 400 * 1024 * 1024)
    assert " 413 " in status, status
    assert sent < MAX_REQUEST_BYTES + 48 * 1024 * 1024, f"{sent / 1e6:.0f} MB sent before the answer"
    assert calls.actions == []


def test_images_are_decoded_off_the_event_loop_two_at_a_time(home, monkeypatch, photos):
    """Decoding blocks here until released: the server keeps answering meanwhile, and no more than
    two images are decoded at once whatever the number of requests."""
    import base64
    import io

    import httpx

    from lib_replicheck import images

    gate = threading.Event()
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "threads": set()}
    real_decode = images.decode

    def slow_decode(source, **kw):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            state["threads"].add(threading.current_thread().name)
        gate.wait(60)
        with lock:
            state["now"] -= 1
        return real_decode(source, **kw)

    monkeypatch.setattr(images, "decode", slow_decode)
    buf = io.BytesIO()
    photos[0].resize((64, 48)).save(buf, "PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode()}
    calls = Calls()
    results = []
    with serve(_app(home, calls)) as url:
        def post():
            with httpx.Client(base_url=url, timeout=120) as c:
                results.append(c.post("/replicheck/v1/check", json=body).status_code)

        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            for _ in range(200):
                if state["now"] >= 2:
                    break
                time.sleep(0.05)
            assert state["now"] == 2
            with httpx.Client(base_url=url, timeout=20) as c:  # the event loop is free
                assert c.get("/replicheck/v1/status").status_code == 200
        finally:
            gate.set()
            for t in threads:
                t.join(120)
    assert results == [200] * 6
    assert state["most"] == 2
    assert all(name.startswith("replicheck-decode") for name in state["threads"]), state["threads"]


def test_api_auth_accepts_the_page_session(home):
    """--api-auth: API clients give its password; the web UI's page is known by gradio's login
    cookie (--gradio-auth), or, without gradio's login, by a same-origin request with the header."""
    import gradio as gr
    import httpx

    calls = Calls()
    with serve(_app(home, calls, api_auth="api:secret")) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/replicheck/v1/live").status_code == 401
        assert c.get("/replicheck/v1/live", auth=("api", "secret")).status_code == 200
        assert c.get("/replicheck/v1/live", headers=HEADER).status_code == 200  # the page (no gradio login)
        host = url.split("//")[1].rstrip("/")
        assert c.get("/replicheck/v1/live", headers={**HEADER, "Origin": "http://evil.example"}).status_code == 401
        r = c.post("/replicheck/v1/packs/photos/verify", headers={**HEADER, "Origin": f"http://{host}"},
                   auth=("api", "wrong"))
        assert r.status_code == 401 and calls.actions == []

    from gradio.routes import App

    with gr.Blocks() as blocks:
        gr.HTML("page")
    blocks.auth, blocks.auth_message = [("alice", "pw")], None  # --gradio-auth alice:pw
    app = App.create_app(blocks)
    calls = Calls()
    built = _app(home, calls, api_auth="api:secret")
    app.router.routes.extend(r for r in built.router.routes if getattr(r, "path", "").startswith("/replicheck"))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/replicheck/v1/live", headers=HEADER).status_code == 401  # gradio's login is needed
        assert c.post("/login", data={"username": "alice", "password": "pw"}).status_code == 200
        assert c.get("/replicheck/v1/live", headers=HEADER).status_code == 200
        c.cookies.clear()
        c.cookies.set("access-token", "forged")
        assert c.get("/replicheck/v1/live", headers=HEADER).status_code == 401


def test_refresh_reports_a_bad_registry_next_to_a_good_one(home):
    import httpx

    from httpfaults import FaultServer
    from test_downloads import serve_registry

    server = FaultServer()
    try:
        good = serve_registry(server)
        bad = server.add("/bad/packs.json", b"\x00not json{{{")
        calls = Calls()
        with serve(_app(home, calls, registries=lambda: [bad, good])) as url, \
                httpx.Client(base_url=url, timeout=120) as c:
            assert c.get("/replicheck/v1/packs", params={"refresh": "true"}).status_code == 403  # network: header
            r = c.get("/replicheck/v1/packs", params={"refresh": "true"}, headers=HEADER)
            assert r.status_code == 200, r.text
            body = r.json()
            assert [p["name"] for p in body["available"]] == ["demo"]
            assert len(body["registry_errors"]) == 1 and "/bad/packs.json" in body["registry_errors"][0]
    finally:
        server.close()
