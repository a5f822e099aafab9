"""Drive the ComfyUI harness (../shared/webui-harness/comfyui): find the install, run its scripts, post
workflows to ComfyUI's HTTP API on 127.0.0.1 and read what they gave (history, saved PNGs).

Nothing here imports selenium; the harness scripts do the installing, starting and stopping.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from real_harness import EXT_SRC, HARNESS_LIB, REPO, HarnessError, WebUI, repo_head

ENV_VAR = "REPLICHECK_COMFYUI"
LIB = HARNESS_LIB / "comfyui"
PORT = 8188
GIT_PORT = 9422
NAME = "replicheck"


def locate() -> tuple[Path, Path] | None:
    """(harness root, ComfyUI folder) from REPLICHECK_COMFYUI (either of the two), or None when unset."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    p = Path(value).expanduser().resolve()
    if (p / "ComfyUI" / "main.py").is_file():
        return p, p / "ComfyUI"
    if (p / "main.py").is_file() and (p / "comfy").is_dir():
        return p.parent, p
    raise HarnessError(f"{ENV_VAR}={value}: neither the ComfyUI harness root (with ComfyUI/main.py) nor ComfyUI")


def skip_unless_configured():
    import pytest

    try:
        where = locate()
    except HarnessError:
        where = ("wrong", "wrong")
    return pytest.mark.skipif(where is None, reason=f"{ENV_VAR} is not set: point it at the ComfyUI harness "
                                                    "(see tests/real_webui/README.md) to run the real ComfyUI tests")


