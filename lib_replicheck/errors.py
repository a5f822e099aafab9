"""Errors a user can act on, and outside text made safe to show.

Every failure that reaches a person is a ReplicheckError whose message names the file or field
and what is wrong; tracebacks from faiss, torch or PIL stay inside the library. Messages and
listings quote packs, registries and URLs, which anyone can write: `clean_text` and `json_text`
keep their control characters from reaching a terminal.
"""

from __future__ import annotations

from pathlib import Path


class ReplicheckError(Exception):
    """Base class: the message is written for the user."""


class ImageError(ReplicheckError):
    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class PackError(ReplicheckError):
    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"pack {path}: {reason}")


class InstallError(ReplicheckError):
    """A pack that cannot be installed, downloaded or removed; the message says which and why."""


class EmbedderError(ReplicheckError):
    """The model could not be found, loaded, verified or run."""


class WeightsError(EmbedderError):
    """A weights file is missing, could not be downloaded, or failed its sha256 check."""


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
