"""Geometric verification: do local features of the checked image map onto a training image under one
homography? A learned descriptor (SSCD) scores look-alikes, textures and repeated patterns high; a copy,
whole or pasted, also shares dozens of local features placed the same way, which a look-alike does not.

OpenCV's SIFT with Lowe's ratio test and a RANSAC homography (chosen over ORB by `bench/geometry.py`).
The ratio test drops features that match several places equally well, and a match to a feature with a
near twin in the training image itself counts neither, so a checkerboard or stripes find few matches. Cost is bounded before any work: both images are downscaled to `SIDE`
pixels, at most `FEATURES` features each. OpenCV is optional: `unavailable()` says why it cannot run.
"""

from __future__ import annotations

from lib_replicheck.regions import Region
from lib_replicheck.thresholds import GEOMETRY_INLIERS
from lib_replicheck.verification_status import MAX_HULL, Geometry

#: The longer side both images are scaled down to before features are found.
SIDE = 512
#: Features kept per image at most (the strongest).
FEATURES = 1000
#: Lowe's ratio: a match counts when its nearest feature is this much closer than the second nearest.
RATIO = 0.75
#: RANSAC's reprojection error, in pixels of the downscaled images.
REPROJECTION = 5.0
#: Inliers spread over less than this share of the training image's area are one spot, not a copy.
MIN_SPREAD = 0.02
#: SIFT's contrast threshold, below its default 0.04: smooth photos (sky, bokeh) keep enough features
CONTRAST = 0.01
METHODS = ("sift", "orb")
#: A training image with a shorter side than this is not compared: an icon of 64 pixels holds a few dozen
#: generic features, and a crop of a star field matched 16 of a 64-pixel CD icon's under one homography
#: (`bench/geometry.py --seed 0` before this rule: the most of 1,781 novel pairs, above the 15 inliers
#: that verify); copies of such images keep the descriptor's verdict.
MIN_TRAINING_SIDE = 96


