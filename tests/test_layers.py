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
    "verification.geometry": 0,  # local features of two images in memory (OpenCV): the checker's verification
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
    parts = rest.split(".")
    prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return next((p for p in prefixes if p in LAYERS), "")


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


#: Rooms that are glue to a host program (the web UI, ComfyUI): the only ones that may know about
#: background jobs, routes and the web frameworks.
GLUE = ("webui", "comfyui")
WEB_FRAMEWORKS = ("fastapi", "gradio", "starlette")
ROUTE_CALLS = {"add_api_route", "api_route", "add_route", "add_websocket_route", "websocket_route", "mount"}
ROUTE_DECORATORS = {"get", "post", "put", "delete", "patch", "route"}


def glue_knowledge(name: str, path: Path) -> list[str]:
    """What module `name` knows of jobs and routes: web framework imports, `*Job`/`*Jobs` classes,
    route registrations (app.add_api_route, @router.get...) and route constants (`*_ROUTE`)."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            mods = [node.module or ""]
        else:
            mods = []
        found += [f"{name} imports {m}" for m in mods if m.split(".")[0] in WEB_FRAMEWORKS]
        if isinstance(node, ast.ClassDef) and node.name.endswith(("Job", "Jobs")):
            found.append(f"{name} defines the job class {node.name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ROUTE_CALLS:
            found.append(f"{name} registers a route ({node.func.attr}, line {node.lineno})")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                f = d.func if isinstance(d, ast.Call) else d
                if isinstance(f, ast.Attribute) and f.attr in ROUTE_DECORATORS and isinstance(d, ast.Call) \
                        and d.args and isinstance(d.args[0], ast.Constant) and str(d.args[0].value).startswith("/"):
                    found.append(f"{name} registers a route (@{f.attr}, line {node.lineno})")
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        found += [f"{name} holds the route {t.id}" for t in targets
                  if isinstance(t, ast.Name) and t.id.endswith(("ROUTE", "ROUTES"))]
    return found


def glue_problems(root: Path, package: str, allowed=frozenset()) -> list[str]:
    """Every module outside the glue rooms that knows about jobs or routes (empty: all good)."""
    return [line for name, path in sorted(modules(root, package).items())
            if room(package, name) not in GLUE and name not in allowed
            for line in glue_knowledge(name, path)]


def test_only_the_glue_knows_jobs_and_routes():
    assert glue_problems(REPO, "lib_replicheck") == []


def test_glue_check_finds_jobs_routes_and_frameworks_outside_the_glue(tmp_path):
    root = _package(tmp_path, {
        "lib_replicheck/audit.py": "import threading\nclass AuditJobs:\n    pass\n",
        "lib_replicheck/html_report.py": 'REPORT_ROUTE = "/replicheck/v1/audits/{id}/report"\n',
        "lib_replicheck/packs/__init__.py": "def f(app):\n    from fastapi import Request\n"
                                            "    app.add_api_route('/x', f)\n",
        "lib_replicheck/registry/__init__.py": "",
        "lib_replicheck/registry/serve.py": "import gradio as gr\n@router.get('/y')\ndef y():\n    pass\n",
        "lib_replicheck/webui/__init__.py": "",
        "lib_replicheck/webui/audits.py": "import fastapi\nclass AuditJob:\n    pass\nR_ROUTE = '/r'\n",
        "lib_replicheck/comfyui/__init__.py": "",
        "lib_replicheck/comfyui/routes.py": "def r(app):\n    app.add_route('/z', r)\n",
    })
    found = glue_problems(root, "lib_replicheck")
    assert found == ["lib_replicheck.audit defines the job class AuditJobs",
                     "lib_replicheck.html_report holds the route REPORT_ROUTE",
                     "lib_replicheck.packs imports fastapi",
                     "lib_replicheck.packs registers a route (add_api_route, line 3)",
                     "lib_replicheck.registry.serve imports gradio",
                     "lib_replicheck.registry.serve registers a route (@get, line 3)"], found
    assert glue_problems(root, "lib_replicheck", {"lib_replicheck.audit", "lib_replicheck.html_report",
                                                  "lib_replicheck.packs", "lib_replicheck.registry.serve"}) == []
