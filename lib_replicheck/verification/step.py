"""The verification step, after the search: the top CLIP candidates of each report above the CLIP
cut are fetched and compared (online.py, compare.py), and their verdicts become SSCD's on the pair.

Without verification (not asked, offline), or when a fetch fails, a candidate above the cut reads
'possible copy (unverified: CLIP 0.93; ...)', saying why, and is never 'likely'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from lib_replicheck.report import Match, Report
from lib_replicheck.thresholds import CANDIDATE_FAMILIES, Tiers, Verdict
from lib_replicheck.verification_status import OFF, VERIFIED, Verification

#: The CLIP similarity from which a match is a candidate worth verifying: the cut `bench/clip_cut.py`
#: prints, which keeps at least 99% of edited copies of real photos as candidates (186 copies of 31
#: photos: 0.92 kept 99.5%). Measured with RANDOM ViT-B-32 weights (no CLIP weights could be had
#: where it ran), so a demonstration of the method, not a figure for real weights, where 78.3% of
#: novel photos also passed it: re-measure with the pack's real weights (`--clip-cut` sets it).
CLIP_CUT = 0.92
#: Candidates verified per image at most (the highest CLIP similarities first).
MAX_CANDIDATES = 3


@dataclass
class Verifier:
    """How candidates are verified. `online`: the user asked for it (check --verify online, or the
    web UI's setting); `offline`: the network is off, so nothing is fetched whatever `online` says.
    `sscd` loads the SSCD embedder on first use; `cache` keeps fetched images (online.ImageCache)."""

    online: bool = False
    offline: bool = False
    sscd: Callable[[], object] | None = None
    cache: object | None = None
    clip_cut: float = CLIP_CUT
    max_candidates: int = MAX_CANDIDATES
    timeout: float | None = None  # online.TIMEOUT when None
    tiers: dict[str, Tiers] | None = None
    regions: str = "fast"
    how_to_ask: str = "check --verify online"  # what the user does to turn it on, for the 'off' note
    _embedder: object | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.online and not self.offline

    def off_reason(self) -> str:
        return "offline" if self.online else f"not asked: {self.how_to_ask}"

    def embedder(self):
        if self._embedder is None:
            if self.sscd is None:
                from lib_replicheck.errors import EmbedderError

                raise EmbedderError("no SSCD embedder to compare with")
            self._embedder = self.sscd()
        return self._embedder


def candidates(report: Report, verifier: Verifier) -> list[Match]:
    """The report's CLIP matches of the whole image at or above the cut, highest first, at most
    `max_candidates`."""
    found = [m for m in report.matches if m.region is None and m.similarity >= verifier.clip_cut
             and m.embedder.split(":", 1)[0] in CANDIDATE_FAMILIES]
    return sorted(found, key=lambda m: -m.similarity)[:max(0, int(verifier.max_candidates))]


def verify_report(report: Report, verifier: Verifier, image=None) -> Report:
    """Verify `report`'s candidates against `image` (the checked PIL image; decoded from the report's
    file when None), in place; the report's verdict and best match follow."""
    if not report.checked:
        return report
    todo = candidates(report, verifier)
    if not todo:
        return report
    if not verifier.active:
        for m in todo:
            m.verification = Verification(OFF, verifier.off_reason())
    else:
        verify_online(report, todo, verifier, image)
    for m in todo:
        if not m.verified and not m.verdict.is_copy:
            m.verdict = Verdict.POSSIBLE  # a candidate above the cut: possible, unverified, never more
    report.matches.sort(key=lambda m: -m.verdict.rank)  # stable: pack and score order kept within a verdict
    report.best = report.matches[0]
    report.verdict = report.best.verdict
    report.notes.append(note(todo, verifier))
    return report


