"""A list's images fetched into webdataset shards, the one way every build does it: in a process
group of its own (killed to cancel, or when the build dies), at a lower priority than a generation,
every request bounded (fetch_http.get), watched for progress.

    rows (fetch_lists.collect_rows) -> WORK/images/NNNNN.tar + NNNNN_stats.json -> WORK/images/.complete

A CSV list's rows (`rows.jsonl`) are fetched by replicheck itself (fetch_http.py: the standard
library and Pillow); a parquet list's (`rows.parquet`, from a recipe or `build FILE.parquet`) by
img2dataset with the same bounds (fetch_img2dataset.py). Both write the same shards and stats.

A fetch that got no image is never marked done (the next run fetches again), and one whose first
answers all say the network is down stops at once saying so. A shard where every row failed to
connect is fetched again once at the next run (RETRIED_FILE).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from lib_replicheck.builder.fetch_http import EXIT_NO_NETWORK, MAX_IMAGE_PIXELS, STOPPED_FILE, network_down
from lib_replicheck.download import Cancelled
from lib_replicheck.errors import ReplicheckError

#: Rows per shard: a killed fetch redoes at most one shard per process.
MIN_SHARD_ROWS, MAX_SHARD_ROWS = 20, 10_000
#: Lists shorter than this are fetched by one img2dataset process (with its threads).
SMALL_LIST = 5_000
#: The shards given a second chance after every row failed to connect (see _shards_cut_off).
RETRIED_FILE = "retried.json"
#: Niceness of the fetch process and its workers: a generation on the same machine goes first.
FETCH_NICENESS = 10
#: Where the shards go in the work folder, and the file that says they are all there.
IMAGES, COMPLETE = "images", ".complete"


def fetched(work: Path) -> dict | None:
    """The stats of a fetch finished in `work`, or None: absent, unreadable, or with no image fetched."""
    try:
        stats = json.loads((Path(work) / IMAGES / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stats, dict) or not isinstance(stats.get("ok"), int) or stats["ok"] < 1:
        return None
    return stats


def fetch_images(rows: Path, n_rows: int, work: Path, *, fmt: str, threads: int, processes: int, timeout: int,
                 image_size: int, who: str, error: type = ReplicheckError,
                 progress: Callable[[int, int, str], None] | None = None,
                 cancel: threading.Event | None = None) -> dict:
    """Fetch the images of `rows` (`n_rows` of them, a CSV list's `fmt` "csv" or a parquet's) into
    `work/images` and return the stats (images fetched `ok`, rows `failed`, `errors` by reason);
    resumes what an earlier run left. `image_size`: shorter side kept (0: as they came). `progress
    (done, total, line)` is called every half second; a set `cancel` kills the fetch (Cancelled).
    Errors are `error`s whose message starts with `who`."""
    out = work / IMAGES
    done_marker = out / COMPLETE
    stats = fetched(work)
    show = progress or (lambda done, total, line: None)
    if stats is not None:
        show(n_rows, n_rows, f"{stats['ok']} images fetched earlier")
        return stats
    if out.exists() and done_marker.exists():  # marked done with nothing fetched (an older version did)
        shutil.rmtree(out, ignore_errors=True)
    shard_rows = max(MIN_SHARD_ROWS, min(MAX_SHARD_ROWS, n_rows // 50 or 1))
    stopped = work / STOPPED_FILE
    stopped.unlink(missing_ok=True)
    # each img2dataset process imports torch (through webdataset): seconds each; one is enough for a
    # small list, whose fetching is bound by the network, not by decoding
    config = {"tool": "http" if fmt == "csv" else "img2dataset", "rows": str(rows), "out": str(out),
              "threads": threads, "processes": 1 if n_rows < SMALL_LIST else processes, "timeout": timeout,
              "image_size": image_size, "shard_rows": shard_rows, "stopped": str(stopped)}
    tool = "the image fetch" if fmt == "csv" else "img2dataset"
    out.mkdir(parents=True, exist_ok=True)
    show(0, n_rows, f"fetching {n_rows:,} images")
    errlog = work / "fetch.log"
    with open(errlog, "ab") as err:
        proc = subprocess.Popen(command(config), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                cwd=str(work), env=_child_env())
        try:
            while proc.poll() is None:
                if cancel is not None:
                    if cancel.wait(0.5):
                        _kill_group(proc)
                        raise Cancelled()
                else:
                    time.sleep(0.5)
                s = img2dataset_stats(out)
                show(s["done"], n_rows, f"{s['ok']} fetched, {s['failed']} failed")
        except BaseException:
            _kill_group(proc)
            raise
    if proc.returncode == EXIT_NO_NETWORK and stopped.is_file():
        raise error(_no_network(who, stopped))
    stats = img2dataset_stats(out)
    if proc.returncode != 0 or stats["done"] < n_rows:
        tail = errlog.read_text(encoding="utf-8", errors="replace")[-600:].strip()
        raise error(f"{who}: {tool} stopped after {stats['done']} of {n_rows} rows "
                    f"(exit status {proc.returncode}); run the build again to go on from there"
                    + (f": {tail.splitlines()[-1]}" if tail else ""))
    cut_off = _shards_cut_off(out)
    if cut_off:
        raise error(f"{who}: {len(cut_off)} shard(s) of {shard_rows} rows got no image, every row "
                    "failing to connect: the network seems down. Run the build again once it is back: those "
                    "rows are fetched again (once), the others are kept")
    if stats["ok"] == 0:
        shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: the next build fetches every row again
        raise error(f"{who}: none of the {n_rows} images could be fetched ("
                    + "; ".join(f"{k}: {v}" for k, v in list(stats["errors"].items())[:5])
                    + "); nothing is kept, the next build tries them all again")
    from lib_replicheck.atomic import write_atomic

    write_atomic(done_marker, json.dumps(stats))
    show(n_rows, n_rows, f"{stats['ok']} fetched, {stats['failed']} failed")
    return stats


def img2dataset_stats(folder: Path) -> dict:
    """What the fetch finished so far: rows done, images fetched, rows failed and why (the stats
    file of each shard it completed, as img2dataset writes them)."""
    done = ok = failed = 0
    errors: dict[str, int] = {}
    for f in sorted(Path(folder).glob("*_stats.json")):
        try:
            s = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # being written: counted at the next look
        done += int(s.get("count", 0))
        ok += int(s.get("successes", 0))
        failed += int(s.get("failed_to_download", 0)) + int(s.get("failed_to_resize", 0))
        for k, v in (s.get("status_dict") or {}).items():
            if k != "success":
                why = failure_reason(k)
                errors[why] = errors.get(why, 0) + int(v)
    return {"done": done, "ok": ok, "failed": failed, "errors": errors}


def failure_reason(message: str) -> str:
    """img2dataset's error for a row, in a few words (OpenCV's pixel bound is a multi-line assertion)."""
    if "imgcodecs" in message and ("-215" in message or "validateInputImageSize" in message):
        return f"more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
    if message.startswith("Image decoding error"):
        return "not an image"
    return " ".join(message.split())[:80]


def _no_network(who: str, stopped: Path) -> str:
    try:
        info = json.loads(stopped.read_text(encoding="utf-8"))
        reasons = "; ".join(f"{k}: {v}" for k, v in list(info["reasons"].items())[:3])
        seen = f"the first {info['answers']} images, from {info['hosts']} hosts, all failed to connect ({reasons})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        seen = "the first images all failed to connect"
    return (f"{who}: no network: {seen}. Check the connection (and HTTP_PROXY / HTTPS_PROXY), then run the "
            "build again; nothing was marked done")


def _shards_cut_off(out: Path) -> list[str]:
    """Shards where not one image came and every row failed to connect: fetched while the network
    was down. Their files are removed so that they are fetched again at the next run; a shard is
    given that second chance once (recorded in RETRIED_FILE), so rows whose hosts are really gone
    end as failures."""
    from lib_replicheck.atomic import write_atomic

    retried_path = out.parent / RETRIED_FILE
    try:
        retried = set(json.loads(retried_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        retried = set()
    cut = []
    for stats_file in sorted(out.glob("*_stats.json")):
        shard = stats_file.name.split("_")[0]
        try:
            s = json.loads(stats_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        errors = {k: v for k, v in (s.get("status_dict") or {}).items() if k != "success"}
        if shard in retried or int(s.get("successes", 0)) or not errors:
            continue
        if all(network_down(k) for k in errors):
            cut.append(shard)
    if cut:
        write_atomic(retried_path, json.dumps(sorted(retried | set(cut))))
        for shard in cut:  # the stats file last: without it the shard is fetched again
            for suffix in (".tar", ".parquet", "_stats.json"):
                (out / f"{shard}{suffix}").unlink(missing_ok=True)
    return cut


def _child_env() -> dict:
    """This environment, with this copy of lib_replicheck importable first (the web UI adds its
    extensions to sys.path, not to PYTHONPATH)."""
    import lib_replicheck

    env = dict(os.environ)
    root = str(Path(lib_replicheck.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL) if hasattr(os, "killpg") else proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def exit_with_parent() -> None:
    """Kill this process group when the process that started it dies (a killed build must not leave
    a fetch (this one or img2dataset) going on its own; the next run resumes the fetch instead)."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(os.getpgrp(), signal.SIGKILL)  # its own group: fetch_images starts a session

    if hasattr(os, "killpg") and os.getpgrp() == os.getpid():
        threading.Thread(target=watch, daemon=True, name="replicheck-parent-watch").start()