@dataclass
class Comfy:
    root: Path
    comfy: Path
    flags: tuple[str, ...] | None = None
    log_mark: int = 0

    url = f"http://127.0.0.1:{PORT}"
    git_url = f"git://127.0.0.1:{GIT_PORT}/{NAME}.git"

    @property
    def node_dir(self) -> Path:
        return self.comfy / "custom_nodes" / NAME

    @property
    def packs_dir(self) -> Path:
        return self.comfy / "models" / "replicheck" / "packs"

    @property
    def python(self) -> str:
        return str(self.root / "venv" / "bin" / "python")

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / "comfyui.log"

    def env(self) -> dict:
        env = dict(os.environ)
        env.setdefault("MIRROR", str(self.root))  # env.sh insists on it; only setup.sh reads the snapshots
        env.update(COMFY_ROOT=str(self.root), COMFY=str(self.comfy), EXT_SRC=str(EXT_SRC),
                   PY313=env.get("PY313", self.python))
        return env

    def script(self, name: str, *args: str, timeout: float = 900) -> str:
        proc = subprocess.run(["bash", str(LIB / name), *args], cwd=str(REPO), env=self.env(), capture_output=True,
                              text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise HarnessError(f"{name} {' '.join(args)} failed (rc {proc.returncode}):\n{out[-3000:]}")
        return out

    # -- the process ----------------------------------------------------------------------------------
    # the log, as the web UI harnesses' (reads log_path, keeps log_mark)
    mark_log = WebUI.mark_log
    log_since_mark = WebUI.log_since_mark

    def start(self, *flags: str) -> None:
        self.mark_log()
        self.script("start_comfyui.sh", *flags, timeout=1200)
        self.flags = tuple(flags)

    def stop(self) -> None:
        self.script("stop_comfyui.sh", timeout=120)
        self.flags = None

    def restart(self, *flags: str) -> None:
        self.stop()
        self.start(*flags)

    # -- the custom node ------------------------------------------------------------------------------
    def remove_node(self) -> None:
        for p in (self.node_dir, self.comfy / "custom_nodes" / ".disabled" / NAME):
            shutil.rmtree(p, ignore_errors=True)

    def installed_head(self) -> str:
        return subprocess.run(["git", "-C", str(self.node_dir), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()

    def serve(self) -> None:
        """serve_ext.sh until it serves EXT_SRC's HEAD (a git worktree's first bare clone takes main)."""
        self.script("serve_ext.sh")
        if self.served_head() != repo_head():
            self.script("serve_ext.sh")
        assert self.served_head() == repo_head()

    def served_head(self) -> str:
        return subprocess.run(["git", "-C", str(self.root / "serve" / f"{NAME}.git"), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def install_demo_pack(self) -> str:
        """The demo pack, with the packs command of the installed node and ComfyUI's Python."""
        shutil.rmtree(self.packs_dir / "demo", ignore_errors=True)
        done = subprocess.run([self.python, "-m", "lib_replicheck", "packs", "download", "demo", "--packs-dir",
                               str(self.packs_dir)], cwd=str(self.node_dir), capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            raise HarnessError(f"packs download demo failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def put_input(self, src: Path, name: str) -> str:
        """A file in ComfyUI's input folder, for LoadImage."""
        (self.comfy / "input").mkdir(exist_ok=True)
        shutil.copyfile(src, self.comfy / "input" / name)
        return name

    # -- HTTP -----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str, headers: dict | None = None) -> tuple[int, object]:
        status, body = self.request("GET", path, headers=headers)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")

    def queue(self, prompt: dict, workflow: dict | None = None) -> str:
        """Post an API-format prompt as ComfyUI's page does (its workflow in extra_pnginfo); the prompt id."""
        data = {"prompt": prompt, "client_id": uuid.uuid4().hex,
                "extra_data": {"extra_pnginfo": {"workflow": workflow or {"nodes": [], "links": []}}}}
        status, body = self.request("POST", "/prompt", json.dumps(data).encode(), {"Content-Type": "application/json"})
        if status != 200:
            raise HarnessError(f"/prompt refused the workflow ({status}): {body[:2000]!r}")
        return json.loads(body)["prompt_id"]

    def run(self, prompt: dict, workflow: dict | None = None, timeout: float = 900) -> dict:
        """Queue and wait until ComfyUI's history has the prompt; its history entry."""
        pid = self.queue(prompt, workflow)
        end = time.time() + timeout
        while time.time() < end:
            status, hist = self.get_json(f"/history/{pid}")
            if status == 200 and isinstance(hist, dict) and pid in hist:  # written when the prompt has ended
                return hist[pid]
            time.sleep(1)
        raise HarnessError(f"prompt {pid} did not finish within {timeout:g} s")

    def saved_png(self, entry: dict, node: str):
        """The first image a SaveImage node saved in a history entry, as a PIL image (text chunks in .text)."""
        from PIL import Image

        img = entry["outputs"][node]["images"][0]
        q = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img["subfolder"], "type": img["type"]})
        status, body = self.request("GET", f"/view?{q}")
        assert status == 200, status
        im = Image.open(io.BytesIO(body))
        im.load()
        return im


def txt2img(prompt: str, seed: int, *, check: bool = False, signal: bool = False, prefix: str = "rc") -> dict:
    """The harness's txt2img workflow (api_generate.py's: 64x64, euler, 4 steps, cfg 7) with, on request,
    the Replicheck Memorization Signal node before the sampler and the Check node before SaveImage."""
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "random-sd15.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 4, "cfg": 7.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }
    if signal:
        p["20"] = {"class_type": "ReplicheckSignal", "inputs": {"model": ["4", 0], "steps": 1, "threshold": 5.0}}
        p["3"]["inputs"]["model"] = ["20", 0]
    if check:
        p["10"] = check_node(["8", 0])
        p["9"]["inputs"]["images"] = ["10", 0]
    return p


def check_node(images: list, **changes) -> dict:
    inputs = {"images": images, "packs": "", "regions": "off", "top_k": 5, "sscd_possible": 0.5, "sscd_likely": 0.75,
              "sscd_duplicate": 0.95, "pdq_likely": 31, "pdq_duplicate": -1, "clip_possible": 0.0, "device": "cpu",
              "prompt_check": True}
    inputs.update(changes)
    return {"class_type": "ReplicheckCheck", "inputs": inputs}


def check_image(name: str, *, gate: str | None = None, prefix: str = "rc", **changes) -> dict:
    """LoadImage -> Replicheck Check (-> Replicheck Gate) -> SaveImage."""
    p = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
         "10": check_node(["1", 0], **changes),
         "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["10", 0]}}}
    if gate:
        p["11"] = {"class_type": "ReplicheckGate", "inputs": {"images": ["10", 0], "report_json": ["10", 3],
                                                              "at_or_above": "likely copy", "action": gate}}
        p["9"]["inputs"]["images"] = ["11", 0]
    return p
