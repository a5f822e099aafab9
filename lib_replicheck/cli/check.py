"""`python -m lib_replicheck check`: images or folders checked against installed or named packs,
optionally written as an HTML report (`--report`) and a CSV (`--csv`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lib_replicheck.cli import EXIT_COPY, EXIT_ERROR, EXIT_OK
from lib_replicheck.errors import ReplicheckError, clean_text, json_text
from lib_replicheck.report import COPY_TIERS
from lib_replicheck.thresholds import Verdict

#: --fail-on's choices: the tiers an image can be flagged at, by name (possible, likely, duplicate)
FAIL_ON = {v.name.lower(): v for v in COPY_TIERS}
#: Most images one `check` takes (a bound, not a goal: folders of this size take hours on a CPU).
MAX_IMAGES = 1_000_000
MAX_ENTRIES = 4_000_000


def open_packs(names: list[str], packs_dir: Path | None, warn=None):
    """The packs to search, opened, and the errors of those that would not open. A damaged pack
    (a file its manifest lists is missing, truncated or replaced) is skipped, `warn` called with its
    error, and the others are searched; ReplicheckError when none opens."""
    from lib_replicheck import packs
    from lib_replicheck.packs.pack import Pack

    paths = [packs.resolve(n, packs_dir) for n in names] if names else packs.installed(packs_dir)
    if not paths:
        raise ReplicheckError(f"no pack installed in {packs_dir or packs.default_packs_dir()}; pass --pack DIR, or "
                              "build one with: python -m lib_replicheck build FOLDER --out PACK")
    opened, failed = [], []
    for path in paths:
        try:
            opened.append(Pack(path))
        except ReplicheckError as e:
            failed.append(str(e))
    if not opened:
        if len(failed) == 1:
            raise ReplicheckError(failed[0])
        raise ReplicheckError(f"none of the {len(failed)} packs opens: " + "; ".join(failed))
    for error in failed:
        (warn or (lambda s: None))(f"{error}; skipped, the other packs are searched")
    return opened, failed


def check_output_path(path: Path | None, option: str, force: bool = False) -> None:
    """Fail before any image is checked when an output file cannot be written where asked, or would
    replace a file that is not a replicheck report without `force`."""
    from lib_replicheck.report_files import check_overwrite

    if path is None:
        return
    check_overwrite(path, option, force)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ReplicheckError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ReplicheckError(f"{option} {path}: the folder {parent} is not writable")


def check_outputs(outputs: dict[str, Path | None], force: bool = False) -> None:
    """Each output file checked (check_output_path), and no file named twice (one would be lost)."""
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        check_output_path(path, option, force)
        real = os.path.realpath(path)
        if real in seen:
            raise ReplicheckError(f"{seen[real]} and {option} both name {path}; give each its own file")
        seen[real] = option


def show_progress(mode: str, json_output: bool, stream=None) -> bool:
    """'on' and 'off' say it; 'auto' shows the bar on a terminal unless JSON goes to stdout."""
    if mode != "auto":
        return mode == "on"
    stream = stream or sys.stderr
    return not json_output and bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(total: int | None, enabled: bool, unit: str = "image", desc: str = "checking", **tqdm_args):
    """A tqdm bar on stderr (count, rate and time left), or None; `tqdm_args` go to tqdm (e.g.
    unit_scale=True for bytes)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=f" {unit}" if not tqdm_args.get("unit_scale") else unit, desc=desc,
                file=sys.stderr, dynamic_ncols=True, mininterval=0.25, smoothing=0.1, **tqdm_args)


