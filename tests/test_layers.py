"""The library's import layers: no import loop between modules, and no module importing from a layer
above its own. Every import counts, including those inside functions, so a lazy import cannot hide
a loop. Layers, low to high: core < embedders < packs < checker < registry < builder < memorization
< webui, cli < comfyui (webui and cli never import each other, nor comfyui and cli)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: (module or package prefix, rank); the longest matching prefix wins, the package itself is core.
LAYERS = {
    "": 0,  # core: errors, home, images, thresholds, item, report, download, the package's own __init__
    "embedders": 1,
    "packs": 2,
    "checker": 3,
    "registry": 4,
    "builder": 5,
    "verification": 5.5,  # CLIP candidates verified online: the recipes' bounded image fetch (builder/fetch.py)
    "memorization": 6,
    "webui": 7,
    "cli": 7,
    "__main__": 7,
    "comfyui": 8,  # ComfyUI's nodes reuse the web UI's check service, settings and panel
}
#: top-level rooms that must not import each other
APART = [("webui", "cli"), ("comfyui", "cli")]


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under `root`, by dotted name (a package by its own name)."""
    found = {}
    for f in sorted((root / package).rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = f
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports anywhere in its text."""
    is_pkg = path.name == "__init__.py"
    here = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import pkg.mod.attr` counts as pkg.mod
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph(root: Path, package: str) -> dict[str, set[str]]:
    known = modules(root, package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def room(package: str, name: str) -> str:
    rest = name[len(package) + 1:] if name != package else ""
    return rest.split(".")[0] if rest.split(".")[0] in LAYERS else ""


def problems(root: Path, package: str) -> list[str]:
    """Every import loop and every import against the layers, as readable lines (empty: all good)."""
    g = graph(root, package)
    found = []
    for a, targets in sorted(g.items()):
        for b in sorted(targets):
            ra, rb = room(package, a), room(package, b)
            if LAYERS[rb] > LAYERS[ra]:
                found.append(f"{a} imports {b}: layer {rb or 'core'} is above {ra or 'core'}")
            elif (ra, rb) in APART or (rb, ra) in APART:
                found.append(f"{a} imports {b}: {ra} and {rb} stay apart")
    found += [f"import loop: {' -> '.join(c)}" for c in loops(g)]
    return found


def loops(g: dict[str, set[str]]) -> list[list[str]]:
    """The import loops: strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group) + [sorted(group)[0]])

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_library_imports_follow_the_layers():
    assert problems(REPO, "lib_replicheck") == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"lib_replicheck/__init__.py": "", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_layer_check_finds_an_upward_import(tmp_path):
    root = _package(tmp_path, {
        "lib_replicheck/errors.py": "",
        "lib_replicheck/packs/__init__.py": "",
        "lib_replicheck/packs/pack.py": "def f():\n    from ..webui import panel\n",
        "lib_replicheck/webui/__init__.py": "",
        "lib_replicheck/webui/panel.py": "from lib_replicheck.packs.pack import f\nfrom lib_replicheck import errors\n",
    })
    found = problems(root, "lib_replicheck")
    assert any("lib_replicheck.packs.pack imports lib_replicheck.webui.panel" in p for p in found), found
    assert not any("webui.panel imports lib_replicheck.errors" in p for p in found), found


def test_layer_check_finds_a_loop_and_webui_cli_imports(tmp_path):
    root = _package(tmp_path, {
        "lib_replicheck/embedders/__init__.py": "",
        "lib_replicheck/embedders/sscd.py": "from lib_replicheck.embedders import weights\n",
        "lib_replicheck/embedders/weights.py": "def g():\n    from .sscd import x\n",
        "lib_replicheck/cli/__init__.py": "",
        "lib_replicheck/cli/main.py": "import lib_replicheck.webui.api\n",
        "lib_replicheck/webui/__init__.py": "",
        "lib_replicheck/webui/api.py": "",
    })
    found = problems(root, "lib_replicheck")
    assert ("import loop: lib_replicheck.embedders.sscd -> lib_replicheck.embedders.weights -> "
            "lib_replicheck.embedders.sscd") in found, found
    assert any("cli.main imports lib_replicheck.webui.api: cli and webui stay apart" in p for p in found), found
    assert len(found) == 2, found
