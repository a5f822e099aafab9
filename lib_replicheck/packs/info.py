"""What a listing shows of an installed pack, read from its manifest alone (no faiss, no web UI).

Shared by `packs list` and the web UI's pack routes, so neither needs the other's dependencies.
Every text field comes from the pack, so each is cleaned of control characters and cut to a
length a listing can show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from lib_replicheck.errors import ReplicheckError, clean_text

#: Lengths kept of the pack's own words.
MAX_NAME, MAX_TITLE, MAX_TEXT, MAX_FIELD, MAX_ERROR = 64, 200, 2000, 500, 1000


@dataclass
class PackInfo:
    name: str
    title: str
    embedder: str
    metric: str
    count: int
    size_bytes: int
    description: str = ""
    source: dict[str, str] = field(default_factory=dict)
    #: the background set its region matches are normalised against: 'own: N rows (source)',
    #: 'default: NAME (what it is)', 'none (CLIP candidates; ...)' or 'none'
    background: str = "none"
    error: str | None = None  # the pack could not be read: why

    def to_dict(self) -> dict:
        return asdict(self)


def pack_info(path: str | Path) -> PackInfo:
    """The listing of the pack folder `path`; a pack that cannot be read gives a row with `error`
    (a listing shows every pack, broken ones included, and never fails because of one)."""
    from lib_replicheck.packs import manifest as mf

    path = Path(path)
    folder = clean_text(path.name, MAX_NAME)
    try:
        m = mf.read(path)
    except ReplicheckError as e:
        return _broken(folder, str(e))
    except RecursionError:
        return _broken(folder, f"pack {path}: {mf.MANIFEST} is nested too deeply")
    except Exception as e:  # noqa: BLE001 - a manifest shape the parser did not foresee
        return _broken(folder, f"pack {path}: {mf.MANIFEST} cannot be read ({type(e).__name__}: {e})")
    from lib_replicheck.packs.pack import files_problem

    problem = files_problem(path, m)  # a stat per file: a missing thumbnail is damage a check would refuse
    return PackInfo(
        name=clean_text(m.name, MAX_NAME), title=clean_text(m.title, MAX_TITLE),
        description=clean_text(m.description, MAX_TEXT), embedder=clean_text(m.embedder.id, MAX_NAME),
        metric=clean_text(m.metric, MAX_NAME), count=m.count, size_bytes=sum(f.size for f in m.files),
        source={clean_text(k, MAX_NAME): clean_text(v, MAX_FIELD) for k, v in list(m.source.items())[:32]},
        background=clean_text(background_text(m), MAX_FIELD),
        error=clean_text(f"damaged: {problem}", MAX_ERROR) if problem else None)


def background_text(m) -> str:
    """Which background set a pack's region matches are normalised against (packs/background.py)."""
    from lib_replicheck.packs import background as bg

    if m.background:
        source = m.background.get("source")
        return f"own: {m.background['count']:,} rows" + (f" ({source})" if isinstance(source, str) and source else "")
    if m.metric == "hamming":
        return "none"
    if _semantic(m.embedder.kind):
        return f"none ({candidates_text(m.embedder.kind.upper())})"
    try:
        default = bg.default_for(m.embedder.id)
    except ReplicheckError as e:
        return f"default: cannot be read ({e})"
    if default is None or default.dim != m.embedder.dim:
        return "none"
    return f"default: {default.name} ({default.summary})"


def _semantic(family: str) -> bool:
    """Whether the embedder family declares its similarity semantic (embedders/base.py): its matches
    are candidates, judged only if verified online."""
    from lib_replicheck import embedders

    declared = embedders.declared(family)
    return declared is not None and declared.semantic


def candidates_text(family: str) -> str:
    """What judges a semantic (CLIP) pack's matches: online verification compares each fetched
    candidate with the default SSCD model, its regions against that model's default background
    (verification/compare.py)."""
    from lib_replicheck.embedders.sscd_weights import DEFAULT_MODEL
    from lib_replicheck.packs import background as bg

    try:
        default = bg.default_for(DEFAULT_MODEL)
    except ReplicheckError as e:
        return f"{family} candidates; verifying them online judges regions on raw similarity: {e}"
    if default is None:
        return f"{family} candidates; verifying them online judges regions on raw similarity"
    return f"{family} candidates; verifying them online judges regions against default: {default.name}"


def _broken(folder: str, error: str) -> PackInfo:
    return PackInfo(name=folder, title=folder, embedder="?", metric="?", count=0, size_bytes=0,
                    error=clean_text(error, MAX_ERROR))
