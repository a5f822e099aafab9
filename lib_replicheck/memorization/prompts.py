"""Known memorized prompts: is the prompt about to be sampled one that a model is known to copy a
training image for?

Some prompts make Stable Diffusion reproduce a training image almost every time (Webster 2023 lists
500 for SD 1.x; Wen et al. 2024 and Hintersdorf et al. 2024 use them as ground truth). Comparing the
prompt with such lists costs microseconds, needs no pack and no model, and answers before any image
exists. A prompt matches a listed one when they are equal once normalised (case, HTML markup and
entities, punctuation, whitespace, accents and other unicode variants, the web UI's attention
weights), or when they share nearly all their words, weighted by how rare each word is among the
listed prompts, so that a word dropped or added still matches while ordinary prompts do not, or
when the prompt contains nearly all of a listed prompt's rarity-weighted words, so that a listed
prompt with tags added ("best quality, highly detailed", "(masterpiece:1.2)") still matches.

A list is a CSV file with a caption column and, optionally, a memorization-type column
(`PromptList`); more lists can be added beside the shipped one. Lists are read as data, with their
size, row count and field lengths bounded before anything is kept.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from lib_replicheck.errors import ReplicheckError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

#: the most bytes of a list file that are read; longer files are refused
MAX_LIST_BYTES = 16 * 1024 * 1024
#: the most prompts one list may hold
MAX_LIST_ROWS = 100_000
#: a listed prompt longer than this is refused (a caption, not a document)
MAX_LISTED_CHARS = 4_000
#: only this many characters of a prompt are compared; no listed prompt comes near it
MAX_PROMPT_CHARS = 8_000
#: at most this many distinct prompts of one generation are checked
MAX_PROMPTS_PER_JOB = 64

#: the matching rule (tuned on half of the listed prompts and on ordinary LAION captions,
#: bench/prompt_check.py): the rarity-weighted share of the words of both prompts that they have in
#: common, and how many words they must share at the least
MIN_OVERLAP = 0.6
MIN_SHARED_WORDS = 2
#: the containment rule, for prompts with tags added (bench/prompt_check.py --tune): the
#: rarity-weighted share of the listed prompt's words that the prompt contains, however many words
#: it adds (at least MIN_SHARED_WORDS of them); the loosest cut that no ordinary prompt of the tuning
#: reaches (LAION captions, with tags, and long prompts of five captions with tags; the closest: 0.754)
MIN_CONTAINED = 0.8

TYPE_LABELS = {"VM": "verbatim", "TM": "template", "MV": "verbatim", "TV": "template", "RV": "retrieval verbatim"}


class PromptListError(ReplicheckError):
    """A list of prompts that cannot be read; the message names the file and the row or field."""


@dataclass(frozen=True)
class PromptList:
    """Where a list of known memorized prompts is, and what to say about its hits."""

    path: Path
    name: str  # short id, e.g. "sd1-webster"
    model: str  # the model family the prompts are memorized by, e.g. "SD 1.x"
    source: str  # who found them, e.g. "Webster 2023"
    caption_column: str = "Caption"
    type_column: str | None = "type"  # None: the list has no types
    delimiter: str = ";"


#: the shipped list: Webster 2023's 500 SD 1.x prompts, as published by Hintersdorf et al. 2024
SD1_WEBSTER = PromptList(DATA_DIR / "sd1_memorized_laion_prompts.csv", "sd1-webster", "SD 1.x", "Webster 2023")
DEFAULT_LISTS: tuple[PromptList, ...] = (SD1_WEBSTER,)


@dataclass(frozen=True)
class ListedPrompt:
    text: str
    type: str  # as the list writes it (VM, TM), or "" when it has none
    row: int  # 1-based data row in the file
    list: PromptList

    @property
    def type_label(self) -> str:
        return TYPE_LABELS.get(self.type.upper(), self.type.lower() or "memorized")


@dataclass(frozen=True)
class PromptMatch:
    """A prompt found in a list of known memorized prompts."""

    prompt: str  # the listed prompt
    type: str  # VM, TM, ... as listed ("" when the list has none)
    type_label: str  # verbatim, template, ...
    model: str  # SD 1.x
    source: str  # Webster 2023
    list_name: str
    row: int
    how: str  # "exact", "normalised" (case, punctuation, markup...), "overlap" (a word added or dropped)
    #           or "contained" (the listed prompt's words within a longer prompt: tags added)
    score: float  # 1.0 for exact and normalised; the weighted word overlap, or the share contained

    def how_text(self) -> str:
        """How the prompt matches, in words: 'exactly', 'after light edits (word overlap 0.83)'..."""
        return {"exact": "exactly", "normalised": "up to case, punctuation and markup",
                "contained": f"with words added ({self.score:.2f} of its weighted words in the prompt)"}.get(
            self.how, f"after light edits (word overlap {self.score:.2f})")

    def summary(self) -> str:
        """The infotext / panel wording, e.g. 'known memorized prompt (SD 1.x, verbatim): Webster 2023'."""
        return f"known memorized prompt ({self.model}, {self.type_label}): {self.source}"

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}


# ---------------------------------------------------------------------------------------------
# normalisation

_TAG = re.compile(r"<[^<>]{0,300}>")  # HTML tags, and the web UI's <lora:name:1.0> extra networks
_WEIGHT = re.compile(r":\s{0,3}[-+]?(?:\d{1,6}(?:\.\d{0,6})?|\.\d{1,6})\s{0,3}(?=[)\]])")  # (word:1.2) weights
_MARKS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"  # combining marks
                    r"\u00ad\u200b-\u200d\u2060\ufeff"  # soft hyphen, zero-width characters
                    r"'\u2018\u2019\u02bc`\u00b4]")  # apostrophes: don't = dont
_SYMBOLS = re.compile(r"[\u2122\u00ae\u00a9\u2120]")  # ™ ® © ℠, which NFKD would spell out as letters
#: a hyphen, slash, dot or underscore inside a word joins its parts (T-Shirt = TShirt, 4-1/2 = 412)
_JOINER = re.compile(r"(?<=[^\W_])[-\u2010\u2011/._](?=[^\W_])")
_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """The prompt as compared: lower case, no markup, accents, punctuation or repeated spaces."""
    s = str(text)[:MAX_PROMPT_CHARS]
    s = html.unescape(s)
    s = _TAG.sub(" ", s)
    s = _WEIGHT.sub("", s)
    s = _SYMBOLS.sub(" ", s)
    s = unicodedata.normalize("NFKD", s)
    s = _MARKS.sub("", s).casefold()
    s = _JOINER.sub("", s)
    return " ".join(_NON_WORD.sub(" ", s).split())


def tokens(text: str) -> list[str]:
    """The words of a normalised prompt."""
    return text.split()


# ---------------------------------------------------------------------------------------------
# lists


def read_list(spec: PromptList) -> list[ListedPrompt]:
    """The prompts of one list file, with its size and fields checked before they are kept."""
    path = Path(spec.path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_LIST_BYTES + 1)
    except OSError as e:
        raise PromptListError(f"prompt list {path}: {e.strerror or e}") from None
    if len(raw) > MAX_LIST_BYTES:
        raise PromptListError(f"prompt list {path}: larger than {MAX_LIST_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptListError(f"prompt list {path}: not UTF-8 text (byte {e.start})") from None
    if "\x00" in text:
        raise PromptListError(f"prompt list {path}: not a text file (NUL byte)")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=spec.delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise PromptListError(f"prompt list {path}: empty") from None
    except csv.Error as e:
        raise PromptListError(f"prompt list {path}: header: {e}") from None
    header = [h.strip() for h in header]
    if spec.caption_column not in header:
        raise PromptListError(f"prompt list {path}: no column {spec.caption_column!r} (columns: "
                              f"{', '.join(repr(h[:40]) for h in header[:20])})")
    if spec.type_column is not None and spec.type_column not in header:
        raise PromptListError(f"prompt list {path}: no column {spec.type_column!r}")
    ci = header.index(spec.caption_column)
    ti = header.index(spec.type_column) if spec.type_column is not None else None
    out: list[ListedPrompt] = []
    row = 0
    try:
        for row, fields in enumerate(reader, 1):
            if row > MAX_LIST_ROWS:
                raise PromptListError(f"prompt list {path}: more than {MAX_LIST_ROWS} rows")
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) <= max(ci, ti or 0):
                raise PromptListError(f"prompt list {path}: row {row}: {len(fields)} fields, the header has {len(header)}")
            caption = fields[ci].strip()
            if len(caption) > MAX_LISTED_CHARS:
                raise PromptListError(f"prompt list {path}: row {row}: field {spec.caption_column!r} is longer than "
                                      f"{MAX_LISTED_CHARS} characters")
            kind = fields[ti].strip()[:16] if ti is not None else ""
            if caption:
                out.append(ListedPrompt(caption, kind, row, spec))
    except csv.Error as e:
        raise PromptListError(f"prompt list {path}: row {row + 1}: {e}") from None
    return out


@dataclass(frozen=True)
class _Entry:
    listed: ListedPrompt
    words: frozenset[str]
    weight: float  # sum of the weights of `words`


class PromptIndex:
    """Listed prompts, precomputed for matching: normalised texts in a dict, words in an inverted
    index with their rarity weights."""

    def __init__(self, listed: Iterable[ListedPrompt], min_overlap: float = MIN_OVERLAP,
                 min_shared: int = MIN_SHARED_WORDS, min_contained: float = MIN_CONTAINED):
        self.min_overlap = min_overlap
        self.min_shared = min_shared
        self.min_contained = min_contained
        self.listed: list[ListedPrompt] = list(listed)
        self._by_raw: dict[str, int] = {}
        self._by_text: dict[str, int] = {}
        self._by_compact: dict[str, int] = {}
        words_of: list[frozenset[str]] = []
        df: dict[str, int] = {}
        for i, lp in enumerate(self.listed):
            self._by_raw.setdefault(lp.text, i)
            norm = normalise(lp.text)
            self._by_text.setdefault(norm, i)
            self._by_compact.setdefault(norm.replace(" ", ""), i)
            ws = frozenset(tokens(norm))
            words_of.append(ws)
            for w in ws:
                df[w] = df.get(w, 0) + 1
        n = max(1, len(self.listed))
        # Smoothed inverse document frequency: a word in few listed prompts says more than one in
        # many; a word in none (only in the prompt checked) weighs like the rarest.
        self._weights = {w: math.log(1.0 + n / (1.0 + c)) for w, c in df.items()}
        self._unknown = math.log(1.0 + n)
        self._postings: dict[str, list[int]] = {}
        self._entries: list[_Entry] = []
        for i, ws in enumerate(words_of):
            self._entries.append(_Entry(self.listed[i], ws, sum(self._weights[w] for w in ws)))
            for w in ws:
                self._postings.setdefault(w, []).append(i)

    def __len__(self) -> int:
        return len(self.listed)

    def _match(self, i: int, how: str, score: float) -> PromptMatch:
        lp = self.listed[i]
        return PromptMatch(lp.text, lp.type, lp.type_label, lp.list.model, lp.list.source, lp.list.name, lp.row,
                           how, round(score, 4))

    def match(self, prompt: str) -> PromptMatch | None:
        """The listed prompt this one is, or is a light edit of; None when there is none."""
        if not isinstance(prompt, str) or not self.listed:
            return None
        i = self._by_raw.get(prompt[:MAX_PROMPT_CHARS].strip())
        if i is not None:
            return self._match(i, "exact", 1.0)
        norm = normalise(prompt)
        if not norm:
            return None
        i = self._by_text.get(norm)
        if i is not None:
            return self._match(i, "normalised", 1.0)
        i = self._by_compact.get(norm.replace(" ", ""))
        if i is not None:
            return self._match(i, "normalised", 1.0)
        return self._overlap(frozenset(tokens(norm)))

    def _overlap(self, words: frozenset[str]) -> PromptMatch | None:
        weights, unknown = self._weights, self._unknown
        query_weight = 0.0
        shared_weight: dict[int, float] = {}
        shared_count: dict[int, int] = {}
        for w in words:
            wt = weights.get(w)
            if wt is None:
                query_weight += unknown
                continue
            query_weight += wt
            for i in self._postings[w]:
                shared_weight[i] = shared_weight.get(i, 0.0) + wt
                shared_count[i] = shared_count.get(i, 0) + 1
        best, best_score = -1, 0.0
        held, held_score = -1, 0.0  # the listed prompt most contained in this one
        for i, common in shared_weight.items():
            if shared_count[i] < self.min_shared:
                continue
            entry = self._entries[i]
            union = query_weight + entry.weight - common
            score = common / union if union > 0 else 0.0
            if score > best_score or (score == best_score and i < best):
                best, best_score = i, score
            if entry.weight > 0:
                share = common / entry.weight
                if share > held_score or (held >= 0 and share == held_score
                                          and entry.weight > self._entries[held].weight):
                    held, held_score = i, share
        if best >= 0 and best_score >= self.min_overlap:
            return self._match(best, "overlap", best_score)
        if held >= 0 and held_score >= self.min_contained - 1e-9:  # a sum in another order: 1.0 may be 0.99...
            return self._match(held, "contained", held_score)
        return None

    def match_job(self, prompts: Sequence[str]) -> dict[int, PromptMatch]:
        """A generation's hits: position of the prompt in the job -> its match. Each distinct prompt is
        compared once, and at most MAX_PROMPTS_PER_JOB distinct ones (a job of thousands of wildcard
        prompts costs no more than 64 prompts)."""
        cache: dict[str, PromptMatch | None] = {}
        hits: dict[int, PromptMatch] = {}
        for pos, p in enumerate(prompts):
            if not isinstance(p, str):
                continue
            if p not in cache:
                if len(cache) >= MAX_PROMPTS_PER_JOB:
                    continue
                cache[p] = self.match(p)
            m = cache[p]
            if m is not None:
                hits[pos] = m
        return hits

    def match_all(self, prompts: Sequence[str]) -> list[PromptMatch]:
        """The distinct listed prompts a generation's prompts match, in the order first found."""
        seen: dict[tuple[str, int], PromptMatch] = {}
        for m in self.match_job(prompts).values():
            seen.setdefault((m.list_name, m.row), m)
        return list(seen.values())


def load(lists: Sequence[PromptList] = DEFAULT_LISTS, **rule) -> PromptIndex:
    """An index of the prompts of `lists` (read now; the shipped one takes a few milliseconds)."""
    listed: list[ListedPrompt] = []
    for spec in lists:
        listed.extend(read_list(spec))
    return PromptIndex(listed, **rule)


@lru_cache(maxsize=1)
def default_index() -> PromptIndex:
    """The shipped lists, read once per process."""
    return load(DEFAULT_LISTS)


def check(prompt: str) -> PromptMatch | None:
    """Match one prompt against the shipped lists."""
    return default_index().match(prompt)
