"""What verifying one candidate on the training image itself found (lib_replicheck/verification/).

A CLIP match is a candidate, not evidence: two photos of one landmark score high. Verification
fetches the training image from its URL and compares it with the checked image (SSCD, PDQ); a
Match carries the outcome so every output (text, JSON, panel, infotext) can say it. It lives in
the core because report.Match holds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lib_replicheck.regions import Region

VERIFIED = "verified"  # fetched and compared: the verdict is SSCD's tier on the pair
DEAD = "dead URL"  # an HTTP error status, a refused connection, a timeout
OFF = "off"  # not asked (no --verify online), offline, or beyond the candidates verified
NOT_IMAGE = "not an image"  # the answer is no image replicheck decodes
REFUSED = "refused"  # too large, not an http(s) URL, no URL at all
STATUSES = (VERIFIED, DEAD, OFF, NOT_IMAGE, REFUSED)


@dataclass(frozen=True)
class Verification:
    status: str
    detail: str = ""  # why it was not verified (HTTP Error 404, larger than N bytes), or empty
    sscd: float | None = None  # the SSCD similarity the verdict was judged on (whole image or region)
    region: Region | None = None  # the region of the checked image it was judged on; None: whole image
    pdq: int | None = None  # PDQ Hamming distance of the pair, when PDQ could hash both
    cached: bool = False  # the training image came from the verification cache

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED

    def text(self) -> str:
        """One short phrase, without commas: 'verified: SSCD 0.87', 'verified: SSCD 0.72 in a region;
        PDQ d=12', 'dead URL (HTTP Error 404: Not Found)', 'verification off (not asked)'."""
        from lib_replicheck.report import _label  # scores read as everywhere: two decimals, rounded down

        if self.verified:
            where = " in a region" if self.region is not None else ""
            pdq = f"; PDQ d={self.pdq}" if self.pdq is not None else ""
            return f"verified: SSCD {_label(self.sscd or 0.0)}{where}{pdq}"
        word = "verification off" if self.status == OFF else self.status
        return f"{word} ({self.detail})" if self.detail else word

    def to_dict(self) -> dict:
        d = asdict(self)
        d["region"] = self.region.to_dict() if self.region else None
        d["sscd"] = None if self.sscd is None else round(self.sscd, 4)
        d["text"] = self.text()
        return d

#: Points of a matched area's hull kept at most (a convex hull of a thousand features can have hundreds)
MAX_HULL = 32


@dataclass(frozen=True)
class Geometry:
    """What matching local features of the checked image with a candidate's stored (or fetched) training
    image found (verification/geometry.py): the RANSAC inliers of one homography and where they lie in
    the checked image. `detail` says why it could not run (no OpenCV, no stored image)."""

    inliers: int = 0
    matches: int = 0  # feature matches that passed the ratio test, before RANSAC
    area: Region | None = None  # the inliers' bounding box in the checked image
    hull: tuple[tuple[int, int], ...] = ()  # the inliers' convex hull, in the checked image's pixels
    source: str = "thumbnail"  # 'thumbnail' (stored in the pack) or 'fetched image'
    detail: str = ""  # why it did not run; empty when it ran
    verified: bool = False  # enough inliers (thresholds.GEOMETRY_INLIERS): the verdict may be 'likely'

    def text(self) -> str:
        """'geometry: 48 inliers on the thumbnail in 310x290 at (12, 40)', 'geometry: 3 inliers on the
        thumbnail (too few)', 'not verified geometrically (OpenCV is not installed ...)'."""
        if self.detail:
            return f"not verified geometrically ({self.detail})"
        where = f" in {self.area.text()}" if self.area is not None and self.verified else ""
        few = "" if self.verified else " (too few)"
        return f"geometry: {self.inliers} inliers on the {self.source}{where}{few}"

    def to_dict(self) -> dict:
        return {"inliers": self.inliers, "matches": self.matches, "verified": self.verified,
                "area": self.area.to_dict() if self.area else None, "hull": [list(p) for p in self.hull],
                "source": self.source, "detail": self.detail, "text": self.text()}
