"""Building a registry recipe into an installed pack: list -> fetch -> embed -> index -> install.

    python -m lib_replicheck packs get NAME [--sample N] [--list PATH] [--accept-unpinned]

Everything happens in a hidden work folder in the packs folder, `.NAME.recipe/`:

    lists/part-00000.csv|parquet  the recipe's list files, each checked against its sha256
    rows.jsonl|parquet + rows.json the rows to fetch (columns normalised, sample and exclusions applied)
    images/                       webdataset shards of the images (a shard is done once its stats exist)
    build/                        the embedded shards (builder/work.py fingerprints them)

The stages: the list (builder/recipe_list.py), the images (builder/fetch.py), then the embedding,
index and install composed by builder/runner.py. A CSV list is read with Python's csv module and its
images fetched by replicheck itself (builder/fetch_http.py): requirements.txt is all it needs. A parquet list is read with pyarrow and
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

import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lib_replicheck.builder.options import GetOptions
from lib_replicheck.builder.recipe_list import PINS_FILE, read_pins, save_pins
from lib_replicheck.builder.recipe_stage import (STAGES, BuildProgress, RecipeError, Reporter, check_cancel,
                                                work_dir)
from lib_replicheck.download import Policy
from lib_replicheck.registry.parse_recipe import RegistryRecipe


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



def fetch_stage(rows: Path, n_rows: int, work: Path, recipe: RegistryRecipe, opts: GetOptions, report: Reporter,
                cancel) -> dict:
    """The images, fetched by builder/fetch.py (its own fetcher for a CSV list, img2dataset for a
    parquet one), watched for progress and cancel; returns the stats (images fetched, rows failed by
    reason). Marked done only when some image came."""
    from lib_replicheck.builder.fetch import fetch_images

    return fetch_images(rows, n_rows, work, fmt=recipe.list.format, threads=opts.threads, processes=opts.processes,
                        timeout=int(recipe.build.get("download_timeout", 10)),
                        image_size=int(recipe.build.get("image_size", 512)), who=f"recipe {recipe.name}",
                        error=RecipeError, progress=lambda done, total, line: report("fetch", done, total, line),
                        cancel=cancel)


def _counted(items, report: Reporter, total: int, cancel, gate):
    """The items, counted for the progress display; stops at a cancel, waits while `gate` says so."""
    n = 0
    for item in items:
        check_cancel(cancel)
        if gate is not None:
            gate()
        n += 1
        if n % 8 == 0 or n == total:
            report("embed", n, total, f"{n} of {total} images embedded")
        yield item


def get_recipe(recipe: RegistryRecipe, packs_dir: str | Path, opts: GetOptions | None = None, *,
               progress: Callable[[BuildProgress], None] | None = None, cancel: threading.Event | None = None,
               gate: Callable[[], None] | None = None, policy: Policy | None = None,
               log: Callable[[str], None] | None = None) -> RecipeResult:
    """Build `recipe` into `packs_dir/NAME`; resumable, cancellable (Cancelled), and only ever
    installing a complete, verified pack. `gate()` is called before each image is embedded (the
    web UI makes it wait while a generation is being checked)."""
    from lib_replicheck.builder.options import BuildOptions, load_embedder
    from lib_replicheck.builder.recipe_background import embed_background_images, fetch_background
    from lib_replicheck.builder.recipe_list import list_files, recipe_exclusions, rows_stage
    from lib_replicheck.builder.runner import PackTarget, WorkFolder, embedded, run, shard_options
    from lib_replicheck.builder.sources import webdataset, webdataset_shards
    from lib_replicheck.builder.work import fingerprint
    from lib_replicheck.packs.publish import check_target
    from lib_replicheck.registry.pack_lock import pack_lock

    opts = opts or GetOptions()
    log = log or (lambda s: print(s, file=sys.stderr))
    report = Reporter(progress, log)
    packs_dir = Path(packs_dir)
    started = time.perf_counter()
    out = packs_dir / recipe.name
    check_target(out, recipe.name, opts.overwrite)
    check_options(recipe, opts)
    if recipe.list.format == "embeddings":  # published vectors: nothing fetched but them, nothing embedded
        from lib_replicheck.builder.embedding_recipe import get_embedding_recipe

        pins = read_pins(packs_dir)
        built = get_embedding_recipe(recipe, opts, report, work=work_dir(packs_dir, recipe.name), pins=pins,
                                     save_pins=lambda: save_pins(packs_dir, pins), pins_file=packs_dir / PINS_FILE,
                                     error=RecipeError, cancel=cancel, policy=policy)
        return RecipeResult(path=built.path, name=recipe.name, listed=built.count, fetched=built.count, failed=0,
                            count=built.count, seconds=time.perf_counter() - started)
    if opts.embedding.offline:
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
        exclusions = recipe_exclusions(recipe, work, cancel, policy)
        rows, n_rows, excluded = rows_stage(recipe, files, work, opts, exclusions, report)
        if excluded:
            log(f"exclusion list: {excluded} row(s) dropped before fetching")
        check_cancel(cancel)
        stats = fetch_stage(rows, n_rows, work, recipe, opts, report, cancel)
        check_cancel(cancel)
        if stats["ok"] == 0:
            raise RecipeError(f"recipe {recipe.name}: none of the {n_rows} images could be fetched ("
                              + "; ".join(f"{k}: {v}" for k, v in list(stats["errors"].items())[:5]) + ")")
        background_images = fetch_background(
            recipe, files, work, opts, exclusions, n_rows, report, cancel,
            lambda bg_rows, n, folder: fetch_stage(bg_rows, n, folder, recipe, opts, report, cancel))
        check_cancel(cancel)
        bopts = BuildOptions(embedder=recipe.embedder["id"], embedding=opts.embedding,
                             shard_size=int(recipe.build.get("shard_size", 10_000)),
                             batch=int(recipe.build.get("batch", 32)),
                             thumbnails=bool(recipe.build.get("thumbnails", True)),
                             license=recipe.source.get("license") or None)
        report("embed", 0, stats["ok"], "loading the embedder")
        embedder = load_embedder(bopts)
        options = shard_options(bopts, embedder.spec.metric)
        items = webdataset(webdataset_shards(work / "images"), bopts.license)
        embed = embedded(_counted(items, report, stats["ok"], cancel, gate), embedder, bopts, log)

        def fill(store) -> None:
            embed(store)
            check_cancel(cancel)
            report("index", 0, 1, "building the index")

        source = {k: v for k, v in recipe.source.items() if k in ("dataset", "license", "url")}
        source["recipe"] = recipe.name
        built = run(PackTarget(out, recipe.name, recipe.title, recipe.description, source),
                    WorkFolder(work / "build", fingerprint(rows, recipe.list.format, embedder.spec, options), keep=True),
                    embedder.spec, fill, bopts, log, started=started,
                    background=None if background_images is None else (
                        lambda: embed_background_images(background_images, embedder, bopts.license, bopts.batch, log)))
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
    emb = opts.embedding
    if emb.weights or embedders.kind_of(name) != "sscd":
        return
    from lib_replicheck.embedders.sscd_weights import DEFAULT_MODEL, find_onnx, has_module, no_runtime_message

    model = DEFAULT_MODEL if name == "sscd" else name
    if find_onnx(model, None, emb.models_dir) is None and not has_module("torch"):
        raise RecipeError(f"recipe {recipe.name}: {no_runtime_message(model, emb.models_dir, have_onnx=False)}")


def check_options(recipe: RegistryRecipe, opts: GetOptions) -> None:
    """The user's choices checked against the recipe by the one rule the command line and the web UI
    call first (registry/recipe_choices.RecipeChoices): a ChoiceError naming the fields."""
    from lib_replicheck.registry.recipe_choices import RecipeChoices

    RecipeChoices(accept_unpinned=opts.accept_unpinned, sample=opts.sample, list_path=opts.list_path
                  ).applied_to(recipe)


def build_for_manager(recipe: RegistryRecipe, packs_dir: str | Path, *, progress=None, cancel=None, gate=None,
                      models_dir: str | None = None, device: str = "cpu", sample: int | None = None,
                      list_path: str | None = None, accept_unpinned: bool = False) -> RecipeResult:
    """get_recipe as the web UI's pack manager calls it (webui.pack_jobs.PackManager(build_recipe=...)),
    with the choices the tab offers (`--sample`, `--list`, `--accept-unpinned`): its log lines go to
    the 'replicheck' logger."""
    import logging

    from lib_replicheck.embedders.options import EmbedderOptions

    logger = logging.getLogger("replicheck")
    opts = GetOptions(embedding=EmbedderOptions(device=device, models_dir=models_dir), sample=sample,
                      list_path=list_path, accept_unpinned=accept_unpinned)
    return get_recipe(recipe, packs_dir, opts, progress=progress, cancel=cancel, gate=gate,
                      log=lambda line: logger.info("%s: %s", recipe.name, line))


__all__ = ["get_recipe", "build_for_manager", "GetOptions", "BuildProgress", "RecipeResult", "RecipeError", "STAGES",
           "work_dir", "check_options"]
