"""Text from outside made safe to show: on a terminal, in JSON, in HTML.

Packs, registries, URLs and file names are written by strangers: a caption may hold terminal escape
sequences, bidirectional overrides, zero-width marks or megabytes of text. Every output goes through
here, with its own limits as parameters, so that the panel, the tab and the HTML report show one
caption the same way:
- `clean_text`: one printable line for a terminal or a log (unprintable characters shown as \\xNN);
- `one_line`: one line for a page (control characters become spaces, format characters are dropped,
  whitespace runs collapsed), cut to a length;
- `escape`: `one_line`, then escaped for HTML text and attribute values; escaping comes after the
  cut, so a cut never falls inside an entity;
- `safe_url` and `link`: only plain http(s) URLs become links.
"""

from __future__ import annotations

import html
import unicodedata
from urllib.parse import urlsplit

#: Characters `one_line` turns into a space: controls, line and paragraph separators.
_SPACE_CATEGORIES = ("Cc", "Zl", "Zp")
#: Characters `one_line` drops: format characters (bidi overrides, zero-width marks), which could make a
#: caption read differently from what it is, and would split a word if they became spaces.
_DROP_CATEGORIES = ("Cf",)


def name_text(s: str) -> str:
    """A file name as text that can be written anywhere: the bytes of a name that is not UTF-8
    (which Python keeps as lone surrogates, U+DC80 to U+DCFF) shown as \\xNN, any other lone
    surrogate as U+FFFD. Text without surrogates comes back as it is."""
    if not any("\ud800" <= ch <= "\udfff" for ch in s):
        return s
    return "".join(f"\\x{ord(ch) - 0xDC00:02x}" if "\udc80" <= ch <= "\udcff" else
                   "\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in s)


def clean_text(value: object, limit: int | None = None) -> str:
    """Text that came from outside (a pack, a registry, a URL, a file name) made safe to print on one
    line: line breaks and tabs become spaces; other characters that are not printable (terminal
    escape sequences, C1 controls, bidirectional overrides, zero-width marks) are shown as \\xNN or
    \\uNNNN instead of being sent to the terminal, and a file name's bytes that are not UTF-8 as
    \\xNN (name_text); past `limit` characters it is cut and ends in '…'."""
    s = name_text(str(value))
    cut = limit is not None and len(s) > limit
    if cut:
        s = s[:limit]
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\t\n\r\x0b\x0c":
            out.append(" ")
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    s = "".join(out)
    if limit is not None and (cut or len(s) > limit):
        s = s[: max(0, limit - 1)] + "…"
    return s


def json_text(obj: object) -> str:
    """One JSON line with non-ASCII text kept readable, but every character that is not printable
    (DEL, C1 controls, bidirectional overrides...) written as a \\u escape: the same JSON value,
    safe on a terminal. json.dumps already escapes the C0 controls."""
    import json

    s = json.dumps(obj, ensure_ascii=False)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        else:
            o = ord(ch)
            if o < 0x10000:
                out.append(f"\\u{o:04x}")
            else:
                o -= 0x10000
                out.append(f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}")
    return "".join(out)


def one_line(text: object, limit: int | None = None) -> str:
    """One line of at most `limit` characters (None: any length) for a page: control characters and
    line separators become spaces, format characters are dropped, whitespace runs are collapsed, a
    file name's bytes that are not UTF-8 show as \\xNN; a longer text is cut and ends in '…'. Only
    the first 4 x `limit` characters are looked at (a pack field may be megabytes long)."""
    if text is None:
        return ""
    s = str(text) if limit is None else str(text)[: limit * 4]
    s = name_text(s)
    s = "".join(" " if unicodedata.category(ch) in _SPACE_CATEGORIES else ch for ch in s
                if unicodedata.category(ch) not in _DROP_CATEGORIES)
    s = " ".join(s.split())
    return s if limit is None or len(s) <= limit else s[: max(0, limit - 1)] + "…"


def escape(text: object, limit: int | None = None) -> str:
    """`one_line(text, limit)` escaped for HTML text and attribute values (quotes included). The cut
    comes first: `limit` counts the characters a reader sees, and no entity is ever cut in two."""
    return html.escape(one_line(text, limit), quote=True)


def safe_url(url: object, limit: int) -> str | None:
    """The URL if it is a plain http(s) URL with a host, at most `limit` characters, with nothing
    that could end an attribute; else None."""
    if not isinstance(url, str) or not url or len(url) > limit:
        return None
    url = url.strip()
    if any(ord(c) < 33 or c in "\"'<>`\\" for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def link(url: object, text: object, *, url_limit: int, text_limit: int | None = None) -> str:
    """An <a> that opens a safe http(s) URL in a new tab without a referrer, its text escaped
    (`escape(text, text_limit)`); the escaped text alone when the URL is not safe."""
    u = safe_url(url, url_limit)
    if u is None:
        return escape(text, text_limit)
    return (f'<a href="{html.escape(u, quote=True)}" target="_blank" rel="noopener noreferrer nofollow" '
            f'referrerpolicy="no-referrer">{escape(text, text_limit)}</a>')
