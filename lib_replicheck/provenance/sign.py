"""Embedding a signed C2PA manifest in a PNG, JPEG or WebP file.

The file is read whole (bounded), signed in memory, the result read back and validated, and only
then written: a copy into another folder, or the file itself replaced through a temporary file
(never half-written). No network: no timestamp authority unless the user names one, no remote
manifest, no OCSP.
"""

from __future__ import annotations

from pathlib import Path

from lib_replicheck.provenance import OFFLINE, ProvenanceError, c2pa_module
from lib_replicheck.provenance import container
from lib_replicheck.provenance.keys import Credentials


def _c2pa_error(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def sign_bytes(data: bytes, kind: str, definition: dict, creds: Credentials) -> bytes:
    """The image `data` (kind png, jpeg or webp) with the manifest `definition` embedded and signed."""
    import io

    c2pa = c2pa_module()
    context = c2pa.Context(c2pa.Settings.from_dict(OFFLINE))
    info = c2pa.C2paSignerInfo(creds.alg, creds.chain_pem, creds.key_pem, creds.tsa_url)
    try:
        signer = c2pa.Signer.from_info(info)
        out = io.BytesIO()
        with c2pa.Builder(definition, context) as builder:
            builder.sign(signer, container.MIME[kind], io.BytesIO(data), out)
    except c2pa.C2paError as e:
        raise ProvenanceError(f"signing failed: {_c2pa_error(e)}"
                              + (" (the certificate must be issued by a CA, with digitalSignature key usage; "
                                 "C2PA refuses self-signed end-entity certificates)"
                                 if "certificate" in str(e).lower() else "")) from None
    return out.getvalue()


def read_image(path: Path) -> tuple[bytes, str]:
    """The file's bytes and kind (png, jpeg, webp), bounded before they are read."""
    try:
        size = path.stat().st_size
        if size > container.MAX_FILE_BYTES:
            raise ProvenanceError(f"{path}: {size} bytes, more than the {container.MAX_FILE_BYTES} signed or read")
        with open(path, "rb") as f:
            data = f.read(container.MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ProvenanceError(f"{path}: cannot be read ({e.strerror})") from None
    kind = container.kind_of(data[:16])
    if kind is None:
        raise ProvenanceError(f"{path}: only PNG, JPEG and WebP files can carry a signed record")
    return data, kind


def sign_file(source: str | Path, dest: str | Path, definition: dict, creds: Credentials) -> Path:
    """Sign `source` into `dest` (which may be `source` itself: it is then replaced whole, once the
    signed copy has been read back and found valid)."""
    from lib_replicheck.atomic import write_atomic

    source, dest = Path(source), Path(dest)
    data, kind = read_image(source)
    return write_atomic(dest, sign_checked(data, kind, definition, creds, str(source)))


def sign_checked(data: bytes, kind: str, definition: dict, creds: Credentials, name: str) -> bytes:
    """sign_bytes, then the signed bytes read back and validated: ProvenanceError naming `name`
    when they do not, so nothing unverified is ever handed on."""
    from lib_replicheck.provenance.verify import verify_bytes

    signed = sign_bytes(data, kind, definition, creds)
    check = verify_bytes(signed, kind, name)
    if not check.intact:
        raise ProvenanceError(f"{name}: the signed copy does not validate ({check.problem}); nothing written")
    return signed
