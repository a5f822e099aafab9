"""The check: images in, one Report per image out (nearest training images, scores, verdict).

Data flows one way: image -> embedding (once per embedder the packs need) -> search in each pack
-> matches with verdicts -> report. The web UI, the HTTP API and the command line all call this.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from lib_replicheck.embedders import Embedder, kind_of
from lib_replicheck.embedders.options import EmbedderOptions
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.regions import check_mode
from lib_replicheck.report import Match, Report
from lib_replicheck.thresholds import (CANDIDATE_FAMILIES, DEFAULT_TIERS, GEOMETRY_CANDIDATES, GEOMETRY_SHORTLIST,
                                      GEOMETRY_SHORTLISTED, NORMALISED_REGION_TIERS, Tiers, Verdict, verdict_for)
from lib_replicheck.verification_status import Geometry

SEMANTIC_NOTE = "CLIP similarity is semantic (same subject or style), not evidence of a copy"
FLAT = "flat image"
GEOMETRY_OFF = "candidates between possible and likely stay possible"
FLAT_NOTE = ("flat image (a plain colour, a smooth gradient, or mostly transparent): learned descriptors (SSCD, "
             "CLIP) place all such images close together, so their matches are shown without a verdict")


class Checker:
    """Packs plus the embedders they need, loaded once and reused for every image.

    Embedders are loaded on first use, from each pack's own embedder spec, so a pack's weights
    sha256 is enforced, as `embedder` says (EmbedderOptions; `offline=True` never downloads: what
    the web UI uses during generation).
    """

    def __init__(self, packs: Sequence, *, top_k: int = 5, tiers: dict[str, Tiers] | None = None,
                 embedder: EmbedderOptions | None = None, regions: str | None = None, geometry: bool = True):
        if not packs:
            raise ReplicheckError("no pack to search: install one (python -m lib_replicheck packs), or build one "
                                  "from a folder of images (python -m lib_replicheck build)")
        self.packs = list(packs)
        self.top_k = max(1, int(top_k))
        self.tiers = dict(tiers or DEFAULT_TIERS)
        self.regions = check_mode(regions)
        self.embedder_options = (embedder or EmbedderOptions()).validated()
        #: verify candidates between "possible" and "likely" on their stored images (verify_geometry)
        self.geometry = bool(geometry)
        self._embedders: dict[str, object] = {}
        #: seconds spent loading models, kept out of the reports' per-image `seconds`
        self.load_seconds = 0.0

    def embedder(self, pack):
        """The embedder a pack needs (one instance per embedder id); the time loading took is added
        to `load_seconds`, never to a report's `seconds`."""
        from lib_replicheck import embedders

        spec = pack.embedder
        if spec.id not in self._embedders:
            start = time.perf_counter()
            self._embedders[spec.id] = embedders.load(spec, self.embedder_options)
            self.load_seconds += time.perf_counter() - start
        return self._embedders[spec.id]

    @property
    def loaded_embedders(self) -> list[str]:
        return sorted(self._embedders)

    def loaded_embedder_objects(self) -> list:
        """The embedders loaded so far, as objects (their specs name the weights' sha256), in the
        order of `loaded_embedders`, which gives their ids."""
        return [self._embedders[k] for k in sorted(self._embedders)]

    def unload(self, which: Callable[[Embedder], bool] | None = None) -> None:
        """Close the loaded embedders, or only those `which` picks (the others stay loaded); the
        next check loads what it needs again."""
        for key, e in list(self._embedders.items()):
            if which is None or which(e):
                e.close()
                del self._embedders[key]

    def check(self, images: Sequence, labels: Sequence[str] | None = None, *, top_k: int | None = None,
              tiers: dict[str, Tiers] | None = None, regions: str | None = None) -> list[Report]:
        """Check RGB PIL images; one report each, in order. Errors of the model propagate. `top_k`,
        `tiers` and `regions` (off, fast, thorough) apply to this call only (the web UI passes its
        current settings); the checker's own are used where they are None.

        With regions, each image's regions are embedded in the same batch as the whole image and
        searched too; a match found through a region carries its box and is judged by the region
        tiers (more queries per image, more chances of a chance hit); below them, a region's nearest
        training image is still verified geometrically (verify_geometry's shortlist)."""
        import numpy as np

        top_k = self.top_k if top_k is None else max(1, int(top_k))
        tier_map = self.tiers if tiers is None else dict(tiers)
        mode = self.regions if regions is None else check_mode(regions)

        labels = list(labels) if labels is not None else [f"image {i + 1}" for i in range(len(images))]
        reports = [Report(image=label) for label in labels]
        if not images:
            return reports
        by_id: dict[str, list] = {}
        for pack in self.packs:
            by_id.setdefault(pack.embedder.id, []).append(pack)
        loaded = {emb_id: self.embedder(packs[0]) for emb_id, packs in by_id.items()}  # before the clock starts
        start = time.perf_counter()
        candidates: list[list[Match]] = [[] for _ in images]
        #: per image, the best region match below the tiers of each training image that could still be
        #: verified geometrically (GEOMETRY_SHORTLIST), keyed by (pack, item id)
        shortlists: list[dict[tuple, Match]] = [{} for _ in images]
        flat = flat_images(images, loaded.values())
        judged = [False] * len(images)  # whether any family gave image i a verdict
        for emb_id, packs in by_id.items():
            embedder = loaded[emb_id]
            family = embedder.family
            family_tiers = tier_map.get(family, DEFAULT_TIERS.get(family, Tiers("similarity")))
            vectors, queries = embed(embedder, images, mode if embedder.searches_regions else "off", reports)
            low_quality = embedder.unjudged()
            for i, note in low_quality.items():
                reports[i].notes.append(note)
            if embedder.semantic:
                for r in reports:
                    r.notes.append(SEMANTIC_NOTE)
            unjudged = set(low_quality) | (flat if embedder.withholds_flat else set())
            for i in range(len(images)):
                judged[i] = judged[i] or i not in unjudged
            owners = [(i, None) for i in range(len(images))] + [(i, box) for i, box, _ in queries]
            if queries:
                vectors = np.concatenate([vectors, np.stack([v for _, _, v in queries])])
            for pack in packs:
                found = pack.search(np.asarray(vectors), top_k)
                offsets = background_offsets(pack, vectors, owners, found, reports) if queries else {}
                for row, ((i, box), hits) in enumerate(zip(owners, found)):
                    for h in hits[:top_k if box is None else 1]:
                        offset = offsets.get(row)
                        v = Verdict.NONE if i in unjudged else verdict_for(family, h.similarity, h.distance,
                                                                           tiers=family_tiers, region=box is not None,
                                                                           offset=offset)
                        below = box is not None and not v.is_copy
                        if below and not (self.geometry and i not in unjudged and shortlisted(family, h.similarity, offset)):
                            continue  # a region adds copies it finds; the nearest images come from the whole image
                        thumb = pack.thumbnail_path(h.item)
                        m = Match(pack=pack.name, item=h.item, similarity=h.similarity, distance=h.distance, verdict=v,
                                  embedder=emb_id, thumbnail=str(thumb) if thumb else None, region=box,
                                  background=offset)
                        if below:
                            key = (pack.name, h.item.id)
                            if key not in shortlists[i] or m.normalised > shortlists[i][key].normalised:
                                shortlists[i][key] = m
                        else:
                            candidates[i].append(m)
        if self.geometry:
            named = {pack.name: pack for pack in self.packs}
            for image, matches, shortlist, report in zip(images, candidates, shortlists, reports):
                verify_geometry(image, matches, named, report.notes, list(shortlist.values()))
        else:
            for matches in candidates:
                cap_regions(matches)
        elapsed = (time.perf_counter() - start) / len(images)
        order = [pack.name for pack in self.packs]
        for i, (report, matches) in enumerate(zip(reports, candidates)):
            report.matches = per_pack(best_per_item(matches, order), top_k)
            report.best = report.matches[0] if report.matches else None
            report.verdict = report.best.verdict if report.best else Verdict.NONE
            report.seconds = elapsed
            if i in flat:
                report.notes.append(FLAT_NOTE)
                if not judged[i]:
                    report.withheld = FLAT
        return reports

    def check_files(self, paths: Iterable[str | Path], batch: int = 8, workers: int = 2) -> Iterator[Report]:
        """Decode and check files, one report per file in input order; a file that cannot be read
        gets a report with its error, in its place.

        Decoding runs in `workers` threads one batch ahead of the model, so a folder costs about
        the model's time rather than decoding plus model; at most two batches of decoded images
        are held at once.
        """
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        from lib_replicheck.errors import ImageError
        from lib_replicheck.images import decode

        def load(p):
            try:
                return decode(p)
            except ImageError as e:
                return e

        batch = max(1, int(batch))
        todo = iter(paths)
        with ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="replicheck-decode") as pool:
            ahead: deque = deque()

            def fill() -> None:
                while len(ahead) < 2 * batch:
                    p = next(todo, None)
                    if p is None:
                        return
                    ahead.append((str(p), pool.submit(load, p)))

            fill()
            while ahead:
                group = [ahead.popleft() for _ in range(min(batch, len(ahead)))]
                results = [(label, future.result()) for label, future in group]
                fill()  # the next batch decodes while this one is embedded
                good = [(label, im) for label, im in results if not isinstance(im, ImageError)]
                checked = iter(self.check([im for _, im in good], [label for label, _ in good]) if good else [])
                for label, im in results:
                    yield Report(image=label, error=im.reason) if isinstance(im, ImageError) else next(checked)


