"""HTML of the web UI's Replicheck tab: installed and downloadable packs, escaped like the panel.

Every field comes from a pack or a registry: each is cut to one short line and cleaned of control,
escape and format characters before it is escaped (a 1 MB license stays a line of the table).
"""

from __future__ import annotations

from lib_replicheck.embedders.licenses import license_lines
from lib_replicheck.webui.panel import clip, esc, link

MAX_ERROR = 600
#: The recipe the tab suggests first: the best-documented real copies.
SUGGESTED = "sd1-memorized"


def _recipe_state(p) -> str:
    """'recipe: Build (~4 min with sscd on CPU)': how a recipe is got, with the measured estimate."""
    from lib_replicheck.registry.parse_recipe import duration

    emb = p.embedder.get("id", "") if isinstance(p.embedder, dict) else ""
    times = []
    for device in ("cpu", "gpu"):
        t = p.estimate(device) if hasattr(p, "estimate") else None
        if t:
            times.append(f"~{duration(t)} with {emb} on {device.upper()}")
    how = ("recipe: Build with your own list" if p.list.user else
           "recipe: Build, accepting files without a published sha256" if p.list.unpinned else "recipe: Build")
    return esc(how + (f" ({' / '.join(times)})" if times else ""))


def _t(value, limit: int = 200) -> str:
    return esc(value, limit)


def _source(src: dict) -> str:
    return link(src.get("url"), clip(src.get("dataset", ""), 120)) if src else ""


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def render(installed, available, errors=(), refreshed: bool = False) -> str:
    """`installed`: api_models.PackModel list; `available`: registry.RegistryPack list."""
    have = {p.name for p in installed}
    rows = []
    for p in installed:
        state = f'<span class="rc-error-text">{_t(p.error, MAX_ERROR)}</span>' if p.error else "installed"
        rows.append(f"<tr><td>{_t(p.name, 64)}</td><td>{_t(p.title)}</td><td>{int(p.count):,}</td>"
                    f"<td>{_t(p.embedder, 64)}</td><td>{_mb(p.size_bytes)}</td>"
                    f"<td>{_t((p.source or {}).get('license', ''), 120)}</td>"
                    f"<td>{_source(p.source or {})}</td><td>{_t(p.background, 300)}</td><td>{state}</td></tr>")
    for p in available:
        if p.name in have:
            continue
        embedder = p.embedder.get("id", "") if isinstance(p.embedder, dict) else ""
        recipe = getattr(p, "kind", "pack") == "recipe"
        if recipe:
            count = f"about {int(p.count):,}" if p.count else "yours"
        else:
            count = f"{int(p.count or 0):,}"
        size = _mb(p.size) if p.size else ("built here" if recipe else _mb(0))
        rows.append(f"<tr class='rc-{'recipe' if recipe else 'pack'}'><td>{_t(p.name, 64)}</td><td>{_t(p.title)}</td>"
                    f"<td>{count}</td><td>{_t(embedder, 64)}</td><td>{size}</td>"
                    f"<td>{_t((p.source or {}).get('license', ''), 120)}</td>"
                    f"<td>{_source(p.source or {})}</td><td></td>"
                    f"<td>{_recipe_state(p) if recipe else 'available'}</td></tr>")
    suggest = ""
    if any(p.name == SUGGESTED for p in available) and SUGGESTED not in have:
        suggest = (f"<p class='rc-message'>Suggested: <b>{SUGGESTED}</b>, the LAION images Stable Diffusion 1.x is "
                   "known to reproduce. Choose it and click <b>Build</b>: its images are fetched from their "
                   "original addresses (many are gone) and indexed on this machine.</p>")
    head = ("<tr><th>name</th><th>title</th><th>images</th><th>embedder</th><th>size</th><th>license</th>"
            "<th>source</th><th>background</th><th>state</th></tr>")
    note = "" if refreshed else ("<p class='rc-message'>Click <b>Refresh list</b> to read the pack registries "
                                 "(nothing is fetched before that).</p>")
    errs = "".join(f"<p class='rc-error-text'>{_t(e, MAX_ERROR)}</p>" for e in errors)
    body = "".join(rows) or "<tr><td colspan='9'>No pack installed yet.</td></tr>"
    if not installed and rows:
        note += "<p class='rc-message'>No pack installed yet: download or build one below.</p>"
    ids = [p.embedder for p in installed] + [p.embedder.get("id", "") if isinstance(p.embedder, dict) else ""
                                              for p in available]
    licenses = "".join(f"<br>{esc(line)}" for line in license_lines(ids))
    if licenses:
        licenses = f"<p class='rc-message rc-embedder-licenses'>Embedder licenses (the models'):{licenses}</p>"
    return (f"<div class='rc-packs'>{note}{errs}{suggest}<table class='rc-table'>{head}{body}</table>"
            f"{licenses}</div>")
