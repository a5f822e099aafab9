"""`python -m lib_replicheck packs ...`: the pack manager of the command line.

It needs neither the web UI nor FastAPI (`packs/info.py` reads what a listing shows). Every text
that comes from a pack or a registry is cleaned of control characters and cut to its column
before it is printed (`errors.clean_text`); `--json` output escapes them (`errors.json_text`).
"""

from __future__ import annotations

import os
import sys

from lib_replicheck.errors import ReplicheckError, clean_text, json_text

#: Widths of the listing's free-text columns.
LICENSE_WIDTH, ID_WIDTH = 60, 18


def registries(args) -> list[str]:
    from lib_replicheck.registry.registry import DEFAULT_REGISTRY

    if args.registry:
        return list(args.registry)
    env = os.environ.get("REPLICHECK_REGISTRY")
    return [u.strip() for u in env.split(",") if u.strip()] if env else [DEFAULT_REGISTRY]


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5T' or a number of bytes."""
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}.get(t[-1:], 1)
    try:
        n = float(t[:-1] if mult > 1 else t)
    except ValueError:
        raise ReplicheckError(f"--max-size {text!r}: give bytes, or a number with K, M, G or T") from None
    if not n > 0:
        raise ReplicheckError(f"--max-size {text!r}: must be positive")
    return int(n * mult)


def _need(args, what: str) -> str:
    if not args.target:
        raise ReplicheckError(f"packs {args.action}: give {what}")
    return args.target


def _warn(message: str) -> None:
    print(f"replicheck: warning: {clean_text(message, 1000)}", file=sys.stderr)


#: `packs get` options that only a recipe's build takes (argparse dest, as the user typed it).
RECIPE_OPTIONS = (("sample", "--sample"), ("list", "--list"), ("accept_unpinned", "--accept-unpinned"),
                  ("weights", "--weights"))


#: RecipeChoices' fields (registry/recipe_choices.py) as `packs get` takes them.
CHOICE_FLAGS = {"sample": "--sample", "list_path": "--list", "accept_unpinned": "--accept-unpinned"}


def recipe_choices(args, entry) -> dict:
    """`--sample`, `--list` and `--accept-unpinned` for `entry`, checked by the rule the web UI's tab and
    route also call (RecipeChoices.applied_to); a refusal names the flags. Returns GetOptions' fields."""
    from lib_replicheck.registry.recipe_choices import ChoiceError, RecipeChoices

    try:
        return RecipeChoices(accept_unpinned=args.accept_unpinned, sample=args.sample,
                             list_path=None if args.list is None else str(args.list)).applied_to(entry)
    except ChoiceError as e:
        raise ReplicheckError(e.named(CHOICE_FLAGS)) from None


def refuse_recipe_options(args, what: str) -> None:
    """Options of a recipe's build given where no recipe is built are refused, naming them (never
    ignored: `--list /etc/passwd` on a pack must not look as if it did something)."""
    given = [flag for dest, flag in RECIPE_OPTIONS if getattr(args, dest, None) not in (None, False)]
    if given:
        raise ReplicheckError(f"{', '.join(given)}: only for building a recipe; {what}")


def cmd_packs(args) -> int:
    from lib_replicheck.packs import default_packs_dir
    from lib_replicheck.registry.pack_install import Installer

    if args.action not in ("get", "download"):
        refuse_recipe_options(args, f"packs {args.action} builds none")
    action = ACTIONS.get(args.action)
    if action is None:
        raise ReplicheckError(f"unknown action {args.action}")
    packs_dir = args.packs_dir or default_packs_dir()
    max_size = parse_size(args.max_size) if getattr(args, "max_size", None) else None
    inst = Installer(packs_dir, offline=args.offline, **({"max_bytes": max_size} if max_size else {}))
    return action(args, packs_dir, inst)


def cmd_list(args, packs_dir, inst) -> int:
    from lib_replicheck.packs import installed
    from lib_replicheck.packs.info import pack_info

    out = sys.stdout
    rows = [pack_info(p) for p in installed(packs_dir)]
    if args.json:
        print(json_text([r.to_dict() for r in rows]), file=out)
        return 0
    if not rows:
        print(f"no packs installed in {clean_text(packs_dir)}", file=out)
    for r in rows:
        state = f"  ERROR: {clean_text(r.error, 300)}" if r.error else ""
        print(f"{clean_text(r.name, 64):<24} {r.count:>10,} images  {clean_text(r.embedder, ID_WIDTH):<18} "
              f"{r.size_bytes / 1e6:>9.1f} MB  {clean_text(r.source.get('license', ''), LICENSE_WIDTH)}{state}",
              file=out)
        if not r.error:
            print(f"{'':<24} background {clean_text(r.background, 200)}", file=out)
    _embedder_licenses([r.embedder for r in rows], out)
    return 0


