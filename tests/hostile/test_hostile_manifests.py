"""Hostile C2PA manifests given to `verify`: an unreadable one, an oversized one, a chunk header that
lies about its size, and a record whose text tries to drive the terminal. Each is refused or shown
cleaned in one line, before c2pa-rs is handed more than the bound."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from pngchunks import png_bytes, png_chunks
from lib_replicheck.cli.main import main
from lib_replicheck.images import load_image
from lib_replicheck.provenance import container, keys, record, sign
from lib_replicheck.report import Report


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REPLICHECK_SIGN_CERT", raising=False)
    return tmp_path / "home"


def signed(tmp_path: Path, photo: Path, home: Path, report: Report | None = None) -> Path:
    """A real photo saved as PNG and signed with this install's local certificate."""
    src = tmp_path / "photo.png"
    load_image(photo).resize((320, 200)).save(src)
    context = record.CheckContext()
    out = tmp_path / "signed.png"
    sign.sign_file(src, out, record.manifest(record.assertion(report or Report(image="x"), context), context),
                   keys.local(home))
    return out


def refusal(capsys, path: Path) -> str:
    capsys.readouterr()
    assert main(["verify", str(path)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines  # the file's name, then one line
    return lines[1]


def test_an_unreadable_manifest_is_refused_in_one_line(tmp_path, pack_photos, home, capsys):
    chunks = [(k, (b"\x00\x00\x00\x20jumb" + bytes(range(256)) * (len(d) // 256 + 1))[:len(d)] if k == b"caBX" else d)
              for k, d in png_chunks(signed(tmp_path, pack_photos[0], home).read_bytes())]
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_bytes(chunks))
    assert refusal(capsys, broken).startswith("  record refused: its C2PA manifest cannot be read")


def test_an_oversized_manifest_is_refused_before_it_is_read(tmp_path, pack_photos, home, capsys):
    chunks = png_chunks(signed(tmp_path, pack_photos[0], home).read_bytes())
    chunks.insert(1, (b"caBX", b"\x00" * (container.MAX_MANIFEST_BYTES + 1)))
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(chunks))
    line = refusal(capsys, big)
    assert re.fullmatch(rf"  record refused: its C2PA manifest is \d+ bytes, more than the "
                        rf"{container.MAX_MANIFEST_BYTES} read; not read", line), line


def test_a_chunk_header_that_lies_about_its_size(tmp_path, pack_photos, home, capsys):
    """A 2 GB manifest chunk announced in a small file: refused from the header, nothing allocated."""
    data = signed(tmp_path, pack_photos[0], home).read_bytes()
    liar = tmp_path / "liar.png"
    liar.write_bytes(data[:8] + struct.pack(">I", 0x7FFFFFF0) + b"caBX" + b"\x00" * 64)
    assert "more than the 4194304 read; not read" in refusal(capsys, liar)
    jpeg = tmp_path / "liar.jpg"
    jpeg.write_bytes(b"\xff\xd8" + b"".join(b"\xff\xeb\xff\xff" + b"\x00" * 0xFFFD for _ in range(70)) + b"\xff\xd9")
    assert "more than the 4194304 read; not read" in refusal(capsys, jpeg)


def test_record_text_cannot_drive_the_terminal(tmp_path, pack_photos, home, capsys):
    """A record written by hand, not by replicheck, its summary, pack and generator full of escape
    sequences: shown with them made harmless."""
    evil = "demo\x1b]0;pwned\x07\x1b[2J"
    src = tmp_path / "photo.png"
    load_image(pack_photos[1]).resize((320, 200)).save(src)
    context = record.CheckContext(generator=(evil, evil))
    forged = {"verdict": "likely copy", "summary": f"likely copy (best 0.99 in {evil})", "time": evil,
              "packs": [{"name": evil, "images": evil, "manifest_sha256": evil}],
              "embedders": [{"id": evil, "runtime": evil, "weights_sha256": evil}],
              "thresholds": {evil: {"measure": "similarity", "likely": evil}}, "regions": evil,
              "memorization_signal": {"x": evil}, "known_prompt": {"summary": evil}}
    definition = record.manifest(forged, context)
    definition["claim_generator_info"] = [{"name": evil, "version": evil}]
    path = tmp_path / "forged.png"
    sign.sign_file(src, path, definition, keys.local(home))
    capsys.readouterr()
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "LIKELY COPY" in out and "pwned" in out
