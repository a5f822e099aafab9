"""Registries and exclusion lists written to cost memory: a 261-byte registry whose url_pattern
asks str.format for 200-million-character URLs (or reaches into attributes), recipes naming more
list files than any build needs, and exclusion lists of hundreds of megabytes or millions of lines.
Each is refused by name before it is built or read, run as the user runs it (`packs available`,
the web UI's Refresh, `packs get`, `build --exclude`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from conftest import REPO
from httpfaults import FaultServer

GB, MB = 1024**3, 1024**2
HEADER = {"X-Replicheck-Request": "1"}


def run(*args, memory_bytes: int | None = None, timeout: float = 300):
    """The command line in a fresh process, under an address-space limit if given."""

    def limit():
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


def recipe(name: str = "r", **list_fields) -> dict:
    return {"kind": "recipe", "name": name, "embedder": {"id": "pdq"},
            "list": {"format": "csv", "columns": {"url": "url"}, **list_fields}}


def registry_file(path, *entries) -> str:
    path.write_text(json.dumps({"format": "replicheck-registry", "format_version": 1, "packs": list(entries)}))
    return str(path)


HOSTILE_PATTERNS = ["https://h.example/{i:>200000000}.csv", "https://h.example/{i.__class__.__mro__}.csv",
                    "https://h.example/{i:010d}.csv", "https://h.example/{i}/{i}.csv", "https://h.example/{}.csv",
                    "https://h.example/" + "a" * 3000 + "{i}.csv"]


@pytest.mark.parametrize("pattern", HOSTILE_PATTERNS, ids=["width", "attribute", "pad 10", "two fields", "positional",
                                                           "long"])
def test_url_pattern_with_a_format_spec_is_refused_naming_the_field(tmp_path, pattern):
    """`packs available` in a process limited to 1.5 GB: the registry is refused by name; before,
    `{i:>200000000}` built 20 URLs of 200 MB each (and `{i.__class__.__mro__}` was listed)."""
    reg = registry_file(tmp_path / "r.json", recipe(url_pattern=pattern, parts=20))
    r = run("packs", "available", "--registry", reg, "--packs-dir", tmp_path, memory_bytes=3 * GB // 2)
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "packs[0].list.url_pattern" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr) < 2000


def test_zero_padded_url_pattern_lists_its_parts(tmp_path):
    from lib_replicheck.registry import registry

    reg = registry_file(tmp_path / "r.json", recipe(url_pattern="https://h.example/part-{i:03d}.csv", parts=12))
    got = registry.load(reg).packs[0]
    assert [f.urls[0] for f in got.list.files][-2:] == ["https://h.example/part-010.csv",
                                                        "https://h.example/part-011.csv"]
    r = run("packs", "available", "--registry", reg, "--packs-dir", tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("r "), (r.stdout, r.stderr)


def test_recipes_naming_too_many_list_files_in_all_are_refused(tmp_path):
    """Each recipe may name 10,000 parts; 40 of them in one registry of 6 kB would have built
    400,000 URLs. The registry is refused at the entry that passes the bound."""
    entries = [recipe(f"r{i}", url_pattern="https://h.example/" + "p" * 1500 + "/{i}.csv", parts=10_000)
               for i in range(40)]
    reg = registry_file(tmp_path / "r.json", *entries)
    r = run("packs", "available", "--registry", reg, "--packs-dir", tmp_path, memory_bytes=3 * GB // 2)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "packs[1].list: the registry's recipes name more than 10,000 list files in all" in r.stderr, r.stderr


def test_refresh_in_the_web_ui_reports_the_hostile_registry_by_field(tmp_path):
    """The web UI's Refresh reads the registries in its own process: the hostile one is an error
    naming its entry and field, beside the shipped registry's packs."""
    import httpx
    from fastapi import FastAPI

    from browser import serve
    from lib_replicheck.webui.pack_jobs import PackManager
    from lib_replicheck.registry.registry import DEFAULT_REGISTRY
    from lib_replicheck.webui import api
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    server = FaultServer()
    try:
        data = {"format": "replicheck-registry", "format_version": 1,
                "packs": [recipe(url_pattern="https://h.example/{i:>200000000}.csv", parts=10)]}
        bad = server.add("/bad/packs.json", json.dumps(data).encode())
        app = FastAPI()
        api.mount(app, CheckService(tmp_path / "packs", tmp_path), Settings,
                  manager=PackManager(tmp_path / "packs", tmp_path, lambda: [bad, DEFAULT_REGISTRY]))
        with serve(app) as url, httpx.Client(base_url=url, timeout=120) as c:
            body = c.get("/replicheck/v1/packs", params={"refresh": "true"}, headers=HEADER).json()
        assert "demo" in [p["name"] for p in body["available"]]
        assert len(body["registry_errors"]) == 1, body["registry_errors"]
        assert "packs[0].list.url_pattern" in body["registry_errors"][0], body["registry_errors"]
    finally:
        server.close()


