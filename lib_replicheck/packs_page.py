"""HTML of the web UI's Replicheck tab: installed and downloadable packs, escaped like the panel."""

from __future__ import annotations

from .panel import esc, link


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def render(installed, available, errors=(), refreshed: bool = False) -> str:
    """`installed`: api.PackModel list; `available`: registry.RegistryPack list."""
    have = {p.name for p in installed}
    rows = []
    for p in installed:
        state = f'<span class="rc-error-text">{esc(p.error)}</span>' if p.error else "installed"
        rows.append(f"<tr><td>{esc(p.name)}</td><td>{esc(p.title)}</td><td>{p.count:,}</td><td>{esc(p.embedder)}</td>"
                    f"<td>{_mb(p.size_bytes)}</td><td>{esc(p.source.get('license', ''))}</td>"
                    f"<td>{link(p.source.get('url'), p.source.get('dataset', '')) if p.source else ''}</td>"
                    f"<td>{state}</td></tr>")
    for p in available:
        if p.name in have:
            continue
        rows.append(f"<tr><td>{esc(p.name)}</td><td>{esc(p.title)}</td><td>{p.count:,}</td>"
                    f"<td>{esc(p.embedder.get('id', ''))}</td><td>{_mb(p.size)}</td>"
                    f"<td>{esc(p.source.get('license', ''))}</td>"
                    f"<td>{link(p.source.get('url'), p.source.get('dataset', ''))}</td><td>available</td></tr>")
    head = ("<tr><th>name</th><th>title</th><th>images</th><th>embedder</th><th>size</th><th>license</th>"
            "<th>source</th><th>state</th></tr>")
    note = "" if refreshed else ("<p class='rc-message'>Click <b>Refresh list</b> to read the pack registries "
                                 "(nothing is fetched before that).</p>")
    errs = "".join(f"<p class='rc-error-text'>{esc(e)}</p>" for e in errors)
    body = "".join(rows) or "<tr><td colspan='8'>No pack installed yet.</td></tr>"
    return f"<div class='rc-packs'>{note}{errs}<table class='rc-table'>{head}{body}</table></div>"
