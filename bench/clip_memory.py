"""What a CLIP embedder holds in memory once loaded: the parameters and buffers of its vision tower
(what a check runs) and of the whole model open_clip loads (the text tower too), for ViT-L-14 (the
published PD12M and LAION embeddings) and ViT-B-32. Random weights: the sizes depend on the
architecture only, not on the values. float32, as replicheck loads it on the CPU and on cuda.
The web UI's setting *Free a CLIP model after ... minutes unused* quotes these figures.

    python bench/clip_memory.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("ViT-L-14", "ViT-B-32")


def main() -> None:
    from lib_replicheck.embedders.clip import ClipEmbedder

    for model in MODELS:
        clip = ClipEmbedder(model, pretrained=None)
        got = clip.memory_bytes()
        clip.close()
        print(f"CLIP {model} (random weights, float32): vision tower {got['vision'] / 1e6:,.0f} MB, "
              f"whole model as loaded {got['model'] / 1e6:,.0f} MB")


if __name__ == "__main__":
    main()
