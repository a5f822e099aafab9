"""What a CLIP embedder holds in memory once loaded: the parameters and buffers open_clip builds (the
whole model, text tower included) and what replicheck keeps of them (the image tower: the text tower
is freed on loading, since only images are embedded), for ViT-L-14 (the published PD12M and LAION
embeddings) and ViT-B-32. Random weights: the sizes depend on the architecture only, not on the
values. float32, as replicheck loads it on the CPU and on cuda. The web UI's setting *Free a CLIP
model after ... minutes unused* quotes these figures.

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
        held, built = clip.memory_bytes(), clip.built_bytes
        clip.close()
        print(f"CLIP {model} (random weights, float32): held after loading {held / 1e6:,.0f} MB (the image tower; "
              f"open_clip builds {built / 1e6:,.0f} MB, the text tower's {(built - held) / 1e6:,.0f} MB freed on loading)")


if __name__ == "__main__":
    main()
