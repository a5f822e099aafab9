"""Pack text shown on a page: the panel, the tab and the folder report show one hostile caption the
same way (lib_replicheck/safe_text.py): format characters dropped, not turned into spaces; controls
turned into spaces; cut to its limit before it is escaped, so no entity is ever cut in two."""

from __future__ import annotations

import html
import re

from lib_replicheck.audit import Audit
from lib_replicheck.html_report import render as page
from lib_replicheck.item import Item
from lib_replicheck.report import Match, Report
from lib_replicheck.thresholds import Verdict
from lib_replicheck.webui.panel import MAX_CAPTION, render as panel


def _reports(caption: str, url: str = "https://example.com/a") -> list[Report]:
    m = Match(pack="demo", item=Item(id=7, caption=caption, url=url, license="cc\u202eby"), similarity=0.9,
              distance=None, verdict=Verdict.LIKELY, embedder="sscd_disc_mixup")
    return [Report(image="gen.png", verdict=Verdict.LIKELY, best=m, matches=[m])]


def _captions(text: str, css: str) -> list[str]:
    return re.findall(rf'<div class="{css}">“?(.*?)”?</div>', text)


def test_format_characters_are_dropped_the_same_on_the_panel_and_the_report():
    caption = "zero\u200bwidth join\u200der \u202eevil\u202c bell\x07 tab\tline\nend\u2028sep"
    reports = _reports(caption)
    shown = {"panel": _captions(panel(reports), "rc-caption"), "report": _captions(page(Audit([], reports)), "caption")}
    want = "zerowidth joiner evil bell tab line end sep"
    assert shown == {"panel": [want], "report": [want]}, shown


def test_a_cut_never_falls_inside_an_entity():
    for caption in ("&" * 1000, "a<" * 600, '"' * 5000):
        reports = _reports(caption)
        for where, text, css, limit in (("panel", panel(reports), "rc-caption", MAX_CAPTION),
                                        ("report", page(Audit([], reports)), "caption", 300)):
            (shown,) = _captions(text, css)
            assert re.fullmatch(r"(?:[^&<>\"]|&amp;|&lt;|&gt;|&quot;)*…", shown), (where, shown[-40:])
            read = html.unescape(shown)
            assert len(read) == limit and read[:-1] == caption[: limit - 1], where


def test_only_plain_http_urls_become_links_on_both():
    for url, linked in (("https://example.com/a?x=1&y=2", True), ("javascript:alert(1)", False),
                        ('https://example.com/"onmouseover=alert(1)', False), ("data:text/html,x", False)):
        for text in (panel(_reports("c", url)), page(Audit([], _reports("c", url)))):
            assert re.findall(r'<a [^>]*href="([^"]*)"', text) == ([html.escape(url)] if linked else []), url
            assert "\u202e" not in text
