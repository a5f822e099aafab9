"""Building a registry recipe into an installed pack: list -> fetch -> embed -> index -> install.

    python -m lib_replicheck packs get NAME [--sample N] [--list PATH] [--accept-unpinned]

Everything happens in a hidden work folder in the packs folder, `.NAME.recipe/`:

    lists/part-00000.csv|parquet  the recipe's list files, each checked against its sha256
    rows.parquet + rows.json      the rows to fetch (columns normalised, sample and exclusions applied)
    images/                       img2dataset's webdataset shards (a shard is done once its stats exist)
    build/                        the embedded shards (builder/work.py fingerprints them)

Each stage reuses what an earlier, interrupted run finished (a killed process, a dropped network,
a cancel): a rerun goes on from there. The pack appears in the packs folder only when it is
complete and verified (packs.publish); the work folder is removed after that. A cancel stops
img2dataset (its own process group) or the embedding between two images; nothing half-built is
ever installed. Dead URLs are counted, by reason, in the result.

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

from lib_replicheck.download import Cancelled, Policy, fetch
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.registry.recipe import MAX_EXCLUDE_BYTES, MAX_LIST_BYTES, RegistryRecipe

STAGES = ("list", "fetch", "embed", "index")
PINS_FILE = ".recipe-pins.json"
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
    try:
        data = json.loads((packs_dir / PINS_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_pins(packs_dir: Path, pins: dict) -> None:
    path = packs_dir / PINS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(pins, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    from lib_replicheck.embedders.weights import sha256_file

    return sha256_file(path)


def list_files(recipe: RegistryRecipe, packs_dir: Path, work: Path, opts: GetOptions, report: _Reporter,
               cancel, policy: Policy) -> list[tuple[Path, str]]:
    """The list files, verified, in order, each with its sha256; for a sample, only as many as hold
    `opts.sample` rows."""
    from lib_replicheck.builder.sources import ListError

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
                rows += _count_rows(out[-1][0], recipe)
            except ListError as e:
                raise RecipeError(f"recipe {recipe.name}: {e}") from None
            if rows >= opts.sample:
                break
    report("list", n, n, "list ready")
    return out


def _count_rows(path: Path, recipe: RegistryRecipe) -> int:
    if recipe.list.format == "parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    from lib_replicheck.builder.sources import read_list

    return read_list(path, "csv", recipe.list.columns, delimiter=recipe.list.delimiter,
                     optional=recipe.list.optional).num_rows


def rows_stage(recipe: RegistryRecipe, files: list[tuple[Path, str]], work: Path, opts: GetOptions,
               exclusions, report: _Reporter) -> tuple[Path, int, int]:
    """rows.parquet: the rows to fetch, written once per (list, sample, exclusions); returns its
    path, its rows, and the rows the exclusion list dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lib_replicheck.builder.sources import ListError, read_list, write_rows

    rows, meta = work / "rows.parquet", work / "rows.json"
    want = {"lists": [d for _, d in files], "sample": opts.sample, "columns": recipe.list.columns,
            "exclude": exclusions.digest if exclusions else None}
    try:
        have = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if have is not None and have.get("want") == want and rows.is_file():
        return rows, int(have["rows"]), int(have["excluded"])
    if (work / "images").exists() or (work / "build").exists():
        report.log(f"{work}: the list, sample or exclusions changed since the last run: starting over")
        shutil.rmtree(work / "images", ignore_errors=True)
        shutil.rmtree(work / "build", ignore_errors=True)
    tables = []
    total = 0
    for j, (path, _) in enumerate(files):
        try:
            t = read_list(path, recipe.list.format, recipe.list.columns, delimiter=recipe.list.delimiter,
                          optional=recipe.list.optional)
        except ListError as e:
            raise RecipeError(f"recipe {recipe.name}: {e}") from None
        tables.append(t)
        total += t.num_rows
        if opts.sample and total >= opts.sample:
            break
    table = pa.concat_tables(tables) if tables else pa.table({"URL": pa.array([], pa.string())})
    if opts.sample:
        table = table.slice(0, opts.sample)
    excluded = 0
    if exclusions:
        values = pa.array(sorted(exclusions.values), type=pa.string())
        keep = pc.invert(pc.is_in(table["URL"], value_set=values))
        if "hash" in table.column_names:
            keep = pc.and_kleene(keep, pc.invert(pc.fill_null(pc.is_in(table["hash"], value_set=values), False)))
        before = table.num_rows
        table = table.filter(keep)
        excluded = before - table.num_rows
    if table.num_rows == 0:
        raise RecipeError(f"recipe {recipe.name}: the list has no rows with a URL to fetch")
    write_rows(table, rows)
    tmp = meta.with_name("rows.json.tmp")
    tmp.write_text(json.dumps({"want": want, "rows": table.num_rows, "excluded": excluded}), encoding="utf-8")
    os.replace(tmp, meta)
    return rows, table.num_rows, excluded


