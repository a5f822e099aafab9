"""What the check costs on top of the bare model, quiet and with the CPU shared, side by side in one run.

    python bench/check_overhead.py [--images 100] [--load-procs 1] [--rounds 2]

Model: SSCD, Meta's int8 sscd_disc_mixup ONNX (from tests/setup.sh), onnxruntime on this CPU.
Images: `--images` 512x512 crops of the real photos in /usr/share/backgrounds (Debian wallpaper
packages, installed by tests/setup.sh), saved as PNG (what the web UI writes). Pack: an exact
(flat) SSCD pack built from the same crops, one vector per image.

Figures, each measured quiet and under a synthetic load of `--load-procs` processes that spin on
the CPU (a stand-in for the web UI sampling on the same cores), interleaved in one process:
- bare forward: the ONNX session on already-resized 288x288 pixels, one image, and batches of 8;
  for one image also with onnxruntime's default options (idle threads spinning) and on one thread;
- one image checked: `Checker.check([image])` on a decoded image (what the web UI does per
  image), and `check_files([file])` (the command line with one file);
- a folder checked: `check_files(all files)` (decoding overlapped with the model);
- decoding one file alone, and `Pack.search` of one query with its metadata.
Single-image figures are medians over the images, each image's bare forward and check run back
to back; batched and folder figures are the best of `--rounds` passes over all images.
Targets: folder <= 1.05x the bare batched forward; one image <= 1.05x the bare forward plus the
search; loaded no worse than 2x quiet.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PHOTOS = Path("/usr/share/backgrounds")


def spin() -> None:
    while True:
        pass


def crops(n: int, out: Path) -> list[Path]:
    """`n` distinct 512x512 PNG crops of the installed wallpapers (several per photo when needed)."""
    from PIL import Image

    from lib_replicheck.images import load_image

    photos = sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not photos:
        sys.exit(f"no photos in {PHOTOS}: run `bash tests/setup.sh` first")
    per_photo = -(-n // len(photos))
    files: list[Path] = []
    for p in photos:
        im = load_image(p)
        scale = 1024 / min(im.size)
        im = im.resize((max(1024, round(im.size[0] * scale)), max(1024, round(im.size[1] * scale))),
                       Image.Resampling.BILINEAR)
        w, h = im.size
        spots = [(0, 0), (w - 512, h - 512), (w - 512, 0), (0, h - 512), ((w - 512) // 2, (h - 512) // 2)]
        for x, y in spots[:per_photo]:
            f = out / f"{p.stem}-{x}-{y}.png"
            im.crop((x, y, x + 512, y + 512)).save(f)
            files.append(f)
            if len(files) == n:
                return files
    return files


def measure(checker, embedder, others, pack, files, images, arrays, vectors, rounds: int) -> dict[str, float]:
    """Seconds per image (per query for the search) of each figure, on the machine as it is now.
    `others` are extra onnxruntime sessions (label -> session) timed on the same inputs."""
    from lib_replicheck.images import decode

    name = embedder._input_name
    times: dict[str, list[float]] = {k: [] for k in ("bare1", "check1", "file1", "decode", "search", *others)}
    for f, im, a, v in zip(files, images, arrays, vectors):
        t = time.perf_counter()
        embedder._run(a[None])
        t1 = time.perf_counter()
        checker.check([im])
        t2 = time.perf_counter()
        next(checker.check_files([f]))
        t3 = time.perf_counter()
        decode(f)
        t4 = time.perf_counter()
        pack.search(v[None], checker.top_k)
        t5 = time.perf_counter()
        for key, part in (("bare1", t1 - t), ("check1", t2 - t1), ("file1", t3 - t2), ("decode", t4 - t3),
                          ("search", t5 - t4)):
            times[key].append(part)
        for key, session in others.items():
            t = time.perf_counter()
            session.run(None, {name: a[None]})
            times[key].append(time.perf_counter() - t)
    out = {k: statistics.median(v) for k, v in times.items()}
    batched, folder = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for s in range(0, len(arrays), 8):
            embedder._run(np.stack(arrays[s:s + 8]))
        batched.append((time.perf_counter() - t) / len(arrays))
        t = time.perf_counter()
        reports = list(checker.check_files(files))
        folder.append((time.perf_counter() - t) / len(files))
        assert len(reports) == len(files) and not any(r.error for r in reports)
    out.update(bare8=min(batched), folder=min(folder))
    return out


def ort_session(ort, path: Path, spinning: bool, threads: int = 0):
    """A plain onnxruntime session of the same model, for comparison with the embedder's own."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--load-procs", type=int, default=1, help="busy-looping processes for the loaded figures")
    ap.add_argument("--rounds", type=int, default=2, help="passes for the batched and folder figures")
    args = ap.parse_args()

    import onnxruntime

    from lib_replicheck import embedders
    from lib_replicheck.checker import Checker
    from lib_replicheck.embedders import EmbedderOptions
    from lib_replicheck.images import decode
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.packs.pack import Pack

    onnx = REPO / ".cache" / "sscd_disc_mixup.onnx"
    if not onnx.is_file():
        sys.exit(f"{onnx} is missing: run `bash tests/setup.sh` first")
    start_load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="replicheck-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        files = crops(args.images, tmp / "images")
        embedder = embedders.load("sscd", runtime="onnx", weights=onnx)
        built = build_from_items(sources.folder(tmp / "images"), embedder, tmp / "pack", thumbnails=False,
                                 log=lambda s: None)
        pack = Pack(built.path)
        checker = Checker([pack], top_k=5, embedder=EmbedderOptions(runtime="onnx", weights=onnx, offline=True))
        checker._embedders[embedder.id] = embedder  # the same session for the bare and the checked runs
        images = [decode(f) for f in files]
        arrays = [embedder.preprocess(im) for im in images]
        vectors = embedder.embed(images)
        others = {"spinning": ort_session(onnxruntime, onnx, spinning=True),
                  "one_thread": ort_session(onnxruntime, onnx, spinning=False, threads=1)}
        run = (checker, embedder, others, pack)
        measure(*run, files[:4], images[:4], arrays[:4], vectors[:4], 1)  # warm-up

        quiet = measure(*run, files, images, arrays, vectors, args.rounds)
        procs = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.load_procs)]
        for p in procs:
            p.start()
        try:
            time.sleep(0.5)
            loaded = measure(*run, files, images, arrays, vectors, args.rounds)
        finally:
            for p in procs:
                p.terminate()
                p.join()
        pack.close()

    threads = os.environ.get("REPLICHECK_ORT_THREADS") or "onnxruntime's default"
    load_avg = os.getloadavg()[0]
    print(f"check overhead: SSCD int8 ONNX (sscd_disc_mixup), {len(files)} real photos as 512x512 PNG, "
          f"exact pack of {built.vectors} vectors, top 5; {os.cpu_count()} CPUs, onnxruntime "
          f"{onnxruntime.__version__}, intra-op threads: {threads}, spinning off")
    print(f"loaded = {args.load_procs} busy-looping process(es) on the same CPUs; ms per image; "
          f"1-minute load average at the start {start_load:.1f}, at the end {load_avg:.1f} (other work on the machine)")
    print(f"  {'':<44}{'quiet':>9}{'loaded':>9}{'loaded/quiet':>14}")

    def row(label: str, key: str) -> None:
        q, lo = quiet[key] * 1000, loaded[key] * 1000
        print(f"  {label:<44}{q:9.1f}{lo:9.1f}{lo / q:13.2f}x")

    row("bare forward, 1 image (288x288 input)", "bare1")
    row("  same, spinning on (onnxruntime's default)", "spinning")
    row("  same, 1 intra-op thread, spinning off", "one_thread")
    row("one image checked (decoded, as the web UI)", "check1")
    row("one file checked (check_files, 1 file)", "file1")
    row("bare forward, batches of 8", "bare8")
    row("folder checked (check_files)", "folder")
    row("decoding one file alone", "decode")
    row("Pack.search + metadata, 1 query", "search")
    for name, m in (("quiet", quiet), ("loaded", loaded)):
        print(f"  {name}: one image checked / (bare forward + search) = {m['check1'] / (m['bare1'] + m['search']):.3f}x"
              f" (target 1.05); folder / bare batched = {m['folder'] / m['bare8']:.3f}x (target 1.05); "
              f"check cost above the bare forward: {(m['check1'] - m['bare1']) * 1000:.1f} ms/image")


if __name__ == "__main__":
    main()
