"""How an embedder is loaded (device, runtime, weights, offline), as one value.

The command line, the web UI, the builder and the checker all pass an `EmbedderOptions` rather
than spelling its five fields again; `validated()` is the one place each option is checked, so a
bad value reads the same wherever it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from lib_replicheck.errors import EmbedderError

#: SSCD runtimes: auto prefers ONNX (faster on CPU) when a file is available
RUNTIMES = ("auto", "onnx", "torchscript")
DEVICE = re.compile(r"[a-z][a-z0-9_]{0,19}(:[0-9]{1,3})?")


@dataclass(frozen=True)
class EmbedderOptions:
    device: str = "cpu"
    runtime: str = "auto"
    models_dir: str | Path | None = None  # where weights are kept and downloaded
    weights: str | Path | None = None  # a local weights file that overrides the download
    offline: bool = False  # never download (what the web UI uses during generation)
    progress: bool = True  # show a download progress bar

    def validated(self) -> "EmbedderOptions":
        """This value, or an error naming the option that is wrong."""
        if self.runtime not in RUNTIMES:
            raise EmbedderError(f"runtime {str(self.runtime)[:40]!r}: choose one of {', '.join(RUNTIMES)}")
        device = str(self.device or "")
        if not DEVICE.fullmatch(device):  # torch's spelling: a backend and an optional index
            raise EmbedderError(f"device {device[:40]!r}: give a torch device such as cpu, cuda, cuda:1 or mps")
        return self

    def but(self, **changes) -> "EmbedderOptions":
        """A copy with some fields changed (e.g. `offline=True` for a check during generation)."""
        return replace(self, **changes)

    def load_args(self) -> dict:
        """The keyword arguments of `embedders.load`."""
        return dict(device=self.device, runtime=self.runtime, models_dir=self.models_dir, weights=self.weights,
                    offline=self.offline, progress=self.progress)