def unavailable() -> str:
    """Why geometric verification cannot run here ('' when it can)."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return "OpenCV is not installed (pip install opencv-python-headless)"
    return ""


def _grey(image, side: int):
    """A uint8 grey array of `image` with its longer side at most `side`, and the scale applied."""
    import numpy as np
    from PIL import Image

    im = image.convert("L")
    s = min(1.0, side / max(im.size))
    if s < 1.0:
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8), s


def _features(cv2, grey, method: str, features: int):
    if method == "orb":
        detector = cv2.ORB_create(nfeatures=features)
    else:
        detector = cv2.SIFT_create(nfeatures=features, contrastThreshold=CONTRAST)
    return detector.detectAndCompute(grey, None)


def verify(checked, training, region: Region | None = None, *, method: str = "sift", side: int = SIDE,
           features: int = FEATURES, source: str = "thumbnail") -> Geometry:
    """Local features of `checked` (the checked PIL image; only around `region` when the match was
    found through one) against `training` (the candidate's stored or fetched image): the RANSAC
    inliers of one homography, and where they lie in the checked image (their bounding box and hull,
    in its own pixels). Raises ImportError without OpenCV."""
    import cv2
    import numpy as np

    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {', '.join(METHODS)}")
    left, top = (0, 0)
    full = checked
    if region is not None:
        left, top, right, bottom = _around(region, checked.size)
        checked = checked.crop((left, top, right, bottom))
    a, sa = _grey(checked, side)
    b, sb = _grey(training, side)
    ka, da = _features(cv2, a, method, features)
    kb, db = _features(cv2, b, method, features)
    if da is None or db is None or len(ka) < 2 or len(kb) < 2:
        return Geometry(inliers=0, matches=0, source=source)
    norm = cv2.NORM_HAMMING if method == "orb" else cv2.NORM_L2
    pairs = cv2.BFMatcher(norm).knnMatch(da, db, k=2)
    twin = _twin_distances(cv2, norm, db)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance
            and p[0].distance < RATIO * twin[p[0].trainIdx]]
    if len(good) < 4:
        return Geometry(inliers=0, matches=len(good), source=source)
    src = np.float32([ka[m.queryIdx].pt for m in good])
    dst = np.float32([kb[m.trainIdx].pt for m in good])
    h, mask = cv2.findHomography(src, dst, cv2.RANSAC, REPROJECTION)
    if h is None or mask is None:
        return Geometry(inliers=0, matches=len(good), source=source)
    keep = mask.ravel().astype(bool)
    # SIFT gives one spot several keypoints (orientations, octaves): count the spots, not the keypoints
    inliers = len({(round(x / 2), round(y / 2)) for x, y in src[keep]})
    if inliers < 4 or not _plausible(h) or _spread(dst[keep], b.shape) < MIN_SPREAD:
        return Geometry(inliers=0, matches=len(good), source=source)
    pts = src[keep] / sa + (left, top)  # back to the checked image's own pixels
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)
    hull = hull[::-(-len(hull) // MAX_HULL)]  # every n-th point, MAX_HULL at most
    w, h_ = full.size
    x0, y0 = np.clip(pts.min(axis=0), 0, None)
    x1, y1 = np.minimum(pts.max(axis=0), (w, h_))
    area = Region(int(x0), int(y0), max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0))), w, h_)
    return Geometry(inliers=inliers, matches=len(good), area=area,
                    hull=tuple((int(round(x)), int(round(y))) for x, y in hull), source=source)


def _twin_distances(cv2, norm, descriptors):
    """Per feature of the training image, the distance to its nearest other feature in the same image:
    a feature with a near twin (a corner of a checkerboard, a stripe's edge) is repeated structure, and
    a match to it says nothing about where it came from."""
    import numpy as np

    pairs = cv2.BFMatcher(norm).knnMatch(descriptors, descriptors, k=2)
    out = np.full(len(descriptors), np.inf)
    for p in pairs:
        if len(p) == 2:
            other = p[1] if p[0].trainIdx == p[0].queryIdx else p[0]
            out[p[0].queryIdx] = other.distance
    return out


def judged(checked, training, region: Region | None = None, *, source: str = "thumbnail") -> Geometry:
    """`verify`, judged: verified with at least GEOMETRY_INLIERS inliers. Never raises: without OpenCV,
    or when OpenCV fails on an image, the result's detail says why."""
    from dataclasses import replace

    why = unavailable()
    if why:
        return Geometry(detail=why, source=source)
    if min(training.size) < MIN_TRAINING_SIDE:
        w, h = training.size
        return Geometry(detail=f"the {source} is too small to compare ({w}x{h}; local features need "
                               f"{MIN_TRAINING_SIDE} pixels a side)", source=source)
    try:
        found = verify(checked, training, region, source=source)
    except Exception as e:  # an OpenCV error on a stranger's image: the check goes on without it
        return Geometry(detail=f"could not compare ({type(e).__name__})", source=source)
    return replace(found, verified=found.inliers >= GEOMETRY_INLIERS)


def _around(region: Region, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region with a margin of half its side around it (a region box rarely lies exactly on a
    pasted copy), inside the image."""
    mx, my = region.w // 2, region.h // 2
    return (max(0, region.x - mx), max(0, region.y - my), min(size[0], region.x + region.w + mx),
            min(size[1], region.y + region.h + my))


def _plausible(h) -> bool:
    """A homography a copy can go through: it keeps orientation and scales area by at most 100x."""
    import numpy as np

    det = float(np.linalg.det(h[:2, :2]))
    return 1e-2 < det < 1e2


def _spread(points, shape) -> float:
    """The share of the training image's area the inliers' hull covers."""
    import cv2

    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(points.astype("float32"))
    return float(cv2.contourArea(hull)) / float(shape[0] * shape[1])