def cmd_available(args, packs_dir, inst) -> int:
    from lib_replicheck.packs import installed

    out = sys.stdout
    packs, errors = load_all_registries(args)
    for e in errors:
        _warn(e)
    if args.json:
        print(json_text([{**p.to_dict(), "embedder_license": _license_dict(p.embedder.get("id"))}
                         for p in packs]), file=out)
    else:
        have = {p.name for p in installed(packs_dir)}
        for p in packs:
            mark = "installed" if p.name in have else ""
            emb = clean_text(p.embedder.get('id', ''), ID_WIDTH)
            lic = clean_text(p.source.get('license', ''), LICENSE_WIDTH)
            if p.kind == "recipe":
                print(f"{p.name:<24} recipe  {recipe_line(p)}  {lic}  {mark}", file=out)
            else:
                print(f"{p.name:<24} pack    {p.count:>10,} images  {emb:<18} {p.size / 1e6:>9.1f} MB  {lic}  "
                      f"{mark}", file=out)
        _embedder_licenses([p.embedder.get("id") for p in packs], out)
    return 0 if packs or not errors else 2


def cmd_install(args, packs_dir, inst) -> int:
    got = _get(args, _need(args, "a pack folder, an archive or its URL"), inst, sha256=args.sha256,
               overwrite=args.force, on_installed=lambda g: print(f"installed {g.path.name} in {clean_text(g.path)}"))
    _say_weights(got)
    return 0


def cmd_verify(args, packs_dir, inst) -> int:
    name = _need(args, "the name of an installed pack, or a pack folder's path")
    inst.verify(name)
    print(f"{name}: every file matches its sha256")
    return 0


def cmd_remove(args, packs_dir, inst) -> int:
    from lib_replicheck.packs import is_name

    name = _need(args, "the name of an installed pack")
    if not is_name(name):
        raise ReplicheckError(f"packs remove {name}: give the name of an installed pack (see: packs list), "
                              "not a path")
    for path in inst.remove(name):
        print(f"removed {clean_text(path)}" + (" (an unfinished build or download)" if path.name != name else ""))
    return 0


def cmd_publish(args, packs_dir, inst) -> int:
    from lib_replicheck.registry.registry import list_pack

    if not args.registry_file or not args.url_prefix:
        raise ReplicheckError("packs publish needs --registry-file and --url-prefix")
    entry = list_pack(args.registry_file, _need(args, "a built pack folder"), args.url_prefix)
    print(f"{clean_text(args.registry_file)}: {entry['name']} listed with {len(entry['files'])} files")
    return 0


def _embedder_licenses(embedder_ids, out) -> None:
    """Under a listing: the license of each embedder it shows (the model's; the column is the images')."""
    from lib_replicheck.embedders.licenses import license_lines

    for line in license_lines(embedder_ids):
        print(f"embedder license: {line}", file=out)


def _license_dict(embedder_id) -> dict | None:
    from lib_replicheck.embedders.licenses import license_of

    lic = license_of(embedder_id)
    return lic.to_dict() if lic else None


#: a recipe built from the user's own copy (laion-clip) is sized per this many rows
PER_ROWS = 1_000_000


def recipe_line(r) -> str:
    """'built here: about 500 images, ~12 min with sscd on CPU / ~1 min on GPU' (times only where
    the registry gives an embedding rate measured for that device)."""
    emb = clean_text(r.embedder.get("id", ""), ID_WIDTH)
    parts = [f"built here: about {r.count:,} images" if r.count else "built here from your own list"]
    from lib_replicheck.registry.parse_recipe import duration

    times = [f"~{duration(t)} with {emb} on {d.upper()}" for d in ("cpu", "gpu") if (t := r.estimate(d))]
    vectors = r.list.format == "embeddings"  # published vectors: downloaded and indexed, nothing embedded
    if times:
        parts.append(" / ".join(times).replace(f" with {emb}", "") + " (build from local files)" if vectors
                     else " / ".join(times) + " (embedding)")
    if vectors and r.image_bytes:
        parts.append(f"download ~{r.image_bytes / 1e9:,.1f} GB")
    if r.pack_bytes:
        parts.append(f"pack ~{r.pack_bytes / 1e9:,.1f} GB on disk" if vectors else f"pack ~{r.pack_bytes / 1e6:,.0f} MB")
    if vectors and not r.count and r.row_bytes:  # the user's own copy: per million rows
        per = [f"~{duration(t)} on {d.upper()}" for d in ("cpu", "gpu") if (t := r.estimate(d, PER_ROWS))]
        parts.append(f"per {PER_ROWS:,} rows: " + ", ".join(per + [f"pack ~{r.row_bytes * PER_ROWS / 1e9:,.2f} GB "
                                                                    "on disk"]))
    if r.sample:
        parts.append("--sample N for a part")
    if r.list.user:
        parts.append("--list PATH")
    if r.list.unpinned:
        parts.append("list unpinned: --accept-unpinned")
    return ", ".join(parts)


