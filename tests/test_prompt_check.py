"""The known-memorized-prompt check: the shipped list, matching (exact, normalised, lightly edited,
ordinary prompts left alone), hostile prompts and lists, the command line, and the web UI's hit."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib_replicheck.memorization import prompts as P

REPO = Path(__file__).resolve().parent.parent
SONY = "Sony Won't Release <i>The Interview</i> on VOD"  # VM, data row 6 of the shipped list


@pytest.fixture(scope="module")
def index():
    return P.load()


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "lib_replicheck", "prompt", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


# --- the shipped list --------------------------------------------------------------------------------


def test_the_shipped_list_is_the_published_file_with_its_attribution():
    data = P.SD1_WEBSTER.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == "0b527a5965dc463e7a3e0d234ff7fd5489b1a76869c456dbb209dc753cb4af25"
    readme = (P.DATA_DIR / "README.md").read_text(encoding="utf-8")
    for needed in ("ml-research/localizing_memorization_in_diffusion_models",
                   "f952eded64fca0bcf42e0bb3be9a01d64653cfdb", "Copyright (c) 2024 ml-research@TUDarmstadt",
                   "MIT License", "Webster 2023", "`VM`", "`TM`", "`Index`"):
        assert needed in readme, needed
    listed = P.read_list(P.SD1_WEBSTER)
    assert len(listed) == 500
    assert sum(lp.type == "VM" for lp in listed) == 112 and sum(lp.type == "TM" for lp in listed) == 388
    assert listed[5].text == SONY and listed[5].row == 6


def test_every_listed_prompt_is_found_exactly_with_its_type(index):
    for lp in index.listed:
        m = index.match(lp.text)
        assert m is not None and m.how == "exact" and m.score == 1.0, lp.text
        assert (m.prompt, m.type, m.row) == (lp.text, lp.type, lp.row)
    m = index.match(SONY)
    assert m.type == "VM" and m.type_label == "verbatim" and m.source == "Webster 2023" and m.model == "SD 1.x"
    assert m.summary() == "known memorized prompt (SD 1.x, verbatim): Webster 2023"
    tm = index.match("Foyer painted in HABANERO")
    assert tm.type == "TM" and tm.summary() == "known memorized prompt (SD 1.x, template): Webster 2023"


# --- normalisation and light edits -------------------------------------------------------------------


@pytest.mark.parametrize("variant", [
    "sony won't release the interview on vod",  # case, markup dropped
    "SONY WON’T RELEASE “THE INTERVIEW” ON VOD!!!",  # typographic apostrophe and quotes, punctuation
    "  Sony   Won't\tRelease\n<b>The Interview</b> on VOD. ",  # whitespace, another tag
    "Sony Won&#39;t Release &lt;i&gt;The Interview&lt;/i&gt; on VOD",  # HTML entities
    "Ｓｏｎｙ Won't Release The Intervie\u0301w on V\u200bOD",  # full-width letters, combining accent, zero-width space
    "(Sony Won't Release:1.2) The Interview on VOD <lora:style:0.8>",  # web UI attention weight, extra network
])
def test_normalised_variants_match(index, variant):
    m = index.match(variant)
    assert m is not None and m.prompt == SONY and m.how in ("normalised", "overlap") and m.score >= 0.99


def test_normalise_joins_word_parts_and_drops_markup():
    assert P.normalise("EMPOWERED Unisex T-Shirt™") == P.normalise("empowered unisex tshirt")
    assert P.normalise("<em>South Park: The Stick of Truth</em>") == "south park the stick of truth"
    assert P.normalise("Café\x00crème\x1b[31m") == "cafe creme 31m"
    assert P.normalise("") == "" and P.normalise("<<<>>>") == ""


@pytest.mark.parametrize("edited, listed", [
    ("Sony Won't Release The Interview on Netflix VOD", SONY),  # a word added
    ("SONY WON'T RELEASE THE INTERVIEW, ON DEMAND", SONY),  # a word changed, case, punctuation
    ("sony release the interview on vod", SONY),  # a word dropped
    ("Mothers influence on her young hippo, oil painting", "Mothers influence on her young hippo"),
    ("full body u-zip main opening on front of bag for easy unloading when you get there",
     "Full body U-Zip main opening - Full body U-Zip main opening on front of bag for easy unloading when you get to camp"),
])
def test_light_edits_match(index, edited, listed):
    m = index.match(edited)
    assert m is not None and m.prompt == listed and m.how == "overlap" and P.MIN_OVERLAP <= m.score < 1.0


@pytest.mark.parametrize("prompt", [
    "a photo of an astronaut riding a horse on mars",
    "masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile",
    "Sony headquarters at night, cinematic lighting",  # shares a word with a listed prompt
    "iPhone",  # one word of many listed prompts
    "the interview",  # two words of a listed one: not enough of it
    "Shaw",
    "floor pillow",
    "",
    "   ",
])
def test_ordinary_prompts_do_not_match(index, prompt):
    assert index.match(prompt) is None


TAGS = ", best quality, highly detailed, sharp focus"


@pytest.mark.parametrize("prompt, listed", [
    (SONY + TAGS, SONY),  # the example: tags after the listed prompt
    ("(masterpiece:1.2), " + SONY + ", <lora:add_detail:0.8>, 8k, trending on artstation", SONY),
    ("masterpiece, best quality, Foyer painted in WHITE, cinematic lighting, by greg rutkowski",
     "Foyer painted in WHITE"),  # a template: the sibling with its own colour, not another
    ("Mothers influence on her young hippo, oil on canvas, (best quality:1.4), octane render, volumetric "
     "lighting, film grain, dslr, absurdres", "Mothers influence on her young hippo"),
])
def test_listed_prompts_with_tags_added_match(index, prompt, listed):
    assert P.PromptIndex(index.listed, min_contained=2.0).match(prompt) is None  # the overlap rule misses them
    m = index.match(prompt)
    assert m is not None and m.prompt == listed and m.how == "contained" and m.score >= P.MIN_CONTAINED
    assert m.how_text().startswith("with words added (")


@pytest.mark.parametrize("prompt", [
    "a photo of an astronaut riding a horse on mars" + TAGS + ", (masterpiece:1.2), <lora:add_detail:0.8>",
    "the interview, masterpiece, best quality, 8k",  # two words of a listed prompt, and tags
    "sony headquarters release party, night" + TAGS,
    "masterpiece, best quality, highly detailed, sharp focus, 8k, trending on artstation",  # tags alone
])
def test_ordinary_prompts_with_tags_do_not_match(index, prompt):
    assert index.match(prompt) is None


def test_no_coco_caption_matches_as_it_is_with_tags_or_in_long_prompts(index):
    import random

    coco = [lp.text for lp in P.read_list(P.PromptList(REPO / "bench" / "data" / "coco2014_val_10000.csv", "coco",
                                                       "-", "COCO", type_column=None))]
    assert len(coco) == 10_000
    rng = random.Random(0)
    tags = ["best quality", "(masterpiece:1.2)", "highly detailed", "sharp focus", "<lora:add_detail:0.8>", "8k"]
    tagged = [c + ", " + ", ".join(rng.sample(tags, 3)) for c in coco]
    long = [", ".join(rng.sample(coco, 5)) + TAGS for _ in range(1000)]  # about 60 words each
    hits = [(t, m.prompt) for t in coco + tagged + long if (m := index.match(t)) is not None]
    assert hits == []


def test_a_generation_reports_each_hit_once(index):
    hits = index.match_all([SONY, SONY.upper(), "a cat", "Foyer painted in WHITE", "a cat"])
    assert [(m.prompt, m.type) for m in hits] == [(SONY, "VM"), ("Foyer painted in WHITE", "TM")]
    many = [f"ordinary prompt number {i}" for i in range(P.MAX_PROMPTS_PER_JOB)] + [SONY]
    assert index.match_all(many) == []  # past the bound, no more prompts are compared


# --- hostile input -------------------------------------------------------------------------------------


def test_hostile_prompts_are_data(index):
    # huge: only its head is compared (the head here is the listed prompt and one long word)
    assert index.match(SONY + " " + "x" * 10_000_000).prompt == SONY
    assert index.match("x" * 10_000_000 + " " + SONY) is None
    assert index.match(" ".join(f"w{i}" for i in range(1_000_000)) + " " + SONY) is None
    assert index.match(":" + "1" * 100_000 + ")") is None
    assert index.match("<" * 100_000) is None and index.match("(a:1" * 50_000) is None
    assert index.match("\x00\x1b[2J\r\u202e" + SONY + "\x07").prompt == SONY
    assert index.match("<script>alert(1)</script>" + SONY).prompt == SONY  # markup is dropped, not run
    assert index.match(None) is None and index.match(b"bytes") is None and index.match(42) is None


def _write(tmp_path, name, text=None, raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(text, encoding="utf-8")
    return P.PromptList(path, "test", "SD test", "Test list")


@pytest.mark.parametrize("content, message", [
    (";Text;type\n0;a prompt;VM\n", "no column 'Caption'"),
    (";Caption\n0;a prompt\n", "no column 'type'"),
    ("", "empty"),
    (";Caption;type\n0;" + "a" * (P.MAX_LISTED_CHARS + 1) + ";VM\n", "row 1: field 'Caption' is longer"),
    (";Caption;type;x\n0;fine;VM;1\n1\n", "row 2: 1 fields"),
    ("Caption;type\nfine;VM\n\"unterminated;VM\n", "row 2"),
])
def test_bad_lists_are_refused_naming_the_file_and_row(tmp_path, content, message):
    spec = _write(tmp_path, "bad.csv", content)
    with pytest.raises(P.PromptListError) as e:
        P.read_list(spec)
    assert str(spec.path) in str(e.value) and message in str(e.value)


def test_binary_oversized_and_long_lists_are_refused(tmp_path, monkeypatch):
    for raw, message in ((b"Caption;type\n\xff\xfe;VM\n", "not UTF-8"), (b"Caption;type\nx\x00;VM\n", "NUL")):
        with pytest.raises(P.PromptListError, match=message):
            P.read_list(_write(tmp_path, "bin.csv", raw=raw))
    monkeypatch.setattr(P, "MAX_LIST_BYTES", 1000)
    with pytest.raises(P.PromptListError, match="larger than"):
        P.read_list(_write(tmp_path, "big.csv", "Caption;type\n" + "a;VM\n" * 300))
    monkeypatch.setattr(P, "MAX_LIST_BYTES", 16 * 1024 * 1024)
    monkeypatch.setattr(P, "MAX_LIST_ROWS", 10)
    with pytest.raises(P.PromptListError, match="more than 10 rows"):
        P.read_list(_write(tmp_path, "long.csv", "Caption;type\n" + "a;VM\n" * 11))
    with pytest.raises(P.PromptListError, match="missing.csv"):
        P.read_list(P.PromptList(tmp_path / "missing.csv", "m", "-", "-"))


def test_more_lists_plug_in(tmp_path):
    extra = _write(tmp_path, "membench.csv", "Caption;type\nA red fox in the snow, by Jane Example;\n")
    index = P.load([P.SD1_WEBSTER, extra])
    assert len(index) == 501
    m = index.match("a red fox in the snow by jane example")
    assert (m.list_name, m.source, m.model, m.type_label) == ("test", "Test list", "SD test", "memorized")
    assert index.match(SONY).source == "Webster 2023"


# --- the command line ----------------------------------------------------------------------------------


def test_cli_exit_codes_and_text():
    hit = cli(SONY)
    assert hit.returncode == 1, hit.stderr
    assert "known memorized prompt (SD 1.x, verbatim): Webster 2023" in hit.stdout
    assert SONY in hit.stdout and "VM" in hit.stdout
    miss = cli("a photo of an astronaut riding a horse")
    assert miss.returncode == 0 and "no match among 500" in miss.stdout and miss.stderr == ""
    bad = cli(SONY, "--list", "/nonexistent/list.csv")
    assert bad.returncode == 2 and "/nonexistent/list.csv" in bad.stderr and "Traceback" not in bad.stderr
    nul = cli("--unknown-option")
    assert nul.returncode == 2


def test_cli_json():
    r = cli("sony release the interview on vod", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["match"] is True and out["prompts_listed"] == 500
    found = out["found"]
    assert found["prompt"] == SONY and found["type"] == "VM" and found["how"] == "overlap"
    assert found["source"] == "Webster 2023" and found["summary"].startswith("known memorized prompt")
    r = cli("a bowl of fruit", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["match"] is False


def test_cli_escapes_listed_text_and_refuses_bad_lists(tmp_path):
    evil = tmp_path / "evil\x1b[2J.csv"  # the file name is shown too
    with open(evil, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Caption", "type"])
        w.writerow(["Evil \x1b[2J prompt \x07 with \u202e escapes", "VM"])
    r = cli("evil prompt with escapes", "--list", evil)
    assert r.returncode == 1 and "\x1b" not in r.stdout and "\x07" not in r.stdout and "\u202e" not in r.stdout
    assert "\\x1b" in r.stdout
    r = cli("evil prompt with escapes", "--list", evil, "--json")
    assert r.returncode == 1 and "\x1b" not in r.stdout and json.loads(r.stdout)["found"]["list_name"] == "evil\x1b[2J"
    bad = tmp_path / "bad.csv"
    bad.write_text("Text;type\nx;VM\n", encoding="utf-8")
    r = cli("x", "--list", bad)
    assert r.returncode == 2 and "no column 'Caption'" in r.stderr and str(bad) in r.stderr


def test_cli_huge_prompt_is_an_answer_not_a_crash():
    words = " ".join(f"w{i}" for i in range(20_000))  # about 130 kB on the command line
    r = cli(SONY + " " + words)  # the listed prompt, then many other words: it is contained in the head compared
    assert r.returncode == 1 and "matches with words added (1.00 of its weighted words" in r.stdout
    r = cli(words + " " + SONY)  # past the head that is compared
    assert r.returncode == 0 and r.stderr == ""
    r = cli(SONY + " " + "word " * 20_000)  # the listed prompt and one word, repeated
    assert r.returncode == 1 and SONY in r.stdout


@pytest.mark.parametrize("parameters, prompt", [
    (f"{SONY}, best quality\nNegative prompt: blurry, lowres\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1",
     f"{SONY}, best quality"),
    ("a lighthouse,\nat dawn\nSteps: 20, Sampler: Euler a, Seed: 1", "a lighthouse,\nat dawn"),  # no negative
    ("a lighthouse\nNegative prompt: " + SONY + "\nSteps: 20", "a lighthouse"),  # the negative is not the prompt
    ("\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a", ""),
    ("Steps: 20, Sampler: Euler a", ""),
    ("a prompt written by hand", "a prompt written by hand"),
])
def test_the_prompt_of_a_web_ui_infotext(parameters, prompt):
    from lib_replicheck.memorization.infotext import prompt_of

    assert prompt_of(parameters) == prompt


def _png(path, parameters=None, colour=(120, 90, 60)):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)  # as the web UI saves it
    Image.new("RGB", (96, 64), colour).save(path, pnginfo=info)
    return path


def test_check_reports_the_known_memorized_prompt_stored_in_a_png(tmp_path):
    folder = tmp_path / "outputs"
    folder.mkdir()
    _png(folder / "a-hit.png", f"(masterpiece:1.2), {SONY}, best quality, highly detailed, sharp focus, "
                               "<lora:add_detail:0.8>\nNegative prompt: lowres\nSteps: 20, Sampler: Euler a, Seed: 7")
    _png(folder / "b-ordinary.png", "a lighthouse at dawn\nNegative prompt: " + SONY + "\nSteps: 20, Seed: 7",
         (20, 60, 200))
    _png(folder / "c-no-parameters.png", None, (200, 30, 30))
    _png(folder / "d-hostile.png", "\x1b[2J" + SONY + "\x07" + " x" * 40_000 + "\nSteps: 20", (0, 200, 0))
    demo = REPO / "registry" / "demo"
    r = subprocess.run([sys.executable, "-m", "lib_replicheck", "check", folder, "--pack", demo, "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r.returncode == 0, r.stderr  # a memorized prompt is no copy: the exit status is the images'
    reports = {Path(x["image"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    hit = reports["a-hit.png"]["prompt_match"]
    assert hit["prompt"] == SONY and hit["type"] == "VM" and hit["how"] == "contained"
    assert hit["summary"] == "known memorized prompt (SD 1.x, verbatim): Webster 2023"
    assert reports["b-ordinary.png"]["prompt_match"] is None and reports["c-no-parameters.png"]["prompt_match"] is None
    assert reports["d-hostile.png"]["prompt_match"]["prompt"] == SONY  # the head of a huge text, as data
    r = subprocess.run([sys.executable, "-m", "lib_replicheck", "check", folder, "--pack", demo], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r.returncode == 0 and "\x1b" not in r.stdout and "\x07" not in r.stdout
    block = r.stdout.split("a-hit.png", 1)[1].split(".png", 1)[0]
    assert ('  prompt: known memorized prompt (SD 1.x, verbatim): Webster 2023, matching with words added '
            f'(1.00 of its weighted words in the prompt): "{SONY}"') in block
    assert r.stdout.count("known memorized prompt") == 2  # a-hit and d-hostile, not the others


# --- the web UI ------------------------------------------------------------------------------------------


@pytest.fixture
def ui(webui):
    """The fake web UI with no pack installed, its options at their defaults afterwards."""
    from PIL import Image

    from modules import errors

    errors.reported.clear()
    aside = webui.packs_dir.with_name(webui.packs_dir.name + "-aside")
    if webui.packs_dir.is_dir():  # packs other tests left: out of the way, back afterwards
        webui.module.service.unload()
        webui.packs_dir.rename(aside)
    seen = []

    def source(p, index, seed):
        job = webui.module.service.live.get("txt2img")
        seen.append(list(getattr(job, "prompt_hits", None) or []))  # what the panel had before this image
        return Image.new("RGB", (64, 48), (index * 40 % 256, 90, 140))

    webui.processing.image_source = source
    webui.seen = seen
    yield webui
    for key in ("replicheck_prompt_check", "replicheck_infotext"):
        webui.set_option(key, True)
    if aside.is_dir():
        shutil.rmtree(webui.packs_dir, ignore_errors=True)
        aside.rename(webui.packs_dir)
    assert errors.reported == [], "the web UI reported an exception from a hook"


def test_webui_shows_a_known_prompt_before_any_image_with_no_pack(ui):
    from fastapi.testclient import TestClient

    p, processed = ui.txt2img(prompt=SONY.upper(), batch_size=2)
    assert len(ui.seen) == 2 and all(len(s) == 1 and s[0].prompt == SONY for s in ui.seen)
    job = ui.module.service.live.get("txt2img")
    assert job.state == "no-pack"  # no pack: the images are not checked, the prompt is
    wording = 'Replicheck prompt: "known memorized prompt (SD 1.x, verbatim): Webster 2023"'
    assert [t.count(wording) for t in processed.infotexts] == [0, 1, 1]  # the grid has no per-image value
    assert "Replicheck: not checked (no pack installed)" in processed.infotexts[1]
    live = TestClient(ui.app).get("/replicheck/v1/live", params={"tab": "txt2img"}).json()
    assert [h["prompt"] for h in live["prompt_hits"]] == [SONY] and live["prompt_hits"][0]["type"] == "VM"
    html = live["html"]
    assert 'class="rc-message rc-prompt-hit" data-type="VM"' in html
    assert "known memorized prompt (SD 1.x, verbatim): Webster 2023" in html
    assert "<i>The Interview</i>" not in html and "&lt;i&gt;The Interview&lt;/i&gt;" in html  # listed text escaped


def test_webui_ordinary_prompts_mixed_prompts_and_the_settings(ui):
    _, processed = ui.txt2img(prompt="a watercolour of a lighthouse at dawn", batch_size=2)
    assert ui.seen == [[], []] and not any("Replicheck prompt" in t for t in processed.infotexts)
    assert "rc-prompt-hit" not in _panel(ui)

    # each image's infotext speaks of its own prompt (wildcards give each image another)
    ui.seen.clear()
    _, processed = ui.txt2img(prompt=["a lighthouse", "Foyer painted in WHITE", "a lighthouse"], batch_size=3)
    marks = ["known memorized prompt (SD 1.x, template)" in t for t in processed.infotexts[1:]]
    assert marks == [False, True, False]

    ui.set_option("replicheck_infotext", False)  # the panel still says it, the image does not
    _, processed = ui.txt2img(prompt=SONY)
    assert not any("Replicheck prompt" in t for t in processed.infotexts) and "rc-prompt-hit" in _panel(ui)

    ui.set_option("replicheck_infotext", True)
    ui.set_option("replicheck_prompt_check", False)  # off: not compared at all
    ui.seen.clear()
    _, processed = ui.txt2img(prompt=SONY)
    assert ui.seen == [[]] and not any("Replicheck prompt" in t for t in processed.infotexts)
    assert "rc-prompt-hit" not in _panel(ui)
    assert ui.shared.opts.data_labels["replicheck_prompt_check"].default is True


def test_webui_an_unreadable_list_leaves_the_generation_alone(ui, monkeypatch, tmp_path, caplog):
    import numpy as np

    _, before = ui.txt2img(prompt=SONY)
    bad = tmp_path / "broken.csv"
    bad.write_bytes(b"\xff\xfe not a list")
    monkeypatch.setattr(P, "DEFAULT_LISTS", (P.PromptList(bad, "broken", "SD 1.x", "nobody"),))
    P.default_index.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="replicheck"):
            _, after = ui.txt2img(prompt=SONY)
    finally:
        monkeypatch.undo()
        P.default_index.cache_clear()
    assert len(after.images) == len(before.images)
    for a, b in zip(before.images, after.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert [r.message for r in caplog.records if "known-prompt check failed" in r.message] != []
    html = _panel(ui)
    assert "rc-prompt-error" in html and "broken.csv" in html and "not UTF-8" in html


def _panel(ui) -> str:
    from lib_replicheck.webui.panel import render

    job = ui.module.service.live.get("txt2img")
    return render(job.reports, state=job.state, message=job.message, expected=job.expected,
                  prompt_hits=getattr(job, "prompt_hits", None) or [], prompt_error=getattr(job, "prompt_error", ""))
