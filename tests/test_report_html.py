"""The audit of a folder and its HTML report, rendered in a real headless Chromium on real photos.

A PDQ pack of real photos, some with hostile captions and URLs; a folder of edited copies, novel
photos and a file that is no image. The report opens from file:// and must request nothing from
the network, keep pack text as text, list the flagged images most similar first with the
histogram of best similarities, and stay under its stated size for a folder of 1,000 images.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, edits
from lib_replicheck.images import load_image

HOSTILE = [
    ("<script>window.__pwned=1</script>", "javascript:window.__pwned=2"),
    ('<img src=x onerror="window.__pwned=3">', 'https://example.com/a"onmouseover="window.__pwned=4'),
    ("\u202eevil\u202c <svg onload=window.__pwned=5>", "data:text/html,<script>window.__pwned=6</script>"),
    ("A quiet photograph", "https://example.com/ok?a=1&b=2"),
    ("=HYPERLINK(\"http://127.0.0.1:9/x\")", "http://127.0.0.1:9/nothing-listens-here.jpg"),
]


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pack(tmp_path_factory, pack_photos):
    """A PDQ pack of 10 real photos with thumbnails; the first five carry hostile captions and URLs."""
    from lib_replicheck import embedders
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.builder.sources import SourceItem

    out = tmp_path_factory.mktemp("packs") / "photos"
    records = []
    for i, p in enumerate(pack_photos[:10]):
        caption, url = HOSTILE[i] if i < len(HOSTILE) else (f"photo {p.stem}", f"https://example.org/{p.name}")
        records.append(SourceItem(key=p.name, load=lambda p=p: load_image(p), caption=caption, url=url,
                                  license="CC-BY-SA 4.0 <b>bold</b>"))
    build_from_items(records, embedders.load("pdq"), out, log=lambda s: None, source={"dataset": "wallpapers"})
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory, pack_photos, other_photos):
    """Edited copies of pack photos (different edits, so different scores), novel photos, and a
    file that is no image, in a folder with a subfolder."""
    d = tmp_path_factory.mktemp("audit")
    (d / "day2").mkdir()
    names = ["JPEG q=30", "resized 0.5x", "brightened +15%", "cropped 90% centre", "JPEG q=30"]
    for i, p in enumerate(pack_photos[:5]):
        edits(load_image(p))[names[i]].save(d / f"copy-{i}-{p.stem}.jpg", quality=90)
    for p in other_photos[:4]:
        im = load_image(p)
        im.thumbnail((900, 900))
        im.save(d / "day2" / f"novel-{p.stem}.jpg", quality=90)
    (d / "day2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return d


@pytest.fixture(scope="module")
def cli_run(pack, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    r = run_cli("check", folder, "--pack", pack, "--report", out / "report.html", "--csv", out / "report.csv",
                "--progress", "on")
    return r, out / "report.html", out / "report.csv"


def chromium_with_log(profile_dir, width=1200, height=1600):
    """Debian's headless Chromium with its performance log on: every request it makes is recorded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium_with_log(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def open_report(driver, where: Path | str) -> list[str]:
    """Open a report (a file, or a URL); the URLs of every request the page made."""
    driver.get("about:blank")
    time.sleep(0.3)
    driver.get_log("performance")  # drop what earlier pages (the browser's new tab page) requested
    driver.get(where.as_uri() if isinstance(where, Path) else where)
    time.sleep(1.0)  # anything the page would load or run has had its chance
    return requested_urls(driver)


def test_cli_writes_report_and_csv_with_progress(cli_run, folder):
    r, html_path, csv_path = cli_run
    assert r.returncode == 2, r.stderr  # a copy was found and one file could not be read: the error wins
    assert "broken.png" in r.stderr and "Traceback" not in r.stderr
    # the progress bar: count, rate and time left
    assert "10/10" in r.stderr and "image/s" in r.stderr and "<00:00" in r.stderr
    assert html_path.is_file() and csv_path.is_file()
    assert not list(html_path.parent.glob(".*.tmp"))  # written through a temporary file, renamed
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert len(rows) == 10
    by_name = {Path(x["image"]).name: x for x in rows}
    assert by_name["broken.png"]["verdict"] == "not checked" and by_name["broken.png"]["error"]
    copies = {n for n, x in by_name.items() if x["verdict"] != "no copy" and x["verdict"] != "not checked"}
    assert copies == {n for n in by_name if n.startswith("copy-")}
    # a caption that reads as a spreadsheet formula is written as text
    formula = [x for x in rows if "HYPERLINK" in x["caption"]]
    assert formula and all(x["caption"].startswith("'=") for x in formula)
    for x in rows:  # the words of the infotext and the panel: two decimals, rounded down
        if x["verdict"] != "not checked":
            best = math.floor(float(x["best_similarity"]) * 100 + 1e-6) / 100
            assert x["summary"] == f"{x['verdict']} (best {best:.2f} in photos)"


