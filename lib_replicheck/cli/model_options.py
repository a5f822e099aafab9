"""The embedder options of the command line (--device, --runtime, --models-dir, --weights, --offline):
added to a command's parser by one function and read back as one EmbedderOptions, so `check`,
`build` and `packs get` spell them alike and a bad value is refused by EmbedderOptions.validated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib_replicheck.embedders.options import RUNTIMES, EmbedderOptions

MODELS_DIR_HELP = "where weights are kept and downloaded (default $REPLICHECK_HOME/models)"
OFFLINE_HELP = "never download; fail if weights are missing"


def add_embedder_options(p: argparse.ArgumentParser, title: str = "model", *, models_dir_help: str = MODELS_DIR_HELP,
                         offline_help: str = OFFLINE_HELP) -> None:
    """--device, --runtime, --models-dir, --weights and --offline, in a group of `p`'s help."""
    g = p.add_argument_group(title)
    g.add_argument("--device", default="cpu", help="embedding device: cpu (default), cuda or cuda:N")
    g.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="SSCD runtime: auto prefers ONNX (faster on CPU) when a file is available")
    g.add_argument("--models-dir", type=Path, default=None, help=models_dir_help)
    g.add_argument("--weights", type=Path, default=None, help="a local weights file (ONNX, TorchScript or CLIP)")
    g.add_argument("--offline", action="store_true", help=offline_help)


def embedder_options(args: argparse.Namespace, **changes) -> EmbedderOptions:
    """The options `add_embedder_options` parsed, with `changes` (e.g. progress=False), checked."""
    return EmbedderOptions(device=args.device, runtime=args.runtime, models_dir=args.models_dir,
                           weights=args.weights, offline=args.offline).but(**changes).validated()
