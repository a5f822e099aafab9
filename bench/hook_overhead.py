"""What the check adds to a generation, per image, through the real hook code, against the bare model.

    python bench/hook_overhead.py [--batch 4] [--count 2] [--repeat 3] [--sampling 1 2 5]

The web UI's processing loop (tests/webui, which calls the hooks in the web UI's order) runs with
the extension loaded from scripts/replicheck.py, checks off and on, alternating, with sampling
taking no time: the difference is what the check costs per image on this CPU (SSCD's ONNX runtime,
Meta's int8 sscd_disc_mixup from tests/setup.sh, against an SSCD pack of the real photos). The
hook checks each image as it is finished, in the generation's own thread, so this cost adds to the
generation's wall time one for one. In the same run, the same images go through the bare model
forward (the extension's own onnxruntime session, one image at a time, pixels already resized).
The share of a generation's time is then computed, not measured, for stated sampling times per
image: cost / (sampling + cost).
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--count", type=int, default=2, help="batch count")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sampling", type=float, nargs="+", default=[1.0, 2.0, 5.0],
                    help="seconds of sampling per image for the computed share")
    args = ap.parse_args()

    from PIL import ImageOps

    from lib_replicheck import embedders
    from lib_replicheck.images import load_image
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from webui.harness import FakeWebUI

    onnx = REPO / ".cache" / "sscd_disc_mixup.onnx"
    if not onnx.is_file():
        sys.exit(f"{onnx} is missing: run `bash tests/setup.sh` first")
    tmp = tempfile.TemporaryDirectory(prefix="replicheck-bench-")
    root = Path(tmp.name)
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
    build_from_items(sources.folder(src), embedders.load("sscd", runtime="onnx", weights=onnx),
                     webui.packs_dir / "photos", log=lambda s: None)

    n = args.batch * args.count
    images = [ImageOps.fit(load_image(p), (512, 512)) for p in photos[:n]]

    def source(p, index, seed):
        return images[index % len(images)]

    webui.processing.image_source = source
    webui.shared.opts.samples_save = False  # measure the check, not PNG encoding
    webui.txt2img(enabled=True, batch_size=args.batch, n_iter=1)  # load the model once, outside the timing
    service = webui.module.service
    embedder = next(iter(service._checker._embedders.values()))
    arrays = [embedder.preprocess(im) for im in images]
    on, off, bare = [], [], []
    for _ in range(args.repeat):
        for enabled, bucket in ((False, off), (True, on)):
            t = time.perf_counter()
            webui.txt2img(enabled=enabled, batch_size=args.batch, n_iter=args.count)
            bucket.append(time.perf_counter() - t)
        t = time.perf_counter()
        for a in arrays:
            embedder._run(a[None])
        bare.append(time.perf_counter() - t)
    job = service.live.get("txt2img")
    assert len(job.reports) == n and not any(r.error for r in job.reports.values())
    t_off, t_on, t_bare = statistics.median(off), statistics.median(on), statistics.median(bare)
    cost = (t_on - t_off) / n
    forward = t_bare / n
    print(f"hook overhead: {n} real photos 512x512 per generation (batch {args.batch} x {args.count}), sampling "
          f"taking no time, SSCD int8 ONNX on this CPU, median of {args.repeat} rounds, side by side:")
    print(f"  generation, checks off: {t_off:.3f} s; checks on: {t_on:.3f} s")
    print(f"  the check through the web UI's hooks: {cost * 1000:.1f} ms per image")
    print(f"  bare SSCD forward, same images one at a time, same run: {forward * 1000:.1f} ms per image "
          f"(hook cost / bare forward = {cost / forward:.2f}x)")
    shares = ", ".join(f"{s:g} s/image -> {cost / (s + cost) * 100:.1f}%" for s in args.sampling)
    print(f"  share of a generation's wall time, computed as cost / (sampling + cost): {shares}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