def embed(embedder, images: Sequence, mode: str, reports: list[Report]):
    """The whole images' vectors, and (image index, box, vector) of the regions searched beside
    them; when the embedder cannot give regions, none, and each report says why."""
    if mode != "off":
        why = embedder.regions_available
        if not why:
            try:
                return embedder.embed_regions(list(images), mode)
            except ReplicheckError as e:
                why = str(e)
        for r in reports:
            r.notes.append(f"regions: {why}")
    return embedder.embed(list(images)), []


def background_offsets(pack, vectors, owners, found, reports) -> dict[int, float]:
    """Per row of `vectors` that is a region whose nearest training image could reach a region tier
    once normalised, what score normalisation subtracts (packs/background.py); none when the pack
    has no background set, and each report then says its regions were judged on raw similarity."""
    import numpy as np

    if pack.background is None:
        for r in reports:
            r.notes.append(f"regions: pack {pack.name} has no background set (build --background), so its region "
                           "matches are judged on raw similarity")
        return {}
    family = kind_of(pack.embedder.id)
    if family not in NORMALISED_REGION_TIERS:
        return {}
    lowest = min(t for t in (NORMALISED_REGION_TIERS[family].possible, NORMALISED_REGION_TIERS[family].likely,
                             GEOMETRY_SHORTLIST.get(family)) if t is not None)
    rows = [row for row, ((_, box), hits) in enumerate(zip(owners, found))
            if box is not None and hits and hits[0].similarity >= lowest]
    if not rows:
        return {}
    values = pack.background_offsets(np.asarray(vectors)[rows])
    return {row: float(v) for row, v in zip(rows, values)}


