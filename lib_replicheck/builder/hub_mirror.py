"""A mirror of the Hugging Face hub for recipes' files: `$HF_ENDPOINT`, as huggingface_hub reads it.

Recipes name their files on https://huggingface.co (PD12M's and PD3M's metadata and embeddings).
Where the hub cannot be reached, or a local copy of its layout is served (a mirror such as
hf-mirror.com, or a folder served on the local network), `HF_ENDPOINT=https://MIRROR` makes a
recipe's build fetch `https://MIRROR/datasets/...` instead of `https://huggingface.co/datasets/...`:
the same path, the same sha256 checks and pins (pins stay keyed by the recipe's own URL). It is the
user's own setting, read from the environment when a build starts, never from a registry.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from lib_replicheck.errors import ReplicheckError

HUB = "https://huggingface.co"
ENV = "HF_ENDPOINT"


def mirror_base(environ: Mapping[str, str] | None = None) -> str | None:
    """The mirror's base URL from `$HF_ENDPOINT` (None when unset, or set to the hub itself); an
    endpoint that is not an http(s) URL of a host, without query or fragment, is refused by name."""
    base = (os.environ if environ is None else environ).get(ENV, "").strip().rstrip("/")
    if not base or base == HUB:
        return None
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or len(base) > 500:
        raise ReplicheckError(f"${ENV}={base[:100]!r}: not the http(s) URL of a mirror of the Hugging Face hub "
                              "(e.g. https://hf-mirror.com)")
    return base


def mirrored(urls: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """`urls` with the hub's replaced by the mirror's under `$HF_ENDPOINT`; others are kept."""
    base = mirror_base(environ)
    if base is None:
        return list(urls)
    return [base + u[len(HUB):] if u.startswith(HUB + "/") else u for u in urls]
