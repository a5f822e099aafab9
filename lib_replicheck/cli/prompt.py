"""`python -m lib_replicheck prompt "TEXT"`: is this a prompt Stable Diffusion is known to copy a training
image for? Exit status 1 when it matches a known memorized prompt, 0 when not, 2 on an error."""

from __future__ import annotations

import argparse
from pathlib import Path

from lib_replicheck.cli import EXIT_COPY, EXIT_OK
from lib_replicheck.errors import ReplicheckError, clean_text, json_text


def add_parser(sub) -> argparse.ArgumentParser:
    """The `prompt` command's arguments (registered by cli.main)."""
    p = sub.add_parser("prompt", help="check a prompt against known memorized prompts (no pack or model needed)")
    p.add_argument("text", metavar="TEXT", help="the prompt")
    p.add_argument("--list", action="append", default=[], type=Path, metavar="CSV",
                   help="another list of memorized prompts to check too (';'-separated, with a 'Caption' column "
                        "and optionally a 'type' column); repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def cmd_prompt(args) -> int:
    from lib_replicheck.memorization import prompts

    lists = list(prompts.DEFAULT_LISTS)
    for path in args.list:
        lists.append(_user_list(prompts, path))
    index = prompts.default_index() if not args.list else prompts.load(lists)
    match = index.match(args.text)
    if args.json:
        print(json_text({"match": match is not None, **({"found": match.to_dict()} if match else {}),
                         "lists": [{"name": s.name, "model": s.model, "source": s.source} for s in lists],
                         "prompts_listed": len(index)}))
    elif match is None:
        print(f"no match among {len(index)} known memorized prompts")
    else:
        print(clean_text(match.summary(), 300))
        print(f"  matches {match.how_text()}: \"{clean_text(match.prompt, 300)}\"")
        print(f"  type {clean_text(match.type or '-', 16)} ({match.type_label}), list {clean_text(match.list_name, 64)} "
              f"row {match.row}")
    return EXIT_COPY if match is not None else EXIT_OK


def _user_list(prompts, path: Path):
    """A list given on the command line: named after its file, types read when it has a 'type' column."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline(64 * 1024)
    except OSError as e:
        raise ReplicheckError(f"prompt list {path}: {e.strerror or e}") from None
    has_type = "type" in [h.strip() for h in header.rstrip("\r\n").split(";")]
    return prompts.PromptList(path, path.stem[:64], "the given list", f"list {path.name}"[:80],
                              type_column="type" if has_type else None)
