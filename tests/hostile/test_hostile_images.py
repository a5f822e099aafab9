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