def shortlisted(family: str, similarity: float, offset: float | None) -> bool:
    """Whether a region match below the region tiers is still a candidate for geometric verification: its
    normalised score reaches GEOMETRY_SHORTLIST (a pack without a background set shortlists nothing)."""
    cut = GEOMETRY_SHORTLIST.get(family)
    return cut is not None and offset is not None and similarity - offset >= cut


def in_band(m: Match) -> bool:
    """A match geometric verification decides: a whole-image "possible copy", or any copy found through
    a region short of a duplicate; never a CLIP candidate (verification/step.py verifies those)."""
    if m.embedder.split(":", 1)[0] in CANDIDATE_FAMILIES:
        return False
    return m.verdict is Verdict.POSSIBLE or (m.region is not None and m.verdict is Verdict.LIKELY)


def cap_regions(matches: list[Match], why: str = "") -> None:
    """Every match of the band at "possible copy": without geometric verification a region never
    reaches "likely" and a whole-image "possible" stays so; `why` is said on each."""
    for m in matches:
        if in_band(m):
            m.verdict = Verdict.POSSIBLE
            if why:
                m.geometry = Geometry(detail=why)


def verify_geometry(image, matches: list[Match], packs: dict, notes: list[str], shortlist: Sequence[Match] = ()) -> None:
    """Geometric verification of the band's candidates (in_band), in place: the training images with the
    highest similarities, GEOMETRY_CANDIDATES at most, are compared with the image on their stored
    thumbnails (verification/geometry.py); enough inliers make every match of that training image a
    "likely copy", too few keep it "possible". The others, and all of them without OpenCV, stay
    "possible" and say why; regions of a training image the whole image already calls a likely copy
    are not compared (they stay "possible", below it). Then, in the slots left, the `shortlist`'s
    region matches below the tiers (GEOMETRY_SHORTLISTED at most, the highest normalised score first):
    one verified joins `matches` as a "likely copy" found through its region; one not verified is no
    copy and is dropped."""
    from lib_replicheck.verification import geometry

    # a training image the whole image already calls a likely copy (or more) is settled: its regions add nothing
    settled = {(m.pack, m.item.id) for m in matches if m.region is None and m.verdict.rank >= Verdict.LIKELY.rank}
    band = sorted((m for m in matches if in_band(m)), key=lambda m: (-m.similarity, m.region is not None))
    cap_regions([m for m in band if (m.pack, m.item.id) in settled])
    band = [m for m in band if (m.pack, m.item.id) not in settled]
    by_item: dict[tuple, list[Match]] = {}
    for m in band:
        by_item.setdefault((m.pack, m.item.id), []).append(m)
    extra = sorted((m for m in shortlist if (m.pack, m.item.id) not in by_item and (m.pack, m.item.id) not in settled),
                   key=lambda m: -m.normalised)
    extra = extra[:max(0, min(GEOMETRY_SHORTLISTED, GEOMETRY_CANDIDATES - len(by_item)))]
    if not band and not extra:
        return
    why = geometry.unavailable()
    if why:
        if band:
            cap_regions(band, why)
            notes.append(f"geometric verification: {why}; {GEOMETRY_OFF}")
        return
    for n, group in enumerate(by_item.values()):
        if n >= GEOMETRY_CANDIDATES:
            cap_regions(group, f"beyond the {GEOMETRY_CANDIDATES} candidates verified per image")
            continue
        whole = next((m for m in group if m.region is None), group[0])
        found = compare_on_thumbnail(image, whole, packs.get(whole.pack))
        for m in group:
            m.geometry = found
            m.verdict = Verdict.LIKELY if found.verified else Verdict.POSSIBLE
    for m in extra:
        found = compare_on_thumbnail(image, m, packs.get(m.pack))
        if found.verified:
            m.geometry = found
            m.verdict = Verdict.LIKELY
            matches.append(m)


