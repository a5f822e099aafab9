"""The README's measured figures stay tied to the scripts that print them, and those scripts clean up.

The convention (bench/README.md says it for people):
- every block of the README that quotes measured figures is fenced by `<!-- figures: SCRIPT -->` and
  `<!-- /figures -->`, naming the script that prints them;
- bench/README.md has a section "## `SCRIPT`" with the exact command (`$ python SCRIPT ...`) and the
  lines it printed, indented;
- each figure in a fenced block (a decimal number, or a number with a unit: ms, µs, s, min, MB, GB,
  %, images/s, bits) appears in a printed line of its script's section, and each printed line has the
  shape of what the script prints (it matches the script's own f-strings and string literals, in
  sequence);
- outside fenced blocks the README quotes no timing (ms, µs, images/s) at all.
Nothing here runs a benchmark: it reads the README, bench/README.md and the scripts' source.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BENCH_README = REPO / "bench" / "README.md"

FENCE = re.compile(r"<!-- figures: (\S+) -->(.*?)<!-- /figures -->", re.S)
FIGURE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(?:ms|µs|min|MB|GB|%|images/s|bits|s)(?![A-Za-z])"
                    r"|(?<![\w.])(\d+\.\d+)(?!\w|\.\d)")
TIMING = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ms|µs|images/s)(?![A-Za-z])")


def _without_code(text: str) -> str:
    """`text` less inline code (commands and options name numbers that are no figures)."""
    return re.sub(r"`[^`\n]*`", " ", text)


def figures(text: str) -> list[str]:
    """The numbers of the measured figures quoted in `text`."""
    return [a or b for a, b in FIGURE.findall(_without_code(text))]


def fenced_blocks(readme: str) -> list[tuple[str, str]]:
    return [(script, body) for script, body in FENCE.findall(readme)]


def bench_sections(text: str) -> dict[str, dict]:
    """bench/README.md's sections: script -> {"commands": [...], "lines": [printed lines]}."""
    out: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"## `([^`]+)`\s*$", line)
        if m:
            current = out.setdefault(m.group(1), {"commands": [], "lines": []})
            continue
        if current is None or not line.startswith("    ") or not line.strip():
            continue
        body = line[4:]
        if body.startswith("$ "):
            current["commands"].append(body[2:])
        else:
            current["lines"].append(body)
    return out


def templates(script: Path) -> list[str]:
    """Regexes of every f-string and string literal in `script`: literal text as it is, each
    formatted value as any text."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts.append(re.escape(str(v.value)))
                else:
                    parts.append(".*?")
            found.append("".join(parts))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
            found.append(re.escape(node.value))
    # f-strings inside f-strings are walked twice; drop templates that are only placeholders
    return sorted({t for t in found if len(re.sub(r"\\.|\.\*\?", "", t).strip()) >= 2 or "\\" in t})


def printed_by(line: str, pats: list[str]) -> bool:
    """Whether `line` is a sequence of the script's templates (prints join several with +)."""
    alternation = "|".join(f"(?:{p})" for p in pats)
    return re.fullmatch(f"(?:{alternation})+", line, re.S) is not None


def test_every_fenced_figure_is_printed_by_its_script():
    readme = README.read_text(encoding="utf-8")
    sections = bench_sections(BENCH_README.read_text(encoding="utf-8"))
    blocks = fenced_blocks(readme)
    assert blocks, "the README has no fenced figures"
    missing = []
    for script, body in blocks:
        assert (REPO / script).is_file(), f"README names {script}, which does not exist"
        assert script in sections, f"bench/README.md has no section for {script}"
        printed = "\n".join(sections[script]["lines"])
        for fig in figures(body):
            if not re.search(rf"(?<![\d.]){re.escape(fig)}(?!\d)", printed):
                missing.append(f"{script}: {fig}")
    assert missing == [], f"README figures that bench/README.md does not show printed: {missing}"


def test_every_quoted_line_has_the_shape_of_the_scripts_output():
    sections = bench_sections(BENCH_README.read_text(encoding="utf-8"))
    assert sections
    for script, sec in sections.items():
        path = REPO / script
        assert path.is_file(), script
        assert sec["commands"], f"{script}: no command given"
        for cmd in sec["commands"]:
            assert re.match(rf"python3? {re.escape(script)}(\s|$)", cmd), f"{script}: command {cmd!r} runs another script"
        pats = templates(path)
        wrong = [line for line in sec["lines"] if not printed_by(line, pats)]
        assert wrong == [], f"{script} prints no lines of this shape: {wrong}"


def test_no_timing_outside_fenced_blocks():
    readme = README.read_text(encoding="utf-8")
    rest = _without_code(FENCE.sub(" ", readme))
    assert TIMING.findall(rest) == [], "timings quoted outside a fenced block"


def test_the_checks_can_fail(tmp_path):
    """The convention's checks reject a figure no line shows and a line the script cannot print."""
    assert figures("recall@10 0.986 at 2.9 ms, 97.5% found, 6.4 images/s, 6 bits, `--n 200000`, at 0.5.") == \
        ["0.986", "2.9", "97.5", "6.4", "6", "0.5"]
    script = tmp_path / "b.py"
    script.write_text('n, ms = 3, 1.5\nprint(f"built {n} packs in {ms:.1f} ms" + (" (cached)" if n else ""))\n')
    pats = templates(script)
    assert printed_by("built 3 packs in 1.5 ms (cached)", pats)
    assert not printed_by("built 3 packs, 1.5 ms per query", pats)


def test_index_scale_removes_its_temporary_folder_when_it_fails(tmp_path):
    """A run that fails (here: 5 vectors cannot train an IVF index) still removes its shards and pack."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = subprocess.run([sys.executable, str(REPO / "bench" / "index_scale.py"), "--n", "5", "--memory-budget", "-1"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp)})
    assert r.returncode != 0 and "Number of training points" in r.stderr
    assert list(tmp.iterdir()) == []


def test_render_panel_leaves_no_temporary_folder(tmp_path):
    """docs/render_panel.py builds a demo pack in a temporary folder and removes it afterwards."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))  # short: Chromium puts its sockets there
    try:
        r = subprocess.run([sys.executable, str(REPO / "docs" / "render_panel.py"), str(tmp_path / "panel.png")],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp)})
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "panel.png").stat().st_size > 10_000
        assert not list(tmp.rglob("manifest.json")), "the demo pack was left behind"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