# -- exclusion lists ------------------------------------------------------------------------------------------


def test_exclusion_list_declared_over_the_cap_is_refused_in_the_listing(tmp_path):
    entry = recipe(user=True)
    entry["exclude"] = {"urls": ["https://h.example/exclude.txt"], "size": 83 * MB, "sha256": "0" * 64}
    reg = registry_file(tmp_path / "r.json", entry)
    r = run("packs", "available", "--registry", reg, "--packs-dir", tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "packs[0].exclude.size: 87,031,808 bytes: an exclusion list may have at most 64 MB" in r.stderr, r.stderr


def test_exclusion_list_of_undeclared_size_is_cut_off_at_the_cap(tmp_path):
    """`packs get` of a recipe whose exclusion list has no size: the server sends an endless body;
    the download stops at 64 MB, naming the list (before, 100 MB were fetched, then read whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lib_replicheck.builder.build_recipe import RecipeError, get_recipe, GetOptions
    from lib_replicheck.download import Policy
    from lib_replicheck.registry import registry
    from lib_replicheck.registry.parse_recipe import ListFile

    own = tmp_path / "own.parquet"
    pq.write_table(pa.table({"URL": ["https://h.example/a.jpg"], "TEXT": ["a"]}), own)
    server = FaultServer()
    try:
        url = server.add("/exclude.txt", b"https://h.example/removed.jpg\n", "endless", limit=100 * MB)
        shipped = next(p for p in registry.load(registry.DEFAULT_REGISTRY).packs if p.name == "laion-parquet")
        from dataclasses import replace

        hostile = replace(shipped, embedder={"id": "pdq"}, exclude=ListFile(urls=(url,), sha256="0" * 64))
        with pytest.raises(RecipeError, match=r"exclude: .*more than the 64 MB accepted"):
            get_recipe(hostile, tmp_path / "packs", GetOptions(list_path=str(own)),
                       policy=Policy(connect_timeout=2, read_timeout=5, retries=0, backoff=0.01), log=lambda s: None)
        assert server.routes["/exclude.txt"].sent < 80 * MB
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["10 GB sparse file", "over a million lines"])
def test_build_refuses_an_exclusion_list_over_its_caps_naming_the_file(tmp_path, pack_photos, kind):
    """`build --exclude`: a 10 GB file (sparse: nothing is written) is refused before a byte is read,
    in a process limited to 2 GB (before, it was read whole); a list of 1,000,001 short lines (8 MB)
    is refused as it is read."""
    from conftest import photo_folder

    src = photo_folder(tmp_path / "src", pack_photos[:2])
    exclude = tmp_path / "exclude.txt"
    if kind.startswith("10 GB"):
        with open(exclude, "wb") as f:
            f.truncate(10 * GB)
        message = "10,737,418,240 bytes, more than the 64 MB an exclusion list may have"
    else:
        exclude.write_bytes(b"".join(b"h%06x\n" % i for i in range(1_000_001)))
        message = "more than 1,000,000 entries"
    r = run("build", src, "--embedder", "pdq", "--out", tmp_path / "pack", "--exclude", exclude,
            memory_bytes=2 * GB)
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert f"exclusion list {exclude}: {message}" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "pack").exists()

