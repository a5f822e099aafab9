"""The signed record of a check (C2PA): real c2pa-python round trips on real photos saved as PNG, JPEG
and WebP, tampering found by `verify`, hostile manifests refused, keys guarded, and the web UI path."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from conftest import REPO, edits, photo_folder
from pngchunks import png_bytes, png_chunks
from lib_replicheck.cli.main import main
from lib_replicheck.images import load_image

import c2pa  # noqa: E402 - a test dependency (requirements-test.txt): missing, the tests fail, never skip

PARAMETERS = "a photo of a lake at dawn\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x384"


@pytest.fixture(scope="module")
def pdq_pack(tmp_path_factory, pack_photos):
    """A PDQ pack of eight real photos, built through the command line."""
    src = photo_folder(tmp_path_factory.mktemp("training"), pack_photos[:8], "training image {stem}")
    out = tmp_path_factory.mktemp("packs") / "photos"
    assert main(["build", str(src), "--out", str(out), "--embedder", "pdq", "--progress", "off"]) == 0
    return out


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh replicheck home (its local certificate is made on first use) and no key in the environment."""
    h = tmp_path / "home"
    monkeypatch.setenv("REPLICHECK_HOME", str(h))
    monkeypatch.delenv("REPLICHECK_SIGN_CERT", raising=False)
    monkeypatch.delenv("REPLICHECK_SIGN_KEY", raising=False)
    return h


def save(im, path: Path, parameters: str | None = PARAMETERS) -> Path:
    """Save as the web UI does: PNG with its `parameters` text chunk, JPEG or WebP by suffix."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[path.suffix]
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        if parameters:
            info.add_text("parameters", parameters)
        im.save(path, "PNG", pnginfo=info)
    else:
        im.save(path, fmt, quality=90)
    return path


def sign_folder(folder: Path, out: Path, *extra: str) -> int:
    return main(["check", str(folder), "--pack", str(PACK_HOLDER["pack"]), "--progress", "off", "--sign",
                 "--sign-dir", str(out), *extra])


PACK_HOLDER: dict = {}


@pytest.fixture(autouse=True)
def _pack(pdq_pack):
    PACK_HOLDER["pack"] = pdq_pack


@pytest.fixture(scope="module")
def images(tmp_path_factory, pack_photos, other_photos):
    """For each format: an edited copy of a training photo and a photo that is not in the pack."""
    d = tmp_path_factory.mktemp("generated")
    copy = edits(load_image(pack_photos[2]))["resized 0.5x"].resize((640, 400))
    novel = load_image(other_photos[1]).resize((640, 400))
    for suffix in (".png", ".jpg", ".webp"):
        save(copy, d / f"copy{suffix}")
        save(novel, d / f"novel{suffix}")
    return d


def verify(*args) -> int:
    return main(["verify", *map(str, args)])


# -- round trips --------------------------------------------------------------------------------

def test_the_report_links_each_images_signed_record(images, home, tmp_path, capsys):
    """check --sign --report: each row of the HTML report (flagged or not) links the signed copy that
    holds its image's record, and the JSON report names it."""
    import json

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("copy.png", "novel.png"):
        shutil.copy(images / name, folder)
    out, report = tmp_path / "signed", tmp_path / "report.html"
    assert sign_folder(folder, out, "--report", str(report)) == 1
    page = report.read_text(encoding="utf-8")
    for name in ("copy.png", "novel.png"):
        assert f'<a class="record" href="{(out / name).resolve().as_uri()}"' in page, name
    capsys.readouterr()
    assert sign_folder(folder, tmp_path / "signed-again", "--json") == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(r["signed_record"]).name for r in rows) == ["copy.png", "novel.png"]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_round_trip_signs_and_reads_back_the_check(images, home, tmp_path, capsys, suffix):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("copy", "novel"):
        shutil.copy(images / f"{name}{suffix}", folder)
    out = tmp_path / "signed"
    assert sign_folder(folder, out) == 1  # the copy is flagged, as check always says
    assert "signed record:" in capsys.readouterr().out
    for name in ("copy", "novel"):  # the user's files are untouched
        assert (folder / f"{name}{suffix}").read_bytes() == (images / f"{name}{suffix}").read_bytes()
    assert verify(out / f"copy{suffix}") == 1
    text = capsys.readouterr().out
    assert "record valid, signed by this install's local certificate" in text
    assert "the image is unchanged since signing" in text and "LIKELY COPY" in text
    assert "pack photos: 8 images" in text and "embedder pdq" in text and "pdq likely ≤ 31" in text
    assert verify(out / f"novel{suffix}") == 0
    assert "no copy" in capsys.readouterr().out
    # the signed image still decodes to the same pixels
    assert load_image(out / f"copy{suffix}").tobytes() == load_image(folder / f"copy{suffix}").tobytes()


