"""What the signed record (C2PA) costs per saved image, side by side with the check, and what it adds to the file.

    python bench/signing.py [--images 20]

Images: `--images` 512x512 crops of the real photos in /usr/share/backgrounds (tests/setup.sh installs
them), each saved as PNG (with a web UI `parameters` text), JPEG (quality 90) and WebP (quality 90).
Check: SSCD, Meta's int8 sscd_disc_mixup ONNX, against an exact pack built from the same crops,
`Checker.check([image])` per decoded image (what the web UI does per image), model loaded beforehand.
Signing: what the web UI does per saved file once the check is done: the record built from the
report, `sign.sign_file` in place (read, sign with this install's local ES256 certificate, read the
signed copy back and validate it, write it through a temporary file), no timestamp authority.
Also `verify_file` (what `verify` does per image). Figures are medians over the images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from check_overhead import crops  # noqa: E402 - the same 512x512 crops of the installed wallpapers

SSCD_ONNX = REPO / ".cache" / "sscd_disc_mixup.onnx"
PARAMETERS = "a photo of a lake at dawn\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    args = ap.parse_args()
    import c2pa
    from PIL import Image, PngImagePlugin

    from lib_replicheck import embedders
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.checker import Checker
    from lib_replicheck.embedders import EmbedderOptions
    from lib_replicheck.images import load_image
    from lib_replicheck.packs.pack import Pack
    from lib_replicheck.provenance import keys, record, sign
    from lib_replicheck.provenance.verify import verify_file

    if not SSCD_ONNX.is_file():
        sys.exit(f"{SSCD_ONNX} is missing: run `bash tests/setup.sh` first")
    with tempfile.TemporaryDirectory(prefix="replicheck-bench-signing-") as tmp:
        tmp = Path(tmp)
        (tmp / "crops").mkdir()
        files = crops(args.images, tmp / "crops")
        sscd = embedders.load("sscd", runtime="onnx", weights=SSCD_ONNX)
        built = build_from_items(sources.folder(tmp / "crops", license="test"), sscd, tmp / "pack", log=lambda s: None)
        checker = Checker([Pack(built.path)], embedder=EmbedderOptions(runtime="onnx", weights=SSCD_ONNX, progress=False))
        images = [load_image(f) for f in files]
        checker.check(images[:1])  # the model loaded before the clock starts
        creds = keys.local(tmp / "home")
        print(f"signing cost: {len(files)} real photos as 512x512, c2pa-python {c2pa.__version__} (c2pa-rs "
              f"{c2pa.sdk_version()}), local certificate {creds.alg.upper()}, no timestamp authority; "
              f"check: SSCD int8 ONNX, exact pack of {len(files)} vectors; medians, ms per image")
        print(f"  {'format':<6} {'check':>8} {'sign':>8} {'verify':>8} {'sign/check':>11} {'file':>10} {'added':>9}")
        checks, reports = [], []
        for im in images:
            t = time.perf_counter()
            reports.append(checker.check([im])[0])
            checks.append(time.perf_counter() - t)
        for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("WebP", ".webp")):
            signs, verifies, sizes, added = [], [], [], []
            for i, (im, report) in enumerate(zip(images, reports)):
                path = tmp / "out" / f"{i}{suffix}"
                path.parent.mkdir(exist_ok=True)
                if fmt == "PNG":
                    info = PngImagePlugin.PngInfo()
                    info.add_text("parameters", PARAMETERS)
                    im.save(path, "PNG", pnginfo=info)
                else:
                    im.save(path, fmt.upper(), quality=90)
                before = path.stat().st_size
                t = time.perf_counter()
                context = record.CheckContext.of_checker(checker)
                sign.sign_file(path, path, record.manifest(record.assertion(report, context), context, path.name),
                               creds)
                signs.append(time.perf_counter() - t)
                t = time.perf_counter()
                v = verify_file(path, [keys.local_ca(tmp / "home")])
                verifies.append(time.perf_counter() - t)
                if not (v.intact and v.trusted):
                    sys.exit(f"{path}: the signed file does not verify: {v.problem}")
                sizes.append(before)
                added.append(path.stat().st_size - before)
            check_ms, sign_ms = median_ms(checks), median_ms(signs)
            print(f"  {fmt:<6} {check_ms:8.1f} {sign_ms:8.1f} {median_ms(verifies):8.1f} {sign_ms / check_ms:10.2f}x "
                  f"{statistics.median(sizes) / 1000:7.1f} kB {statistics.median(added) / 1000:6.1f} kB")
        Image.open(path).load()  # the last signed file still decodes


if __name__ == "__main__":
    main()
