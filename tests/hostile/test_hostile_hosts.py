"""DNS rebinding: a page of evil.example whose name the attacker points at 127.0.0.1 once it is loaded.
Its requests are same-origin for the browser (Origin and Host both `evil.example:PORT`) and may carry
the panel's header; only the Host gives them away. Real HTTP on 127.0.0.1 (uvicorn) and a real
headless Chromium whose resolver maps evil.example to 127.0.0.1, as a rebound name would.
"""

from __future__ import annotations


import pytest

from browser import chromium, serve, wait_for
from test_hostile_routes import HEADER, Calls, _app, home  # noqa: F401 - `home` is a fixture used below

REBOUND = """<!doctype html><html><body><script>
  var T = "/replicheck/v1", out = {};
  function status(name, p) { return p.then(function (r) { out[name] = r.status; return r.text(); })
                                     .then(function (t) { out[name + "_body"] = t; }); }
  Promise.allSettled([
    status("live", fetch(T + "/live")),
    status("status", fetch(T + "/status")),
    status("verify", fetch(T + "/packs/photos/verify", {method: "POST", headers: {"X-Replicheck-Request": "1"}})),
    status("remove", fetch(T + "/packs/photos", {method: "DELETE", headers: {"X-Replicheck-Request": "1"}})),
    status("check", fetch(T + "/check", {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify({image: "iVBORw0KGgo="})})),
  ]).then(function () { window.__done = out; });
</script></body></html>"""


def test_a_rebound_page_is_refused_on_every_route(home, tmp_path):  # noqa: F811
    """The page is served under evil.example:PORT from the web UI's own address (what rebinding
    achieves): before, it read /live and verified and removed packs; now every route answers 403
    naming the host, and nothing is done."""
    from fastapi.responses import HTMLResponse

    calls = Calls()
    app = _app(home, calls)
    app.add_api_route("/rebound", lambda: HTMLResponse(REBOUND), methods=["GET"])
    driver = chromium(tmp_path / "profile", flags=("--host-resolver-rules=MAP evil.example 127.0.0.1",))
    try:
        with serve(app) as url:
            port = url.rstrip("/").rsplit(":", 1)[1]
            driver.get(f"http://evil.example:{port}/rebound")
            wait_for(driver, "return !!window.__done", timeout=60)
            out = driver.execute_script("return window.__done")
            reached = [r for r in calls.requests if r[1].startswith("/replicheck/v1")]
            assert len(reached) == 5, reached  # the requests did arrive: refusing them is what is tested
            for route in ("live", "status", "verify", "remove", "check"):
                assert out[route] == 403, (route, out)
                assert f"the host 'evil.example' is not a name this web UI is served under" in out[route + "_body"]
            assert calls.actions == [], calls.actions
            assert (home / "packs" / "photos" / "manifest.json").is_file()
            # the same page under the web UI's own address is answered
            driver.get(f"http://127.0.0.1:{port}/rebound")
            wait_for(driver, "return !!window.__done", timeout=60)
            out = driver.execute_script("return window.__done")
            assert out["live"] == 200 and out["status"] == 200 and out["verify"] in (200, 409), out
            assert "verify" in calls.actions
    finally:
        driver.quit()


def _post_verify(c, host: str):
    return c.post("/replicheck/v1/packs/photos/verify",
                  headers={**HEADER, "Host": host, "Origin": f"http://{host}"})


def test_hosts_the_server_listens_on_and_the_allow_list(home, monkeypatch):  # noqa: F811
    """Loopback names and addresses always; with --listen any IP address (a port mapping's too) and
    the machine's name, never another name; names on $REPLICHECK_ALLOWED_HOSTS (and `*.` for a
    domain's names)."""
    import socket

    import httpx

    from lib_replicheck.webui.hosts import ServerAddress

    calls = Calls()
    with serve(_app(home, calls)) as url, httpx.Client(base_url=url, timeout=60) as c:
        port = url.rstrip("/").rsplit(":", 1)[1]
        for host in (f"evil.example:{port}", f"192.168.1.20:{port}", f"{socket.gethostname()}:{port}",
                     f"localhost.evil.example:{port}", "", "a b"):
            r = _post_verify(c, host)
            assert r.status_code in (400, 403), (host, r.status_code, r.text)  # 400: the server's own refusal
        assert calls.actions == []
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"app.localhost:{port}", f"[::1]:{port}"):
            assert _post_verify(c, host).status_code in (200, 409), host
        assert calls.actions == ["verify"] * 4
        monkeypatch.setenv("REPLICHECK_ALLOWED_HOSTS", "webui.lan, *.example.org")
        for host, ok in ((f"webui.lan:{port}", True), (f"ui.example.org:{port}", True), (f"example.org.evil:{port}", False),
                         (f"evil.example:{port}", False)):
            assert (_post_verify(c, host).status_code in (200, 409)) is ok, host

    calls = Calls()
    with serve(_app(home, calls, server=ServerAddress(listen=True))) as url, httpx.Client(base_url=url,
                                                                                        timeout=60) as c:
        port = url.rstrip("/").rsplit(":", 1)[1]
        for host in (f"192.168.1.20:{port}", f"[fe80::1]:{port}", f"{socket.gethostname()}:{port}"):
            assert _post_verify(c, host).status_code in (200, 409), host
        r = _post_verify(c, f"evil.example:{port}")
        assert r.status_code == 403 and "listens on this machine's addresses and host name" in r.text, r.text
        r = c.get("/replicheck/v1/live", headers={"Host": f"evil.example:{port}"})
        assert r.status_code == 403


