"""Every kind of image a user or a scraped dataset can throw at replicheck, and the broken ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib_replicheck.errors import ImageError
from lib_replicheck.images import iter_image_files, load_image, to_rgb

PHOTO = "lib_replicheck/demo_images/pack/coffee.jpg"


@pytest.fixture
def photo():
    from conftest import REPO

    return Image.open(REPO / PHOTO).convert("RGB")


def _assert_rgb_like(im, ref, tol=12.0):
    assert im.mode == "RGB" and im.size == ref.size
    diff = np.abs(np.asarray(im, float) - np.asarray(ref, float)).mean()
    assert diff < tol, diff


def test_modes_become_rgb(tmp_path, photo):
    cmyk = tmp_path / "cmyk.jpg"
    photo.convert("CMYK").save(cmyk)
    _assert_rgb_like(load_image(cmyk), photo)

    pal = tmp_path / "palette.png"
    photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(pal)
    _assert_rgb_like(load_image(pal), photo, tol=20)

    grey16 = tmp_path / "grey16.png"
    g = np.asarray(photo.convert("L"), np.uint16) * 257
    Image.fromarray(g).save(grey16)
    out = load_image(grey16)
    _assert_rgb_like(out, photo.convert("L").convert("RGB"), tol=1.5)  # scaled, not clipped to white

    rgba = tmp_path / "alpha.png"
    a = photo.convert("RGBA")
    a.putalpha(0)
    a.save(rgba)
    assert np.asarray(load_image(rgba)).min() == 255  # fully transparent shows as white


def test_palette_with_transparency_and_animation(tmp_path, photo):
    frames = [photo.resize((64, 48)), Image.new("RGB", (64, 48), (255, 0, 0))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], transparency=0, duration=100)
    with Image.open(gif) as g:
        assert g.is_animated
    im = load_image(gif)
    assert im.mode == "RGB" and im.size == (64, 48)
    assert np.asarray(im)[..., 1].mean() > 20  # the first frame, not the red second one


def test_sixteen_bit_and_float_data():
    f = Image.fromarray(np.linspace(-5, 5, 100, dtype=np.float32).reshape(10, 10))
    out = np.asarray(to_rgb(f))
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("make,expect", [
    (lambda p: p.write_bytes(b"this is a text file, not an image"), "not an image"),
    (lambda p: p.write_bytes(b""), "not an image"),
])
def test_non_images_are_refused_by_name(tmp_path, make, expect):
    bad = tmp_path / "bad.png"
    make(bad)
    with pytest.raises(ImageError) as e:
        load_image(bad)
    assert str(bad) in str(e.value) and expect in str(e.value)


def test_truncated_file(tmp_path, photo):
    good = tmp_path / "good.jpg"
    photo.save(good, quality=90)
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(ImageError) as e:
        load_image(bad)
    assert "truncated.jpg" in str(e.value) and "decoded" in str(e.value)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 megapixels in a few kilobytes
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ImageError) as e:
        load_image(bomb)
    assert "bomb" in str(e.value) and "bomb.png" in str(e.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_iter_image_files_walks_folders(tmp_path, photo):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    photo.save(tmp_path / "a" / "x.jpg")
    photo.save(tmp_path / ".hidden" / "y.jpg")
    (tmp_path / "a" / "x.txt").write_text("caption")
    named = tmp_path / "named.dat"
    named.write_text("?")
    found = list(iter_image_files([tmp_path, named]))
    assert found == [tmp_path / "a" / "x.jpg", named]