def verify_online(report: Report, todo: list[Match], verifier: Verifier, image) -> None:
    from lib_replicheck.errors import ReplicheckError
    from lib_replicheck.verification.compare import CheckedImage, compare
    from lib_replicheck.verification.geometry import judged
    from lib_replicheck.verification.online import TIMEOUT, fetch_image

    try:
        if image is None:
            from lib_replicheck.images import decode

            image = decode(report.image)
        sscd = verifier.embedder()
        checked = CheckedImage(image, sscd, verifier.regions)
    except ReplicheckError as e:
        for m in todo:
            m.verification = Verification(OFF, f"could not compare: {e}")
        return
    for m in todo:
        fetched = fetch_image(m.url, verifier.cache, timeout=verifier.timeout or TIMEOUT)
        if fetched.image is None:
            m.verification = Verification(fetched.status, fetched.detail, cached=fetched.cached)
            continue
        pair = compare(checked, fetched.image, sscd, verifier.tiers)
        m.verification = Verification(VERIFIED, sscd=pair.sscd, region=pair.region, pdq=pair.pdq,
                                      cached=fetched.cached)
        m.verdict = pair.verdict
        if pair.verdict is Verdict.POSSIBLE or (pair.region is not None and pair.verdict is Verdict.LIKELY):
            # between possible and likely, as the checker does: the features of the pair decide
            m.geometry = judged(image, fetched.image, pair.region, source="fetched image")
            m.verdict = Verdict.LIKELY if m.geometry.verified else Verdict.POSSIBLE


def note(todo: list[Match], verifier: Verifier) -> str:
    """One line for the report's notes: what verification did with the candidates."""
    if not verifier.active:
        return (f"verification off ({verifier.off_reason()}): {len(todo)} CLIP candidate(s) at or above "
                f"{verifier.clip_cut:g} are unverified; CLIP similarity is semantic, a candidate is not evidence")
    done = sum(m.verified for m in todo)
    others = "; ".join(f"#{m.id} in {m.pack}: {m.verification.text()}" for m in todo if not m.verified)
    return (f"verification: {done} of {len(todo)} CLIP candidate(s) fetched and compared with SSCD"
            + (f"; not verified: {others}" if others else ""))


def verify_reports(reports: Sequence[Report], verifier: Verifier | None, images: Sequence | None = None
                   ) -> list[Report]:
    """The verification step for reports the checker made; `images` are the checked images in the
    same order (None: each report's file is decoded again)."""
    if verifier is None:
        return list(reports)
    for i, report in enumerate(reports):
        verify_report(report, verifier, images[i] if images is not None else None)
    return list(reports)


def sscd_from(checker, options=None) -> Callable[[], object]:
    """A loader of the SSCD embedder: the checker's own when its packs already loaded one, else
    embedders.load('sscd', options), the checker's embedder options unless others are given; a
    `--weights` file named for the pack's own embedder (CLIP) is not SSCD's, so it is left out."""

    def load():
        for e in checker.loaded_embedder_objects() if checker is not None else ():
            if e.spec.kind == "sscd":
                return e
        from lib_replicheck import embedders

        return embedders.load("sscd", (options if options is not None else checker.embedder_options).but(weights=None))

    return load


#: Seconds without a byte before a fetch in the web UI counts as stalled (3 times this in all): the
#: check runs after each image, and its caller waits for it (webui/service.py CHECK_SECONDS).
WEBUI_TIMEOUT = 3.0
WEBUI_HOW_TO_ASK = "Settings > Replicheck > Verify CLIP candidates online"


def webui_verifier(previous: Verifier | None, *, online: bool, checker, models_dir, device: str,
                   tiers: dict[str, Tiers] | None) -> Verifier:
    """The web UI's verifier for one check, as its settings say now; the SSCD embedder the previous
    one loaded is kept. Weights are never downloaded here (the check runs beside a generation)."""
    from pathlib import Path

    from lib_replicheck.embedders.options import EmbedderOptions
    from lib_replicheck.verification.online import CACHE_FOLDER, ImageCache

    options = EmbedderOptions(device=device, models_dir=models_dir, offline=True, progress=False)
    v = Verifier(online=online, sscd=sscd_from(checker, options),
                 cache=ImageCache(Path(models_dir) / CACHE_FOLDER), timeout=WEBUI_TIMEOUT, tiers=tiers,
                 how_to_ask=WEBUI_HOW_TO_ASK)
    if previous is not None:
        v._embedder = previous._embedder
    return v
