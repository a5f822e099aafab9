"""SSCD (Pizzi et al., CVPR 2022), the copy-detection descriptor the replication studies used.

One embedder, two runtimes that give the same vectors (up to quantisation):
- `torchscript`: Meta's official `.torchscript.pt` files, run with torch;
- `onnx`: an ONNX export run with onnxruntime, several times faster on a CPU. Exports that take
  uint8 NHWC pixels (normalising inside the graph) and ones that take normalised float NCHW are
  both accepted; the input signature says which.
Preprocessing follows the SSCD README's evaluation setting: resize the short side to 288 pixels,
ImageNet mean and std. The outputs are L2-normalised, so cosine similarity is the dot product.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

from lib_replicheck.errors import EmbedderError, WeightsError
from lib_replicheck.embedders.base import (MAX_ASPECT, COSINE, Embedder, EmbedderSpec, WeightsFile, group_by_size, l2_normalise,
                   resize_short_side)
from lib_replicheck.embedders.options import EmbedderOptions
from lib_replicheck.embedders.sscd_weights import DEFAULT_MODEL, MODELS, locate, official_torchscript

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SHORT_SIDE = 288

log = logging.getLogger("replicheck")


def spec_for(model: str = DEFAULT_MODEL, onnx_sha256: str | None = None,
             torchscript_sha256: str | None = None) -> EmbedderSpec:
    if model not in MODELS:
        raise EmbedderError(f"unknown SSCD model {model!r}; known: {', '.join(MODELS)}")
    torchscript_name, torchscript_url = official_torchscript(model)
    return EmbedderSpec(
        id=model,
        kind="sscd",
        model=model,
        dim=MODELS[model],
        metric=COSINE,
        preprocessing={"resize_short_side": SHORT_SIDE, "max_long_side": SHORT_SIDE * MAX_ASPECT,
                       "resample": "bilinear", "mean": list(MEAN),
                       "std": list(STD), "l2_normalised": True},
        weights=(
            WeightsFile("torchscript", torchscript_url, torchscript_sha256, torchscript_name),
            WeightsFile("onnx", None, onnx_sha256, f"{model}.onnx"),
        ),
    )


class SSCDEmbedder(Embedder):
    batch_size = 8
    searches_regions = True
    withholds_flat = True

    def __init__(self, model: str = DEFAULT_MODEL, options: EmbedderOptions | None = None,
                 expected: EmbedderSpec | None = None):
        """`expected` is the spec a pack was built with: its sha256s are enforced on load."""
        from lib_replicheck.embedders.weights import sha256_file

        options = (options or EmbedderOptions()).validated()
        spec_for(model)  # raises EmbedderError for an unknown model
        wanted = {w.runtime: w.sha256 for w in (expected.weights if expected else ())}
        self.device = options.device
        self._torch_model = None
        self._session = None
        self._head = None
        runtime, path = locate(model, options, expected)
        if runtime == "onnx":
            self._load_onnx(path)
            self.spec = spec_for(model, onnx_sha256=sha256_file(path), torchscript_sha256=wanted.get("torchscript"))
        else:
            self._load_torchscript(path)
            self.spec = spec_for(model, onnx_sha256=wanted.get("onnx"), torchscript_sha256=sha256_file(path))
        self.weights_path = path

    # -- runtimes -------------------------------------------------------------------------------

    def _load_onnx(self, path: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EmbedderError("the onnx runtime needs the 'onnxruntime' package: pip install onnxruntime") from None
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        opts = session_options(ort)
        self._head = None
        try:
            head = _region_head(path)  # the same model, also returning its last feature map
        except (OSError, ValueError) as e:
            log.warning("replicheck: %s: region search unavailable (%s)", path, str(e)[:200])
            head = None
        if head is not None:
            try:
                self._session = ort.InferenceSession(head[0], opts, providers=providers)
                self._head = head[1:]
            except Exception as e:  # noqa: BLE001 - regions are optional; the whole-image model is loaded below
                log.warning("replicheck: %s: region search unavailable (%s)", path, str(e).splitlines()[0][:200])
        if self._head is None:
            try:
                self._session = ort.InferenceSession(str(path), opts, providers=providers)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise WeightsError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self._uint8_nhwc = inp.type == "tensor(uint8)"

    def _load_torchscript(self, path: Path) -> None:
        try:
            import torch
        except ImportError:
            raise EmbedderError("the torchscript runtime needs torch; or install onnxruntime and an "
                                "ONNX file of the model") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                model = torch.jit.load(str(path), map_location=self.device)
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError and friends
            raise WeightsError(f"{path}: not a loadable TorchScript model ({str(e).splitlines()[0][:200]})") from None
        model.eval()
        self._torch_model = model

    @property
    def runtime(self) -> str:
        return "onnx" if self._session is not None else "torchscript"

    # -- embedding ------------------------------------------------------------------------------

    def preprocess(self, im):
        """uint8 HxWx3 pixels after SSCD's resize (short side 288, long side at most 1152)."""
        import numpy as np

        im = im if im.mode == "RGB" else im.convert("RGB")
        return np.asarray(resize_short_side(im, SHORT_SIDE, MAX_ASPECT), dtype=np.uint8)

    def embed(self, images: Sequence):
        return l2_normalise(self._forward([self.preprocess(im) for im in images])[0])

    def _forward(self, arrays, feature_map: bool = False):
        """The model's vectors [n, dim] for uint8 arrays, batched by size; with `feature_map`, also
        each array's last feature map (else a list of None)."""
        import numpy as np

        out = np.zeros((len(arrays), self.spec.dim), dtype=np.float32)
        maps: list = [None] * len(arrays)
        for idx in group_by_size(arrays).values():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                y = self._run(np.stack([arrays[i] for i in chunk]), feature_map=feature_map)
                if feature_map:
                    y, fmap = y
                    for j, i in enumerate(chunk):
                        maps[i] = fmap[j]
                out[chunk] = y
        return out, maps

    def _run(self, batch_u8, feature_map: bool = False):
        """The model's vectors for a batch; with `feature_map`, (vectors, last feature maps)."""
        import numpy as np

        fmap = None
        try:
            if self._session is not None:
                x = batch_u8 if self._uint8_nhwc else _normalise_nchw(batch_u8)
                outputs = self._session.run(None, {self._input_name: x})
                y = outputs[0]
                if feature_map:
                    fmap = np.asarray(outputs[1], dtype=np.float32)
            else:
                import torch

                with torch.inference_mode():
                    x = torch.from_numpy(_normalise_nchw(batch_u8)).to(self.device)
                    y = self._torch_model(x).float().cpu().numpy()
        except MemoryError:
            raise EmbedderError("out of memory while embedding; use a smaller batch or the CPU") from None
        except Exception as e:  # noqa: BLE001 - torch/onnxruntime errors become one clear line
            raise EmbedderError(f"SSCD ({self.runtime}) failed: {str(e).splitlines()[0][:300]}") from None
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 2 or y.shape[1] != self.spec.dim:
            raise EmbedderError(f"the {self.runtime} model returned shape {y.shape}, expected [n, {self.spec.dim}]")
        if feature_map:
            if fmap is None or fmap.ndim != 4 or fmap.shape[0] != y.shape[0]:
                raise EmbedderError("the model gave no feature map for region search")
            return y, fmap
        return y

    # -- regions --------------------------------------------------------------------------------

    @property
    def regions_available(self) -> str | None:
        if self._session is None:
            return "region search needs SSCD's ONNX runtime (pip install onnxruntime); the whole image was checked"
        if self._head is None:
            return "region search needs an SSCD ONNX file whose head can be read; the whole image was checked"
        return None

    def embed_regions(self, images: Sequence, mode: str):
        """See Embedder.embed_regions: the regions are boxes of the model's own feature maps (see
        lib_replicheck/regions.py)."""
        import numpy as np

        from lib_replicheck import regions

        why = self.regions_available
        if why:
            raise EmbedderError(why)
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        whole = None
        found: list = []
        for scale in regions.PASSES[regions.check_mode(mode)] or (1.0,):
            side = round(SHORT_SIDE * scale)
            arrays = [np.asarray(resize_short_side(im, side, MAX_ASPECT), dtype=np.uint8) for im in images]
            vectors, maps = self._forward(arrays, feature_map=True)
            if scale == 1.0:
                whole = l2_normalise(vectors)
            if mode == "off":
                break
            for i, (im, fmap) in enumerate(zip(images, maps)):
                rows, cols = fmap.shape[1:]
                cells = regions.cell_boxes(rows, cols, mode)
                boxes = [regions.to_region(c, rows, cols, im.size[0], im.size[1]) for c in cells]
                keep = [k for k, ok in enumerate(regions.featured(im, boxes)) if ok]
                # in the whole-image pass the whole map is pooled with the boxes, to check the head
                whole_box = [(0, 0, cols, rows)] if scale == 1.0 else []
                if not keep and not whole_box:
                    continue
                projected = self._project(regions.gem_pool(fmap, [cells[k] for k in keep] + whole_box))
                if whole_box:
                    self._check_head(projected[-1], vectors[i])
                for k, v in zip(keep, projected):
                    found.append((i, boxes[k], v))
        return whole, found

    def _project(self, pooled):
        """SSCD's linear layer and L2 norm after pooling."""
        import numpy as np

        weight, bias = self._head
        y = pooled.astype(np.float32) @ (weight.T if weight.shape[1] == pooled.shape[1] else weight)
        return l2_normalise(y + bias if bias is not None else y)

    def _check_head(self, mine, vector) -> None:
        """Pooling the whole map through the head (`mine`) must give the model's own vector: proof
        that the head was read right, on every image, for the cost of one more box."""
        import numpy as np

        theirs = vector / max(float(np.linalg.norm(vector)), 1e-12)
        if float(mine @ theirs) < 0.999:
            self._head = None
            raise EmbedderError("this SSCD ONNX file's head is not GeM + linear as expected: "
                                "region search is off for it")

    def close(self) -> None:
        self._session = None
        self._torch_model = None


def _region_head(path: Path):
    """(model bytes that also return the feature map, weight, bias) of SSCD's GeM head, or None
    when the graph does not end in one; see onnx_graph.py."""
    from lib_replicheck.embedders import onnx_graph

    model = Path(path).read_bytes()
    head = onnx_graph.find_gem_head(onnx_graph.nodes(model))
    if head is None:
        return None
    weight = onnx_graph.initializer(model, head.weight)
    bias = onnx_graph.initializer(model, head.bias) if head.bias else None
    if weight is None or weight.ndim != 2:
        return None
    return onnx_graph.with_output(model, head.feature_map), weight, bias


def _normalise_nchw(batch_u8):
    import numpy as np

    x = batch_u8.astype(np.float32) / 255.0
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def session_options(ort):
    """onnxruntime options for sharing the CPU with the web UI.

    Spinning is off: an idle intra-op thread otherwise busy-waits for the next op, which is free on
    an idle machine but, while the web UI samples on the same cores, doubled the forward pass. The
    thread count stays onnxruntime's (the physical cores), or $REPLICHECK_ORT_THREADS.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    threads = os.environ.get("REPLICHECK_ORT_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        opts.intra_op_num_threads = int(threads)
    return opts
