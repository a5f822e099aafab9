"""Stage 1 of a recipe build: its list files downloaded and verified (each against its published
sha256, or pinned on first use in PINS_FILE), its exclusion list, and the rows to fetch written
once per (list, sample, exclusions) into the work folder (fetch_lists.collect_rows).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lib_replicheck.atomic import write_atomic
from lib_replicheck.builder.hub_mirror import mirrored
from lib_replicheck.builder.options import GetOptions
from lib_replicheck.builder.recipe_stage import RecipeError, Reporter, check_cancel
from lib_replicheck.download import Cancelled, Policy, fetch
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.packs.manifest import SHA256_RE
from lib_replicheck.registry.parse_recipe import MAX_EXCLUDE_BYTES, MAX_LIST_BYTES, RegistryRecipe

PINS_FILE = ".recipe-pins.json"
#: Bound on the pins file (a few hundred bytes a list file).
MAX_PINS_BYTES = 4 * 1024**2


def read_pins(packs_dir: Path) -> dict:
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


def save_pins(packs_dir: Path, pins: dict) -> None:
    write_atomic(packs_dir / PINS_FILE, json.dumps(pins, indent=1, sort_keys=True).encode("utf-8"))


def _sha256(path: Path) -> str:
    from lib_replicheck.embedders.weights import sha256_file

    return sha256_file(path)


def list_files(recipe: RegistryRecipe, packs_dir: Path, work: Path, opts: GetOptions, report: Reporter,
               cancel, policy: Policy) -> list[tuple[Path, str]]:
    """The list files, verified, in order, each with its sha256; for a sample, only as many as hold
    `opts.sample` rows."""
    from lib_replicheck.builder.fetch_lists import ListError, count_rows

    ext = recipe.list.format
    if recipe.list.user:  # a list is given: check_options (RecipeChoices' rule) says so first
        p = Path(opts.list_path).expanduser()
        if not p.is_file():
            raise RecipeError(f"recipe {recipe.name}: --list {opts.list_path}: no such file")
        return [(p, _sha256(p))]
    pins = read_pins(packs_dir)  # unpinned files were accepted: check_options (RecipeChoices' rule) says so first
    mine = pins.setdefault(recipe.name, {})
    out: list[tuple[Path, str]] = []
    rows = 0
    n = len(recipe.list.files)
    for i, f in enumerate(recipe.list.files):
        check_cancel(cancel)
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
                    fetch(mirrored(f.urls), dest, size=f.size, sha256=expected, policy=policy, cancel=cancel,
                          max_bytes=MAX_LIST_BYTES)
                except Cancelled:
                    raise
                except ReplicheckError as e:
                    field_ = "sha256" if "sha256" in str(e) else "urls"
                    raise RecipeError(f"recipe {recipe.name}: list.files[{i}].{field_}: {e}") from None
            digest = _sha256(dest)
            if expected is None:
                mine[url] = digest
                save_pins(packs_dir, pins)
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
               exclusions, report: Reporter) -> tuple[Path, int, int]:
    """The rows to fetch (fetch_lists.rows_file), written once per (list, sample, exclusions); returns
    their file, their number, and the rows the exclusion list dropped."""
    from lib_replicheck.builder.fetch_lists import ListError, collect_rows, rows_file

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
    shutil.rmtree(work / "background", ignore_errors=True)  # drawn from the rows outside the old ones
    report("list", 0, 0, "reading the list")
    try:
        n, excluded = collect_rows([p for p, _ in files], recipe.list.format, recipe.list.columns, rows,
                                   delimiter=recipe.list.delimiter, optional=recipe.list.optional,
                                   sample=opts.sample, exclusions=exclusions)
    except ListError as e:
        raise RecipeError(f"recipe {recipe.name}: {e}") from None
    if n == 0:
        raise RecipeError(f"recipe {recipe.name}: the list has no rows with a URL to fetch")
    write_atomic(meta, json.dumps({"want": want, "rows": n, "excluded": excluded}))
    return rows, n, excluded




def recipe_exclusions(recipe: RegistryRecipe, work: Path, cancel, policy: Policy):
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
