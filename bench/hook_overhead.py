"""How much wall time replicheck adds to a generation, measured through the real hook code.

    python bench/hook_overhead.py [--seconds-per-image 2.0] [--batch 4] [--count 2] [--repeat 3]

The web UI's processing loop (tests/webui, which calls the hooks in the web UI's order) runs with
the extension loaded from scripts/replicheck.py, checks on and off, side by side, alternating.
The model is simulated: sampling is GPU work during which the CPU waits, so each batch sleeps
`seconds-per-image x batch` (2 s per 512x512 image is SD 1.5 at 20 steps on a mid-range GPU; pass
1.0 for a fast one). Images are real photos, 512x512. The check runs on this machine's CPU with
SSCD's ONNX runtime (Meta's int8 sscd_disc_mixup from tests/setup.sh) against an SSCD pack of 31
real photos; the model is loaded once, before the first timed run.
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
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds-per-image", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--count", type=int, default=2, help="batch count")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from PIL import ImageOps

    from lib_replicheck import embedders
    from lib_replicheck.images import load_image
    from lib_replicheck.packs.build import build_pack, folder_records
    from webui.harness import FakeWebUI

    onnx = REPO / ".cache" / "sscd_disc_mixup.onnx"
    if not onnx.is_file():
        sys.exit(f"{onnx} is missing: run `bash tests/setup.sh` first")
    root = Path(tempfile.mkdtemp(prefix="replicheck-bench-"))
    webui = FakeWebUI(root / "webui")
    photos = sorted(Path("/usr/share/backgrounds").rglob("*_by_*.jpg")) + sorted(
        Path("/usr/share/backgrounds/mate/nature").glob("*.jpg"))
    src = root / "src"
    src.mkdir()
    for p in photos:
        (src / p.name).symlink_to(p)
    models = Path(webui.module.service.models_dir)
    models.mkdir(parents=True, exist_ok=True)
    (models / "sscd_disc_mixup.onnx").symlink_to(onnx)  # where the extension looks for it
    build_pack(folder_records(src), embedders.load("sscd", runtime="onnx", weights=onnx),
               webui.packs_dir / "photos", log=lambda s: None)

    images = [ImageOps.fit(load_image(p), (512, 512)) for p in photos[: args.batch * args.count]]
    per_batch_sleep = args.seconds_per_image * args.batch

    def source(p, index, seed):
        if index % args.batch == 0:
            time.sleep(per_batch_sleep)  # the batch is sampled on the GPU; the CPU waits
        return images[index % len(images)]

    webui.processing.image_source = source
    webui.shared.opts.samples_save = False  # measure the check, not PNG encoding
    webui.txt2img(enabled=True, batch_size=args.batch, n_iter=1)  # load the model once
    on, off = [], []
    for _ in range(args.repeat):
        for enabled, bucket in ((False, off), (True, on)):
            t = time.perf_counter()
            webui.txt2img(enabled=enabled, batch_size=args.batch, n_iter=args.count)
            bucket.append(time.perf_counter() - t)
    job = webui.module.service.live.get("txt2img")
    assert len(job.reports) == args.batch * args.count and not any(r.error for r in job.reports.values())
    n = args.batch * args.count
    t_off, t_on = statistics.median(off), statistics.median(on)
    print(f"{n} images per generation (batch {args.batch} x {args.count}), simulated sampling "
          f"{args.seconds_per_image:.2f} s/image, SSCD ONNX on CPU, median of {args.repeat}:")
    print(f"  checks off: {t_off:7.2f} s")
    print(f"  checks on:  {t_on:7.2f} s   ({(t_on - t_off) / n * 1000:.0f} ms per image)")
    print(f"  overhead ratio: {t_on / t_off:.3f}  ({(t_on / t_off - 1) * 100:.1f}% extra wall time; target <= 5%)")


if __name__ == "__main__":
    main()