def _quiet(args) -> bool:
    from lib_replicheck.cli.check import show_progress

    return not show_progress(getattr(args, "progress", "auto"), bool(getattr(args, "json", False)))


def _entry(args):
    from lib_replicheck.registry.get_pack import find_listed

    name = _need(args, "the name of a pack or recipe (see: packs available)")
    packs, errors = load_all_registries(args)
    match = find_listed(name, packs, errors)
    for e in errors:
        _warn(e)
    return match


def load_all_registries(args):
    from lib_replicheck.registry.registry import load_all

    return load_all(registries(args), offline=args.offline)


def cmd_get(args, packs_dir, inst) -> int:
    """`packs get NAME`: download a pack, or build a recipe, with one progress display across stages."""
    match = _entry(args)
    chosen = recipe_choices(args, match)
    got = _download(args, match, inst) if match.kind == "pack" else _build(args, match, inst, chosen)
    _say_weights(got)
    return 0


def _download(args, match, inst):
    from tqdm import tqdm

    refuse_recipe_options(args, f"{match.name} is a prebuilt pack, downloaded as it is")  # --weights

    def said(got) -> None:
        bar.close()
        print(json_text({"name": match.name, "kind": "pack", "path": str(got.path), "count": match.count})
              if args.json else f"installed {match.name} ({match.count:,} images) in {clean_text(got.path)}")

    with tqdm(total=match.size, unit="B", unit_scale=True, desc=match.name, disable=_quiet(args)) as bar:
        return _get(args, match, inst, progress=lambda step: bar.update(step.done - bar.n), on_installed=said)


def _build(args, match, inst, chosen: dict):
    from tqdm import tqdm

    from lib_replicheck.builder.build_recipe import GetOptions, get_recipe
    from lib_replicheck.cli.model_options import embedder_options

    opts = GetOptions(**chosen, embedding=embedder_options(args), overwrite=args.force)
    bar = tqdm(total=0, desc=f"{match.name}: list", disable=_quiet(args), unit=" rows")
    stage = ["list"]

    def progress(p) -> None:
        if p.stage != stage[0]:
            stage[0] = p.stage
            bar.reset(total=p.total)
            bar.set_description(f"{match.name}: {p.stage}")
            bar.unit = {"fetch": " rows", "embed": " images"}.get(p.stage, "")
        if p.total != bar.total:
            bar.total = p.total
        bar.n = p.done
        bar.set_postfix_str(clean_text(p.message, 80), refresh=False)
        bar.refresh()

    def log(line: str) -> None:  # the build's log lines: on stderr unless the output is JSON
        if not args.json:
            tqdm.write(clean_text(line, 1000), file=sys.stderr)

    def said(got) -> None:
        bar.close()
        print(json_text({"kind": "recipe", **got.built.to_dict()}) if args.json else built_line(got.built))

    try:
        return _get(args, match, inst, progress=progress, on_installed=said,
                    build=lambda recipe, packs_dir, **kw: get_recipe(recipe, packs_dir, opts, log=log, **kw))
    finally:
        bar.close()


def built_line(result) -> str:
    """What a recipe's build gave, in one line: counts, the main reasons images failed, the time."""
    reasons = "; ".join(f"{clean_text(k, 80)}: {v}" for k, v in sorted(result.failures.items(),
                                                                       key=lambda kv: -kv[1])[:5])
    return (f"built {result.name}: {result.count:,} images in the pack, from {result.listed:,} listed: "
            f"{result.fetched:,} fetched, {result.failed:,} failed" + (f" ({reasons})" if reasons else "")
            + (f", {result.skipped:,} unusable" if result.skipped else "")
            + (f", {result.excluded:,} excluded" if result.excluded else "")
            + f"; {result.seconds:.0f} s; installed in {clean_text(result.path)}")


def _get(args, target, inst, **kw):
    """registry.get_pack with the command line's models folder and --offline."""
    from lib_replicheck.registry.get_pack import get_pack

    return get_pack(target, inst, models_dir=args.models_dir, offline=args.offline, **kw)


def _say_weights(got) -> None:
    from lib_replicheck.packs.manifest import read

    if got.weights is not None:
        print(f"weights for {clean_text(read(got.path).embedder.id, 64)}: {clean_text(got.weights)}")


#: `packs ACTION`: what runs it, with (args, packs folder, Installer).
ACTIONS = {"list": cmd_list, "available": cmd_available, "get": cmd_get, "download": cmd_get, "install": cmd_install,
           "verify": cmd_verify, "remove": cmd_remove, "publish": cmd_publish}