def compare_on_thumbnail(image, m: Match, pack) -> Geometry:
    """Geometric verification of one match on its pack's stored thumbnail; what went wrong is said in
    the result's detail, never raised."""
    from lib_replicheck.errors import ImageError
    from lib_replicheck.images import load_image
    from lib_replicheck.verification import geometry

    path = pack.thumbnail_path(m.item) if pack is not None else None
    if path is None:
        return Geometry(detail="the pack stores no thumbnail of it (build --thumbnails)")
    try:
        thumbnail = load_image(path, max_pixels=geometry.SIDE * geometry.SIDE * 4)
    except ImageError as e:
        return Geometry(detail=f"its thumbnail could not be read ({e.reason})")
    return geometry.judged(image, thumbnail, m.region)


def flat_images(images: Sequence, embedders: Iterable) -> set[int]:
    """Indices of the flat images (images.is_flat), when an embedder that withholds flat images is
    searched; else none (PDQ judges flat images by its own quality gate)."""
    from lib_replicheck.images import is_flat

    if not any(e.withholds_flat for e in embedders):
        return set()
    return {i for i, im in enumerate(images) if is_flat(im)}


def per_pack(matches: list[Match], k: int) -> list[Match]:
    """The first `k` matches of each pack, in their order: a pack whose scores run higher (another
    embedder) never hides another pack's nearest images."""
    kept, seen = [], {}
    for m in matches:
        seen[m.pack] = seen.get(m.pack, 0) + 1
        if seen[m.pack] <= k:
            kept.append(m)
    return kept


def best_per_item(matches: list[Match], packs: Sequence[str] = ()) -> list[Match]:
    """One match per training image (the whole image and several regions may all find it): the
    one with the highest verdict, then score, the whole image first on a tie. Sorted by verdict,
    then pack (in the order of `packs`), then score: scores of packs of different embedders
    measure different things, so they are compared within a pack only."""
    key = lambda m: (m.verdict.rank, m.similarity, m.region is None)  # noqa: E731 - a sort key
    best: dict[tuple, Match] = {}
    for m in matches:
        k = (m.pack, m.item.id)
        if k not in best or key(m) > key(best[k]):
            best[k] = m
    place = {name: n for n, name in enumerate(packs)}
    # within a verdict, a region match verified on no stored image never outranks the whole image's
    unverified = lambda m: m.region is not None and not (m.geometry and m.geometry.verified)  # noqa: E731
    return sorted(best.values(), key=lambda m: (-m.verdict.rank, place.get(m.pack, len(place)), unverified(m),
                                                -m.similarity, m.region is not None))
