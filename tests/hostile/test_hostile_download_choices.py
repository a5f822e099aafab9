"""Hostile bodies for POST /replicheck/v1/packs/NAME/download, over real HTTP to the test web UI
(uvicorn on 127.0.0.1): the recipe choices in the body go through the tab's own rule
(webui/pack_jobs.RecipeChoices), and each wrong one is a 422 that names its field before anything
starts. The recipes are the shipped registry's, read from its file (no network): pd12m-clip offers a
sample and has files without a published sha256, sd1-memorized offers no sample and names its own
list, laion-clip builds from the user's own list, demo is a prebuilt pack. The same choices given to
`packs get` and to the tab's Build are refused alike, by the same rule."""

from __future__ import annotations

import pytest

from browser import serve

HEADER = {"X-Replicheck-Request": "1"}
ROUTE = "/replicheck/v1/packs/{}/download"


@pytest.fixture
def client(webui):
    import httpx

    m = webui.module
    webui.set_option("replicheck_registries", "")  # the shipped registry, a file
    m.manager.available, m.manager.refreshed = [], None
    with serve(webui.app) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c
    m.manager.available, m.manager.refreshed = [], None


@pytest.fixture
def jobs(webui):
    """The downloads and builds other tests left in this web UI, as they were before the request."""
    return dict(webui.module.manager.jobs)


def started_nothing(webui, before: dict) -> bool:
    now = webui.module.manager.jobs
    return now.keys() == before.keys() and all(now[k] is before[k] for k in now)


REFUSED = [
    # (pack or recipe, body, the field the 422 names, words of the reason)
    ("pd12m-clip", '{"sample": 0, "accept_unpinned": true}', "sample", "a whole number of 1 or more"),
    ("pd12m-clip", '{"sample": -5, "accept_unpinned": true}', "sample", "not -5"),
    ("pd12m-clip", '{"sample": 1.5, "accept_unpinned": true}', "sample", "not 1.5"),
    ("pd12m-clip", '{"sample": "1", "accept_unpinned": true}', "sample", "not '1'"),
    ("pd12m-clip", '{"sample": true, "accept_unpinned": true}', "sample", "not True"),
    ("pd12m-clip", '{"sample": 1e400, "accept_unpinned": true}', "sample", "not inf"),
    ("pd12m-clip", '{"sample": [1], "accept_unpinned": true}', "sample", "not [1]"),
    ("pd12m-clip", '{"sample": 1, "accept_unpinned": "yes"}', "accept_unpinned", "true or false"),
    ("pd12m-clip", '{"sample": 1}', "accept_unpinned", "no published sha256"),
    ("pd12m-clip", '{"sample": 1, "accept_unpinned": true, "list_path": "/etc"}', "list_path",
     "names its own list and takes none of yours"),
    ("sd1-memorized", '{"sample": 10}', "sample", "offers no sample"),
    ("laion-clip", '{}', "list_path", "builds from your own list"),
    ("laion-clip", '{"list_path": ""}', "list_path", "not empty"),
    ("laion-clip", '{"list_path": "/tmp/a\\u0000b"}', "list_path", "without NUL"),
    ("laion-clip", '{"list_path": {"a": 1}}', "list_path", "a path on the server, not {'a': 1}"),
    ("laion-clip", '{"list_path": "' + "a" * 5000 + '"}', "list_path", "at most 4,096 characters"),
    ("demo", '{"sample": 1}', "sample", "only for building a recipe; demo is a prebuilt pack"),
    ("demo", '{"accept_unpinned": true}', "accept_unpinned", "only for building a recipe"),
]


@pytest.mark.parametrize("name, body, field, words", REFUSED,
                         ids=[f"{n}-{f}-{i}" for i, (n, _, f, _) in enumerate(REFUSED)])
def test_a_wrong_choice_is_a_422_naming_its_field_and_starts_nothing(webui, client, jobs, name, body, field,
                                                                    words):
    r = client.post(ROUTE.format(name), content=body, headers=HEADER)
    assert r.status_code == 422, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert detail.startswith(f"field '{field}': ") and words in detail, detail
    assert len(detail) < 600  # a stranger's value is quoted clipped
    assert started_nothing(webui, jobs)


@pytest.mark.parametrize("body, words", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"sample"', "must be a JSON object"),
    ("[" * 5_000 + "]" * 5_000, "not valid JSON"),  # nesting deeper than the parser goes
    ('{"sample": ' + "9" * 5000 + "}", "not valid JSON"),  # an integer of more digits than Python reads
    ('{"samples": 1}', "field 'samples': unknown; a download takes accept_unpinned, sample, list_path"),
    ('{"<script>": 1}', "field '<script>': unknown"),
], ids=["text", "array", "string", "deep", "long-integer", "unknown-field", "markup-field"])
def test_a_body_that_is_no_choices_is_a_422(webui, client, jobs, body, words):
    r = client.post(ROUTE.format("pd12m-clip"), content=body, headers=HEADER)
    assert r.status_code == 422 and words in r.json()["detail"], (r.status_code, r.text)
    assert started_nothing(webui, jobs)


