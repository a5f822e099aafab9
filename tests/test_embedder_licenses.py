"""The embedders' licenses: one table (embedders/licenses.py), said under every listing of packs
(the command line, its JSON, the tab) and in the README, with whether each is free for commercial use."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import REPO, photo_folder
from lib_replicheck.embedders.licenses import LICENSES, license_lines, license_of


def run(*args, home):
    env = dict(os.environ, REPLICHECK_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_table_states_each_license_and_commercial_use():
    assert license_of("sscd").license == "MIT" and license_of("sscd_disc_large").commercial is True
    assert license_of("pdq").license.startswith("BSD") and license_of("pdq").commercial is True
    assert license_of("clip:ViT-L-14/openai").commercial is None  # the weights decide
    assert license_of("evil\x1b[2J") is None and license_lines(["evil", None, 3]) == []
    assert "CC-BY-NC 4.0 before" in LICENSES["sscd"].note  # the first release's license, said as past
    assert license_lines(["pdq", "sscd", "pdq"]) == [LICENSES["sscd"].line(), LICENSES["pdq"].line()]
    assert license_lines(["pdq"]) == ["pdq: BSD (PDQ), MIT (pdqhash), free for commercial use (Meta's PDQ hash "
                                      "(ThreatExchange), run by pdqhash; no weights)"]


def test_packs_available_says_the_embedder_licenses(tmp_path):
    r = run("packs", "available", "--offline", home=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"embedder license: {LICENSES['sscd'].line()}" in lines  # the recipes build sscd packs
    assert f"embedder license: {LICENSES['pdq'].line()}" in lines  # the demo pack
    assert f"embedder license: {LICENSES['clip'].line()}" in lines  # the packs from published CLIP embeddings
    assert len([line for line in lines if line.startswith("embedder license: ")]) == 3  # one line per family
    r = run("packs", "available", "--offline", "--json", home=tmp_path)
    listed = {p["name"]: p["embedder_license"] for p in json.loads(r.stdout)}
    assert listed["demo"]["license"] == "BSD (PDQ), MIT (pdqhash)" and listed["demo"]["commercial"] is True
    assert listed["sd1-memorized"]["license"] == "MIT" and "sscd-copy-detection" in listed["sd1-memorized"]["source"]


def test_packs_list_says_the_license_of_the_installed_packs_embedders(tmp_path, pack_photos):
    src = photo_folder(tmp_path / "src", pack_photos[:3])
    r = run("build", src, "--out", tmp_path / "home" / "packs" / "three", "--embedder", "pdq", home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    r = run("packs", "list", home=tmp_path / "home")
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == f"embedder license: {LICENSES['pdq'].line()}"


def test_the_tab_shows_the_licenses_of_the_embedders_it_lists():
    from lib_replicheck.registry.registry import DEFAULT_REGISTRY, load
    from lib_replicheck.webui import packs_page

    html = packs_page.render([], load(DEFAULT_REGISTRY).packs)
    assert "rc-embedder-licenses" in html
    for fam in ("sscd", "pdq", "clip"):
        assert LICENSES[fam].line().replace("'", "&#x27;") in html
    assert html.split("rc-embedder-licenses")[1].count("<br>") == 3  # one line per family, not per pack


def test_the_readme_table_agrees_with_the_library():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Embedders", 1)[1].split("\n\n", 2)[1]
    rows = {re.match(r"\| `(\w+)", r).group(1): r for r in table.splitlines()[2:]}
    assert set(rows) == set(LICENSES)
    for fam, lic in LICENSES.items():
        use = {True: "free for commercial use", None: "commercial use depends on the weights"}[lic.commercial]
        assert f"{lic.license}, {use}" in rows[fam], fam
    assert "SSCD (MIT)" not in readme and "CC-BY-NC 4.0 to MIT in July 2022" in readme
