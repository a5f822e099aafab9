"""Crafted images: formats Pillow knows but replicheck must never decode, and lying headers.

PostScript is the dangerous one: Pillow's EPS plugin renders it by running Ghostscript on the
file, so a `.png` that is really PostScript would run a program. A fake `gs` on PATH records
whether anything tried to start it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import webdataset_tar
from lib_replicheck.errors import ImageError
from lib_replicheck.images import decode, load_image

REPO = Path(__file__).resolve().parents[2]

POSTSCRIPT = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 64 64
%%EndComments
newpath 0 0 moveto 64 64 lineto stroke
showpage
%%EOF
"""

DECODE_IN_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from lib_replicheck.errors import ImageError
try:
    if sys.argv[3] == "bytes":
        from lib_replicheck.images import decode
        decode(open(sys.argv[2], "rb").read(), name="request field 'image'")
    else:
        from lib_replicheck.images import load_image
        load_image(sys.argv[2])
except ImageError as e:
    print("refused:", e)
else:
    print("decoded")
"""


@pytest.fixture
def fake_ghostscript(tmp_path):
    """A `gs` first on PATH that leaves a marker file when anything runs it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gs-was-run"
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    gs.chmod(0o755)
    return bin_dir, marker


@pytest.mark.parametrize("how", ["file", "bytes"])
def test_postscript_named_png_is_refused_without_running_ghostscript(tmp_path, fake_ghostscript, how):
    bin_dir, marker = fake_ghostscript
    evil = tmp_path / "generated.png"
    evil.write_bytes(POSTSCRIPT)
    with Image.open(evil) as im:
        assert im.format == "EPS"  # Pillow itself would take it for PostScript
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    # a child process: Pillow remembers whether it found Ghostscript for the life of a process
    out = subprocess.run([sys.executable, "-c", DECODE_IN_CHILD, str(REPO), str(evil), how], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:"), out.stdout
    assert ("request field 'image'" if how == "bytes" else "generated.png") in out.stdout
    assert "PNG, JPEG, WEBP, GIF, BMP, TIFF" in out.stdout
    assert not marker.exists(), "Ghostscript was started: " + marker.read_text()


@pytest.mark.parametrize("fmt,suffix", [("ICO", ".png"), ("PPM", ".jpg"), ("PCX", ".png"), ("TGA", ".png"),
                                        ("SGI", ".png"), ("DDS", ".webp")])
def test_other_formats_pillow_knows_are_refused(tmp_path, fmt, suffix):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buf, fmt)
    f = tmp_path / f"disguised{suffix}"
    f.write_bytes(buf.getvalue())
    with Image.open(f) as im:  # readable by Pillow's defaults...
        assert im.size == (32, 32)
    with pytest.raises(ImageError, match="not an image replicheck reads"):  # ...but not by replicheck
        load_image(f)
    with pytest.raises(ImageError, match="field 'image'"):
        decode(buf.getvalue(), name="field 'image'")


def test_a_lying_header_is_refused_before_anything_is_allocated(tmp_path):
    """A 20,000 x 20,000 JPEG header on a few hundred bytes: the cap answers from the header alone."""
    import resource

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") + (20000).to_bytes(2, "big")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="20000x20000 pixels is over the limit"):
        decode(bytes(data), name="upload")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: not 1.2 GB


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_nonsense_orientation_is_ignored(tmp_path, value):
    exif = Image.Exif()
    exif[0x0112] = value
    f = tmp_path / "odd.jpg"
    Image.new("RGB", (40, 20), (1, 2, 3)).save(f, exif=exif.tobytes())
    assert load_image(f).size == (40, 20)


def test_empty_and_garbage_bytes_are_refused_by_name():
    for data in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff" + b"\x00" * 50, b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a"):
        with pytest.raises(ImageError, match="^upload: "):
            decode(data, name="upload")


def test_bad_sidecar_json_is_said_naming_the_file(tmp_path, caplog):
    """A sample whose .json cannot be read keeps its image but loses url and license: that is logged
    with the shard and the sample's name, never silent; a flood of them is counted, not listed."""
    from lib_replicheck.builder.sources import webdataset

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(buf, "JPEG")
    jpg = buf.getvalue()
    samples = [("good", {"jpg": jpg, "json": b'{"url": "https://example.org/a.jpg", "license": "cc-by"}'}),
               ("trunc", {"jpg": jpg, "json": b'{"url": "https://example.org/b.jpg", "lic'}),
               ("list", {"jpg": jpg, "json": b'["https://example.org/c.jpg"]'}),
               ("deep", {"jpg": jpg, "json": b"[" * 100_000 + b"]" * 100_000}),
               ("latin", {"jpg": jpg, "json": b'{"url": "\xe9"}'}),
               ("typed", {"jpg": jpg, "json": b'{"url": {"x": 1}, "license": 5, "hash": [1]}'})]
    shard = webdataset_tar(tmp_path / "00000.tar", samples)
    with caplog.at_level("WARNING", logger="replicheck"):
        items = list(webdataset([shard], license="fallback"))
    assert [i.key for i in items] == [f"00000.tar/{k}" for k, _ in samples]
    assert items[0].url == "https://example.org/a.jpg" and items[0].license == "cc-by"
    assert all(i.url is None and i.license == "fallback" and i.hash is None for i in items[1:])
    for key, why in (("trunc", "not valid JSON"), ("list", "a JSON list, not an object"), ("deep", "JSON nested too deeply"),
                     ("latin", "not UTF-8")):
        assert f"00000.tar: {key}.json: {why}" in caplog.text
    caplog.clear()
    many = webdataset_tar(tmp_path / "00001.tar", [(f"k{i:03d}", {"jpg": jpg, "json": b"{"}) for i in range(40)])
    with caplog.at_level("WARNING", logger="replicheck"):
        assert len(list(webdataset([many]))) == 40
    assert 2 <= len(caplog.records) <= 10 and "40 samples in all" in caplog.text


def test_builder_source_is_decoded_as_displayed(tmp_path):
    """A training image stored sideways with an EXIF orientation is embedded and recorded as shown."""
    from lib_replicheck.builder.sources import SourceItem

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.new("RGB", (60, 20), (200, 10, 10)).save(buf, "JPEG", exif=exif.tobytes())
    assert SourceItem(key="00000.tar/x", data=buf.getvalue()).open().size == (20, 60)
    evil = SourceItem(key="00000.tar/evil", data=POSTSCRIPT)
    with pytest.raises(ImageError, match="^00000.tar/evil: not an image replicheck reads"):
        evil.open()


def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    import threading

    fifo = tmp_path / "generated.png"
    os.mkfifo(fifo)
    outcome = []

    def run():
        try:
            load_image(fifo)
        except ImageError as e:
            outcome.append(str(e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader so the test process can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("opening a FIFO named .png blocked")
    assert outcome and "not a regular file" in outcome[0] and "generated.png" in outcome[0]
