"""Per-image embedding time of each embedder on this machine's CPU, measured side by side.

    python bench/embedders.py [--images N]

SSCD ONNX uses Meta's int8 sscd_disc_mixup (from tests/setup.sh). TorchScript and CLIP use
randomly initialised networks of the real architectures (ResNet-50 + GeM + 512-d projection;
ViT-L-14): no weights can be downloaded here, and the cost of a forward pass does not depend on
the values of the weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def photos(n: int):
    from lib_replicheck.images import load_image

    files = sorted(Path("/usr/share/backgrounds").rglob("*.jpg"))[:n] or sorted(
        (REPO / "lib_replicheck/demo_images").rglob("*.jpg"))
    ims = [load_image(f) for f in files]
    return [ims[i % len(ims)] for i in range(n)]


def timed(embedder, images, repeat: int = 2) -> float:
    embedder.embed(images[:2])  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        embedder.embed(images)
        best = min(best, time.perf_counter() - t)
    return best / len(images)


def torchscript_resnet50(path: Path) -> Path:
    import torch
    import torchvision

    class SSCDLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = torch.nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:-2])
            self.proj = torch.nn.Linear(2048, 512)

        def forward(self, x):
            f = self.trunk(x).clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1.0 / 3)
            return torch.nn.functional.normalize(self.proj(f), dim=1)

    torch.jit.script(SSCDLike().eval()).save(str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16)
    args = ap.parse_args()
    from lib_replicheck import embedders

    from PIL import ImageOps

    # generation-sized: 512x512 crops, the size Stable Diffusion 1.x makes
    images = [ImageOps.fit(im, (512, 512)) for im in photos(args.images)]
    print(f"{len(images)} real photos cropped to 512x512 (a SD 1.x generation), CPU, time per image:")
    rows = [("pdq", lambda: embedders.load("pdq"))]
    onnx = REPO / ".cache" / "sscd_disc_mixup.onnx"
    if onnx.is_file():
        rows.append(("sscd_disc_mixup onnx int8 (real weights)",
                     lambda: embedders.load("sscd", runtime="onnx", weights=onnx)))
    try:
        import torch  # noqa: F401

        tmp = Path(tempfile.mkdtemp())
        rows.append(("sscd torchscript fp32 (ResNet-50, random)",
                     lambda: embedders.load("sscd", runtime="torchscript",
                                            weights=torchscript_resnet50(tmp / "sscd.pt"))))
        from lib_replicheck.embedders.clip import ClipEmbedder

        rows.append(("clip ViT-L-14 (random)", lambda: ClipEmbedder("ViT-L-14", pretrained=None)))
    except ImportError:
        print("torch not installed: TorchScript and CLIP rows left out")
    results = {}
    for name, make in rows:
        t = time.perf_counter()
        e = make()
        load = time.perf_counter() - t
        results[name] = timed(e, images)
        print(f"  {name:<45} {results[name] * 1000:8.1f} ms/image   (load {load:.2f} s)")
    a = "sscd_disc_mixup onnx int8 (real weights)"
    b = "sscd torchscript fp32 (ResNet-50, random)"
    if a in results and b in results:
        print(f"  SSCD ONNX is {results[b] / results[a]:.1f}x faster than TorchScript on this CPU")


if __name__ == "__main__":
    main()
