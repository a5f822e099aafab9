"""`python -m lib_replicheck packs ...`: the pack manager of the command line."""

from __future__ import annotations

import json
import os
import sys

from .errors import ReplicheckError


def registries(args) -> list[str]:
    from .packs.registry import DEFAULT_REGISTRY

    if args.registry:
        return list(args.registry)
    env = os.environ.get("REPLICHECK_REGISTRY")
    return [u.strip() for u in env.split(",") if u.strip()] if env else [DEFAULT_REGISTRY]


def _need(args, what: str) -> str:
    if not args.target:
        raise ReplicheckError(f"packs {args.action}: give {what}")
    return args.target


def cmd_packs(args) -> int:
    from .packs import default_packs_dir, installed
    from .packs.registry import load_all
    from .packs.install import Installer

    packs_dir = args.packs_dir or default_packs_dir()
    inst = Installer(packs_dir, offline=args.offline)
    out = sys.stdout
    if args.action == "list":
        from .api import pack_model

        rows = [pack_model(p) for p in installed(packs_dir)]
        if args.json:
            print(json.dumps([r.dict() if hasattr(r, "dict") else r.model_dump() for r in rows]), file=out)
        elif not rows:
            print(f"no packs installed in {packs_dir}", file=out)
        for r in rows if not args.json else []:
            state = f"  ERROR: {r.error}" if r.error else ""
            print(f"{r.name:<24} {r.count:>10,} images  {r.embedder:<18} {r.size_bytes / 1e6:>9.1f} MB  "
                  f"{r.source.get('license', '')}{state}", file=out)
        return 0
    if args.action == "available":
        packs, errors = load_all(registries(args), offline=args.offline)
        for e in errors:
            print(f"replicheck: warning: {e}", file=sys.stderr)
        if args.json:
            print(json.dumps([p.to_dict() for p in packs]), file=out)
        else:
            have = {p.name for p in installed(packs_dir)}
            for p in packs:
                mark = "installed" if p.name in have else ""
                print(f"{p.name:<24} {p.count:>10,} images  {p.embedder.get('id', ''):<18} {p.size / 1e6:>9.1f} MB  "
                      f"{p.source.get('license', '')}  {mark}", file=out)
        return 0 if packs or not errors else 2
    if args.action == "download":
        name = _need(args, "the name of a pack (see: packs available)")
        packs, errors = load_all(registries(args), offline=args.offline)
        match = next((p for p in packs if p.name == name), None)
        if match is None:
            raise ReplicheckError(f"no registry lists a pack named {name!r}" + (f" ({'; '.join(errors)})" if errors else ""))
        from tqdm import tqdm

        with tqdm(total=match.size, unit="B", unit_scale=True, desc=name) as bar:
            path = inst.download(match, progress=bar.update)
        print(f"installed {name} ({match.count:,} images) in {path}", file=out)
        _ensure_weights(path, args)
        return 0
    if args.action == "install":
        path = inst.install(_need(args, "a pack folder, an archive or its URL"), sha256=args.sha256)
        print(f"installed {path.name} in {path}", file=out)
        _ensure_weights(path, args)
        return 0
    if args.action == "verify":
        name = _need(args, "the name of an installed pack")
        inst.verify(name)
        print(f"{name}: every file matches its sha256", file=out)
        return 0
    if args.action == "remove":
        name = _need(args, "the name of an installed pack")
        inst.remove(name)
        print(f"removed {name}", file=out)
        return 0
    if args.action == "publish":
        from .packs.registry import publish

        if not args.registry_file or not args.url_prefix:
            raise ReplicheckError("packs publish needs --registry-file and --url-prefix")
        entry = publish(args.registry_file, _need(args, "a built pack folder"), args.url_prefix)
        print(f"{args.registry_file}: {entry['name']} listed with {len(entry['files'])} files", file=out)
        return 0
    raise ReplicheckError(f"unknown action {args.action}")


def _ensure_weights(pack_path, args) -> None:
    from .packs.manifest import read
    from .weights import ensure_for

    spec = read(pack_path).embedder
    path = ensure_for(spec, args.models_dir, offline=args.offline)
    if path is not None:
        print(f"weights for {spec.id}: {path}")
