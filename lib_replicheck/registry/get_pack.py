"""Getting a pack: the one operation behind `packs get`, `packs install` and the web UI's Download.

A pack a registry lists is downloaded, a recipe it lists is built here, a folder, archive or URL is
installed; then the weights of the pack's embedder are fetched, so that the pack can be used at
once. The recipe's build is handed in by the caller, with the user's choices (builder.build_recipe's
GetOptions) bound to it: the builder sits above the registry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.registry.entry import Listed
from lib_replicheck.registry.pack_install import Installer

#: Builds a recipe into a packs folder: build(recipe, packs_dir, progress=..., cancel=...) -> a
#: result with `.path` (builder.build_recipe.RecipeResult).
Build = Callable[..., Any]


@dataclass(frozen=True)
class Step:
    """Where getting a pack stands, in the shape of a recipe build's progress: `stage` is
    'download' (bytes done of total) or one of the build's stages (list, fetch, embed, index)."""

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""


@dataclass(frozen=True)
class GotPack:
    """An installed pack: its folder, how it came (`kind`: pack, recipe or install), a recipe's
    build result (`built`), and the embedder's weights file (None when the embedder needs none)."""

    path: Path
    kind: str
    built: Any = None
    weights: Path | None = None


def find_listed(name: str, listed: list, errors: list[str]) -> Listed:
    """The entry named `name` among what the registries list; the error says which registries
    could not be read, since the entry may be in one of them."""
    match = next((p for p in listed if p.name == name), None)
    if match is None:
        raise ReplicheckError(f"no registry lists a pack or recipe named {name!r}"
                              + (f" ({'; '.join(errors)})" if errors else ""))
    return match


def check_buildable(entry: Listed, build: Build | None) -> None:
    """A recipe where no builder was handed in is refused, saying where it can be built."""
    if entry.kind == "recipe" and build is None:
        raise ReplicheckError(f"{entry.name} is a recipe, and building recipes is not available here: run "
                              f"python -m lib_replicheck packs get {entry.name}")


def get_pack(target: Union[Listed, str], installer: Installer, *, models_dir: str | Path | None,
             build: Build | None = None, offline: bool = False, sha256: str | None = None, overwrite: bool = False,
             progress: Callable[[Any], None] | None = None, cancel: threading.Event | None = None,
             on_installed: Callable[[GotPack], None] | None = None, weights_progress: bool = True) -> GotPack:
    """Install `target` (a registry entry from `find_listed`, or a pack folder, archive or URL),
    then fetch its embedder's weights. `progress` gets a `Step` (or the build's progress, of the
    same shape); `on_installed` is called once the pack is in place, before the weights are fetched
    (so that a weights failure still tells the user the pack is there). Cancelled on `cancel`."""
    from lib_replicheck.embedders import ensure_for
    from lib_replicheck.packs.manifest import read

    if isinstance(target, str):
        got = GotPack(installer.install(target, sha256=sha256, overwrite=overwrite,
                                        progress=_bytes(progress, "download", 0), cancel=cancel), "install")
    elif target.kind == "recipe":
        check_buildable(target, build)
        built = build(target, installer.packs_dir, progress=progress, cancel=cancel)
        got = GotPack(Path(built.path), "recipe", built=built)
    else:
        got = GotPack(installer.download(target, progress=_bytes(progress, "download", target.size), cancel=cancel),
                      "pack")
    if on_installed is not None:
        on_installed(got)
    weights = ensure_for(read(got.path).embedder, models_dir, offline=offline, progress=weights_progress)
    return GotPack(got.path, got.kind, got.built, weights)


def _bytes(progress: Callable[[Any], None] | None, stage: str, total: int) -> Callable[[int], None] | None:
    """The installer's byte counts as Steps of `stage`, `done` counting up to `total`."""
    if progress is None:
        return None
    done = [0]

    def counted(n: int) -> None:
        done[0] += n
        progress(Step(stage, done[0], total))

    return counted