def test_a_body_over_the_cap_is_refused_unread(webui, client, jobs):
    from lib_replicheck.webui.api import MAX_CHOICES_BYTES

    body = '{"list_path": "' + "a" * (MAX_CHOICES_BYTES + 10) + '"}'
    r = client.post(ROUTE.format("laion-clip"), content=body, headers=HEADER)
    assert r.status_code == 413 and f"over {MAX_CHOICES_BYTES} bytes" in r.json()["detail"], r.text
    assert started_nothing(webui, jobs)


def test_choices_still_need_the_panels_header(webui, client, jobs):
    r = client.post(ROUTE.format("pd12m-clip"), content='{"sample": 1, "accept_unpinned": true}')
    assert r.status_code == 403
    assert started_nothing(webui, jobs)


#: the command line's words for each field
FLAGS = {"sample": "--sample", "list_path": "--list", "accept_unpinned": "--accept-unpinned"}
SAME_RULE = [
    # (recipe, the choices as RecipeChoices' fields, the field refused, words of the reason)
    ("sd1-memorized", {"sample": 10, "accept_unpinned": True}, "sample",
     "sd1-memorized offers no sample (recipes of large lists do); build it whole"),
    ("pd12m-clip", {"sample": -3, "accept_unpinned": True}, "sample", "a whole number of 1 or more"),
    ("laion-parquet", {}, "list_path", "laion-parquet builds from your own list: give your list file (a parquet file "
                                       "with the columns URL, TEXT"),
]


@pytest.mark.parametrize("name, chosen, field, words", SAME_RULE, ids=[n for n, *_ in SAME_RULE])
def test_the_command_line_the_tab_and_the_route_refuse_a_choice_alike(webui, client, jobs, tmp_path, monkeypatch,
                                                                      capsys, name, chosen, field, words):
    """One rule (registry/recipe_choices.RecipeChoices) for `packs get`, the tab's Build and the download
    route: the same choices are refused for the same reason, naming the same field, each in its own
    words (`--sample`, the tab's label, `field 'sample'`); accepting unpinned files where every file is
    pinned (sd1-memorized) is harmless everywhere, so it is named by none."""
    import html

    from lib_replicheck.cli.main import main
    from lib_replicheck.registry.registry import DEFAULT_REGISTRY
    from lib_replicheck.webui.pack_jobs import TAB_LABELS

    r = client.post(ROUTE.format(name), json=chosen, headers=HEADER)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"field '{field}': ") and words in detail, detail
    reason = detail.removeprefix(f"field '{field}': ")
    assert "accept_unpinned" not in reason and "field '" not in reason, reason  # the one field, alone

    _, msg = webui.module.packs_tab.build_recipe(name, chosen.get("accept_unpinned", False), chosen.get("sample", 0),
                                                 chosen.get("list_path", ""))
    assert "rc-error-text" in msg and html.unescape(msg).endswith(f">{TAB_LABELS[field]}: {reason}.</p>"), msg
    assert started_nothing(webui, jobs)

    monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
    argv = ["packs", "get", name, "--registry", DEFAULT_REGISTRY, "--progress", "off"]
    argv += ["--sample", str(chosen["sample"])] if "sample" in chosen else []
    argv += ["--accept-unpinned"] if chosen.get("accept_unpinned") else []
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{FLAGS[field]}: {reason}" in err and "--accept-unpinned" not in err, err
    assert not (tmp_path / "home" / "packs").exists() or not any((tmp_path / "home" / "packs").iterdir())


def test_accepting_unpinned_files_of_a_pinned_recipe_is_harmless_on_the_command_line(tmp_path, monkeypatch, capsys):
    """sd1-memorized publishes every file's sha256: `--accept-unpinned` is taken and does nothing, as in
    the tab and the route (the build goes on, here to the refusal of --offline, which downloads nothing)."""
    from lib_replicheck.cli.main import main
    from lib_replicheck.registry.registry import DEFAULT_REGISTRY

    monkeypatch.setenv("REPLICHECK_HOME", str(tmp_path / "home"))
    assert main(["packs", "get", "sd1-memorized", "--accept-unpinned", "--offline", "--registry", DEFAULT_REGISTRY,
                 "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert "recipe sd1-memorized: its images are downloaded; network access is off (--offline)" in err, err
    assert "--accept-unpinned" not in err
