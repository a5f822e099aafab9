"""`python -m lib_replicheck build`: a pack from a folder, tar shards or a parquet list, through the builder."""

from __future__ import annotations

import sys

from lib_replicheck.cli import EXIT_OK
from lib_replicheck.errors import clean_text

def build_progress(args, kind: str):
    """A tqdm bar over the source's images (its total: the folder's image files; unknown for shards
    and parquet lists), and the builder's `log` written above it; (None, None) when it is off."""
    from lib_replicheck.cli.check import progress_bar, show_progress

    if not show_progress(getattr(args, "progress", "auto"), False):
        return None, None
    total = None
    if kind == "folder":
        from lib_replicheck.images import iter_image_files

        total = sum(1 for _ in iter_image_files([args.source]))
    bar = progress_bar(total, True, desc="embedding")

    def log(line: str) -> None:
        bar.write(line, file=sys.stderr)

    return bar, log


def cmd_build(args) -> int:
    from lib_replicheck.builder.options import GB, BuildOptions, parse_centre_crops
    from lib_replicheck.builder.pipeline import build
    from lib_replicheck.builder.sources import detect
    from lib_replicheck.cli.model_options import embedder_options

    if getattr(args, "embeddings", None) is not None or args.source is None:
        from lib_replicheck.cli.build_embeddings import cmd_build_embeddings

        return cmd_build_embeddings(args)
    kind = detect(args.source)
    bar, log = build_progress(args, kind)
    embedding = embedder_options(args)
    opts = BuildOptions(
        embedder=args.embedder, embedding=embedding, shard_size=max(1, args.shard_size),
        batch=max(1, args.batch), workers=max(1, args.workers), ray=args.ray or bool(args.ray_address),
        ray_address=args.ray_address, memory_budget=int(args.memory_budget * GB), recall_target=args.recall_target,
        max_query_ms=args.max_query_ms, index_design=getattr(args, "index_design", "auto"),
        disk_budget=int(args.disk_budget * GB) if getattr(args, "disk_budget", None) else None,
        exclude=str(args.exclude) if args.exclude else None, license=args.license or None,
        thumbnails=(kind == "folder") if args.thumbnails is None else args.thumbnails,
        centre_crops=parse_centre_crops(getattr(args, "centre_crops", None)),
        background=str(args.background) if args.background else None,
        background_size=max(1, args.background_size),
        download_timeout=args.download_timeout, progress=bar.update if bar is not None else None)
    try:
        report = build(args.source, args.out, opts, name=args.name, title=args.title, description=args.description,
                       dataset=args.dataset, work=args.work, overwrite=args.force, keep_work=args.keep_work, log=log)
    finally:
        if bar is not None:
            bar.close()
    idx = report.index
    print(f"built pack {clean_text(report.path)}: {report.count} images, {report.vectors} vectors, embedder "
          f"{args.embedder}; index {idx.get('type')}, recall@10 {idx.get('recall_at_10')}, {idx.get('query_ms')} ms "
          f"per query; {report.seconds:.1f} s")
    if report.skipped:
        print(f"{len(report.skipped)} image(s) skipped:", file=sys.stderr)
        for s in report.skipped[:50]:
            print(f"  {clean_text(s, 500)}", file=sys.stderr)
        if len(report.skipped) > 50:
            print(f"  ... and {len(report.skipped) - 50} more", file=sys.stderr)
    print(how_to_use(report.path, getattr(args, "packs_dir", None)))
    return EXIT_OK


def how_to_use(path, packs_dir=None) -> str:
    """The build's last line: a pack in the packs folder is searched by every check; one elsewhere
    only when named, until it is installed (said with both commands, the path quoted for a shell)."""
    import shlex
    from pathlib import Path

    from lib_replicheck.packs import default_packs_dir

    path = Path(path).resolve()
    home = Path(packs_dir or default_packs_dir()).resolve()
    if path.parent == home:
        return (f"it is in the packs folder ({clean_text(home)}): every check and the web UI search it "
                f"(python -m lib_replicheck check IMAGE)")
    quoted = clean_text(shlex.quote(str(path)))
    return (f"checks search only installed packs: use this one with python -m lib_replicheck check IMAGE --pack {quoted}, "
            f"or install it for every check and the web UI with python -m lib_replicheck packs install {quoted}")
