"""The builder's embedding throughput against the bare model, and Ray with 1 and 2 workers.

    python bench/builder_throughput.py [--images 96] [--embedder sscd|pdq]

Real photos (Debian wallpaper packages), re-encoded as 512-pixel JPEGs like LAION images. "Bare
model": embedder.embed() on images already decoded, in batches. "Pipeline": the builder's embed
stage from JPEG bytes (decoding in threads while the model runs). Ray: the same items through the
Ray Data actor pool, actor start-up included.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def jpeg_items(files: list[Path], n: int) -> list:
    """`n` source items cycling over `files`, each a 512-pixel JPEG as a list's images arrive."""
    from lib_replicheck.builder.sources import SourceItem
    from lib_replicheck.images import load_image

    items = []
    for i in range(n):
        im = load_image(files[i % len(files)])
        im.thumbnail((512, 512))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        items.append(SourceItem(key=str(i), data=buf.getvalue()))
    return items


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--embedder", default="sscd")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    from lib_replicheck.builder.embed import embed_items, embed_with_ray

    from lib_replicheck.builder.options import BuildOptions, load_embedder
    from lib_replicheck.embedders.options import EmbedderOptions

    onnx = REPO / ".cache" / "sscd_disc_mixup.onnx"
    opts = BuildOptions(embedder=args.embedder, batch=args.batch, embedding=EmbedderOptions(
        runtime="onnx" if args.embedder == "sscd" else "auto", weights=str(onnx) if args.embedder == "sscd" else None))
    files = sorted(Path("/usr/share/backgrounds").rglob("*.jpg"))
    items = jpeg_items(files, args.images)
    embedder = load_embedder(opts)
    decoded = [it.open() for it in items]
    embedder.embed(decoded[:2])  # warm-up

    t = time.perf_counter()
    for s in range(0, len(decoded), args.batch):
        embedder.embed(decoded[s:s + args.batch])
    bare = len(decoded) / (time.perf_counter() - t)

    with ThreadPoolExecutor(2) as pool:
        t = time.perf_counter()
        vectors, metas, skipped, _ = embed_items(items, embedder, (1.0,), args.batch, pool)
        pipeline = len(metas) / (time.perf_counter() - t)
    print(f"{len(items)} real photos as 512-pixel JPEGs, embedder {embedder.id} ({embedder.runtime}), CPU:")
    print(f"  bare model (decoded images):    {bare:7.1f} images/s")
    print(f"  builder pipeline (from JPEG):   {pipeline:7.1f} images/s  = {pipeline / bare:.0%} of the bare model")
    spec = embedder.spec
    import ray

    # Ray keeps its session files (sockets, logs) under its temp folder: one of our own, removed after
    with tempfile.TemporaryDirectory(prefix="replicheck-ray-") as ray_tmp:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_tmp)
        try:
            for workers in (1, 2):
                o = BuildOptions(**{**opts.__dict__, "ray": True, "workers": workers})
                t = time.perf_counter()
                _, metas, _, _ = embed_with_ray(items, o, (1.0,), spec)
                rate = len(metas) / (time.perf_counter() - t)
                print(f"  Ray Data, {workers} worker(s):          {rate:7.1f} images/s (actor start-up included)")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
