"""Embedding folders written exactly as their publishers write them, for tests and benches.

- clip-retrieval (clip_retrieval/clip_inference/writer.py, OutputSink): `img_emb/img_emb_{n}.npy`
  saved with np.save from the float16 unit rows its mapper makes, `metadata/metadata_{n}.parquet`
  written by pandas with `image_path`, `caption` and the webdataset json's fields flattened
  (img2dataset's `url`, `key`, `status`, `width`, `height`, ...); n zero-filled to the digits of the
  partition count;
- PD12M (Spawning/PD12M's card and tutorials/embeddings.md): `embeddings/pd12m.NN.npy`, float32 rows,
  and `metadata/pd12m.NN.parquet` with id, url, caption, width, height, mime_type, hash, license,
  row i of one the row i of the other.
"""

from __future__ import annotations

import io
import math
from pathlib import Path


def clip_retrieval_folder(folder: Path, parts: list[tuple[object, list[dict]]]) -> Path:
    """Write `parts` (vectors, rows of {image_path, caption, url, key, width, height}) as clip-retrieval
    does, one partition each."""
    import numpy as np
    import pandas as pd

    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    digits = int(math.log10(len(parts))) + 1
    for n, (vectors, rows) in enumerate(parts):
        num = str(n).zfill(digits)
        buf = io.BytesIO()
        np.save(buf, np.asarray(vectors).astype(np.float16))
        (folder / "img_emb" / f"img_emb_{num}.npy").write_bytes(buf.getbuffer())
        df = pd.DataFrame({"image_path": [r["image_path"] for r in rows], "caption": [r["caption"] for r in rows]})
        extra = pd.json_normalize([{"url": r["url"], "key": r["key"], "status": "success", "error_message": None,
                                    "width": r["width"], "height": r["height"], "original_width": r["width"],
                                    "original_height": r["height"]} for r in rows])
        df = df.join(extra)
        df.to_parquet(folder / "metadata" / f"metadata_{num}.parquet")
    return folder


def pd12m_folder(folder: Path, parts: list[tuple[object, list[dict]]]) -> Path:
    """Write `parts` (float32 vectors, rows of {id, url, caption, width, height}) as PD12M's files."""
    import numpy as np
    import pandas as pd

    (folder / "embeddings").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    for n, (vectors, rows) in enumerate(parts):
        np.save(folder / "embeddings" / f"pd12m.{n:02d}.npy", np.asarray(vectors, dtype=np.float32))
        pd.DataFrame({"id": [r["id"] for r in rows], "url": [r["url"] for r in rows],
                      "caption": [r["caption"] for r in rows], "width": [r["width"] for r in rows],
                      "height": [r["height"] for r in rows], "mime_type": ["image/jpeg"] * len(rows),
                      "hash": [f"{i:032x}" for i in range(len(rows))],
                      "license": ["https://creativecommons.org/publicdomain/zero/1.0/"] * len(rows)}
                     ).to_parquet(folder / "metadata" / f"pd12m.{n:02d}.parquet")
    return folder


def distractors(n: int, dim: int, seed: int = 0):
    """`n` random unit rows: images that are not the test's photos."""
    import numpy as np

    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