def test_report_opens_offline_and_lists_flagged_most_similar_first(cli_run, browser):
    _, html_path, csv_path = cli_run
    urls = open_report(browser, html_path)
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    assert browser.execute_script("return window.__pwned") is None
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    rank = {"duplicate": 3, "likely copy": 2, "possible copy": 1}
    flagged = sorted((x for x in rows if x["verdict"] in rank),
                     key=lambda x: (rank[x["verdict"]], float(x["best_similarity"])), reverse=True)
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('#flagged .row .name')).map(e => e.textContent)")
    assert len(flagged) == 5 and shown == [Path(x["image"]).name for x in flagged]
    # each flagged row: the checked image and the nearest training images, the same frame size, all embedded
    frames = browser.execute_script("""return Array.from(document.querySelectorAll('#flagged .row')).map(r =>
        Array.from(r.querySelectorAll('.frame')).map(f => [f.clientWidth, f.clientHeight]))""")
    assert frames and all(len(f) >= 2 and all(x == [256, 256] for x in f) for f in frames)
    imgs = browser.execute_script("""return Array.from(document.querySelectorAll('#flagged img')).map(i =>
        [i.getAttribute('src').slice(0, 23), i.naturalWidth, i.naturalHeight, i.complete])""")
    assert imgs and all(s == "data:image/jpeg;base64," and 0 < w <= 256 and 0 < h <= 256 and ok
                        for s, w, h, ok in imgs)
    # the histogram: one count per checked image, the tier cut drawn
    bars = browser.execute_script(
        "return Array.from(document.querySelectorAll('#histogram rect.bar')).map(b => +b.dataset.count)")
    assert sum(bars) == 9
    assert browser.execute_script("return document.querySelectorAll('#histogram line.cut').length") == 1
    assert "pdq likely 0.87" in browser.execute_script("return document.querySelector('#histogram').textContent")
    # the unflagged images collapsed, the unreadable one listed with its error
    assert browser.execute_script("return document.querySelector('#unflagged').open") is False
    assert "4 image(s) with no copy" in browser.execute_script("return document.querySelector('#unflagged summary').textContent")
    errors = browser.execute_script("return document.querySelector('#errors').innerText")
    assert "broken.png" in errors and "not an image" in errors
    # the summary counts
    text = browser.execute_script("return document.body.innerText")
    assert "10\nimages" in text and "1\nnot checked" in text and "wallpapers" in text
    assert "10 images: 5 flagged (5 likely copy), 4 no copy, 1 not checked (1 error)" in text


def test_hostile_pack_text_stays_text(cli_run, browser):
    _, html_path, _ = cli_run
    open_report(browser, html_path)
    assert browser.execute_script("return window.__pwned") is None
    page = browser.execute_script("return document.body.innerText")
    assert "<script>window.__pwned=1</script>" in page  # shown as text
    assert '<img src=x onerror="window.__pwned=3">' in page
    assert "\u202e" not in page  # the bidi override is dropped
    assert "CC-BY-SA 4.0 <b>bold</b>" in page
    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    assert hrefs and all(h.startswith(("https://", "http://")) for h in hrefs), hrefs
    assert "https://example.com/ok?a=1&b=2" in hrefs
    assert not any("javascript" in h or "onmouseover" in h or h.startswith("data:") for h in hrefs)
    assert "javascript:window.__pwned=2" in page  # the URL that is no link is still shown, as text
    assert browser.execute_script("return document.querySelectorAll('#flagged script, #flagged svg, iframe').length") == 0
    handlers = browser.execute_script("""return Array.from(document.querySelectorAll('*')).flatMap(
        e => Array.from(e.attributes).map(a => a.name)).filter(n => n.startsWith('on'))""")
    assert handlers == []


