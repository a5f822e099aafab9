"""Hostile answers to the verification's fetch (`check --verify online`): the URL of a CLIP candidate in
a pack is written by strangers, and so is what its server sends. Each is refused with a clear status,
nothing is decoded past the pixel cap, nothing is cached, and the candidate stays 'possible copy
(unverified ...)'."""

from __future__ import annotations

import struct
import zlib

import pytest

from tests.verification_packs import PHOTO_ROWS, build_pack, check_json, models_folder, save_weights
from tests.verification_packs import server  # noqa: F401 - a fixture

HOSTILE = f"/hostile/{PHOTO_ROWS[0]}.jpg"  # the URL of the copied photo's row


@pytest.fixture(scope="module")
def world(tmp_path_factory, photos, server, sscd_onnx):
    from conftest import jpeg

    from lib_replicheck.embedders.clip import ClipEmbedder

    clip = ClipEmbedder("ViT-B-32", pretrained=None)
    root = tmp_path_factory.mktemp("hostile-verify")
    pack = build_pack(root, clip, photos, lambda row: f"{server.url}/hostile/{row}.jpg")
    copy = root / "copy.jpg"
    jpeg(photos[0].resize((photos[0].width // 2, photos[0].height // 2)), 70).save(copy)
    return {"pack": pack, "weights": save_weights(clip, root / "clip.safetensors"), "copy": copy,
            "models": models_folder(root / "models", sscd_onnx)}


def verify(world, capsys) -> dict:
    rc, report = check_json(capsys, world["pack"], world["copy"], world["weights"], world["models"],
                            "--verify", "online")
    best = report["best"]
    assert rc == 1 and report["verdict"] == "possible copy" and best["unverified"], report
    assert best["url"].endswith(HOSTILE)
    assert not (world["models"] / "verify-cache").exists() or not any((world["models"] / "verify-cache").iterdir())
    return best["verification"]


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds a few bytes of data: a decompression bomb's
    header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_an_announced_size_over_the_cap_is_refused_before_reading(world, server, capsys):
    server.add(HOSTILE, b"\0" * (32 * 1024**2 + 1))
    v = verify(world, capsys)
    assert v["status"] == "refused" and v["detail"] == f"larger than {32 * 1024**2} bytes"


def test_an_endless_body_is_cut_at_the_cap(world, server, capsys):
    server.add(HOSTILE, b"x" * 4096, fault="endless", limit=64 * 1024**2)
    v = verify(world, capsys)
    assert v["status"] == "refused" and v["detail"].startswith("larger than")
    assert server.routes[HOSTILE].sent < 64 * 1024**2  # the client stopped reading


def test_a_web_page_is_not_an_image(world, server, capsys):
    server.add(HOSTILE, b"<html><body>This image has been removed</body></html>")
    v = verify(world, capsys)
    assert v["status"] == "not an image" and "not an image replicheck reads" in v["detail"]


def test_a_decompression_bomb_is_refused_before_decoding(world, server, capsys):
    server.add(HOSTILE, png_header(20000, 20000))
    v = verify(world, capsys)
    assert v["status"] == "not an image" and "20000x20000 pixels is over the limit" in v["detail"]


def test_a_redirect_to_a_local_file_is_refused(server):
    from lib_replicheck.verification.online import fetch_image

    server.add("/moved.jpg", b"", fault="redirect", location="file:///etc/passwd")
    got = fetch_image(server.url + "/moved.jpg", None, timeout=2)
    assert got.image is None and got.status == "refused" and "file:///etc/passwd" in got.detail


def test_a_trickling_server_is_cut_at_the_time_limit(server):
    from lib_replicheck.verification.online import fetch_image

    server.add("/trickle.jpg", b"x" * 1000, fault="trickle", stall=0.2)
    got = fetch_image(server.url + "/trickle.jpg", None, timeout=0.5)
    assert got.image is None and got.status == "dead URL" and got.detail.startswith("timed out")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)", "ftp://127.0.0.1/x.jpg", "", None])
def test_urls_that_are_not_http_are_never_fetched(url):
    from lib_replicheck.verification.online import fetch_image

    got = fetch_image(url, None)
    assert got.image is None and got.status == "refused" and got.detail == "no http(s) URL"
