"""A recipe's own background set (packs/background.py): images from the same list as the pack, but
not in it. SSCD's score normalisation works best with a background of the same distribution as the
references (Pizzi et al. CVPR 2022), and a list sampled with `--sample N` has rows the pack left out.

A random sample of those rows (at most a quarter of the pack's, at least MIN_ROWS, at most MAX_ROWS;
the exclusion list applies to them too) is written to `WORK/background/rows.*` and fetched through
the same bounded fetch as the pack's images (builder/fetch.py) into `WORK/background/images`; the
builder embeds what came and drops the images that are copies of a pack image. A recipe whose pack
takes the whole list has no rows left: its pack uses the default background. A background whose
images cannot be fetched costs the pack nothing but its background: the build goes on without one.
"""

from __future__ import annotations

from pathlib import Path

from lib_replicheck.builder.options import GetOptions
from lib_replicheck.builder.recipe_stage import Reporter, check_cancel
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.registry.parse_recipe import RegistryRecipe

#: bounds on the rows fetched for the background: the fetch costs about a quarter of the pack's at most
MIN_ROWS, MAX_ROWS = 256, 2_000
FOLDER = "background"
SOURCE = "rows of its list outside the pack"


def rows_for(pack_rows: int) -> int:
    """Rows drawn for the background of a pack of `pack_rows` rows."""
    return min(MAX_ROWS, max(MIN_ROWS, pack_rows // 4))


def fetch_background(recipe: RegistryRecipe, files: list[tuple[Path, str]], work: Path, opts: GetOptions,
                     exclusions, n_rows: int, report: Reporter, cancel, fetch) -> Path | None:
    """The images of a random sample of the list's rows outside the pack, fetched by `fetch(rows,
    n, work)` (the recipe's own fetch stage) into WORK/background/images; None when the recipe is no
    sample, its list has no other rows, or none of them could be fetched (said in the log)."""
    from lib_replicheck.builder.fetch import IMAGES, fetched
    from lib_replicheck.builder.fetch_lists import ListError, collect_outside, rows_file

    from lib_replicheck.embedders import kind_of

    if not opts.sample or kind_of(str(recipe.embedder.get("id", ""))) == "pdq":  # bit codes take none
        return None
    folder = work / FOLDER
    if fetched(folder) is None:
        rows = rows_file(folder, recipe.list.format)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            n = collect_outside([p for p, _ in files], recipe.list.format, recipe.list.columns, rows,
                                skip=opts.sample, limit=rows_for(n_rows), seed=f"{recipe.name}:{opts.sample}",
                                delimiter=recipe.list.delimiter, optional=recipe.list.optional,
                                exclusions=exclusions)
        except ListError as e:
            report.log(f"background: the list's other rows cannot be read ({e}); the pack uses the default")
            return None
        if n == 0:
            report.log("background: the list has no rows outside the pack; the pack uses the default background")
            return None
        report.log(f"background: {n:,} rows of the list outside the pack drawn at random, fetching their images")
        check_cancel(cancel)
        try:
            stats = fetch(rows, n, folder)
        except ReplicheckError as e:
            report.log(f"background: its images could not be fetched ({e}); the pack uses the default background")
            return None
        if stats["ok"] == 0:
            report.log("background: none of its images could be fetched; the pack uses the default background")
            return None
    return folder / IMAGES


def embed_background_images(images: Path, embedder, license: str | None, batch: int, log):
    """The background's vectors, with where they came from (background.Sample), or None."""
    from lib_replicheck.builder.pipeline import embed_background
    from lib_replicheck.builder.sources import webdataset, webdataset_shards
    from lib_replicheck.packs.background import MAX_ROWS as LIMIT
    from lib_replicheck.packs.background import Sample

    rows = embed_background(webdataset(webdataset_shards(images), license), embedder, LIMIT, batch, log)
    return None if rows is None else Sample(rows, SOURCE)