# -- stage 2: the images ----------------------------------------------------------------------------

def fetch_stage(rows: Path, n_rows: int, work: Path, recipe: RegistryRecipe, opts: GetOptions, report: _Reporter,
                cancel) -> dict:
    """img2dataset in a process group of its own, watched for progress and cancel; returns its
    stats (images fetched, rows failed by reason)."""
    from lib_replicheck.builder.sources import fetch_command, img2dataset_stats

    out = work / "images"
    done_marker = out / ".complete"
    if done_marker.is_file():
        stats = json.loads(done_marker.read_text(encoding="utf-8"))
        report("fetch", n_rows, n_rows, f"{stats['ok']} images fetched earlier")
        return stats
    shard_rows = max(MIN_SHARD_ROWS, min(MAX_SHARD_ROWS, n_rows // 50 or 1))
    # each img2dataset process imports torch (through webdataset): seconds each; one is enough for a
    # small list, whose fetching is bound by the network, not by decoding
    processes = 1 if n_rows < SMALL_LIST else opts.processes
    cmd = fetch_command(rows, out, processes=processes, threads=opts.threads,
                        timeout=int(recipe.build.get("download_timeout", 10)),
                        image_size=int(recipe.build.get("image_size", 512)), shard_rows=shard_rows)
    out.mkdir(parents=True, exist_ok=True)
    errlog = work / "img2dataset.log"
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
    stats = img2dataset_stats(out)
    if proc.returncode != 0 or stats["done"] < n_rows:
        tail = errlog.read_text(encoding="utf-8", errors="replace")[-600:].strip()
        raise RecipeError(f"recipe {recipe.name}: img2dataset stopped after {stats['done']} of {n_rows} rows "
                          f"(exit status {proc.returncode}); run the build again to go on from there"
                          + (f": {tail.splitlines()[-1]}" if tail else ""))
    cut_off = _shards_cut_off(out)
    if cut_off:
        raise RecipeError(f"recipe {recipe.name}: {len(cut_off)} shard(s) of {shard_rows} rows got no image, every row "
                          "failing to connect: the network seems down. Run the build again once it is back: those "
                          "rows are fetched again (once), the others are kept")
    tmp = done_marker.with_name(".complete.tmp")
    tmp.write_text(json.dumps(stats), encoding="utf-8")
    os.replace(tmp, done_marker)
    report("fetch", n_rows, n_rows, f"{stats['ok']} fetched, {stats['failed']} failed")
    return stats


#: What urllib says when the network (not the image's host) is the problem.
NETWORK_DOWN = ("Connection refused", "Network is unreachable", "No route to host",
                "Temporary failure in name resolution", "timed out")
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
        if all(any(n in k for n in NETWORK_DOWN) for k in errors):
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
    from lib_replicheck.registry.install import pack_lock

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
    if recipe.sample is False and opts.sample:
        raise RecipeError(f"recipe {recipe.name}: --sample is offered only for large lists")
    if opts.sample is not None and opts.sample < 1:
        raise RecipeError("--sample: give a positive number of images")
    if opts.offline:
        raise RecipeError(f"recipe {recipe.name}: its images are downloaded; network access is off (--offline)")
    with pack_lock(packs_dir, recipe.name):
        work = work_dir(packs_dir, recipe.name)
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
        store = open_work(work / "build", fingerprint(rows, "parquet", embedder.spec, options),
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


def build_for_manager(recipe: RegistryRecipe, packs_dir: str | Path, *, progress=None, cancel=None, gate=None,
                      models_dir: str | None = None, device: str = "cpu") -> RecipeResult:
    """get_recipe as the web UI's pack manager calls it (registry.manager.PackManager(build_recipe=...)):
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
           "work_dir"]
