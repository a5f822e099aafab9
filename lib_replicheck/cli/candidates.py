"""`check --verify online`: CLIP candidates verified on the training image itself, fetched from its
URL (lib_replicheck/verification/), as a step after the search."""

from __future__ import annotations

import argparse

from lib_replicheck.errors import ReplicheckError


def add_options(p: argparse.ArgumentParser) -> None:
    from lib_replicheck.verification import CLIP_CUT, MAX_CANDIDATES
    from lib_replicheck.verification.online import CACHE_BYTES, CACHE_FOLDER

    g = p.add_argument_group("verification of CLIP candidates")
    g.add_argument("--verify", choices=["off", "online"], default="off",
                   help="online: fetch the training image of each CLIP candidate (at most "
                        f"{MAX_CANDIDATES} an image, from its URL, http(s) only, bounded) and compare it with "
                        "SSCD and PDQ: its verdict becomes SSCD's on the pair; off (default): candidates read "
                        "'possible copy (unverified ...)'. --offline turns it off")
    g.add_argument("--clip-cut", type=float, default=CLIP_CUT, metavar="SIMILARITY",
                   help=f"CLIP similarity from which a match is a candidate (default {CLIP_CUT:g}, from "
                        "bench/clip_cut.py)")
    g.add_argument("--verify-cache-mb", type=int, default=CACHE_BYTES // 1024**2, metavar="MB",
                   help=f"size cap of the cache of fetched training images, in {CACHE_FOLDER}/ of the models "
                        f"folder (default {CACHE_BYTES // 1024**2}; 0 keeps nothing)")


def verifier_for(args, checker):
    """The Verifier the check's options ask for."""
    from lib_replicheck.home import default_models_dir
    from lib_replicheck.verification import Verifier
    from lib_replicheck.verification.online import CACHE_FOLDER, ImageCache
    from lib_replicheck.verification.step import sscd_from

    if not -1.0 <= args.clip_cut <= 1.0:
        raise ReplicheckError(f"--clip-cut {args.clip_cut:g}: a similarity lies between -1 and 1")
    if args.verify_cache_mb < 0:
        raise ReplicheckError("--verify-cache-mb must be 0 or more")
    models_dir = args.models_dir or default_models_dir()
    return Verifier(online=args.verify == "online", offline=args.offline,
                    sscd=sscd_from(checker),
                    cache=ImageCache(models_dir / CACHE_FOLDER, args.verify_cache_mb * 1024**2),
                    clip_cut=args.clip_cut, tiers=checker.tiers)
