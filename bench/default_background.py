"""Make the default background set that ships with replicheck (lib_replicheck/data/backgrounds/):
SSCD descriptors of public-domain images, used by every SSCD pack that has no background of its own.

    python bench/default_background.py [--rows 406] [--check]

The images are OpenClipart's drawings as Debian's `openclipart-png` installs them (CC0 / public
domain dedication: /usr/share/doc/openclipart-png/copyright), the only public-domain images the tests
install (the photos are GPL-2+ or CC-BY-SA). They are chosen by their path alone: sorted, those at
positions 10, 30, 50 ... (so none of them is among the drawings bench/regions.py puts in its pack, at
positions 0, 20, 40 ...), then `--rows` of those evenly spread. Each is embedded by replicheck's own
SSCD embedder from Meta's sscd_disc_mixup ONNX file (int8, tests/setup.sh puts it in .cache) and
stored as float16 unit rows. The provenance file beside it records the model's sha256, every image's
path and sha256, and the vectors' sha256, which loading checks (packs/background.py).
`--check` rebuilds the rows in memory and says whether they match the shipped file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

CLIPART = Path("/usr/share/openclipart/png")
LICENSE_FILE = Path("/usr/share/doc/openclipart-png/copyright")


def chosen(rows: int) -> list[Path]:
    """The drawings used, by their sorted position alone."""
    drawings = sorted(CLIPART.rglob("*.png"))
    odd = drawings[10::20]
    step = max(1, len(odd) // rows)
    return odd[::step][:rows]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=406, help="images embedded (406 rows of 512 float16: 406 KiB; all the drawings at those positions)")
    ap.add_argument("--check", action="store_true", help="rebuild in memory and compare with the shipped file")
    args = ap.parse_args()

    import numpy as np

    from conftest import SSCD_ONNX
    from lib_replicheck import embedders
    from lib_replicheck.atomic import write_atomic
    from lib_replicheck.images import load_image
    from lib_replicheck.packs import background as bg

    if not SSCD_ONNX.is_file():
        sys.exit(f"needs {SSCD_ONNX} (bash tests/setup.sh puts it there)")
    if not LICENSE_FILE.is_file():
        sys.exit(f"needs Debian's openclipart-png ({LICENSE_FILE})")
    files = chosen(args.rows)
    sscd = embedders.load("sscd", runtime="onnx", weights=SSCD_ONNX, offline=True)
    vectors = []
    for start in range(0, len(files), 32):
        vectors.append(np.asarray(sscd.embed([load_image(p) for p in files[start:start + 32]]), dtype=np.float32))
    rows = np.concatenate(vectors)
    buf = io.BytesIO()
    bg.save(buf, rows)
    data = buf.getvalue()
    spec = bg.DEFAULTS[sscd.spec.id]
    out = bg.DEFAULTS_DIR / spec
    if args.check:
        same = out.is_file() and out.read_bytes() == data
        print(f"{out.name}: {'matches' if same else 'DIFFERS from'} the rebuilt rows ({len(rows)} x {rows.shape[1]})")
        sys.exit(0 if same else 1)
    provenance = {
        "file": out.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": int(rows.shape[0]),
        "dim": int(rows.shape[1]),
        "dtype": "float16",
        "summary": f"{len(rows)} OpenClipart drawings (CC0)",
        "embedder": sscd.spec.id,
        "model": {"file": SSCD_ONNX.name, "sha256": sha256(SSCD_ONNX), "runtime": "onnx (int8)"},
        "made_by": "bench/default_background.py --rows " + str(args.rows),
        "images": {"package": "openclipart-png (Debian)", "license": "CC0 1.0 / public domain dedication",
                   "license_file": str(LICENSE_FILE), "root": str(CLIPART),
                   "files": [{"path": str(p.relative_to(CLIPART)), "sha256": sha256(p)} for p in files]},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, data)
    write_atomic(out.with_suffix(".json"), (json.dumps(provenance, indent=1) + "\n").encode("utf-8"))
    print(f"{out.relative_to(REPO)}: {len(rows)} rows of {rows.shape[1]}, {len(data):,} bytes, sha256 {provenance['sha256']}")


if __name__ == "__main__":
    main()
