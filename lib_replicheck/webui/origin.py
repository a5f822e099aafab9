"""Whether a request comes from the page it was sent to: the origin rule of every replicheck route,
without a web framework (FastAPI in the web UI, aiohttp in ComfyUI; both give `request.headers`)."""

from typing import Optional
from urllib.parse import urlsplit

#: The header the panel's script sends; required on changing routes.
CSRF_HEADER = "X-Replicheck-Request"


def _netloc(url: str) -> Optional[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return parts.netloc.lower() if parts.scheme in ("http", "https") and parts.netloc else None


def same_origin(request) -> bool:
    """Origin and Referer, where the browser sent them, name the host the request was sent to.
    A page of another site (or an opaque origin, 'null') fails; a client that sends neither passes."""
    host = (request.headers.get("host") or "").lower()
    origin = request.headers.get("origin")
    if origin is not None and (not host or _netloc(origin) != host):
        return False
    referer = request.headers.get("referer")
    if referer and (not host or _netloc(referer) != host):
        return False
    return True