def test_the_web_ui_script_reads_its_listen_options_and_the_setting(webui):
    """Through the extension as the web UI loads it (scripts/replicheck.py, the stand-in's cmd_opts
    as modules/cmd_args.py defines them: no --listen), and the allow-list setting."""
    from fastapi.testclient import TestClient

    client = TestClient(webui.app)
    rebound = {**HEADER, "Host": "evil.example:7860", "Origin": "http://evil.example:7860"}
    r = client.post("/replicheck/v1/packs/nothing/verify", headers=rebound)
    assert r.status_code == 403 and "it listens on this machine only (loopback)" in r.json()["detail"], r.text
    assert client.get("/replicheck/v1/status", headers={"Host": "evil.example:7860"}).status_code == 403
    local = {**HEADER, "Host": "127.0.0.1:7860", "Origin": "http://127.0.0.1:7860"}
    assert client.post("/replicheck/v1/packs/nothing/verify", headers=local).status_code == 409  # not installed
    webui.set_option("replicheck_allowed_hosts", "evil.example")
    try:
        assert client.get("/replicheck/v1/status", headers={"Host": "evil.example:7860"}).status_code == 200
    finally:
        webui.set_option("replicheck_allowed_hosts", "")
    assert client.get("/replicheck/v1/status", headers={"Host": "evil.example:7860"}).status_code == 403


@pytest.mark.parametrize("header,name", [("evil.example:8000", "evil.example"), ("[::1]:7860", "::1"),
                                         ("LOCALHOST.:7860", "localhost"), ("a:b", None), ("x/y", None), ("", None)])
def test_host_header_parsing(header, name):
    from lib_replicheck.webui.hosts import host_name

    assert host_name(header) == name


def test_verify_while_the_pack_is_busy_answers_409_not_500(tmp_path, pack_photos):
    """The loopback half of the rebound page sends verify and remove of one pack at once: a remove
    that renamed the pack's folder away under the verify's reads made the verify a 500. Verify now
    reads an installed pack under the pack's lock, the one a remove, download or build holds while
    it swaps the folder: while another holds it, verify answers 409 saying why, and the pack is
    verified once the lock is free; a remove while a verify holds it is refused the same way."""
    import httpx

    from conftest import photo_folder
    from lib_replicheck import embedders
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.registry.pack_lock import pack_lock

    home = tmp_path  # its own pack: the rebound page above removes the module's
    build_from_items(sources.folder(photo_folder(home / "src", pack_photos[:4], "photo {stem}"), license="test"),
                     embedders.load("pdq"), home / "packs" / "photos", log=lambda s: None)
    calls = Calls()
    with serve(_app(home, calls)) as url, httpx.Client(base_url=url, timeout=60) as c:
        host = f"127.0.0.1:{url.rstrip('/').rsplit(':', 1)[1]}"
        with pack_lock(home / "packs", "photos"):
            r = _post_verify(c, host)
            assert r.status_code == 409, (r.status_code, r.text)
            assert "pack 'photos' is already being downloaded, built, installed, verified or removed" in r.text
            r = c.delete("/replicheck/v1/packs/photos", headers={**HEADER, "Host": host, "Origin": f"http://{host}"})
            assert r.status_code == 409 and "already being" in r.text, (r.status_code, r.text)
        assert (home / "packs" / "photos" / "manifest.json").is_file()
        r = _post_verify(c, host)
        assert r.status_code == 200 and "photos: every file matches its sha256" in r.text, r.text
        assert calls.actions == ["verify", "remove", "verify"]
