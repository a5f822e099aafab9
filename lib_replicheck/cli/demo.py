"""`python -m lib_replicheck demo`: the whole check, offline, on photos shipped in the repository.

It opens and verifies the bundled demo pack (registry/demo: PDQ hashes of four public-domain photos,
so no model weights are needed), makes an edited copy of one of the photos (cropped, shrunk,
brightened, JPEG-recompressed), and checks that copy and a photo that is not in the pack. The first
should be flagged, the second pass.

It prints its reports with `cli.text.format_report`, as `check` does.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from lib_replicheck.home import shipped_registry

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_images"
#: The demo pack as published in this repository's registry (built from DEMO_DIR/pack).
BUNDLED_PACK = shipped_registry() / "demo"
COPIED = "coffee.jpg"


def edited_copy(path: Path):
    """What a generation that replicates a training image may look like: the same picture, cropped
    to its centre 90%, at half size, 15% brighter, saved as a low-quality JPEG."""
    from PIL import Image, ImageEnhance

    from lib_replicheck.images import load_image
    from lib_replicheck.images import centre_crop

    im = centre_crop(load_image(path), 0.9)
    im = im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR)
    im = ImageEnhance.Brightness(im).enhance(1.15)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def run_demo(json_output: bool = False, out=None) -> int:
    from lib_replicheck import embedders
    from lib_replicheck.checker import Checker
    from lib_replicheck.cli.text import format_report
    from lib_replicheck.errors import json_text
    from lib_replicheck.images import load_image
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.packs.pack import Pack

    out = out or sys.stdout
    say = (lambda s: None) if json_output else (lambda s: print(s, file=out))
    with tempfile.TemporaryDirectory(prefix="replicheck-demo-") as tmp:
        if (BUNDLED_PACK / "manifest.json").is_file():
            pack = Pack(BUNDLED_PACK, expect_embedder="pdq")
            pack.verify()
            say(f"Demo pack {BUNDLED_PACK}: {pack.manifest.count} photos, {pack.manifest.vectors} PDQ hashes "
                "(whole image and centre crops), every file's sha256 verified\n")
        else:  # a copy of the library without the repository's registry folder: build the same pack
            items = sources.folder(DEMO_DIR / "pack", license="public domain / CC0 (see LICENSES.md)")
            result = build_from_items(items, embedders.load("pdq"), Path(tmp) / "demo", name="demo",
                                      log=lambda s: None)
            pack = Pack(result.path)
            say(f"Built the demo pack from {DEMO_DIR / 'pack'}: {result.count} photos\n")
        checker = Checker([pack], top_k=3)
        images = [edited_copy(DEMO_DIR / "pack" / COPIED), load_image(DEMO_DIR / "novel" / "hubble_deep_field.jpg")]
        labels = [f"edited copy of {COPIED} (crop 90%, half size, +15% brightness, JPEG q40)",
                  "hubble_deep_field.jpg (not in the pack)"]
        reports = checker.check(images, labels)
        for r in reports:
            if json_output:
                print(json_text(r.to_dict()), file=out)
            else:
                say(format_report(r) + "\n")
        pack.close()
    ok = reports[0].is_copy and reports[0].best.source == COPIED and not reports[1].is_copy
    say("Demo result: the copy was flagged and the novel image passed." if ok
        else "Demo result: UNEXPECTED - see the reports above.")
    return 0 if ok else 1
