"""Embedding folders written exactly as their publishers write them, for tests and benches.

- clip-retrieval (clip_retrieval/clip_inference/writer.py, OutputSink): `img_emb/img_emb_{n}.npy`
  saved with np.save from the float16 unit rows its mapper makes, `metadata/metadata_{n}.parquet`
  written by pandas with `image_path`, `caption` and the webdataset json's fields flattened
  (img2dataset's `url`, `key`, `status`, `width`, `height`, ...); n zero-filled to the digits of the
  partition count;
- PD12M (Spawning/PD12M's card and tutorials/embeddings.md): `embeddings/pd12m.NN.npy`, float32 rows,
  and `metadata/pd12m.NN.parquet` with id, url, caption, width, height, mime_type, hash, license,
  row i of one the row i of the other;
- DataComp (mlfoundations/datacomp download_upstream.py --download_npz; the pools' parquet columns as its
  baselines read them): `metadata/NAME.parquet` with uid (32 hex digits), url, text, original_width,
  original_height, clip_b32_similarity_score, clip_l14_similarity_score, face_bboxes, sha256, and
  `metadata/NAME.npz` written by np.savez with b32_img, b32_txt, l14_img, l14_txt (float16 rows).
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


def datacomp_folder(folder: Path, parts: list[tuple[object, list[dict]]], compressed: bool = False,
                    model_dim: int = 512) -> Path:
    """Write `parts` (vectors, rows of {url, caption, width, height}) as DataComp's metadata folder: the
    vectors are the `b32_img` array (or `l14_img` when `model_dim` is 768), the other arrays random."""
    import hashlib

    import numpy as np
    import pandas as pd

    meta = folder / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    save = np.savez_compressed if compressed else np.savez
    for n, (vectors, rows) in enumerate(parts):
        name = f"{n:04x}" + hashlib.md5(f"shard {n}".encode()).hexdigest()[4:]  # uid-like, in order
        k = len(rows)
        arrays = {"b32_img": distractors(k, 512, 10 + n), "b32_txt": distractors(k, 512, 20 + n),
                  "l14_img": distractors(k, 768, 30 + n), "l14_txt": distractors(k, 768, 40 + n)}
        arrays["l14_img" if model_dim == 768 else "b32_img"] = np.asarray(vectors)
        save(meta / f"{name}.npz", **{key: a.astype(np.float16) for key, a in arrays.items()})
        pd.DataFrame({"uid": [hashlib.md5(r["url"].encode()).hexdigest() for r in rows],
                      "url": [r["url"] for r in rows], "text": [r["caption"] for r in rows],
                      "original_width": [r["width"] for r in rows], "original_height": [r["height"] for r in rows],
                      "clip_b32_similarity_score": np.full(k, 0.3), "clip_l14_similarity_score": np.full(k, 0.28),
                      "face_bboxes": [[[0.1, 0.2, 0.3, 0.4]] if j % 7 == 0 else [] for j in range(k)],
                      "sha256": [hashlib.sha256(r["url"].encode()).hexdigest() for r in rows]}
                     ).to_parquet(meta / f"{name}.parquet")
    return folder


def distractors(n: int, dim: int, seed: int = 0):
    """`n` random unit rows: images that are not the test's photos."""
    import numpy as np

    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
