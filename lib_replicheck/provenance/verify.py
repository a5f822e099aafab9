"""Reading a signed record back: is the manifest there, does its signature hold, does its hash
still bind it to the image's bytes, who signed it, and what replicheck's assertion says.

A manifest is written by whoever wrote the file: its size is bounded from the container's chunk
headers before c2pa-rs reads it (container.py), nothing is fetched (no remote manifest, no OCSP),
and every text it carries is cleaned before it is shown.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from lib_replicheck.errors import clean_text
from lib_replicheck.provenance import LABEL, OFFLINE, ProvenanceError, c2pa_module, container

ABSENT, UNREADABLE, INVALID, VALID = "absent", "unreadable", "invalid", "valid"
#: validation codes that say the image's bytes changed after signing (the hard binding broke)
CHANGED_CODES = ("assertion.dataHash.mismatch", "assertion.boxesHash.mismatch", "assertion.bmffHash.mismatch",
                 "assertion.collectionHash.mismatch")
#: the code a valid signature by a certificate not in the trust settings gives
UNTRUSTED = "signingCredential.untrusted"
#: the most validation failures shown per image
MAX_FAILURES = 8


@dataclass
class Verification:
    """What `verify` found in one file."""

    path: str
    state: str  # absent, unreadable, invalid, valid
    problem: str = ""  # one line: why the record is absent, unreadable or invalid
    changed: bool = False  # the image's bytes changed after signing
    trusted: bool = False  # signed by a certificate the trust settings name (this install's, --trust)
    signer: dict = field(default_factory=dict)  # common_name, issuer, alg, serial (cleaned)
    generator: str = ""
    record: dict | None = None  # replicheck's assertion, as stored (untrusted data: clean before showing)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (code, explanation)

    @property
    def intact(self) -> bool:
        """The signature holds and the image is as it was signed (the signer may still be anyone)."""
        return self.state == VALID

    @property
    def is_copy(self) -> bool:
        return bool(self.record and self.record.get("is_copy") is True)


def trust_settings(anchors: list[bytes]) -> dict:
    """c2pa-rs settings that trust the certificate authorities `anchors` (PEM) and nothing fetched.
    A signer is trusted when its chain leads to one of them (c2pa-rs trusts no end-entity
    certificate on its own, so a chain file counts through its CA)."""
    trust = {"user_anchors": b"\n".join(anchors).decode("ascii", "replace")} if anchors else {}
    return {**OFFLINE, "verify": {**OFFLINE["verify"], "verify_trust": True}, **({"trust": trust} if trust else {})}


def verify_file(path: str | Path, anchors: list[bytes] = ()) -> Verification:
    """Verify the record in one file; never raises for what the file holds (the state says it)."""
    path = Path(path)
    label = str(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        return Verification(label, UNREADABLE, f"cannot be read ({e.strerror})")
    if size > container.MAX_FILE_BYTES:
        return Verification(label, UNREADABLE, f"{size} bytes, more than the {container.MAX_FILE_BYTES} read")
    try:
        layout = container.layout(path)
    except container.LayoutError as e:
        return Verification(label, UNREADABLE, str(e))
    except OSError as e:
        return Verification(label, UNREADABLE, f"cannot be read ({e.strerror})")
    if layout.manifest_bytes > container.MAX_MANIFEST_BYTES:
        return Verification(label, UNREADABLE, f"its C2PA manifest is {layout.manifest_bytes} bytes, more than the "
                                               f"{container.MAX_MANIFEST_BYTES} read; not read")
    if layout.manifest_bytes == 0:
        return Verification(label, ABSENT, "no C2PA manifest in the file")
    try:
        data = path.read_bytes()
    except OSError as e:
        return Verification(label, UNREADABLE, f"cannot be read ({e.strerror})")
    return verify_bytes(data, layout.kind, label, anchors)


def verify_bytes(data: bytes, kind: str, label: str, anchors: list[bytes] = ()) -> Verification:
    c2pa = c2pa_module()
    try:
        context = c2pa.Context(c2pa.Settings.from_dict(trust_settings(list(anchors))))
    except c2pa.C2paError as e:
        raise ProvenanceError(f"the trusted certificates cannot be used: {clean_text(e, 300)}") from None
    try:
        with c2pa.Reader(container.MIME[kind], io.BytesIO(data), None, context) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return Verification(label, ABSENT, "no C2PA manifest in the file")
    except (c2pa.C2paError, ValueError, RecursionError) as e:
        return Verification(label, UNREADABLE, f"its C2PA manifest cannot be read ({clean_text(e, 300)})")
    return _judge(label, store)


def _judge(label: str, store: dict) -> Verification:
    if not isinstance(store, dict):
        return Verification(label, UNREADABLE, "its C2PA manifest store is not an object")
    results = store.get("validation_results") or {}
    active = results.get("activeManifest") if isinstance(results, dict) else None
    failures = [(clean_text(f.get("code"), 100), clean_text(f.get("explanation"), 300))
                for f in ((active or {}).get("failure") or []) if isinstance(f, dict)]
    manifests = store.get("manifests") if isinstance(store.get("manifests"), dict) else {}
    manifest = manifests.get(store.get("active_manifest")) or {}
    info = manifest.get("signature_info") if isinstance(manifest.get("signature_info"), dict) else {}
    signer = {k: clean_text(info.get(k), 200) for k in ("common_name", "issuer", "alg", "cert_serial_number")
              if info.get(k) is not None}
    gen = manifest.get("claim_generator_info")
    gen = gen[0] if isinstance(gen, list) and gen and isinstance(gen[0], dict) else {}
    generator = clean_text(" ".join(str(gen.get(k, "")) for k in ("name", "version")).strip(), 200)
    record = next((a.get("data") for a in (manifest.get("assertions") or [])
                   if isinstance(a, dict) and a.get("label") == LABEL), None)
    v = Verification(label, VALID, signer=signer, generator=generator,
                     record=record if isinstance(record, dict) else None, failures=failures[:MAX_FAILURES])
    v.changed = any(code in CHANGED_CODES for code, _ in failures)
    serious = [(c, e) for c, e in failures if c != UNTRUSTED]
    state = store.get("validation_state")
    v.trusted = state == "Trusted" and not serious
    if serious or state == "Invalid":
        v.state = INVALID
        v.problem = ("the image was changed after it was signed" if v.changed
                     else "; ".join(e or c for c, e in serious[:3]) or "the manifest does not validate")
    elif v.record is None:
        v.state = INVALID
        v.problem = f"the manifest (by {generator or 'an unnamed generator'}) carries no replicheck record"
    return v
