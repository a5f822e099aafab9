"""`python -m lib_replicheck build --embeddings PATH|URL-LIST --out PACK --embedder clip:MODEL/TAG`: a
pack from published CLIP embeddings (builder/embedding_source.py), or from a clip-retrieval / autofaiss
index folder holding `knn.index` (builder/index_import.py); no image fetched, no model run."""

from __future__ import annotations

from lib_replicheck.cli import EXIT_OK
from lib_replicheck.errors import ReplicheckError


def cmd_build_embeddings(args) -> int:
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.index_import import find_index, import_index
    from lib_replicheck.builder.options import GB, BuildOptions

    if args.embeddings is None:
        raise ReplicheckError("build: give a SOURCE of images, or --embeddings PATH|URL-LIST")
    if args.source is not None:
        raise ReplicheckError("build: give either a SOURCE of images or --embeddings, not both")
    opts = BuildOptions(
        embedder=args.embedder, shard_size=max(1, args.shard_size), memory_budget=int(args.memory_budget * GB),
        recall_target=args.recall_target, max_query_ms=args.max_query_ms,
        index_design=getattr(args, "index_design", "auto"),
        disk_budget=int(args.disk_budget * GB) if getattr(args, "disk_budget", None) else None,
        license=args.license or None, thumbnails=False)
    build = import_index if find_index(args.embeddings) else build_from_embeddings
    report = build(args.embeddings, args.out, opts, name=args.name, title=args.title,
                   description=args.description, dataset=args.dataset, work=args.work,
                   overwrite=args.force, keep_work=args.keep_work)
    idx = report.index
    print(f"built pack {report.path}: {report.count} images from published embeddings, embedder {args.embedder}; "
          f"index {idx.get('type')}, recall@10 {idx.get('recall_at_10')}, {idx.get('query_ms')} ms per query; "
          f"{report.seconds:.1f} s")
    return EXIT_OK
