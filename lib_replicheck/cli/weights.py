"""`python -m lib_replicheck weights get sscd`: Meta's SSCD model as an ONNX file, on any Python."""

from __future__ import annotations

import sys

from lib_replicheck.cli import EXIT_OK
from lib_replicheck.errors import clean_text


def cmd_weights(args) -> int:
    from lib_replicheck.embedders.weights import get_sscd_onnx

    path = get_sscd_onnx(args.models_dir, log=lambda line: print(clean_text(line, 1000), file=sys.stderr))
    print(clean_text(path))
    return EXIT_OK
