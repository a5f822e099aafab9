"""`check --sign`: a signed copy of each checked image with the record of its check (C2PA), written
into --sign-dir, or into the image itself only with --sign-in-place."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lib_replicheck.errors import ReplicheckError, clean_text


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("signed record (C2PA; needs pip install c2pa-python)")
    g.add_argument("--sign", action="store_true",
                   help="write a signed copy of each checked PNG, JPEG or WebP with the record of its check "
                        "(C2PA manifest; read it back with: python -m lib_replicheck verify IMAGE)")
    g.add_argument("--sign-dir", type=Path, metavar="OUT", help="the folder the signed copies go to")
    g.add_argument("--sign-in-place", action="store_true",
                   help="sign the images themselves instead of copies (each replaced whole once signed)")
    g.add_argument("--sign-cert", type=Path, metavar="CHAIN.pem",
                   help="your certificate chain (default $REPLICHECK_SIGN_CERT, else this install's local "
                        "certificate: proves the image is unchanged, not who signed it)")
    g.add_argument("--sign-key", type=Path, metavar="KEY.pem", help="its private key, mode 600 "
                                                                     "(default $REPLICHECK_SIGN_KEY)")
    g.add_argument("--sign-tsa", metavar="URL", help="a timestamp authority to countersign with (default: none, "
                                                     "nothing leaves this machine)")
    g.add_argument("--sign-source", choices=["generated", "composite"], default="generated",
                   help="what the images are, as C2PA records it: generated (txt2img, the default) or composite "
                        "(img2img, inpainting)")


class FolderSigner:
    """Signs each checked image as its report comes in; a failure is one line on stderr and counted."""

    def __init__(self, args, roots):
        from lib_replicheck.home import default_home
        from lib_replicheck.provenance import keys

        if bool(args.sign_dir) == bool(args.sign_in_place):
            raise ReplicheckError("--sign needs where to write: --sign-dir OUT (signed copies), or --sign-in-place")
        if args.sign_dir is not None and args.sign_dir.exists() and not args.sign_dir.is_dir():
            raise ReplicheckError(f"--sign-dir {args.sign_dir}: not a folder")
        self.out = args.sign_dir
        self.roots = [Path(r) for r in roots]
        self.creds = keys.credentials(default_home(), args.sign_cert, args.sign_key, args.sign_tsa)
        self.composite = args.sign_source == "composite"
        self.checker = None
        self.failures = 0
        self.signed = 0

    def destination(self, image: Path) -> Path:
        if self.out is None:
            return image
        for root in self.roots:  # the path under the folder given, links not followed (they may lead anywhere)
            if root.is_dir():
                try:
                    return self.out / Path(os.path.abspath(image)).relative_to(os.path.abspath(root))
                except ValueError:
                    continue
        return self.out / image.name

    def __call__(self, report) -> None:
        from lib_replicheck.provenance import ProvenanceError, record, sign

        if report.error:
            return
        image = Path(report.image)
        dest = self.destination(image)
        try:
            if self.out is not None and dest.resolve() == image.resolve():
                raise ProvenanceError(f"{image}: --sign-dir would overwrite the image itself; name another "
                                      "folder, or use --sign-in-place")
            context = record.CheckContext.of_checker(self.checker, composite=self.composite)
            definition = record.manifest(record.assertion(report, context), context, image.name)
            sign.sign_file(image, dest, definition, self.creds)
        except ReplicheckError as e:
            self.failures += 1
            print(f"replicheck: error: not signed: {clean_text(e, 1000)}", file=sys.stderr, flush=True)
            return
        self.signed += 1
        report.record = str(dest)


def signer_for(args, roots) -> FolderSigner | None:
    """The signer `check --sign` asks for; None without --sign (and an error for its options alone)."""
    if not getattr(args, "sign", False):
        if getattr(args, "sign_dir", None) or getattr(args, "sign_in_place", False):
            raise ReplicheckError("--sign-dir and --sign-in-place go with --sign")
        return None
    return FolderSigner(args, roots)
