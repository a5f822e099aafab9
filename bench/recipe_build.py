"""A recipe built end to end (`packs get`'s code path) against a real HTTP server on 127.0.0.1:
the CSV list, then replicheck's own fetcher getting real photos (plus the broken rows of the tests),
then SSCD embedding, indexing and the atomic install. Prints the time of each stage, the embedding rate, and
what that rate means for the shipped recipes' embedding (fetching from the real web depends on the
hosts and is not measured here).

    python bench/recipe_build.py [--images 48] [--device cpu|cuda] [--runtime onnx|torchscript]

CPU: Meta's int8 SSCD ONNX file (.cache/sscd_disc_mixup.onnx). `--runtime torchscript` uses the
SSCD ResNet-50 architecture with RANDOM weights (bench/embedders.py: the cost of a forward pass does
not depend on the weights), for a machine with a GPU and no SSCD TorchScript file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runtime", default="onnx", choices=["onnx", "torchscript"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--embed-only", action="store_true",
                    help="only the embed stage (the builder's, from JPEG bytes), e.g. for a GPU machine")
    ap.add_argument("--photos", type=Path, default=Path("/usr/share/backgrounds"),
                    help="a folder of real photos (default: the Debian wallpapers tests/setup.sh installs)")
    args = ap.parse_args()

    if args.embed_only:
        return embed_only(args)
    from httpfaults import FaultServer
    from lib_replicheck.builder.build_recipe import GetOptions, get_recipe
    from lib_replicheck.embedders.options import EmbedderOptions
    from lib_replicheck.download import Policy
    from lib_replicheck.images import load_image
    from lib_replicheck.registry import registry

    tmp = Path(tempfile.mkdtemp(prefix="replicheck-recipe-bench-"))
    if args.runtime == "onnx":
        weights = REPO / ".cache" / "sscd_disc_mixup.onnx"
        model = "sscd_disc_mixup int8 ONNX"
    else:
        from embedders import torchscript_resnet50

        weights = torchscript_resnet50(tmp / "sscd.pt")
        model = "SSCD ResNet-50 TorchScript, RANDOM weights"
    files = sorted(args.photos.rglob("*.jpg"))
    server = FaultServer()
    lines = ["URL;Caption"]
    for i in range(args.images):
        im = load_image(files[i % len(files)])
        im.thumbnail((768, 768))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        lines.append(f"{server.add(f'/img/{i}.jpg', buf.getvalue())};photo {i}")
    lines.append(f"{server.url}/img/missing.jpg;gone")
    lines.append(f"{server.add('/img/notes.jpg', b'not an image' * 50)};text")
    body = ("\n".join(lines) + "\n").encode()
    server.add("/list.csv", body)
    entry = {"kind": "recipe", "name": "bench", "title": "bench", "embedder": {"id": "sscd"},
             "list": {"format": "csv", "delimiter": ";", "columns": {"url": "URL", "caption": "Caption"},
                      "files": [{"urls": ["list.csv"], "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}]},
             "build": {"image_size": 512, "download_timeout": 5, "thumbnails": True, "batch": args.batch}}
    url = server.add("/registry.json", json.dumps({"format": "replicheck-registry", "format_version": 1,
                                                   "packs": [entry]}).encode())
    recipe = registry.load(url).packs[0]
    starts: dict[str, float] = {}
    embed_first: list[float] = []

    def progress(p) -> None:
        now = time.perf_counter()
        starts.setdefault(p.stage, now)
        if p.stage == "embed" and p.done > 0 and not embed_first:
            embed_first.append(now)

    t0 = time.perf_counter()
    res = get_recipe(recipe, tmp / "packs", GetOptions(embedding=EmbedderOptions(device=args.device, runtime=args.runtime,
                                                                                  weights=str(weights))),
                     progress=progress, policy=Policy(retries=0), log=lambda s: None)
    end = time.perf_counter()
    server.close()
    order = [s for s in ("list", "fetch", "embed", "index") if s in starts]
    bounds = [starts[s] for s in order] + [end]
    took = {s: bounds[i + 1] - bounds[i] for i, s in enumerate(order)}
    embed_s = took["embed"]
    rate = res.fetched / embed_s
    cpus = os.cpu_count()
    print(f"{args.images} real photos + 2 broken rows from 127.0.0.1, {model}, {args.device.upper()} "
          f"({cpus} cores), batch {args.batch}:")
    print(f"  {res.listed} listed, {res.fetched} fetched, {res.failed} failed, {res.count} in the pack; "
          f"{end - t0:.1f} s in all")
    print("  stages: " + ", ".join(f"{s} {took[s]:.1f} s" for s in order)
          + " (embed includes loading the model; index includes the install)")
    print(f"  embedding: {rate:.1f} images/s")
    for name, n in (("sd1-memorized", 500), ("LAION-Aesthetics 6.5+", 625_000), ("pd12m", 12_400_000)):
        print(f"  {name} ({n:,} images): embedding at this rate about {_duration(n / rate)}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


def _weights(args, tmp: Path) -> tuple[Path, str]:
    if args.runtime == "onnx":
        return REPO / ".cache" / "sscd_disc_mixup.onnx", "sscd_disc_mixup int8 ONNX"
    from embedders import torchscript_resnet50

    return torchscript_resnet50(tmp / "sscd.pt"), "SSCD ResNet-50 TorchScript, RANDOM weights"


def embed_only(args) -> None:
    """The embed stage alone (decoding in threads while the model runs), as a recipe build runs it."""
    from concurrent.futures import ThreadPoolExecutor

    from lib_replicheck.builder.embed import embed_items
    from lib_replicheck.builder.options import BuildOptions, load_embedder
    from lib_replicheck.embedders.options import EmbedderOptions
    from builder_throughput import jpeg_items

    tmp = Path(tempfile.mkdtemp(prefix="replicheck-recipe-bench-"))
    weights, model = _weights(args, tmp)
    files = sorted(args.photos.rglob("*.jpg"))
    items = jpeg_items(files, args.images)
    embedder = load_embedder(BuildOptions(embedder="sscd", batch=args.batch, embedding=EmbedderOptions(
        runtime=args.runtime, device=args.device, weights=str(weights))))
    with ThreadPoolExecutor(max(2, (os.cpu_count() or 2) // 2)) as pool:
        embed_items(items[:args.batch], embedder, (1.0,), args.batch, pool)  # warm-up
        t = time.perf_counter()
        embed_items(items, embedder, (1.0,), args.batch, pool)
        rate = len(items) / (time.perf_counter() - t)
    print(f"{args.images} real photos as 512-pixel JPEGs, {model}, {args.device.upper()} ({os.cpu_count()} cores), "
          f"batch {args.batch}, embed stage only:")
    print(f"  embedding: {rate:.1f} images/s")
    for name, n in (("sd1-memorized", 500), ("LAION-Aesthetics 6.5+", 625_000), ("pd12m", 12_400_000)):
        print(f"  {name} ({n:,} images): embedding at this rate about {_duration(n / rate)}")


def _duration(seconds: float) -> str:
    from lib_replicheck.registry.parse_recipe import duration

    return duration(seconds)


if __name__ == "__main__":
    main()
