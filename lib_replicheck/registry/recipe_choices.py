"""The choices a user gives for getting a recipe, and the one rule that checks them.

`packs get NAME --sample N --list PATH --accept-unpinned` on the command line, the tab's fields beside
Build and the JSON body of POST /replicheck/v1/packs/NAME/download all become a RecipeChoices, checked
here. A refusal (ChoiceError) names the fields it is about by their name here (`sample`, `list_path`,
`accept_unpinned`); each caller says them in its own words (`--sample`, the tab's label,
`field 'sample'`), and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from lib_replicheck.errors import ReplicheckError

#: the longest path accepted for the user's own list
MAX_LIST_PATH = 4096


class ChoiceError(ReplicheckError):
    """Recipe choices refused by RecipeChoices' rule: each problem is the fields it is about and why.
    `field` is the first problem's first field; `named(words)` says them all in a caller's words."""

    def __init__(self, *problems: tuple[tuple[str, ...], str]):
        self.problems = problems
        self.field, self.reason = problems[0][0][0], problems[0][1]
        super().__init__(self.named(lambda f: f))

    def named(self, words: Mapping[str, str] | Callable[[str], str]) -> str:
        """The refusal with each field said as `words` says it (a mapping or a function of the name)."""
        say = words.__getitem__ if isinstance(words, Mapping) else words
        return "; ".join(f"{', '.join(say(f) for f in fields)}: {reason}" for fields, reason in self.problems)


def _refused(field: str, reason: str) -> ChoiceError:
    return ChoiceError(((field,), reason))


def own_list(recipe) -> str:
    """What a recipe that builds from the user's own list takes, in words."""
    lst = recipe.list
    if lst.format == "embeddings":
        return ("your embeddings (a folder in clip-retrieval's layout, img_emb/ and metadata/, or a text file of "
                "their URLs)")
    need = [c for r, c in lst.columns.items() if r not in lst.optional]
    maybe = [c for r, c in lst.columns.items() if r in lst.optional]
    return (f"your list file (a {lst.format} file with the columns {', '.join(need)}"
            + (f"; {', '.join(maybe)} kept when present" if maybe else "") + ")")


def _shown(value) -> str:
    """A refused value as it is quoted back: its repr, clipped (it may be a stranger's)."""
    return repr(value)[:40]


@dataclass(frozen=True)
class RecipeChoices:
    """What a user chooses for a recipe's build: accept files without a published sha256 (pinned on
    first use), a sample (the first N rows, or embedding files), and the user's own list (a folder
    or file). The values are checked here (ChoiceError naming the field), and `applied_to` checks
    them against the recipe."""

    accept_unpinned: bool = False
    sample: int | None = None
    list_path: str | None = None

    def __post_init__(self):
        if not isinstance(self.accept_unpinned, bool):
            raise _refused("accept_unpinned", f"true or false, not {_shown(self.accept_unpinned)}")
        if self.sample is not None and (isinstance(self.sample, bool) or not isinstance(self.sample, int)
                                        or self.sample < 1):
            raise _refused("sample", f"a whole number of 1 or more (the first N rows; embedding recipes: "
                                     f"files), not {_shown(self.sample)}")
        if self.list_path is not None:
            if not isinstance(self.list_path, str):
                raise _refused("list_path", f"a path on the server, not {_shown(self.list_path)}")
            if not self.list_path.strip() or "\x00" in self.list_path:
                raise _refused("list_path", "a path on the server, not empty and without NUL characters")
            if len(self.list_path) > MAX_LIST_PATH:
                raise _refused("list_path", f"a path of at most {MAX_LIST_PATH:,} characters")

    def given(self) -> list[str]:
        """The fields the user set."""
        return [f for f, v in (("accept_unpinned", self.accept_unpinned), ("sample", self.sample),
                               ("list_path", self.list_path)) if v not in (None, False)]

    def applied_to(self, entry) -> dict:
        """The choices that apply to `entry` (a registry pack or recipe), as GetOptions' fields. Every
        choice it needs and was not given, and every one given that it does not take (a list for a
        recipe that names its own, a sample where none is offered, any choice for a prebuilt pack), is
        refused at once, in one ChoiceError naming the fields. Accepting unpinned files is harmless
        where every file is pinned: it is taken and does nothing."""
        if entry.kind != "recipe":
            given = self.given()
            if given:
                raise ChoiceError((tuple(given), f"only for building a recipe; {entry.name} is a prebuilt pack, "
                                                 "downloaded as it is"))
            return {}
        problems = []
        if entry.list.user and not self.list_path:
            problems.append((("list_path",), f"{entry.name} builds from your own list: give {own_list(entry)}"))
        if self.list_path and not entry.list.user:
            problems.append((("list_path",), f"{entry.name} names its own list and takes none of yours"))
        if self.sample is not None and not entry.sample:
            problems.append((("sample",), f"{entry.name} offers no sample (recipes of large lists do); build it "
                                          "whole"))
        if entry.list.unpinned and not entry.list.user and not self.accept_unpinned:
            problems.append((("accept_unpinned",), f"{entry.name}: some of its files have no published sha256, so "
                                                   "what is downloaded cannot be checked against anything. To build "
                                                   "it anyway, accept them (each file's sha256 is recorded on first "
                                                   "use; later builds refuse a file that differs)"))
        if problems:
            raise ChoiceError(*problems)
        return {"accept_unpinned": bool(entry.list.unpinned and not entry.list.user and self.accept_unpinned),
                "sample": self.sample, "list_path": self.list_path}