@pytest.fixture(scope="module")
def tiered(pack, folder, tmp_path_factory):
    """The same folder checked in-process with a duplicate cut between the copies' distances, so
    that the report has two tiers; one report carries a matching region."""
    from lib_replicheck.audit import list_images, run_audit
    from lib_replicheck.checker import Checker
    from lib_replicheck.html_report import write_html
    from lib_replicheck.packs.pack import Pack
    from lib_replicheck.thresholds import with_overrides

    files, _ = list_images([folder])
    first = run_audit(Checker([Pack(pack)]), files, roots=[folder])
    distances = sorted(r.best.distance for r in first.flagged)
    cut = (distances[0] + distances[-1]) // 2
    assert distances[0] <= cut < distances[-1]
    seen = []
    audit = run_audit(Checker([Pack(pack)], tiers=with_overrides([f"pdq.duplicate={cut}"])), files, roots=[folder],
                      on_progress=seen.append)
    assert [p.done for p in seen] == list(range(len(files) + 1)) and seen[-1].total == len(files)
    assert seen[-1].flagged == 5 and seen[-1].errors == 1
    top = audit.flagged[0]
    top.best.region = {"x": 0.25, "y": 0.1, "w": 0.5, "h": 0.4}  # what region search adds to a match
    path = write_html(audit, tmp_path_factory.mktemp("tiered") / "report.html")
    return audit, path


def test_tier_filter_and_region_box(tiered, browser):
    audit, path = tiered
    open_report(browser, path)
    tiers = browser.execute_script("return Array.from(document.querySelectorAll('#flagged .row')).map(r => r.dataset.tier)")
    n_dup = sum(1 for r in audit.flagged if r.verdict.value == "duplicate")
    assert tiers == ["duplicate"] * n_dup + ["likely copy"] * (5 - n_dup) and 0 < n_dup < 5
    visible = "return Array.from(document.querySelectorAll('#flagged .row')).filter(r => !r.hidden).length"
    browser.find_element("css selector", 'button[data-filter="likely copy"]').click()
    assert browser.execute_script(visible) == 5 - n_dup
    browser.find_element("css selector", 'button[data-filter="duplicate"]').click()
    assert browser.execute_script(visible) == n_dup
    browser.find_element("css selector", 'button[data-filter="all"]').click()
    assert browser.execute_script(visible) == 5
    # the matching region, boxed over the checked image of the first row, where the match says
    box = browser.execute_script("""var img = document.querySelector('#row-1 .checked img');
        var b = document.querySelector('#row-1 .checked .region');
        if (!b) return null; var i = img.getBoundingClientRect(), r = b.getBoundingClientRect();
        return [(r.left - i.left) / i.width, (r.top - i.top) / i.height, r.width / i.width, r.height / i.height];""")
    assert box is not None and [round(v, 2) for v in box] == [0.25, 0.1, 0.5, 0.4]
    assert browser.execute_script("return document.querySelectorAll('.region').length") == 1


def test_report_escapes_and_bounds_without_a_browser(tiered):
    """The page's policy forbids any fetch; links are only http(s); every thumbnail is within its bounds."""
    import base64
    import re

    from lib_replicheck import html_report

    _, path = tiered
    text = path.read_text()
    assert "default-src 'none'" in text and "img-src data:" in text
    assert "<script>window.__pwned" not in text and "javascript:" not in re.sub(r">[^<]*<", "><", text)
    for b64 in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', text):
        assert len(base64.b64decode(b64)) <= html_report.THUMB_BYTES


@pytest.fixture(scope="module")
def thousand(tmp_path_factory, pack_photos, other_photos):
    """1,000 small crops of real photos, 20 of them edited copies of pack photos."""
    folder = tmp_path_factory.mktemp("outputs")
    rng = random.Random(7)
    sources = [load_image(p) for p in other_photos[:10]]
    for im in sources:
        im.thumbnail((1024, 1024))
    for n in range(980):
        im = sources[n % len(sources)]
        w, h = im.size
        s = rng.randint(96, 200)
        x, y = rng.randrange(0, w - s), rng.randrange(0, h - s)
        im.crop((x, y, x + s, y + s)).save(folder / f"{n:04d}.jpg", quality=85)
    for i, p in enumerate(pack_photos[:10]):
        im = load_image(p)
        for j, name in enumerate(("resized 0.5x", "JPEG q=30")):
            e = edits(im)[name]
            e.thumbnail((512, 512))
            e.save(folder / f"copy-{i}-{j}.jpg", quality=85)
    return folder


