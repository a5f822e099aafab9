"""Drive a real web UI install built by the web UI harness (AUTOMATIC1111, Forge or SD.Next).

The harness scripts (start/stop, serve_ext.sh, serve_registry.sh, reset_webui_state.sh, ui.py) do the
work; this module only finds the install, runs them with the right environment, and talks to the
running web UI over HTTP on 127.0.0.1. Nothing here imports selenium: the browser helpers are
imported by the tests that need them, after the skip decision.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: the harness scripts; REPLICHECK_HARNESS_LIB overrides (default: ../shared/webui-harness next to the repository)
HARNESS_LIB = Path(os.environ.get("REPLICHECK_HARNESS_LIB", str(REPO.parent / "shared" / "webui-harness")))
DEMO_IMAGES = REPO / "lib_replicheck" / "demo_images" / "pack"
#: the repository whose committed HEAD is installed (default: this one)
EXT_SRC = Path(os.environ.get("REPLICHECK_EXT_SRC", str(REPO)))
EXT_NAME = "replicheck"
#: what AUTOMATIC1111 1.10.1 dies with when a request reaches it between setup_middleware() and create_api()
STARTUP_RACE = "Cannot add middleware after an application has started"


@dataclass(frozen=True)
class Flavor:
    """What differs between the three harnesses: scripts, ports, folder names."""

    name: str            # a1111 | forge | sdnext
    env_var: str         # REPLICHECK_WEBUI | REPLICHECK_FORGE | REPLICHECK_SDNEXT
    lib: Path            # folder of the harness scripts
    root_var: str        # the harness scripts' variable for the harness root
    install_var: str     # ... and for the web UI folder
    install_dir: str     # the web UI folder's name inside the harness root
    start: str
    stop: str
    port: int
    git_port: int
    registry_port: int
    log: str             # log file under ROOT/logs
    pgid: str            # process group file under ROOT/run
    python_var: str      # the Python the harness scripts call (env.sh finds it through pyenv shims, which may fail)


FLAVORS = {
    "a1111": Flavor("a1111", "REPLICHECK_WEBUI", HARNESS_LIB, "HARNESS_ROOT", "WEBUI", "webui", "start_webui.sh",
                    "stop_webui.sh", 7861, 9418, 8765, "webui.log", "webui.pgid", "PY311"),
    "forge": Flavor("forge", "REPLICHECK_FORGE", HARNESS_LIB / "forge", "FORGE_ROOT", "FORGE", "webui",
                    "start_forge.sh", "stop_forge.sh", 7862, 9419, 8766, "forge.log", "forge.pgid", "PY310"),
    "forgeneo": Flavor("forgeneo", "REPLICHECK_FORGENEO", HARNESS_LIB / "forgeneo", "NEO_ROOT", "NEO", "webui",
                       "start_forgeneo.sh", "stop_forgeneo.sh", 7864, 9423, 8768, "forgeneo.log", "forgeneo.pgid",
                       "PY311"),
    "sdnext": Flavor("sdnext", "REPLICHECK_SDNEXT", HARNESS_LIB / "sdnext", "SDNEXT_ROOT", "SDNEXT", "sdnext",
                     "start_sdnext.sh", "stop_sdnext.sh", 7863, 9420, 8767, "sdnext.log", "sdnext.pgid", "PY311"),
}


class HarnessError(RuntimeError):
    pass


def repo_head() -> str:
    """The commit the tests install: EXT_SRC's HEAD."""
    return subprocess.run(["git", "-C", str(EXT_SRC), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def locate(flavor: str) -> tuple[Path, Path] | None:
    """(harness root, web UI folder) from the flavor's environment variable, or None when it is unset.

    The variable may name the harness root (the folder setup.sh built: ROOT/webui or ROOT/sdnext inside)
    or the web UI folder itself (the one holding launch.py); its parent is then the harness root."""
    f = FLAVORS[flavor]
    value = os.environ.get(f.env_var, "").strip()
    if not value:
        return None
    p = Path(value).expanduser().resolve()
    if (p / f.install_dir / "launch.py").is_file():
        return p, p / f.install_dir
    if (p / "launch.py").is_file():
        return p.parent, p
    raise HarnessError(f"{f.env_var}={value}: neither a harness root (with {f.install_dir}/launch.py) nor a web UI "
                       "folder (with launch.py)")


def skip_unless_configured(flavor: str):
    """A skipif marker for a module of `flavor` tests: skipped when the variable is unset (a wrong value runs,
    and the fixture fails saying why)."""
    import pytest

    try:
        where = locate(flavor)
    except HarnessError:
        where = ("wrong", "wrong")
    return pytest.mark.skipif(where is None, reason=skip_reason(flavor))


def skip_reason(flavor: str) -> str:
    f = FLAVORS[flavor]
    return (f"{f.env_var} is not set: point it at the {flavor} harness install (see tests/real_webui/README.md) to "
            "run the real web UI tests")


@dataclass
class Response:
    status: int
    body: Any
    text: str


@dataclass
class WebUI:
    """One harness install and the web UI process the harness scripts start in it."""

    flavor: Flavor
    root: Path
    install: Path
    flags: tuple[str, ...] | None = None  # the launch flags of the running web UI (None: not started by us)
    auth: tuple[str, str] | None = None
    log_mark: int = 0
    ext_loaded: bool = False  # whether the running process started with the extension installed
    started: list[str] = field(default_factory=list)

    # -- paths ----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.flavor.port}/"

    @property
    def ext_dir(self) -> Path:
        return self.install / "extensions" / EXT_NAME

    @property
    def packs_dir(self) -> Path:
        return self.install / "models" / "replicheck" / "packs"

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / self.flavor.log

    @property
    def git_url(self) -> str:
        return f"git://127.0.0.1:{self.flavor.git_port}/replicheck.git"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.flavor.registry_port}/packs.json"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("MIRROR", str(self.root))  # env.sh insists on it; only setup.sh reads the snapshots
        env[self.flavor.root_var] = str(self.root)
        env[self.flavor.install_var] = str(self.install)
        env["EXT_SRC"] = str(EXT_SRC)
        venv_python = self.root / "venv" / "bin" / "python"
        if self.flavor.python_var not in env and venv_python.exists():
            env[self.flavor.python_var] = str(venv_python)
        if self.flavor.name == "a1111":
            env["WEBUI_PORT"] = str(self.flavor.port)
        env["REGISTRY_PORT"] = str(self.flavor.registry_port)
        return env

    # -- one test run per install at a time -----------------------------------------------------------
    def lock(self, timeout: float = 3600) -> None:
        """Wait for, then hold, the install's lock (another test run resets and restarts the same web UI)."""
        import fcntl

        (self.root / "run").mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / "run" / "real_webui.lock", "w")
        end = time.time() + timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.time() > end:
                    raise HarnessError(f"{self.root} stayed locked by another real web UI test run") from None
                time.sleep(5)

    def unlock(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()
            self._lock = None

    # -- the harness scripts --------------------------------------------------------------------------
    def script(self, name: str, *args: str, timeout: float = 600, lib: Path | None = None,
               env: dict | None = None) -> str:
        path = (lib or self.flavor.lib) / name
        proc = subprocess.run(["bash", str(path), *args], cwd=str(REPO), env=env or self.env(), capture_output=True,
                              text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise HarnessError(f"{name} {' '.join(args)} failed (rc {proc.returncode}):\n{out[-3000:]}")
        return out

    def pgid(self) -> int | None:
        f = self.root / "run" / self.flavor.pgid
        try:
            return int(f.read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pg = self.pgid()
        if pg is None:
            return False
        try:
            os.killpg(pg, 0)
            return True
        except OSError:
            return False

    def start(self, *flags: str, wait_ext: bool = True) -> None:
        """Start the web UI (harness start script) with extra launch flags; waits for /replicheck/v1 too
        when the extension is installed."""
        self.mark_log()
        try:
            self.script(self.flavor.start, *flags, timeout=1200)
        except HarnessError:
            if STARTUP_RACE not in self.log_since_mark():
                raise
            # AUTOMATIC1111's own start-up race (a request between its setup_middleware and create_api, here
            # the start script's polling): not the extension's doing; start again once
            print(f"web UI start-up race ({STARTUP_RACE!r}): starting again")
            self.stop()
            self.mark_log()
            self.script(self.flavor.start, *flags, timeout=1200)
        self.flags = tuple(flags)
        self.ext_loaded = self.ext_dir.is_dir()
        self.started.append(" ".join(flags))
        if "--api-auth" in flags:
            user, _, password = flags[flags.index("--api-auth") + 1].partition(":")
            self.auth = (user, password)
        else:
            self.auth = None
        if wait_ext and self.ext_dir.is_dir():
            self.wait_replicheck()

    def stop(self) -> None:
        self.script(self.flavor.stop, timeout=120)
        self.flags = None
        self.ext_loaded = False

    def ensure(self, *flags: str, installed: bool = True) -> None:
        """The web UI running with exactly `flags`, the extension installed when `installed`."""
        if installed and not self.ext_dir.is_dir():
            self.stop()
            self.install_copy()
        if self.alive() and self.flags == tuple(flags) and (self.ext_loaded or not installed):
            if installed:
                self.wait_replicheck()
            return
        self.stop()
        self.start(*flags)

    def reset(self) -> None:
        """No extension, no packs, no outputs, default settings (the harness's reset for AUTOMATIC1111; the
        same removals for Forge and SD.Next, whose harnesses have no reset script)."""
        if self.flavor.name == "a1111":
            self.script("reset_webui_state.sh")
            return
        for p in (self.ext_dir, self.install / "extensions" / "harness-passthrough",
                  self.install / "models" / "replicheck", self.install / "outputs"):
            shutil.rmtree(p, ignore_errors=True)
        if self.flavor.name in ("forge", "forgeneo"):
            for name in ("config.json", "ui-config.json"):
                (self.install / name).unlink(missing_ok=True)
        else:  # SD.Next: config.json holds the harness's theme and model choice; only our keys go
            cfg = self.install / "config.json"
            if cfg.is_file():
                data = json.loads(cfg.read_text())
                cfg.write_text(json.dumps({k: v for k, v in data.items() if not k.startswith("replicheck_")},
                                          indent=2))

    def add_passthrough(self) -> None:
        """The harness's test-only img2img extension (returns the input image for '[passthrough]' prompts)."""
        dest = self.install / "extensions" / "harness-passthrough"
        if not dest.is_dir():
            shutil.copytree(HARNESS_LIB / "passthrough_ext", dest)

    def install_copy(self) -> None:
        """The fast way in: the repository's committed HEAD (git archive) into extensions/replicheck."""
        tmp = self.ext_dir.with_name(EXT_NAME + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(EXT_SRC), "archive", "HEAD"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(self.ext_dir)

    def serve_ext(self) -> str:
        """serve_ext.sh; run again when it serves another commit than EXT_SRC's HEAD (the first bare
        clone of a git worktree takes the repository's main branch, the second run fetches HEAD)."""
        out = self.script("serve_ext.sh")
        if self.served_head() != repo_head():
            out = self.script("serve_ext.sh")
        return out

    def served_head(self) -> str:
        """The commit serve_ext.sh serves (the repository's HEAD when it last ran)."""
        repo = self.root / "serve" / "replicheck.git"
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()

    def serve_registry(self) -> str:
        """The installed extension's registry/ over HTTP on 127.0.0.1 (harness serve_registry.sh)."""
        if self.flavor.name in ("sdnext", "forgeneo"):  # no script of its own: the AUTOMATIC1111 one, pointed here
            env = self.env() | {"HARNESS_ROOT": str(self.root), "WEBUI": str(self.install)}
            return self.script("serve_registry.sh", str(self.ext_dir / "registry"), lib=HARNESS_LIB, env=env)
        return self.script("serve_registry.sh", str(self.ext_dir / "registry"))

    def stop_helpers(self) -> None:
        for name, lib in (("serve_ext.sh", None), ("serve_registry.sh", HARNESS_LIB if self.flavor.name in ("sdnext", "forgeneo")
                                                     else None)):
            try:
                env = self.env() | ({"HARNESS_ROOT": str(self.root)} if lib else {})
                self.script(name, "stop", lib=lib, env=env, timeout=60)
            except (HarnessError, subprocess.TimeoutExpired):
                pass

    # -- the log --------------------------------------------------------------------------------------
    def mark_log(self) -> None:
        self.log_mark = self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since_mark(self) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(self.log_mark)
            return fh.read().decode("utf-8", "replace")

    # -- HTTP -----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, auth: Any = "default", timeout: float = 600,
                params: dict | None = None, panel_header: bool = True) -> Response:
        """`auth`: the running web UI's --api-auth credentials by default; `panel_header`: send the header the
        extension asks of clients of its changing routes (X-Replicheck-Request: 1), as its panel does."""
        import requests

        use = self.auth if auth == "default" else auth
        headers = {"X-Replicheck-Request": "1"} if panel_header else {}
        r = requests.request(method, self.url + path.lstrip("/"), json=body, auth=use, timeout=timeout,
                             params=params, headers=headers)
        try:
            data = r.json()
        except ValueError:
            data = None
        return Response(r.status_code, data, r.text)

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw) -> Response:
        return self.request("POST", path, body, **kw)

    def wait_replicheck(self, timeout: float = 600) -> None:
        """Until /replicheck/v1/status answers (the routes are added once the app has started)."""
        end = time.time() + timeout
        last = None
        while time.time() < end:
            if self.flags is not None and not self.alive():
                raise HarnessError(f"the web UI exited; log:\n{self.log_since_mark()[-3000:]}")
            try:
                last = self.get("replicheck/v1/status", timeout=10).status
                if last == 200:
                    return
            except Exception as e:  # noqa: BLE001 - restarting: connection refused
                last = type(e).__name__
            time.sleep(3)
        raise HarnessError(f"/replicheck/v1/status did not answer 200 within {timeout:.0f}s (last: {last})")

    def wait_restarted(self, browser=None, timeout: float = 900) -> None:
        """After 'Apply and restart UI' (log marked before the click): the old process goes down, the page
        is taken off the server (its reload pings, like any request while the new server is starting,
        can hit AUTOMATIC1111's start-up race), then the new process's 'Startup time' line, then the routes."""
        end = time.time() + timeout
        while time.time() < end:  # the old server answers until it exits
            try:
                self.get("internal/ping", timeout=5, auth=None)
            except Exception:  # noqa: BLE001 - down: restarting
                break
            time.sleep(0.5)
        if browser is not None:
            browser.get("about:blank")
        while time.time() < end:
            log = self.log_since_mark()
            relaunch = max(log.rfind("Launching Web UI with arguments"), log.rfind("Launching launch.py"))
            if relaunch >= 0 and "Startup time:" in log[relaunch:]:
                break
            if STARTUP_RACE in log[max(relaunch, 0):] or not self.alive():
                raise HarnessError("the web UI did not come back after Apply and restart "
                                   f"({'start-up race' if STARTUP_RACE in log else 'process gone'}); log:\n"
                                   f"{log[-3000:]}")
            time.sleep(2)
        self.wait_replicheck(max(60.0, end - time.time()))
        self.ext_loaded = True

    def set_options(self, options: dict) -> None:
        r = self.post("sdapi/v1/options", options, timeout=120)
        if r.status != 200:
            raise HarnessError(f"POST /sdapi/v1/options {options}: {r.status} {r.text[:500]}")

    def config(self) -> dict:
        return json.loads((self.install / "config.json").read_text())

    # -- packs ----------------------------------------------------------------------------------------
    def install_demo_pack(self, timeout: float = 300) -> None:
        """The demo pack through the pack manager, from the extension's registry served on 127.0.0.1."""
        if (self.packs_dir / "demo" / "manifest.json").is_file() and self.demo_pack_intact():
            return
        self.serve_registry()
        self.set_options({"replicheck_registries": self.registry_url})
        r = self.get("replicheck/v1/packs", params={"refresh": "true"}, timeout=120)
        if r.status != 200:
            raise HarnessError(f"GET /replicheck/v1/packs?refresh=true: {r.status} {r.text[:500]}")
        if (self.packs_dir / "demo").exists():
            self.request("DELETE", "replicheck/v1/packs/demo", timeout=60)
        r = self.post("replicheck/v1/packs/demo/download", timeout=60)
        if r.status != 200:
            raise HarnessError(f"POST /replicheck/v1/packs/demo/download: {r.status} {r.text[:500]}")
        end = time.time() + timeout
        while time.time() < end:
            jobs = {j["name"]: j for j in (self.get("replicheck/v1/downloads", timeout=30).body or [])}
            state = jobs.get("demo", {}).get("state")
            if state == "installed":
                return
            if state in ("failed", "cancelled"):
                raise HarnessError(f"demo pack download {state}: {jobs['demo'].get('error')}")
            time.sleep(2)
        raise HarnessError("the demo pack download did not finish")

    def demo_pack_intact(self) -> bool:
        src = EXT_SRC / "registry" / "demo" / "index.faiss"
        dst = self.packs_dir / "demo" / "index.faiss"
        return dst.is_file() and dst.stat().st_size == src.stat().st_size

    def remove_demo_pack(self) -> None:
        if (self.packs_dir / "demo").exists():
            r = self.request("DELETE", "replicheck/v1/packs/demo", timeout=60)
            if r.status != 200:
                shutil.rmtree(self.packs_dir / "demo")

    # -- generation through the API -------------------------------------------------------------------
    def txt2img(self, **kw) -> dict:
        body = {"prompt": "a cup of coffee on a saucer", "steps": 4, "width": 64, "height": 64, "seed": 1,
                "sampler_name": "Euler", "cfg_scale": 7}
        body.update(kw)
        return self._generate("sdapi/v1/txt2img", {k: v for k, v in body.items() if v is not None})

    def img2img(self, **kw) -> dict:
        return self._generate("sdapi/v1/img2img", kw)

    def _generate(self, path: str, body: dict, timeout: float = 900) -> dict:
        """POST a generation. SD.Next answers at once with no image and an empty info while its model is
        still loading after a start ('Aborted: op=process model not loaded'): asked again until it loads."""
        end = time.time() + timeout
        while True:
            r = self.post(path, body, timeout=timeout)
            if r.status != 200:
                raise HarnessError(f"POST /{path}: {r.status} {r.text[:1000]}")
            loading = not r.body.get("images") and not r.body.get("info") and self.flavor.name == "sdnext"
            if not loading:
                return r.body
            if time.time() > end:
                raise HarnessError(f"POST /{path}: no image and no info for {timeout:.0f}s; log:\n"
                                   f"{self.log_since_mark()[-2000:]}")
            time.sleep(10)

    def check_image(self, data: bytes, **kw) -> Response:
        return self.post("replicheck/v1/check", {"image": base64.b64encode(data).decode("ascii"), **kw}, timeout=300)


def infotexts(api_result: dict) -> list[str]:
    """The per-image infotexts of a /sdapi/v1/txt2img or img2img answer (grid first when there is one)."""
    info = api_result.get("info")
    info = json.loads(info) if isinstance(info, str) else info
    return list(info.get("infotexts") or [])


def infotext_value(infotext: str, key: str) -> str | None:
    """The value of `key` in a web UI infotext's parameter line (`Key: value, Other: ...`), or None."""
    last = infotext.strip().splitlines()[-1] if infotext.strip() else ""
    m = re.search(rf'(?:^|, ){re.escape(key)}: ("(?:[^"\\]|\\.)*"|[^,]*(?:, already in the input image)?)', last)
    if not m:
        return None
    value = m.group(1)
    return json.loads(value) if value.startswith('"') else value.strip()


VERDICT = re.compile(r"^(none|no copy|no match|possible copy|likely copy|duplicate|not checked)\b")


def verdict_word(value: str | None) -> str | None:
    if value is None:
        return None
    m = VERDICT.match(value)
    return m.group(1) if m else value


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def decode_b64_image(data: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[-1])))


def kill_signal_in_log(text: str) -> str | None:
    """A line saying the web UI died from a signal (SIGBUS, SIGSEGV), if any."""
    for line in text.splitlines():
        if re.search(r"Bus error|Segmentation fault|core dumped|Killed", line):
            return line.strip()
    return None


__all__ = ["FLAVORS", "HarnessError", "WebUI", "locate", "skip_reason", "skip_unless_configured", "infotexts", "infotext_value",
           "verdict_word", "png_bytes", "decode_b64_image", "kill_signal_in_log", "DEMO_IMAGES"]