def test_record_carries_the_check(images, home, tmp_path, capsys, pdq_pack):
    import json

    out = tmp_path / "signed"
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images / "copy.png", folder)
    sign_folder(folder, out)
    capsys.readouterr()
    assert verify("--json", out / "copy.png") == 1
    j = json.loads(capsys.readouterr().out)
    r = j["record"]
    assert j["valid"] and j["trusted"] and not j["changed"] and j["verdict"] == "likely copy"
    assert r["verdict"] == "likely copy" and r["is_copy"] and r["best"]["pack"] == "photos"
    assert r["best"]["distance"] <= 31 and r["regions"] == "off"
    import hashlib

    pack = r["packs"][0]
    assert pack["manifest_sha256"] == hashlib.sha256((pdq_pack / "manifest.json").read_bytes()).hexdigest()
    assert pack["images"] == 8 and pack["bytes"] > 0 and r["embedders"][0]["id"] == "pdq"
    assert r["thresholds"]["pdq"]["likely"] == 31 and r["replicheck_version"] and r["time"].endswith("Z")
    with c2pa.Reader(str(out / "copy.png")) as reader:  # a real C2PA reader sees the standard parts
        active = reader.get_active_manifest()
    actions = next(a for a in active["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert active["claim_generator_info"][0]["name"] == "replicheck command line"


def test_png_parameters_survive_signing(images, home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images / "novel.png", folder)
    sign_folder(folder, tmp_path / "signed")
    assert Image.open(tmp_path / "signed" / "novel.png").info["parameters"] == PARAMETERS


def test_sign_in_place_and_nothing_without_a_destination(images, home, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images / "novel.jpg", folder)
    args = ["check", str(folder), "--pack", str(PACK_HOLDER["pack"]), "--progress", "off", "--sign"]
    assert main(args) == 2 and "--sign-dir OUT" in capsys.readouterr().err
    assert main(args + ["--sign-dir", str(folder)]) == 2  # a copy onto the image itself is refused
    assert "would overwrite the image itself" in capsys.readouterr().err
    assert (folder / "novel.jpg").read_bytes() == (images / "novel.jpg").read_bytes()
    assert main(args + ["--sign-in-place"]) == 0
    capsys.readouterr()
    assert verify(folder / "novel.jpg") == 0


def test_signed_copies_keep_the_folder_layout(images, home, tmp_path, capsys):
    """Two images of the same name in two subfolders get two signed copies, not one over the other."""
    for sub, name in (("a", "copy.jpg"), ("b", "novel.jpg")):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(images / name, tmp_path / "in" / sub / "same.jpg")
    assert sign_folder(tmp_path / "in", tmp_path / "out") == 1
    capsys.readouterr()
    assert verify(tmp_path / "out" / "a" / "same.jpg") == 1 and verify(tmp_path / "out" / "b" / "same.jpg") == 0


# -- tampering ---------------------------------------------------------------------------------

@pytest.fixture
def signed_png(images, home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images / "copy.png", folder)
    sign_folder(folder, tmp_path / "signed")
    return tmp_path / "signed" / "copy.png"


def test_a_pixel_edit_is_detected(signed_png, tmp_path, capsys):
    """Pixels edited and the record kept: the image data chunks replaced, every other chunk (the
    manifest included) as signed."""
    im = load_image(signed_png)
    im.paste((255, 255, 255), (10, 10, 40, 40))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    new_idat = [c for c in png_chunks(buf.getvalue()) if c[0] == b"IDAT"]
    chunks, done = [], False
    for kind, data in png_chunks(signed_png.read_bytes()):
        if kind == b"IDAT":
            if not done:
                chunks += new_idat
                done = True
            continue
        chunks.append((kind, data))
    edited = tmp_path / "edited.png"
    edited.write_bytes(png_bytes(chunks))
    capsys.readouterr()
    assert verify(edited) == 2
    out = capsys.readouterr().out
    assert "INVALID record: the image was changed after it was signed" in out


def test_a_metadata_edit_is_detected(signed_png, tmp_path, capsys):
    chunks = [(k, d.replace(b"Steps: 20", b"Steps: 21") if k == b"tEXt" else d)
              for k, d in png_chunks(signed_png.read_bytes())]
    edited = tmp_path / "edited.png"
    edited.write_bytes(png_bytes(chunks))
    assert "Steps: 21" in Image.open(edited).info["parameters"]
    capsys.readouterr()
    assert verify(edited) == 2
    assert "the image was changed after it was signed" in capsys.readouterr().out


def test_a_record_signed_again_with_another_key_is_not_trusted(signed_png, tmp_path, monkeypatch, capsys):
    """Someone re-signs the image with their own key and a record that says 'no copy': the signature
    holds, but the signer is not this install's, and verify says so (exit 2) unless told to trust it."""
    from lib_replicheck.provenance import keys, record, sign
    from lib_replicheck.report import Report

    other = tmp_path / "other-home"
    forged = record.CheckContext()
    definition = record.manifest(record.assertion(Report(image="x"), forged), forged)
    resigned = tmp_path / "resigned.png"
    sign.sign_file(signed_png, resigned, definition, keys.local(other))
    capsys.readouterr()
    assert verify(resigned) == 2
    out = capsys.readouterr().out
    assert "signature valid but the signer is not one you trust" in out and "this install's" not in out
    assert verify("--any-signer", resigned) == 0  # integrity alone: the forged 'no copy' reads back
    capsys.readouterr()
    assert verify("--trust", keys.local_folder(other) / keys.CA_FILE, resigned) == 0
    assert "record valid, signed by replicheck local signer" in capsys.readouterr().out


# -- files without a record (hostile manifests: tests/hostile/test_hostile_manifests.py) ----------

def test_an_image_without_a_record(images, capsys, home):
    assert verify(images / "novel.webp", REPO / "README.md") == 2
    out = capsys.readouterr().out
    assert "no signed record: no C2PA manifest in the file" in out
    assert "record refused: not a PNG, JPEG or WebP file" in out


# -- keys -----------------------------------------------------------------------------------------

@pytest.fixture
def user_cert(tmp_path):
    """A certificate chain and key of the user's own (issued by a CA of theirs)."""
    from cryptography.hazmat.primitives import serialization

    from lib_replicheck.provenance.keys import _issue

    ca, chain, key = _issue()
    cert_path, key_path = tmp_path / "me.pem", tmp_path / "me.key"
    cert_path.write_bytes(chain)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_a_key_other_users_can_read_is_refused(images, home, tmp_path, user_cert, capsys):
    cert, key = user_cert
    key.chmod(0o644)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images / "novel.png", folder)
    out = tmp_path / "signed"
    assert sign_folder(folder, out, "--sign-cert", str(cert), "--sign-key", str(key)) == 2
    err = capsys.readouterr().err
    assert f"{key}: the key file can be read by other users (mode 644)" in err and "chmod 600" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()  # refused before any image was checked
    key.chmod(0o600)
    assert sign_folder(folder, out, "--sign-cert", str(cert), "--sign-key", str(key)) == 0
    capsys.readouterr()
    assert verify(out / "novel.png") == 2  # not this install's certificate
    assert verify("--sign-cert", cert, out / "novel.png") == 0  # the user's own, named
    assert "record valid, signed by replicheck local signer" in capsys.readouterr().out


def test_a_self_signed_certificate_is_refused_with_a_reason(images, home, tmp_path, capsys):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=9))
            .sign(k, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key = tmp_path / "k.pem"
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    key.chmod(0o600)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(images / "novel.png", folder)
    assert sign_folder(folder, tmp_path / "o", "--sign-cert", str(tmp_path / "c.pem"), "--sign-key", str(key)) == 2
    err = capsys.readouterr().err
    assert "not signed: signing failed" in err and "self-signed" in err
    assert not (tmp_path / "o" / "novel.png").exists()


def test_the_local_certificate_is_made_once_and_kept_private(home):
    from lib_replicheck.provenance import keys

    first = keys.local(home)
    folder = keys.local_folder(home)
    assert folder.stat().st_mode & 0o777 == 0o700 and (folder / keys.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert keys.local(home).chain_pem == first.chain_pem and first.alg == "es256" and first.tsa_url is None


def test_the_core_works_without_c2pa(images, tmp_path):
    """Without c2pa-python, checking works as before, and --sign and verify say what to install."""
    code = (
        "import sys; sys.modules['c2pa'] = None\n"
        "from lib_replicheck.cli.main import main\n"
        f"print('check', main(['check', {str(images / 'novel.png')!r}, '--pack', {str(PACK_HOLDER['pack'])!r}]))\n"
        f"print('sign', main(['check', {str(images / 'novel.png')!r}, '--pack', {str(PACK_HOLDER['pack'])!r}, "
        f"'--sign', '--sign-dir', {str(tmp_path / 'o')!r}]))\n"
        f"print('verify', main(['verify', {str(images / 'novel.png')!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, REPLICHECK_HOME=str(tmp_path / "h")))
    assert "check 0" in r.stdout and "sign 2" in r.stdout and "verify 2" in r.stdout, r.stdout + r.stderr
    assert r.stderr.count("pip install c2pa-python") == 2


# -- the web UI ---------------------------------------------------------------------------------

@pytest.fixture
def webui_pack(webui, pdq_pack):
    dst = webui.packs_dir / "photos"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(pdq_pack, dst)
    yield dst
    webui.module.service.unload()
    shutil.rmtree(dst, ignore_errors=True)


@pytest.fixture
def signing_on(webui):
    from modules import errors

    errors.reported.clear()
    shutil.rmtree(webui.outdir, ignore_errors=True)
    webui.set_option("replicheck_sign", "sign")
    yield
    for key in ("replicheck_sign_cert", "replicheck_sign_key"):
        webui.set_option(key, "")
    webui.set_option("replicheck_sign", "off")
    assert errors.reported == [], "the web UI reported an exception from a hook"


def test_webui_signs_saved_images_after_their_png_info(webui, webui_pack, signing_on, pack_photos, other_photos,
                                                        capsys):
    copy = edits(load_image(pack_photos[2]))["resized 0.5x"].resize((512, 384))
    novel = load_image(other_photos[1]).resize((512, 384))
    webui.processing.image_source = lambda p, index, seed: [copy, novel][index % 2]
    p, processed = webui.txt2img(batch_size=2)
    saved = sorted(Path(webui.outdir).glob("*.png"))
    assert len(saved) == 2
    ca = Path(webui.module.MODELS_DIR) / "signing" / "local-ca.pem"
    capsys.readouterr()
    assert verify("--trust", ca, *saved) == 1
    out = capsys.readouterr().out
    assert out.count("record valid") == 2 and "LIKELY COPY" in out and "made with AUTOMATIC1111" in out
    for f, text in zip(saved, processed.infotexts[1:]):  # the web UI's PNG info is inside what was signed
        assert Image.open(f).info["parameters"] == text and "Replicheck:" in text
    job = webui.module.service.live.get("txt2img")
    assert job.sign_error == ""


@pytest.fixture
def loose_key(webui, signing_on, user_cert, other_photos):
    """Signing on with the user's own key, readable by other users (refused), and a new photo to generate."""
    cert, key = user_cert
    key.chmod(0o644)
    webui.set_option("replicheck_sign_cert", str(cert))
    webui.set_option("replicheck_sign_key", str(key))
    novel = load_image(other_photos[1]).resize((512, 384))
    webui.processing.image_source = lambda p, index, seed: novel


def test_webui_signing_failure_leaves_the_image_as_saved(webui, webui_pack, loose_key, caplog):
    with caplog.at_level(logging.WARNING, logger="replicheck"):
        p, processed = webui.txt2img(batch_size=1)
    saved = sorted(Path(webui.outdir).glob("*.png"))
    assert len(saved) == 1 and "Replicheck: no copy" in Image.open(saved[0]).info["parameters"]
    lines = [r.getMessage() for r in caplog.records if "not signed" in r.getMessage()]
    assert len(lines) == 1 and "can be read by other users" in lines[0]
    job = webui.module.service.live.get("txt2img")
    assert "was not signed" in job.sign_error
    from lib_replicheck.webui.panel import render

    assert "rc-sign-error" in render(job.reports, state=job.state, sign_error=job.sign_error)


def api_txt2img(webui, **request):
    """POST /sdapi/v1/txt2img with replicheck on; the returned images' bytes (decoded) and the infotexts."""
    import base64
    import json

    from fastapi.testclient import TestClient

    r = TestClient(webui.app).post("/sdapi/v1/txt2img", json={
        "prompt": "x", "alwayson_scripts": {"replicheck": {"args": [True]}}, **request})
    assert r.status_code == 200, r.text
    return [base64.b64decode(b) for b in r.json()["images"]], json.loads(r.json()["info"])["infotexts"]


def web_ui_encoding(data: bytes) -> bytes:
    """What the web UI's own encode_pil_to_base64 makes of the image in `data` (PNG text included)."""
    import base64

    from modules.api import api

    original = getattr(api.encode_pil_to_base64, "__replicheck_original__")
    return base64.b64decode(original(Image.open(io.BytesIO(data))))


def test_webui_api_returns_signed_images(webui, webui_pack, signing_on, pack_photos, other_photos, tmp_path,
                                         capsys):
    import json

    copy = edits(load_image(pack_photos[2]))["resized 0.5x"].resize((512, 384))
    novel = load_image(other_photos[1]).resize((512, 384))
    webui.processing.image_source = lambda p, index, seed: [copy, novel][index % 2]
    webui.set_option("replicheck_keep_loaded", False)  # the packs are unloaded before the API encodes
    try:
        returned, infotexts = api_txt2img(webui, batch_size=2)
    finally:
        webui.set_option("replicheck_keep_loaded", True)
    assert webui.module.service.loaded_checker is None
    assert len(returned) == 2 and not list(Path(webui.outdir).glob("*.png"))  # the API's default: nothing saved
    files = []
    for i, data in enumerate(returned):
        files.append(tmp_path / f"returned-{i}.png")
        files[-1].write_bytes(data)
    ca = Path(webui.module.MODELS_DIR) / "signing" / "local-ca.pem"
    capsys.readouterr()
    assert verify("--json", "--trust", ca, files[0]) == 1  # the copy: valid, flagged, by the packs checked
    j = json.loads(capsys.readouterr().out)
    assert j["valid"] and j["trusted"] and j["record"]["verdict"] == "likely copy"
    assert [p["name"] for p in j["record"]["packs"]] == ["photos"] and j["record"]["embedders"][0]["id"] == "pdq"
    assert verify("--trust", ca, files[1]) == 0
    out = capsys.readouterr().out
    assert "record valid" in out and "made with AUTOMATIC1111" in out
    for f, text in zip(files, infotexts):  # the web UI's PNG text is inside what was signed, and nothing else
        assert Image.open(f).info["parameters"] == text and "Replicheck:" in text
        assert Image.open(f).text == {"parameters": text}
    assert webui.module.service.live.get("txt2img").sign_error == ""


def test_webui_api_signs_the_images_not_the_grid(webui, webui_pack, signing_on, other_photos, tmp_path, capsys):
    novel = load_image(other_photos[1]).resize((512, 384))
    webui.processing.image_source = lambda p, index, seed: novel
    returned, infotexts = api_txt2img(webui, batch_size=2, save_images=True)
    assert len(returned) == 3  # the grid first, not checked: returned as the web UI made it
    assert returned[0] == web_ui_encoding(returned[0])
    for i, data in enumerate(returned[1:]):
        (tmp_path / f"r{i}.png").write_bytes(data)
    ca = Path(webui.module.MODELS_DIR) / "signing" / "local-ca.pem"
    assert verify("--trust", ca, tmp_path / "r0.png", tmp_path / "r1.png") == 0
    saved = sorted(Path(webui.outdir).glob("*.png"))
    assert len(saved) == 2 and verify("--trust", ca, *saved) == 0


def test_webui_api_signs_the_inpainted_image_as_checked(webui, webui_pack, signing_on, pack_photos, other_photos,
                                                       tmp_path, capsys):
    """Inpainting a small area of a training photo: the image returned is the overlay pasted (a new
    object made after sampling), and its record says what its check said: a likely copy, composite."""
    import base64
    import json

    from fastapi.testclient import TestClient

    copy = edits(load_image(pack_photos[2]))["resized 0.5x"].resize((512, 384))
    webui.processing.image_source = lambda p, index, seed: load_image(other_photos[1]).resize((512, 384))
    mask = Image.new("L", (512, 384), 0)
    mask.paste(255, (236, 172, 276, 212))

    def b64(im):
        buf = io.BytesIO()
        im.save(buf, "PNG")
        return base64.b64encode(buf.getvalue()).decode()

    webui.set_option("replicheck_check_input", False)
    try:
        r = TestClient(webui.app).post("/sdapi/v1/img2img", json={
            "init_images": [b64(copy)], "mask": b64(mask), "prompt": "x", "width": 512, "height": 384,
            "inpainting_fill": 1, "inpaint_full_res": False, "denoising_strength": 0.1})
    finally:
        webui.set_option("replicheck_check_input", True)
    assert r.status_code == 200, r.text
    assert "Replicheck: likely copy" in json.loads(r.json()["info"])["infotexts"][0]
    f = tmp_path / "inpainted.png"
    f.write_bytes(base64.b64decode(r.json()["images"][0]))
    ca = Path(webui.module.MODELS_DIR) / "signing" / "local-ca.pem"
    capsys.readouterr()
    assert verify("--json", "--trust", ca, f) == 1
    j = json.loads(capsys.readouterr().out)
    assert j["valid"] and j["trusted"] and j["record"]["verdict"] == "likely copy"
    with c2pa.Reader(str(f)) as reader:
        active = reader.get_active_manifest()
    actions = next(a for a in active["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert actions[0]["digitalSourceType"].endswith("/compositeWithTrainedAlgorithmicMedia")


def test_remembered_images_are_the_objects_themselves():
    """A copy of a remembered image, or a new image that got a dead one's id, is not taken for it;
    the oldest are forgotten past the limit."""
    from lib_replicheck.webui.signing import Remembered, RememberedImages

    remembered, state = RememberedImages(limit=2), object()
    a = Image.new("RGB", (8, 8))
    remembered.remember(a, Remembered(state, 0, None))
    assert remembered.find(a) == Remembered(state, 0, None) and remembered.find(a.copy()) is None
    del a
    b = Image.new("RGB", (8, 8))  # CPython usually hands the freed id to the next object
    assert remembered.find(b) is None
    c, d = Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8))
    for i, im in enumerate((b, c, d)):
        remembered.remember(im, Remembered(state, i + 1, None))
    assert len(remembered) == 2 and remembered.find(b) is None and remembered.find(d).index == 3


def test_webui_api_images_untouched_with_signing_off(webui, webui_pack, other_photos, capsys):
    assert webui.shared.opts.replicheck_sign == "off"
    novel = load_image(other_photos[1]).resize((512, 384))
    webui.processing.image_source = lambda p, index, seed: novel
    returned, infotexts = api_txt2img(webui, batch_size=1)
    assert returned[0] == web_ui_encoding(returned[0])
    assert b"caBX" not in [k for k, _ in png_chunks(returned[0])]
    assert "Replicheck:" in Image.open(io.BytesIO(returned[0])).info["parameters"]


def test_webui_api_signing_failure_returns_the_web_uis_bytes(webui, webui_pack, loose_key, caplog):
    with caplog.at_level(logging.WARNING, logger="replicheck"):
        returned, infotexts = api_txt2img(webui, batch_size=1)
    assert returned[0] == web_ui_encoding(returned[0])
    assert Image.open(io.BytesIO(returned[0])).info["parameters"] == infotexts[0]
    lines = [r.getMessage() for r in caplog.records if "not signed" in r.getMessage()]
    assert len(lines) == 1 and "returned by the API" in lines[0] and "can be read by other users" in lines[0]


def test_webui_api_leaves_other_images_alone(webui, webui_pack, signing_on, other_photos):
    """An image no checked job made (the extras API, the live preview) is encoded as the web UI does."""
    import base64

    from modules.api import api

    im = load_image(other_photos[1]).resize((256, 192))
    im.info["parameters"] = "upscaled"
    encoded = api.encode_pil_to_base64(im)
    assert isinstance(encoded, bytes) and encoded == api.encode_pil_to_base64.__replicheck_original__(im)
    assert b"caBX" not in [k for k, _ in png_chunks(base64.b64decode(encoded))]


def test_webui_api_encoder_is_wrapped_once_across_reloads(webui):
    """Reloading the scripts wraps the web UI's own encoder again, never the previous wrapper."""
    from modules.api import api

    from lib_replicheck.webui.signing import wrap_api_encoders

    first = api.encode_pil_to_base64
    original = first.__replicheck_original__
    assert original.__module__ == "modules.api.api" and not hasattr(original, "__replicheck_original__")
    try:
        assert wrap_api_encoders(webui.module.saved_signer) == ["modules.api.api"]
        assert api.encode_pil_to_base64 is not first and api.encode_pil_to_base64.__replicheck_original__ is original
    finally:
        api.encode_pil_to_base64 = first


def test_webui_setting_says_what_it_does(webui):
    labels = webui.shared.opts.data_labels
    info = labels["replicheck_sign"]
    assert info.default == "off" and "verify" in info.comment_after and "C2PA" in info.label