def command(config: dict) -> list[str]:
    """The command that fetches as `config` says in a process of its own (killed to cancel)."""
    return [sys.executable, "-m", "lib_replicheck.builder.fetch", json.dumps(config)]


def _main(config: dict) -> int:
    exit_with_parent()
    if hasattr(os, "nice"):
        os.nice(FETCH_NICENESS)  # inherited by img2dataset's worker processes
    if config["tool"] == "img2dataset":
        from lib_replicheck.builder.fetch_img2dataset import fetch_rows as img2dataset_rows

        return img2dataset_rows(config)
    from lib_replicheck.builder.fetch_http import fetch_rows

    return fetch_rows(Path(config["rows"]), Path(config["out"]), threads=int(config["threads"]),
                      timeout=float(config["timeout"]), image_size=int(config["image_size"]),
                      shard_rows=int(config["shard_rows"]), stopped=Path(config["stopped"]))


if __name__ == "__mp_main__":  # img2dataset's worker processes (spawned) import the main module as this
    from lib_replicheck.builder.fetch_img2dataset import bound_img2dataset

    bound_img2dataset()

if __name__ == "__main__":  # `python -m lib_replicheck.builder.fetch CONFIG`: see command()
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lib_replicheck.builder.fetch CONFIG_JSON")
    sys.exit(_main(json.loads(sys.argv[1])))
