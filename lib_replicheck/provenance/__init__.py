"""A signed record of the check inside the saved image (C2PA), and reading it back.

`record` turns a check's Report into replicheck's own C2PA assertion, `keys` finds the certificate
and key to sign with (the user's, or a local certificate made once per install), `sign` embeds a
signed manifest in a PNG, JPEG or WebP file, and `verify` reads one back and says whether it holds.

Signing and reading need the optional `c2pa-python` package (it wraps c2pa-rs); the rest of
replicheck never imports it, so the check works without it.
"""

from __future__ import annotations

from lib_replicheck.errors import ReplicheckError

#: The label of replicheck's own assertion in the manifest.
LABEL = "org.replicheck.check"
#: The version of that assertion's layout, so a reader knows which fields to expect.
RECORD_VERSION = 1
#: c2pa-rs settings for signing and reading: nothing fetched (no remote manifest, no OCSP), no
#: thumbnail copied into the manifest (the image is right there; one adds tens of kB to each file)
OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
           "builder": {"thumbnail": {"enabled": False}}}
MISSING = ("signing needs the c2pa-python package, which is not installed: "
           "pip install c2pa-python (into the Python that runs replicheck)")


class ProvenanceError(ReplicheckError):
    """Signing or reading a record failed; the message names the file."""


def c2pa_module():
    """The c2pa module, or ProvenanceError saying how to install it."""
    try:
        import c2pa
    except ImportError:
        raise ProvenanceError(MISSING) from None
    return c2pa


def available() -> bool:
    try:
        c2pa_module()
    except ProvenanceError:
        return False
    return True
