"""The embedding recipes as a user meets them: `packs available` with their sizes and times (from
bench/embedding_build.py's figures in the shipped registry), `packs get pd12m-clip --sample 1` from
a mirror of the hub's layout on 127.0.0.1 named by $REPLICHECK_HF_MIRROR, and the web UI tab's
Build for such a recipe, which offers the choices it needs (files without a published sha256, a
sample of the files) instead of sending the user to the command line."""

from __future__ import annotations

import json

from tests.embedding_layouts import distractors, pd12m_folder


def test_packs_available_gives_download_disk_and_time_of_each_embedding_recipe(monkeypatch, capsys, tmp_path):
    from lib_replicheck.cli.main import main

    monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REPLICHECK_REGISTRY", raising=False)
    assert main(["packs", "available"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    # 12.4M and 3.3M rows at bench/embedding_build.py's 1,049 bytes per row and 462 rows/s
    assert "download ~40.5 GB" in lines["pd12m-clip"] and "pack ~13.0 GB on disk" in lines["pd12m-clip"]
    assert "~7.5 h on CPU (build from local files)" in lines["pd12m-clip"]
    assert "download ~10.8 GB" in lines["pd3m-clip"] and "pack ~3.5 GB on disk" in lines["pd3m-clip"]
    assert "~2.0 h on CPU" in lines["pd3m-clip"]
    assert "per 1,000,000 rows: ~36 min on CPU, pack ~1.05 GB on disk" in lines["laion-clip"]