def cmd_check(args) -> int:
    from lib_replicheck.audit import list_images, run_audit
    from lib_replicheck.checker import Checker
    from lib_replicheck.cli.model_options import embedder_options
    from lib_replicheck.cli.text import format_report
    from lib_replicheck.memorization.infotext import known_prompt
    from lib_replicheck.thresholds import with_overrides

    if args.top_k < 1:
        raise ReplicheckError("--top-k must be at least 1")
    report_path = getattr(args, "report", None)
    csv_path = getattr(args, "csv", None)
    tiers = with_overrides(args.threshold)
    check_outputs({"--report": report_path, "--csv": csv_path}, force=getattr(args, "force", False))
    from lib_replicheck.cli.sign import signer_for

    signer = signer_for(args, args.paths)  # the certificate and key are checked before any image is
    packs, pack_errors = open_packs(args.pack, args.packs_dir,
                                    warn=lambda e: print(f"replicheck: error: {clean_text(e, 1000)}", file=sys.stderr))
    checker = Checker(packs, top_k=args.top_k, tiers=tiers, embedder=embedder_options(args, progress=not args.json),
                      regions=getattr(args, "regions", None))
    if signer is not None:
        signer.checker = checker
    from lib_replicheck.cli.candidates import verifier_for
    from lib_replicheck.verification import verify_reports

    verifier = verifier_for(args, checker)  # the step after the search: candidates verified on the image
    files, left_out = list_images(args.paths, max_images=MAX_IMAGES, max_entries=MAX_ENTRIES, confine=False)
    if not files:
        raise ReplicheckError("no images found in " + ", ".join(map(str, args.paths)))
    if left_out:
        print(f"replicheck: {left_out} image(s) past the first {MAX_IMAGES} are not checked", file=sys.stderr)

    fail_on = FAIL_ON[args.fail_on]
    flagged_only = getattr(args, "flagged_only", False)
    bar = progress_bar(len(files), show_progress(getattr(args, "progress", "auto"), args.json))
    counts = {"copies": 0, "errors": 0}

    def say(text: str, stream) -> None:
        if bar is not None:
            bar.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def on_report(report) -> None:
        verify_reports([report], verifier)
        if signer is not None:
            signer(report)
        if report.error:
            counts["errors"] += 1
            say(f"replicheck: error: {clean_text(report.image)}: {clean_text(report.error, 1000)}", sys.stderr)
        elif report.flagged(at=fail_on):
            counts["copies"] += 1
        hit = None if report.error else known_prompt(report.image)  # the prompt the web UI stored in a PNG
        shown = not flagged_only or report.flagged(at=fail_on)
        if shown and args.json:
            print(json_text({**report.to_dict(), "prompt_match": hit.to_dict() if hit else None}), flush=True)
        elif shown:
            say(format_report(report) + (f"\n  prompt: {clean_text(hit.summary(), 300)}, matching {hit.how_text()}: "
                                         f"\"{clean_text(hit.prompt, 300)}\"" if hit else ""), sys.stdout)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{counts['copies']} flagged, {counts['errors']} error(s)", refresh=False)

    try:
        audit = run_audit(checker, files, roots=args.paths, on_report=on_report, left_out=left_out)
    finally:
        if bar is not None:
            bar.close()
    copies, errors = counts["copies"], counts["errors"]
    done = len(audit.reports)
    print(("" if args.json else "\n") + audit.counts().text()
          + (f"; {copies} at or above {fail_on.value} (--fail-on {args.fail_on})" if fail_on is not Verdict.POSSIBLE
             else "")
          + f"; packs searched: {', '.join(clean_text(p.name, 64) for p in packs)}"
          + (f"; {len(pack_errors)} damaged pack(s) skipped" if pack_errors else "")
          + (f"; stopped after {done} of {len(files)}" if audit.cancelled else ""),
          file=sys.stderr if args.json else sys.stdout)
    written = []
    if report_path is not None:
        from lib_replicheck.html_report import write_html

        written.append(write_html(audit, report_path))
    if csv_path is not None:
        from lib_replicheck.report_files import write_csv

        written.append(write_csv(audit, csv_path))
    for path in written:
        size = path.stat().st_size
        print(f"wrote {clean_text(path)} ({size / 1e6:.1f} MB)" if size >= 100_000
              else f"wrote {clean_text(path)} ({size / 1e3:.0f} kB)", file=sys.stderr if args.json else sys.stdout)
    if audit.interrupted:
        raise KeyboardInterrupt
    if errors or pack_errors or (signer is not None and signer.failures):
        return EXIT_ERROR
    return EXIT_COPY if copies else EXIT_OK
