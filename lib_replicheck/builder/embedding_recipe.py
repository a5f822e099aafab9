"""Recipes of published embeddings (`list.format: "embeddings"`): `packs get pd12m-clip [--sample N]`.

The list's files are the embedding files and their metadata files, in either layout that
builder/embedding_layouts.py reads (their URLs end in `img_emb/..`, `embeddings/..` or `metadata/..`).
They are downloaded into the recipe's work folder with the project's downloader, each checked against
the sha256 the registry gives or, where nobody published one, pinned on first use as image recipes
are (`--accept-unpinned`, `.recipe-pins.json`); then the pack is built by build_from_embeddings and
installed atomically. `--sample N` takes the first N embedding files (with their metadata files).
A recipe with `user: true` (laion-clip) builds from the user's own folder or URL list (`--list`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from lib_replicheck.errors import ReplicheckError


def chosen_files(recipe, sample: int | None, error: type = ReplicheckError) -> list:
    """The recipe's list files to use: all, or those of its first `sample` embedding files."""
    from lib_replicheck.builder.embedding_fetch import local_name

    named = []
    for i, f in enumerate(recipe.list.files):
        try:
            named.append((local_name(f.urls[0]), f))
        except ReplicheckError as e:
            raise error(f"recipe {recipe.name}: list.files[{i}].urls: {e}") from None
    if not sample:
        return [f for _, f in named]
    vectors = [rel for rel, _ in named if not rel.startswith("metadata/")][:sample]
    stems = {Path(rel).stem.removeprefix("img_emb_") for rel in vectors}
    keep = set(vectors) | {rel for rel, _ in named if rel.startswith("metadata/")
                           and Path(rel).stem.removeprefix("metadata_") in stems}
    return [f for rel, f in named if rel in keep]


def get_embedding_recipe(recipe, opts, report, *, work: Path, pins: dict, save_pins: Callable[[], None],
                         pins_file: Path, error: type = ReplicheckError, cancel=None, policy=None):
    """Build an embeddings recipe into the packs folder (see the module's docstring) for
    builder/recipe.get_recipe, which checked the target and gives its reporter, work folder, pins
    (`pins`, written by `save_pins`) and error class; returns the BuildReport."""
    from lib_replicheck.builder.embedding_fetch import fetch_files
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.hub_mirror import mirrored
    from lib_replicheck.builder.options import BuildOptions
    from lib_replicheck.download import Cancelled, Policy
    from lib_replicheck.registry.pack_lock import pack_lock

    log = report.log
    packs_dir = work.parent
    out = packs_dir / recipe.name
    with pack_lock(packs_dir, recipe.name):
        work.mkdir(parents=True, exist_ok=True)
        if recipe.list.user:  # a list is given: check_options (RecipeChoices' rule) says so first
            source = Path(opts.list_path).expanduser()
            if not source.exists():
                raise error(f"recipe {recipe.name}: --list {opts.list_path}: no such file or folder")
        else:
            files = chosen_files(recipe, opts.sample, error)  # unpinned ones accepted: check_options
            if opts.embedding.offline:
                raise error(f"recipe {recipe.name}: its files are downloaded; network access is off (--offline)")
            mine = pins.setdefault(recipe.name, {})
            source = work / "downloads"
            for i, f in enumerate(files):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                report("list", i, len(files), f"file {i + 1} of {len(files)}")
                expected = f.sha256 or mine.get(f.urls[0])
                url = mirrored(f.urls[:1])[0]  # $HF_ENDPOINT: a mirror of the hub's layout
                got = fetch_files([(url, expected)], source, log, policy or Policy(),
                                  sizes={url: f.size} if f.size is not None else None)[0]
                if expected is None:
                    mine[f.urls[0]] = got.sha256
                    save_pins()
                    log(f"{f.urls[0]}: no published sha256; pinned on first use as {got.sha256} (in {pins_file.name})")
            report("list", len(files), len(files), "files ready")
        report("index", 0, 1, "building the pack")
        bopts = BuildOptions(embedder=recipe.embedder["id"], shard_size=int(recipe.build.get("shard_size", 100_000)),
                             license=recipe.source.get("license") or None, thumbnails=False)
        built = build_from_embeddings(source, out, bopts, name=recipe.name, title=recipe.title,
                                      description=recipe.description, dataset=recipe.source.get("dataset", ""),
                                      work=work / "build", overwrite=opts.overwrite, log=log, policy=policy)
        report("index", 1, 1, "installed")
        shutil.rmtree(work, ignore_errors=True)
    return built
