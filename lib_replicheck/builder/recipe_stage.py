"""What every stage of a recipe build shares: the error it raises (RecipeError), where the build
stands (BuildProgress) and the reporter that passes it on, and the cancel check between steps."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lib_replicheck.download import Cancelled
from lib_replicheck.errors import ReplicheckError

STAGES = ("list", "fetch", "embed", "index")


class RecipeError(ReplicheckError):
    pass


@dataclass
class BuildProgress:
    """Where a recipe build stands: the stage, its units done and expected, and a line for people."""

    stage: str = "list"
    done: int = 0
    total: int = 0
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def work_dir(packs_dir: Path, name: str) -> Path:
    """The recipe's hidden work folder in the packs folder, `.NAME.recipe/`."""
    return Path(packs_dir) / f".{name}.recipe"


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


class Reporter:
    """Called as report(stage, done, total, message) by each stage; passes a BuildProgress on."""

    def __init__(self, progress: Callable[[BuildProgress], None] | None, log: Callable[[str], None]):
        self.state = BuildProgress()
        self._progress = progress
        self.log = log

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        self.state = BuildProgress(stage, done, total, message or self.state.message if stage == self.state.stage
                                   else message)
        if self._progress is not None:
            self._progress(self.state)