def test_a_thousand_images_with_progress_and_a_bounded_report(tmp_path, pack, thousand):
    """The command line shows its progress bar to the end and the report stays under its stated bound."""
    from lib_replicheck import html_report

    report = tmp_path / "report.html"
    r = run_cli("check", thousand, "--pack", pack, "--report", report, "--progress", "on", "--json")
    assert r.returncode == 1, r.stderr
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(reports) == 1000
    flagged = sum(1 for x in reports if x["is_copy"])
    assert flagged >= 15
    assert "1000/1000" in r.stderr and "image/s" in r.stderr
    size = report.stat().st_size
    bound = html_report.max_report_bytes(1000, flagged)
    print(f"report of 1000 images, {flagged} flagged: {size / 1e6:.2f} MB (bound {bound / 1e6:.1f} MB)")
    assert size <= bound


def test_ctrl_c_writes_the_report_of_what_was_checked(tmp_path, pack, thousand):
    import re
    import signal

    report = tmp_path / "report.html"
    p = subprocess.Popen([sys.executable, "-m", "lib_replicheck", "check", str(thousand), "--pack", str(pack),
                          "--report", str(report), "--progress", "on"], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    while True:  # wait until the bar shows some images done, then press Ctrl-C
        chunk = os.read(p.stderr.fileno(), 4096)
        assert chunk, seen.decode()[-2000:]
        seen += chunk
        done = [int(x) for x in re.findall(rb"(\d+)/1000", seen)]
        if done and max(done) >= 20:
            break
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, (seen + err).decode()[-2000:]
    assert b"interrupted" in err and b"Traceback" not in seen + err
    text = report.read_text()
    checked = int(re.search(r"Cancelled after (\d+) of 1000 images", text).group(1))
    assert 20 <= checked < 1000
    assert f"<b>{checked}</b>images</div>" in text  # the images checked before Ctrl-C, all of them in the report


@pytest.fixture(scope="module")
def web(tmp_path_factory, pack, folder):
    """The web UI's side: the check service with the pack installed, folder checks, and the API on
    a real server on 127.0.0.1."""
    import shutil

    from fastapi import FastAPI

    from browser import serve
    from lib_replicheck.webui.audits import AuditJobs, ServiceChecker
    from lib_replicheck.webui import api
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings
    from lib_replicheck.webui.tab import PacksTab

    home = tmp_path_factory.mktemp("webui-home")
    shutil.copytree(pack, home / "packs" / "photos")
    service = CheckService(home / "packs", home)
    audits = AuditJobs(home / "reports", lambda: ServiceChecker(service, Settings()))
    tab = PacksTab(None, None, service, audits=audits)
    app = FastAPI()
    api.mount(app, service, Settings, audits=audits)
    with serve(app) as url:
        yield tab, audits, url


def run_tab(tab, folder_text) -> list[str]:
    return list(tab.check_folder(folder_text))


def test_tab_checks_a_folder_in_the_background_and_serves_its_report(web, folder, browser):
    import requests

    tab, audits, url = web
    steps = run_tab(tab, str(folder))
    assert len(steps) >= 2 and "data-state='done'" in steps[-1], steps
    assert "10 images: 5 flagged (5 likely copy), 4 no copy, 1 not checked (1 error)" in steps[-1]
    job = next(j for j in audits.jobs.values() if j.state == "done")
    assert f"/replicheck/v1/audits/{job.id}/report" in steps[-1] and "target='_blank'" in steps[-1]
    status = requests.get(f"{url}replicheck/v1/audits/{job.id}", timeout=10).json()
    assert status["state"] == "done" and status["done"] == status["total"] == 10 and status["flagged"] == 5
    r = requests.get(f"{url}replicheck/v1/audits/{job.id}/report", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    urls = open_report(browser, f"{url}replicheck/v1/audits/{job.id}/report")
    assert [u for u in urls if not u.startswith("data:image/jpeg;base64,")] == \
        [f"{url}replicheck/v1/audits/{job.id}/report"], urls  # the page and its embedded thumbnails, nothing else
    assert browser.execute_script("return document.querySelectorAll('#flagged .row').length") == 5
    assert browser.execute_script("return window.__pwned") is None


def test_report_route_serves_only_reports_it_wrote(web, tmp_path):
    import requests

    tab, audits, url = web
    planted = audits.reports_dir / ("0" * 32 + ".html")
    audits.reports_dir.mkdir(parents=True, exist_ok=True)
    planted.write_text("<p>not written by a folder check</p>")
    for job_id in ("0" * 32, "..%2F..%2Fetc%2Fpasswd", "nothing"):
        assert requests.get(f"{url}replicheck/v1/audits/{job_id}/report", timeout=10).status_code == 404
        assert requests.get(f"{url}replicheck/v1/audits/{job_id}", timeout=10).status_code == 404


def test_tab_refuses_what_is_no_folder_and_never_leaves_it(web, tmp_path, pack_photos, other_photos, monkeypatch):
    tab, audits, _ = web
    assert "no such folder" in run_tab(tab, str(tmp_path / "missing"))[-1]
    assert "type the path" in run_tab(tab, "  ")[-1]
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert "no such folder" in run_tab(tab, str(tmp_path / "file.jpg"))[-1]
    # inside the folder: two images, a text file, a link to an image outside, a linked folder outside
    day = tmp_path / "day"
    (day / "sub").mkdir(parents=True)
    load_image(other_photos[0]).save(day / "a.jpg")
    load_image(other_photos[1]).save(day / "sub" / "b.png")
    (day / "notes.txt").write_text("not an image")
    (day / "link.jpg").symlink_to(pack_photos[0])
    (day / "linked").symlink_to(pack_photos[0].parent, target_is_directory=True)
    (day / "c.jpg").symlink_to(day / "a.jpg")  # a link that stays inside is fine
    steps = run_tab(tab, str(day))
    assert "data-state='done'" in steps[-1], steps
    job = [j for j in audits.jobs.values() if j.folder == str(day)][-1]
    report = job.report.read_text()
    assert job.progress.total == 3 and "a.jpg" in report and "b.png" in report and "c.jpg" in report
    assert "link.jpg" not in report and "linked" not in report and "notes.txt" not in report
    monkeypatch.chdir(tmp_path)  # the web UI's folder: a relative path starts there
    steps = run_tab(tab, "day")
    assert "data-state='done'" in steps[-1] and f"{tmp_path / 'day'}: 3 images: " in steps[-1], steps[-1]


def test_region_search_boxes_the_pasted_copy_in_the_report(tmp_path, pack_photos, other_photos, sscd_onnx, browser):
    """A training photo pasted into a larger picture, found by region search (real SSCD weights):
    the report draws the box over the checked image where the paste is. The pack was built without a
    background of its own, so its regions are judged above the default background shipped for SSCD."""
    sys.path.insert(0, str(REPO / "bench"))
    from regions import paste, random_crop, shrink

    from lib_replicheck import embedders
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.builder.sources import SourceItem

    sscd = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    photos = pack_photos[:6]
    pack = build_from_items([SourceItem(key=p.name, load=lambda p=p: load_image(p), caption=f"photo {p.stem}")
                             for p in photos], sscd, tmp_path / "packs" / "sscd", log=lambda s: None).path
    rng = random.Random(16)
    bg = random_crop(rng, shrink(load_image(other_photos[0])), (512, 512))
    im, box = paste(rng, shrink(load_image(photos[1])), bg, 0.55)
    folder = tmp_path / "outputs"
    folder.mkdir()
    im.save(folder / "pasted.png")
    report = tmp_path / "report.html"
    r = run_cli("check", folder, "--pack", pack, "--runtime", "onnx", "--weights", sscd_onnx, "--offline",
                "--regions", "thorough", "--report", report, "--csv", tmp_path / "rows.csv")
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(csv.DictReader(io.StringIO((tmp_path / "rows.csv").read_text())))
    rx, ry, rw, rh = map(int, row["region"].split(","))  # the box, in pixels of the checked image
    assert rw > 0 and rh > 0 and rx + rw <= im.width and ry + rh <= im.height
    open_report(browser, report)
    found = browser.execute_script("""var img = document.querySelector('#row-1 .checked img');
        var b = document.querySelector('#row-1 .checked .region');
        if (!b) return null; var i = img.getBoundingClientRect(), r = b.getBoundingClientRect();
        return [(r.left - i.left) / i.width, (r.top - i.top) / i.height, r.width / i.width, r.height / i.height];""")
    assert found is not None
    x, y, w, h = found
    W, H = im.size
    px, py, pw, ph = box.x / W, box.y / H, box.w / W, box.h / H
    inter = max(0.0, min(x + w, px + pw) - max(x, px)) * max(0.0, min(y + h, py + ph) - max(y, py))
    assert inter / (pw * ph) >= 0.5, (found, box)
    text = browser.execute_script("return document.querySelector('#row-1 .match .found').textContent")
    where = f"found in the region {rw}×{rh} at ({rx}, {ry}) of the checked image; "
    assert text.startswith(where) and text.endswith(" above the pack's background, which its verdict is judged on")
    # judged on the region's score above the background, by the normalised region tiers: said in the
    # summary with the raw similarity beside it, drawn on its own histogram
    score = math.floor(float(row["best_similarity"]) * 100 + 1e-6) / 100
    said = re.fullmatch(rf"{row['verdict']} \(region (\d\.\d\d) above background; raw {score:.2f} in sscd\)",
                        row["summary"])
    assert said is not None, row["summary"]
    assert text[len(where):].startswith(said.group(1))
    assert row["summary"] in browser.execute_script("return document.querySelector('#row-1 header').textContent")
    bars = "return Array.from(document.querySelectorAll('#%s rect.bar')).map(b => +b.dataset.count)"
    assert browser.execute_script(bars % "histogram") == [] and browser.execute_script(bars % "histogram-region") == []
    assert browser.execute_script(bars % "histogram-region-background") == [1]
    cuts = browser.execute_script("return document.querySelector('#histogram-region-background').textContent")
    assert "sscd possible 0.25" in cuts and "sscd likely 0.35" in cuts


def test_tab_cancel_keeps_the_report_of_what_was_checked(web, thousand):
    tab, audits, _ = web
    job = audits.start(str(thousand))
    end = time.time() + 120
    while job.progress.done < 8 and job.running and time.time() < end:
        time.sleep(0.05)
    assert "Cancelling" in tab.cancel_folder()
    while job.running and time.time() < end:
        time.sleep(0.05)
    assert job.state == "cancelled", (job.state, job.message)
    assert 8 <= job.progress.done < 1000
    text = audits.report_file(job.id).read_text()
    assert f"Cancelled after {job.progress.done} of 1000 images." in text
    assert "No folder is being checked." in tab.cancel_folder()


def test_tab_without_a_pack_says_so(tmp_path, folder):
    from lib_replicheck.webui.audits import AuditJobs, ServiceChecker
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings
    from lib_replicheck.webui.tab import PacksTab

    service = CheckService(tmp_path / "packs", tmp_path)
    tab = PacksTab(None, None, service, audits=AuditJobs(tmp_path / "reports", lambda: ServiceChecker(service, Settings())))
    steps = list(tab.check_folder(str(folder)))
    assert "data-state='error'" in steps[-1] and "no pack installed" in steps[-1]


def test_text_output_names_the_region():
    from lib_replicheck.cli.text import format_report
    from lib_replicheck.item import Item
    from lib_replicheck.regions import Region
    from lib_replicheck.report import Match, Report
    from lib_replicheck.thresholds import Verdict

    m = Match(pack="demo", item=Item(id=3, caption="a cup"), similarity=0.8123, distance=None,
              verdict=Verdict.LIKELY, embedder="sscd_disc_mixup", region=Region(10, 20, 300, 200, 640, 480))
    text = format_report(Report(image="x.png", verdict=Verdict.LIKELY, best=m, matches=[m]))
    assert "LIKELY COPY    (region 0.81 in demo)" in text and "(in the region 300x200 at (10, 20))" in text


def test_histogram_labels_stay_inside_it(browser, tmp_path):
    """Every cut's label is drawn whole inside the histogram, none over another: SSCD's three tiers
    and PDQ's, as a report of packs of both draws them (the duplicate label at 0.95 was cut off)."""
    from lib_replicheck.html_report import STYLE
    from lib_replicheck.report_histogram import histogram_svg

    cuts = [("sscd possible 0.50", 0.5), ("sscd likely 0.75", 0.75), ("sscd duplicate 0.95", 0.95),
            ("pdq likely 0.87", 1 - 31 / 256)]
    page = tmp_path / "h.html"
    page.write_text(f"<!doctype html><html><head><style>{STYLE}</style></head><body>"
                    f"{histogram_svg([0.3, 0.8, 0.97], cuts)}</body></html>")  # the report's own style
    open_report(browser, page)
    boxes = browser.execute_script("""var s = document.querySelector('#histogram').getBoundingClientRect();
        return Array.from(document.querySelectorAll('#histogram text[fill]')).map(t => {
            var r = t.getBoundingClientRect();
            return [t.textContent, r.left - s.left, r.right - s.left, r.top - s.top, r.bottom - s.top, s.width]; });""")
    assert sorted(b[0] for b in boxes) == sorted(c[0] for c in cuts)
    for label, left, right, top, bottom, width in boxes:
        assert 0 <= left and right <= width and 0 <= top, (label, left, right, width)
    for a in boxes:
        for b in boxes:
            if a is not b:
                overlap_x = min(a[2], b[2]) - max(a[1], b[1])
                overlap_y = min(a[4], b[4]) - max(a[3], b[3])
                assert overlap_x <= 0 or overlap_y <= 0, (a, b)


def test_one_flagged_rule_for_panel_report_gate_and_records():
    """Report.flagged is the one rule: a checked image with a copy verdict at or above the tier, not
    one already in the img2img input. A flat image keeps its matches but has no verdict, so it is not
    flagged (the panel used to count it); an input match is shown, not flagged, by every output."""
    import json

    from lib_replicheck.audit import Audit, count
    from lib_replicheck.cli.verify import flagged as record_flagged
    from lib_replicheck.comfyui.nodes import flagged_at
    from lib_replicheck.html_report import render as page
    from lib_replicheck.item import Item
    from lib_replicheck.report import Match, Report
    from lib_replicheck.thresholds import Verdict
    from lib_replicheck.webui.panel import render as panel

    def report(name, verdict, **kw):
        m = Match(pack="demo", item=Item(id=len(name), caption=name), similarity=0.8, distance=None, verdict=verdict,
                  embedder="sscd_disc_mixup")
        return Report(image=name, verdict=verdict, best=m, matches=[m], **kw)

    reports = [report("likely", Verdict.LIKELY), report("possible", Verdict.POSSIBLE),
               report("input", Verdict.LIKELY, from_input=True), report("flat", Verdict.LIKELY, withheld="flat image"),
               report("broken", Verdict.NONE, error="cannot identify image file"), report("novel", Verdict.NONE)]
    want = {Verdict.POSSIBLE: [True, True, False, False, False, False],
            Verdict.LIKELY: [True, False, False, False, False, False],
            Verdict.DUPLICATE: [False] * 6}
    for at, flags in want.items():
        assert [r.flagged(at) for r in reports] == flags, at
        assert flagged_at(json.dumps({"images": [r.to_dict() for r in reports]}), at.value, 6) == flags, at
        assert [record_flagged({"verdict": r.verdict_text, "from_input": r.from_input}) for r in reports] \
            == want[Verdict.POSSIBLE]
    assert 'data-flagged="2"' in panel(reports) and "2 of 6 image(s) flagged" in panel(reports)
    audit = Audit(roots=[], reports=reports)
    assert [r.image for r in audit.flagged] == ["likely", "possible"]
    tally = count(reports)
    assert (tally.flagged, tally.likely, tally.from_input, tally.not_checked) == (2, 1, 1, 2)
    assert tally.text() == ("6 images: 2 flagged (1 likely copy, 1 possible copy), 1 no copy, 2 not checked "
                            "(1 error, 1 flat image), 1 already in the input image")
    html = page(audit)
    assert "Flagged images, most similar first (2)" in html and 'id="row-3"' not in html
