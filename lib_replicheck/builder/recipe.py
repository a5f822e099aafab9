"""Building a registry recipe into an installed pack: list -> fetch -> embed -> index -> install.

    python -m lib_replicheck packs get NAME [--sample N] [--list PATH] [--accept-unpinned]

Everything happens in a hidden work folder in the packs folder, `.NAME.recipe/`:

    lists/part-00000.csv|parquet  the recipe's list files, each checked against its sha256
    rows.jsonl|parquet + rows.json the rows to fetch (columns normalised, sample and exclusions applied)
    images/                       webdataset shards of the images (a shard is done once its stats exist)
    build/                        the embedded shards (builder/work.py fingerprints them)

A CSV list is read with Python's csv module and its images fetched by replicheck itself
(builder/fetch.py): requirements.txt is all it needs. A parquet list is read with pyarrow and
fetched with img2dataset (requirements-builder.txt); without them the build stops before anything
starts, saying what to install (registry.parse_recipe.MissingPackages).

Each stage reuses what an earlier, interrupted run finished (a killed process, a dropped network,
a cancel): a rerun goes on from there. The pack appears in the packs folder only when it is
complete and verified (packs.publish); the work folder is removed after that. A cancel stops
the fetch (its own process group) or the embedding between two images; nothing half-built is
ever installed. Dead URLs are counted, by reason, in the result. A fetch that got no image is
never marked done (the next run fetches again), and one whose first answers all say the network is
down stops at once saying so; `--force` (and `packs remove NAME`) clear the work folder.

A list whose sha256 nobody published (PD12M's parquets on the hub) is used only when the user
accepts to pin it on first use: its sha256 is then recorded in `.recipe-pins.json` in the packs
folder and every later build refuses a file that differs.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lib_replicheck.builder.fetch import EXIT_NO_NETWORK, STOPPED_FILE, network_down
from lib_replicheck.download import Cancelled, Policy, fetch
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.packs.manifest import SHA256_RE
from lib_replicheck.registry.parse_recipe import MAX_EXCLUDE_BYTES, MAX_LIST_BYTES, RegistryRecipe

STAGES = ("list", "fetch", "embed", "index")
PINS_FILE = ".recipe-pins.json"
#: Bound on the pins file (a few hundred bytes a list file).
MAX_PINS_BYTES = 4 * 1024**2
#: Rows per img2dataset shard: a killed fetch redoes at most one shard per process.
MIN_SHARD_ROWS, MAX_SHARD_ROWS = 20, 10_000
#: Lists shorter than this are fetched by one img2dataset process (with its threads).
SMALL_LIST = 5_000


class RecipeError(ReplicheckError):
    pass


@dataclass
class Progress:
    """Where a build stands: the stage, its units done and expected, and a line for people."""

    stage: str = "list"
    done: int = 0
    total: int = 0
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RecipeResult:
    path: Path
    name: str
    listed: int  # rows of the list used (after sample and exclusions)
    fetched: int  # images img2dataset got
    failed: int  # rows whose image could not be fetched or decoded by img2dataset
    failures: dict[str, int] = field(default_factory=dict)  # failed rows by reason
    skipped: int = 0  # fetched images the embedder could not use
    count: int = 0  # images in the pack
    excluded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class GetOptions:
    """What the user chose for this build (the recipe says the rest)."""

    sample: int | None = None  # the first N rows of the list
    list_path: str | None = None  # a user's own list (recipes with `user: true`)
    accept_unpinned: bool = False  # pin list files without a published sha256 on first use
    device: str = "cpu"
    runtime: str = "auto"
    models_dir: str | None = None
    weights: str | None = None
    offline: bool = False
    processes: int = 2
    threads: int = 16
    overwrite: bool = False


def work_dir(packs_dir: Path, name: str) -> Path:
    return Path(packs_dir) / f".{name}.recipe"


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


class _Reporter:
    def __init__(self, progress: Callable[[Progress], None] | None, log: Callable[[str], None]):
        self.state = Progress()
        self._progress = progress
        self.log = log

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        self.state = Progress(stage, done, total, message or self.state.message if stage == self.state.stage
                              else message)
        if self._progress is not None:
            self._progress(self.state)


# -- stage 1: the list ------------------------------------------------------------------------------

def _pins(packs_dir: Path) -> dict:
    """The sha256 of list files pinned on first use, by recipe and URL. A file that cannot be read
    as such is an error naming it: ignoring it would pin a changed list again."""
    path = packs_dir / PINS_FILE
    try:
        if path.stat().st_size > MAX_PINS_BYTES:
            raise RecipeError(f"{path}: larger than {MAX_PINS_BYTES:,} bytes, not a file of pinned sha256s")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    fix = ("it records the sha256 of list files pinned on first use, and nothing is pinned again while it "
           "cannot be read: fix it, or remove it to pin every list again on its next use")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise RecipeError(f"{path}: not JSON; {fix}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: not a JSON object; {fix}")
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise RecipeError(f"{path}: {name!r}: not an object of URL: sha256; {fix}")
        for url, digest in entry.items():
            if not isinstance(digest, str) or not SHA256_RE.match(digest):
                raise RecipeError(f"{path}: {name!r}: {url[:200]!r}: not a sha256; {fix}")
    return data


def _save_pins(packs_dir: Path, pins: dict) -> None:
    from lib_replicheck.atomic import write_atomic

    write_atomic(packs_dir / PINS_FILE, json.dumps(pins, indent=1, sort_keys=True).encode("utf-8"))


def _sha256(path: Path) -> str:
    from lib_replicheck.embedders.weights import sha256_file

    return sha256_file(path)


def list_files(recipe: RegistryRecipe, packs_dir: Path, work: Path, opts: GetOptions, report: _Reporter,
               cancel, policy: Policy) -> list[tuple[Path, str]]:
    """The list files, verified, in order, each with its sha256; for a sample, only as many as hold
    `opts.sample` rows."""
    from lib_replicheck.builder.sources import ListError, count_rows

    ext = recipe.list.format
    if recipe.list.user:
        if not opts.list_path:
            cols = recipe.list.columns
            need = [c for r, c in cols.items() if r not in recipe.list.optional]
            maybe = [c for r, c in cols.items() if r in recipe.list.optional]
            raise RecipeError(f"recipe {recipe.name}: give your own list file: --list PATH (a {ext} file with the "
                              f"columns {', '.join(need)}" + (f"; {', '.join(maybe)} kept when present" if maybe else "")
                              + ")")
        p = Path(opts.list_path).expanduser()
        if not p.is_file():
            raise RecipeError(f"recipe {recipe.name}: --list {opts.list_path}: no such file")
        return [(p, _sha256(p))]
    if recipe.list.unpinned and not opts.accept_unpinned:
        raise RecipeError(
            f"recipe {recipe.name}: its list ({len(recipe.list.files)} file(s) at "
            f"{recipe.list.files[0].urls[0]}{' ...' if len(recipe.list.files) > 1 else ''}) has no published sha256, "
            "so what is downloaded cannot be checked against anything. To use it anyway, pass --accept-unpinned: "
            f"each file's sha256 is then recorded on first use in {packs_dir / PINS_FILE} and later builds refuse a "
            "file that differs. Or write your own registry entry with the sha256s filled in.")
    pins = _pins(packs_dir)
    mine = pins.setdefault(recipe.name, {})
    out: list[tuple[Path, str]] = []
    rows = 0
    n = len(recipe.list.files)
    for i, f in enumerate(recipe.list.files):
        _check_cancel(cancel)
        report("list", i, n, f"list file {i + 1} of {n}")
        if f.shipped is not None:
            path = f.shipped_path()
            if not path.is_file():
                raise RecipeError(f"recipe {recipe.name}: list.files[{i}].shipped: {f.shipped} is not in this copy "
                                  "of replicheck")
            if _sha256(path) != f.sha256:
                raise RecipeError(f"recipe {recipe.name}: list.files[{i}].sha256: {f.shipped} does not match it")
            out.append((path, f.sha256))
        else:
            dest = work / "lists" / f"part-{i:05d}.{ext}"
            url = f.urls[0]
            expected = f.sha256 or mine.get(url)
            if dest.is_file() and expected and _sha256(dest) != expected:
                dest.unlink()
            if not dest.is_file():
                try:
                    fetch(f.urls, dest, size=f.size, sha256=expected, policy=policy, cancel=cancel,
                          max_bytes=MAX_LIST_BYTES)
                except Cancelled:
                    raise
                except ReplicheckError as e:
                    field_ = "sha256" if "sha256" in str(e) else "urls"
                    raise RecipeError(f"recipe {recipe.name}: list.files[{i}].{field_}: {e}") from None
            digest = _sha256(dest)
            if expected is None:
                mine[url] = digest
                _save_pins(packs_dir, pins)
                report.log(f"{url}: no published sha256; pinned on first use as {digest} (in {PINS_FILE})")
            out.append((dest, digest))
        if opts.sample:
            try:
                rows += count_rows(out[-1][0], recipe.list.format, recipe.list.columns,
                                   delimiter=recipe.list.delimiter, optional=recipe.list.optional)
            except ListError as e:
                raise RecipeError(f"recipe {recipe.name}: {e}") from None
            if rows >= opts.sample:
                break
    report("list", n, n, f"{len(out)} list file(s) verified")
    return out


def rows_stage(recipe: RegistryRecipe, files: list[tuple[Path, str]], work: Path, opts: GetOptions,
               exclusions, report: _Reporter) -> tuple[Path, int, int]:
    """The rows to fetch (sources.rows_file), written once per (list, sample, exclusions); returns
    their file, their number, and the rows the exclusion list dropped."""
    from lib_replicheck.builder.sources import ListError, collect_rows, rows_file

    rows, meta = rows_file(work, recipe.list.format), work / "rows.json"
    want = {"lists": [d for _, d in files], "sample": opts.sample, "columns": recipe.list.columns,
            "exclude": exclusions.digest if exclusions else None, "rows": rows.name}
    try:
        have = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if isinstance(have, dict) and have.get("want") == want and rows.is_file():
        return rows, int(have["rows"]), int(have["excluded"])
    if (work / "images").exists() or (work / "build").exists():
        report.log(f"{work}: the list, sample or exclusions changed since the last run: starting over")
        shutil.rmtree(work / "images", ignore_errors=True)
        shutil.rmtree(work / "build", ignore_errors=True)
    report("list", 0, 0, "reading the list")
    try:
        n, excluded = collect_rows([p for p, _ in files], recipe.list.format, recipe.list.columns, rows,
                                   delimiter=recipe.list.delimiter, optional=recipe.list.optional,
                                   sample=opts.sample, exclusions=exclusions)
    except ListError as e:
        raise RecipeError(f"recipe {recipe.name}: {e}") from None
    if n == 0:
        raise RecipeError(f"recipe {recipe.name}: the list has no rows with a URL to fetch")
    tmp = meta.with_name("rows.json.tmp")
    tmp.write_text(json.dumps({"want": want, "rows": n, "excluded": excluded}), encoding="utf-8")
    os.replace(tmp, meta)
    return rows, n, excluded


# -- stage 2: the images ----------------------------------------------------------------------------

def fetch_stage(rows: Path, n_rows: int, work: Path, recipe: RegistryRecipe, opts: GetOptions, report: _Reporter,
                cancel) -> dict:
    """The images, fetched in a process group of their own (builder/fetch.py for a CSV list,
    img2dataset for a parquet one), watched for progress and cancel; returns the stats (images
    fetched, rows failed by reason). Marked done only when some image came."""
    from lib_replicheck.builder import fetch
    from lib_replicheck.builder.sources import fetch_command, img2dataset_stats

    out = work / "images"
    done_marker = out / ".complete"
    stats = _complete(done_marker)
    if stats is not None:
        report("fetch", n_rows, n_rows, f"{stats['ok']} images fetched earlier")
        return stats
    if out.exists() and done_marker.exists():  # marked done with nothing fetched (an older version did)
        shutil.rmtree(out, ignore_errors=True)
    shard_rows = max(MIN_SHARD_ROWS, min(MAX_SHARD_ROWS, n_rows // 50 or 1))
    timeout = int(recipe.build.get("download_timeout", 10))
    image_size = int(recipe.build.get("image_size", 512))
    stopped = work / STOPPED_FILE
    stopped.unlink(missing_ok=True)
    if recipe.list.format == "csv":
        tool = "the image fetch"
        cmd = fetch.command(rows, out, threads=opts.threads, timeout=timeout, image_size=image_size,
                            shard_rows=shard_rows, stopped=stopped)
    else:
        tool = "img2dataset"
        # each img2dataset process imports torch (through webdataset): seconds each; one is enough for a
        # small list, whose fetching is bound by the network, not by decoding
        cmd = fetch_command(rows, out, processes=1 if n_rows < SMALL_LIST else opts.processes, threads=opts.threads,
                            timeout=timeout, image_size=image_size, shard_rows=shard_rows)
    out.mkdir(parents=True, exist_ok=True)
    report("fetch", 0, n_rows, f"fetching {n_rows:,} images")
    errlog = work / "fetch.log"
    with open(errlog, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
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
                report("fetch", s["done"], n_rows, f"{s['ok']} fetched, {s['failed']} failed")
        except BaseException:
            _kill_group(proc)
            raise
    if proc.returncode == EXIT_NO_NETWORK and stopped.is_file():
        raise RecipeError(_no_network(recipe.name, stopped))
    stats = img2dataset_stats(out)
    if proc.returncode != 0 or stats["done"] < n_rows:
        tail = errlog.read_text(encoding="utf-8", errors="replace")[-600:].strip()
        raise RecipeError(f"recipe {recipe.name}: {tool} stopped after {stats['done']} of {n_rows} rows "
                          f"(exit status {proc.returncode}); run the build again to go on from there"
                          + (f": {tail.splitlines()[-1]}" if tail else ""))
    cut_off = _shards_cut_off(out)
    if cut_off:
        raise RecipeError(f"recipe {recipe.name}: {len(cut_off)} shard(s) of {shard_rows} rows got no image, every row "
                          "failing to connect: the network seems down. Run the build again once it is back: those "
                          "rows are fetched again (once), the others are kept")
    if stats["ok"] == 0:
        shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: the next build fetches every row again
        raise RecipeError(f"recipe {recipe.name}: none of the {n_rows} images could be fetched ("
                          + "; ".join(f"{k}: {v}" for k, v in list(stats["errors"].items())[:5])
                          + "); nothing is kept, the next build tries them all again")
    tmp = done_marker.with_name(".complete.tmp")
    tmp.write_text(json.dumps(stats), encoding="utf-8")
    os.replace(tmp, done_marker)
    report("fetch", n_rows, n_rows, f"{stats['ok']} fetched, {stats['failed']} failed")
    return stats


def _complete(marker: Path) -> dict | None:
    """The stats of a finished fetch, or None: absent, unreadable, or with no image fetched."""
    try:
        stats = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stats, dict) or not isinstance(stats.get("ok"), int) or stats["ok"] < 1:
        return None
    return stats


def _no_network(name: str, stopped: Path) -> str:
    try:
        info = json.loads(stopped.read_text(encoding="utf-8"))
        reasons = "; ".join(f"{k}: {v}" for k, v in list(info["reasons"].items())[:3])
        seen = f"the first {info['answers']} images, from {info['hosts']} hosts, all failed to connect ({reasons})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        seen = "the first images all failed to connect"
    return (f"recipe {name}: no network: {seen}. Check the connection (and HTTP_PROXY / HTTPS_PROXY), then run the "
            "build again; nothing was marked done")


RETRIED_FILE = "retried.json"


def _shards_cut_off(out: Path) -> list[str]:
    """Shards where not one image came and every row failed to connect: fetched while the network
    was down. Their files are removed so that img2dataset fetches them again at the next run; a
    shard is given that second chance once (recorded in RETRIED_FILE), so rows whose hosts are
    really gone end as failures."""
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
        tmp = retried_path.with_name(RETRIED_FILE + ".tmp")
        tmp.write_text(json.dumps(sorted(retried | set(cut))), encoding="utf-8")
        os.replace(tmp, retried_path)
        for shard in cut:  # the stats file last: without it img2dataset redoes the shard
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


# -- stages 3 and 4: embed, index, install ------------------------------------------------------------

def _counted(items, report: _Reporter, total: int, cancel, gate):
    """The items, counted for the progress display; stops at a cancel, waits while `gate` says so."""
    n = 0
    for item in items:
        _check_cancel(cancel)
        if gate is not None:
            gate()
        n += 1
        if n % 8 == 0 or n == total:
            report("embed", n, total, f"{n} of {total} images embedded")
        yield item


def get_recipe(recipe: RegistryRecipe, packs_dir: str | Path, opts: GetOptions | None = None, *,
               progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
               gate: Callable[[], None] | None = None, policy: Policy | None = None,
               log: Callable[[str], None] | None = None) -> RecipeResult:
    """Build `recipe` into `packs_dir/NAME`; resumable, cancellable (Cancelled), and only ever
    installing a complete, verified pack. `gate()` is called before each image is embedded (the
    web UI makes it wait while a generation is being checked)."""
    from lib_replicheck.builder.embed import embed_stage
    from lib_replicheck.builder.options import BuildOptions, crops_for, load_embedder
    from lib_replicheck.builder.sources import webdataset, webdataset_shards
    from lib_replicheck.builder.stages import publish_stage
    from lib_replicheck.builder.work import exclusions_digest, fingerprint, open_work
    from lib_replicheck.packs.publish import check_target
    from lib_replicheck.registry.pack_lock import pack_lock

    opts = opts or GetOptions()
    log = log or (lambda s: print(s, file=sys.stderr))
    report = _Reporter(progress, log)
    packs_dir = Path(packs_dir)
    started = time.perf_counter()
    out = packs_dir / recipe.name
    check_target(out, recipe.name, opts.overwrite)
    if recipe.list.format == "embeddings":  # published vectors: nothing fetched but them, nothing embedded
        from lib_replicheck.builder.embedding_recipe import get_embedding_recipe

        pins = _pins(packs_dir)
        built = get_embedding_recipe(recipe, opts, report, work=work_dir(packs_dir, recipe.name), pins=pins,
                                     save_pins=lambda: _save_pins(packs_dir, pins), pins_file=packs_dir / PINS_FILE,
                                     error=RecipeError, cancel=cancel, policy=policy)
        return RecipeResult(path=built.path, name=recipe.name, listed=built.count, fetched=built.count, failed=0,
                            count=built.count, seconds=time.perf_counter() - started)
    check_options(recipe, opts)
    if opts.offline:
        raise RecipeError(f"recipe {recipe.name}: its images are downloaded; network access is off (--offline)")
    recipe.check_packages()
    _check_weights(recipe, opts)
    with pack_lock(packs_dir, recipe.name):
        work = work_dir(packs_dir, recipe.name)
        if opts.overwrite and work.exists():
            shutil.rmtree(work)
            log(f"--force: the work folder of an earlier build ({work}) was cleared; starting over")
        work.mkdir(parents=True, exist_ok=True)
        policy = policy or Policy()
        files = list_files(recipe, packs_dir, work, opts, report, cancel, policy)
        exclusions = _exclusions(recipe, work, cancel, policy)
        rows, n_rows, excluded = rows_stage(recipe, files, work, opts, exclusions, report)
        if excluded:
            log(f"exclusion list: {excluded} row(s) dropped before fetching")
        _check_cancel(cancel)
        stats = fetch_stage(rows, n_rows, work, recipe, opts, report, cancel)
        _check_cancel(cancel)
        if stats["ok"] == 0:
            raise RecipeError(f"recipe {recipe.name}: none of the {n_rows} images could be fetched ("
                              + "; ".join(f"{k}: {v}" for k, v in list(stats["errors"].items())[:5]) + ")")
        bopts = BuildOptions(embedder=recipe.embedder["id"], runtime=opts.runtime, device=opts.device,
                             models_dir=opts.models_dir, weights=opts.weights, offline=opts.offline,
                             shard_size=int(recipe.build.get("shard_size", 10_000)),
                             batch=int(recipe.build.get("batch", 32)),
                             thumbnails=bool(recipe.build.get("thumbnails", True)),
                             license=recipe.source.get("license") or None)
        report("embed", 0, stats["ok"], "loading the embedder")
        embedder = load_embedder(bopts)
        options = {"shard_size": bopts.shard_size, "crops": list(crops_for(embedder.spec.metric, bopts.centre_crops)),
                   "thumbnails": bopts.thumbnails, "license": bopts.license, "exclude": exclusions_digest(None)}
        store = open_work(work / "build", fingerprint(rows, recipe.list.format, embedder.spec, options),
                          chosen_by_user=False, log=log)
        items = webdataset(webdataset_shards(work / "images"), bopts.license)
        spec = embed_stage(_counted(items, report, stats["ok"], cancel, gate), store, bopts, log,
                           embedder=embedder)
        _check_cancel(cancel)
        report("index", 0, 1, "building the index")
        source = {k: v for k, v in recipe.source.items() if k in ("dataset", "license", "url")}
        source["recipe"] = recipe.name
        built = publish_stage(store, spec, out, bopts, log, name=recipe.name, title=recipe.title,
                              description=recipe.description, source=source, started=started)
        report("index", 1, 1, "installed")
        shutil.rmtree(work, ignore_errors=True)
    return RecipeResult(path=built.path, name=recipe.name, listed=n_rows, fetched=stats["ok"],
                        failed=stats["failed"], failures=dict(stats["errors"]), skipped=len(built.skipped),
                        count=built.count, excluded=excluded, seconds=time.perf_counter() - started)


def _check_weights(recipe: RegistryRecipe, opts: GetOptions) -> None:
    """An SSCD recipe that could not be embedded here (no ONNX file of the model, no torch for its
    TorchScript weights) says so before its images are fetched, with the command that gets the
    model. Nothing is downloaded here: with torch, the weights come when the embedding starts."""
    from lib_replicheck import embedders

    name = str(recipe.embedder.get("id", ""))
    if opts.weights or embedders.kind_of(name) != "sscd":
        return
    from lib_replicheck.embedders.sscd import DEFAULT_MODEL, find_onnx, has_module, no_runtime_message

    model = DEFAULT_MODEL if name == "sscd" else name
    if find_onnx(model, None, opts.models_dir) is None and not has_module("torch"):
        raise RecipeError(f"recipe {recipe.name}: {no_runtime_message(model, opts.models_dir, have_onnx=False)}")


def check_options(recipe: RegistryRecipe, opts: GetOptions) -> None:
    """Options given for this build that do not apply to this recipe are refused, naming them."""
    wrong = []
    if opts.sample is not None and not recipe.sample:
        wrong.append("--sample (offered only by recipes of large lists)")
    if opts.list_path and not recipe.list.user:
        wrong.append("--list (this recipe names its own list)")
    if opts.accept_unpinned and (recipe.list.user or not recipe.list.unpinned):
        wrong.append("--accept-unpinned (every file of this recipe's list has a published sha256)")
    if wrong:
        raise RecipeError(f"recipe {recipe.name}: {'; '.join(wrong)} does not apply")
    if opts.sample is not None and opts.sample < 1:
        raise RecipeError("--sample: give a positive number of images")


def build_for_manager(recipe: RegistryRecipe, packs_dir: str | Path, *, progress=None, cancel=None, gate=None,
                      models_dir: str | None = None, device: str = "cpu") -> RecipeResult:
    """get_recipe as the web UI's pack manager calls it (webui.pack_jobs.PackManager(build_recipe=...)):
    its log lines go to the 'replicheck' logger."""
    import logging

    logger = logging.getLogger("replicheck")
    return get_recipe(recipe, packs_dir, GetOptions(models_dir=models_dir, device=device), progress=progress,
                      cancel=cancel, gate=gate, log=lambda line: logger.info("%s: %s", recipe.name, line))


def _exclusions(recipe: RegistryRecipe, work: Path, cancel, policy: Policy):
    """The recipe's exclusion list (verified), with its digest; None without one."""
    from lib_replicheck.builder.sources import Exclusions

    f = recipe.exclude
    if f is None:
        return None
    if f.shipped is not None:
        path = f.shipped_path()
    else:
        path = work / "lists" / "exclude.txt"
        if not path.is_file():
            try:
                fetch(f.urls, path, size=f.size, sha256=f.sha256, policy=policy, cancel=cancel,
                      max_bytes=MAX_EXCLUDE_BYTES)
            except Cancelled:
                raise
            except ReplicheckError as e:
                raise RecipeError(f"recipe {recipe.name}: exclude: {e}") from None
    if not path.is_file() or _sha256(path) != f.sha256:
        raise RecipeError(f"recipe {recipe.name}: exclude.sha256: the exclusion list does not match it")
    ex = Exclusions(path)
    ex.digest = f.sha256
    return ex


__all__ = ["get_recipe", "build_for_manager", "GetOptions", "Progress", "RecipeResult", "RecipeError", "STAGES",
           "work_dir", "check_options"]
