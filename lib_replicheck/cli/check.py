"""`python -m lib_replicheck check`: images or folders checked against installed or named packs."""

from __future__ import annotations

import sys
from pathlib import Path

from lib_replicheck.cli import EXIT_COPY, EXIT_ERROR, EXIT_OK
from lib_replicheck.errors import ReplicheckError, clean_text, json_text
from lib_replicheck.thresholds import Verdict

FAIL_ON = {"possible": Verdict.POSSIBLE, "likely": Verdict.LIKELY, "duplicate": Verdict.DUPLICATE}


def open_packs(names: list[str], packs_dir: Path | None):
    from lib_replicheck import packs
    from lib_replicheck.packs.pack import Pack

    paths = [packs.resolve(n, packs_dir) for n in names] if names else packs.installed(packs_dir)
    if not paths:
        raise ReplicheckError(f"no pack installed in {packs_dir or packs.default_packs_dir()}; pass --pack DIR, or "
                              "build one with: python -m lib_replicheck build FOLDER --out PACK")
    return [Pack(p) for p in paths]


def cmd_check(args) -> int:
    from lib_replicheck.checker import Checker
    from lib_replicheck.images import iter_image_files
    from lib_replicheck.thresholds import with_overrides

    if args.top_k < 1:
        raise ReplicheckError("--top-k must be at least 1")
    tiers = with_overrides(args.threshold)
    packs = open_packs(args.pack, args.packs_dir)
    checker = Checker(packs, top_k=args.top_k, tiers=tiers, device=args.device, runtime=args.runtime,
                      models_dir=args.models_dir, weights=args.weights, offline=args.offline,
                      progress=not args.json)
    files = list(iter_image_files(args.paths))
    if not files:
        raise ReplicheckError("no images found in " + ", ".join(map(str, args.paths)))
    from lib_replicheck.cli.text import format_report

    fail_on = FAIL_ON[args.fail_on]
    copies = errors = 0
    for report in checker.check_files(files):
        if report.error:
            errors += 1
            print(f"replicheck: error: {clean_text(report.image)}: {clean_text(report.error, 1000)}", file=sys.stderr)
        elif report.verdict.rank >= fail_on.rank:
            copies += 1
        if args.json:
            print(json_text(report.to_dict()), flush=True)
        elif not report.error:
            print(format_report(report), flush=True)
    if not args.json:
        print(f"\n{len(files)} image(s) checked against {', '.join(clean_text(p.name, 64) for p in packs)}: "
              f"{copies} flagged ({args.fail_on} or above), {errors} error(s)")
    if errors:
        return EXIT_ERROR
    return EXIT_COPY if copies else EXIT_OK
