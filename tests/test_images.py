"""Every kind of image a user or a scraped dataset can throw at replicheck, and the broken ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib_replicheck.errors import ImageError
from lib_replicheck.images import decode, iter_image_files, load_image, to_rgb

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


def _stored_with_orientation(displayed, orientation: int, path):
    """Save `displayed` as a camera would: the pixels as the sensor stored them, plus the EXIF
    Orientation tag that tells viewers how to turn them back."""
    stored = {6: displayed.transpose(Image.Transpose.ROTATE_90),
              3: displayed.transpose(Image.Transpose.ROTATE_180),
              8: displayed.transpose(Image.Transpose.ROTATE_270)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", [6, 3, 8])
def test_exif_orientation_is_applied(tmp_path, photo, orientation):
    f = _stored_with_orientation(photo, orientation, tmp_path / "rotated.jpg")
    with Image.open(f) as raw:
        assert raw.size == (photo.size[::-1] if orientation != 3 else photo.size)
    im = load_image(f)
    _assert_rgb_like(im, photo, tol=4)  # displayed as the original, not sideways


def test_bytes_are_decoded_and_errors_name_the_field(photo):
    import io

    buf = io.BytesIO()
    photo.save(buf, "PNG")
    im = decode(buf.getvalue(), name="request field 'image'")
    assert im.mode == "RGB" and im.size == photo.size
    with pytest.raises(ImageError) as e:
        decode(b"GIF89a broken", name="request field 'image'")
    assert "request field 'image'" in str(e.value)


def test_pixel_cap_is_max_pixels_whatever_pils_own_limit(tmp_path, monkeypatch):
    """One cap everywhere: PIL's global bomb limit (a warning at 89.5 Mpx, which the command line
    used to turn into an error) neither refuses an image under the cap nor is changed by decoding."""
    import warnings

    small = tmp_path / "small.png"
    Image.new("L", (100, 50), 7).save(small)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stands in for 89.5M at 1/1000th the size
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning from decoding would fail the test
        assert load_image(small).size == (100, 50)
        with pytest.raises(ImageError, match="over the limit of 4,999"):
            load_image(small, max_pixels=4999)
        assert decode(small, max_pixels=5000).size == (100, 50)
    assert Image.MAX_IMAGE_PIXELS == 1000 and warnings.filters == filters


def test_cap_applies_before_decoding(tmp_path):
    over = tmp_path / "over.png"
    Image.new("1", (10_001, 10_000)).save(over)  # MAX_PIXELS + 10,000, a few kilobytes on disk
    with pytest.raises(ImageError, match="10001x10000 pixels is over the limit of 100,000,000"):
        load_image(over)


def test_sixteen_bit_grey_is_scaled_in_integers_without_float_copies(tmp_path):
    import tracemalloc

    g = (np.arange(2000 * 2000, dtype=np.uint32).reshape(2000, 2000) % 65536).astype(np.uint16)
    g[0, :4] = [0, 257, 65535, 128 * 257]
    path = tmp_path / "grey16.png"
    Image.fromarray(g).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
        im.load()
        tracemalloc.start()
        out = to_rgb(im)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    a = np.asarray(out)
    assert a.dtype == np.uint8 and a.shape == (2000, 2000, 3)
    assert list(a[0, :4, 0]) == [0, 1, 255, 128]
    expect = ((g.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert (a[..., 0] == expect).all()
    # the 16-bit pixels (2 bytes each), the 8-bit result and one band; a float64 copy alone is 8
    assert peak < 4.5 * g.size, peak


def test_flat_images_are_measured_not_guessed(pack_photos, other_photos, clipart):
    """images.is_flat on the fixtures (what bench/flat_images.py measures): no real photo, wallpaper
    or drawing is flat; plain colours, smooth gradients and MATE's transparent wallpapers shown on
    white are. A few fixtures are no picture but a gradient or a transparent wallpaper themselves."""
    from conftest import BACKGROUNDS
    from lib_replicheck.images import FLAT_STRUCTURE, is_flat, structure

    not_pictures = ("/gradients/", "MATE-Stripes-Light.png")
    pictures = [p for p in pack_photos + other_photos + clipart if not any(n in str(p) for n in not_pictures)]
    assert len(pictures) >= 400
    flat = [(str(p), round(structure(load_image(p)), 3)) for p in pictures if is_flat(load_image(p))]
    assert flat == []
    ramp = np.linspace(0, 255, 512, dtype=np.float32)[None, :].repeat(512, 0)
    made = [Image.new("RGB", (512, 512), c) for c in ("white", "black", (200, 30, 30))]
    made += [Image.fromarray(ramp.astype(np.uint8)).convert("RGB"),
             Image.fromarray((100 + ramp * 40 / 255).astype(np.uint8)).convert("RGB")]
    transparent = sorted((BACKGROUNDS / "mate" / "abstract").glob("*.png"))
    fixtures = [p for p in other_photos + clipart if any(n in str(p) for n in not_pictures)]
    assert len(transparent) >= 5 and fixtures
    for im in made + [load_image(p) for p in transparent + fixtures]:
        assert is_flat(im), structure(im)
    assert structure(load_image(pack_photos[0])) > 10 * FLAT_STRUCTURE
