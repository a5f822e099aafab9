"""`python -m lib_replicheck verify IMAGE...`: read the signed record of a check back from images.

Exit status: 0 every record valid and no image flagged as a copy, 1 valid but an image is flagged
as a copy (at `possible copy` or above, as the record says, and not a match already in the img2img
input image: Report.flagged's rule), 2 a record absent, unreadable,
invalid (the image or the record changed after signing), or signed by a certificate nobody said to
trust (unless --any-signer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib_replicheck.cli import EXIT_COPY, EXIT_ERROR, EXIT_OK
from lib_replicheck.errors import ReplicheckError, clean_text, json_text
from lib_replicheck.report import VERDICT_WORDS, is_flagged, verdict_from_word

#: images one `verify` reads
MAX_IMAGES = 100_000


def add_parser(sub) -> argparse.ArgumentParser:
    v = sub.add_parser("verify", help="read the signed record of a check (C2PA) back from images")
    v.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    v.add_argument("--trust", action="append", default=[], type=Path, metavar="CERT.pem",
                   help="the CA certificate (or whole chain) of a signer whose records you trust (repeatable); "
                        "this install's local certificate and your own (--sign-cert, $REPLICHECK_SIGN_CERT) are "
                        "trusted already")
    v.add_argument("--sign-cert", type=Path, metavar="CHAIN.pem", help="your own certificate chain, trusted")
    v.add_argument("--any-signer", action="store_true",
                   help="accept a record signed by any certificate: it then proves only that the image is "
                        "unchanged since signing, not who signed it")
    v.add_argument("--json", action="store_true", help="one JSON line per image")
    return v


def trusted_anchors(args) -> list[bytes]:
    """The certificate authorities whose records count as trusted: this install's local CA, the
    --trust files, and the user's own chain (its CA)."""
    import os

    from lib_replicheck.home import default_home
    from lib_replicheck.provenance import keys

    anchors = []
    local = keys.local_ca(default_home())
    if local:
        anchors.append(local)
    own = args.sign_cert or os.environ.get(keys.CERT_ENV)
    for path, option in [(p, "--trust") for p in args.trust] + ([(Path(own), "--sign-cert")] if own else []):
        pem = keys.read_pem(path.expanduser(), "certificate")
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ReplicheckError(f"{option} {path}: not a PEM certificate")
        anchors.append(pem)
    return anchors


def verdict_of(record: dict) -> str:
    """The record's verdict, in the words used everywhere; 'unknown verdict' for any other text."""
    v = record.get("verdict")
    return v if isinstance(v, str) and v in VERDICT_WORDS else "unknown verdict"


def flagged(record: dict) -> bool:
    """Report.flagged's rule on a record: a copy verdict, not one already in the img2img input."""
    return is_flagged(verdict_from_word(record.get("verdict")), from_input=record.get("from_input") is True)


def status_of(v, any_signer: bool) -> int:
    if not v.intact or not (v.trusted or any_signer):
        return EXIT_ERROR
    return EXIT_COPY if flagged(v.record) else EXIT_OK


def signer_text(v, local_serial: str | None) -> str:
    who = v.signer.get("common_name") or "an unnamed certificate"
    issuer = v.signer.get("issuer")
    if local_serial and v.signer.get("cert_serial_number") == local_serial:
        return f"this install's local certificate ({who})"
    return who + (f", issued by {issuer}" if issuer else "")


def thresholds_text(tiers) -> str:
    """'sscd possible ≥ 0.5, likely ≥ 0.75, duplicate ≥ 0.95; pdq likely ≤ 31' (tiers switched off left out)."""
    if not isinstance(tiers, dict):
        return "not recorded"
    out = []
    for family, t in list(tiers.items())[:8]:
        if not isinstance(t, dict):
            continue
        sign = "≤" if t.get("measure") == "distance" else "≥"
        cuts = [f"{name} {sign} {clean_text(t[name], 20)}" for name in ("possible", "likely", "duplicate")
                if t.get(name) is not None]
        if cuts:
            out.append(f"{clean_text(family, 16)} " + ", ".join(cuts))
    return "; ".join(out) or "none"


def format_text(v, any_signer: bool, local_serial: str | None) -> str:
    name = clean_text(v.path)
    if not v.intact:
        what = {"absent": "no signed record", "unreadable": "record refused", "invalid": "INVALID record"}[v.state]
        return f"{name}\n  {what}: {clean_text(v.problem, 500)}"
    r = v.record
    lines = [name]
    if v.trusted:
        lines.append(f"  record valid, signed by {signer_text(v, local_serial)}; the image is unchanged since signing")
    else:
        lines.append(f"  signature valid but the signer is not one you trust: {signer_text(v, local_serial)}. The "
                     "image is unchanged since signing, but anyone could have made this record"
                     + ("" if any_signer else " (--trust CERT.pem names a signer you trust; --any-signer accepts any)"))
    verdict = verdict_of(r)
    head = verdict.upper() if flagged(r) else verdict
    summary = clean_text(r.get("summary"), 300)
    lines.append(f"  {head:<14} {summary[len(verdict):].strip() if summary.startswith(verdict) else summary}")
    for p in (r.get("packs") or [])[:20] if isinstance(r.get("packs"), list) else []:
        if isinstance(p, dict):
            lines.append(f"  pack {clean_text(p.get('name'), 64)}: {clean_text(p.get('images'), 20)} images, "
                         f"built {clean_text(p.get('built_at'), 40)}, manifest sha256 "
                         f"{clean_text(p.get('manifest_sha256'), 64)}")
    for e in (r.get("embedders") or [])[:8] if isinstance(r.get("embedders"), list) else []:
        if isinstance(e, dict):
            sha = e.get("weights_sha256")
            lines.append(f"  embedder {clean_text(e.get('id'), 64)} ({clean_text(e.get('runtime'), 32)})"
                         + (f", weights sha256 {clean_text(sha, 64)}" if sha else ""))
    lines.append(f"  regions {clean_text(r.get('regions'), 16)}; thresholds: {thresholds_text(r.get('thresholds'))}")
    if isinstance(r.get("memorization_signal"), dict):
        lines.append("  memorization signal: " + clean_text(json_text(r["memorization_signal"]), 300))
    if "known_prompt" in r:
        hit = r.get("known_prompt")
        lines.append("  known memorized prompt: " + (clean_text(hit.get("summary") or json_text(hit), 300)
                                                      if isinstance(hit, dict) else "none"))
    lines.append(f"  checked {clean_text(r.get('time'), 40)} by replicheck {clean_text(r.get('replicheck_version'), 20)}"
                 f", made with {v.generator or 'an unnamed generator'}")
    return "\n".join(lines)


def cmd_verify(args) -> int:
    from lib_replicheck.home import default_home
    from lib_replicheck.provenance import c2pa_module, keys
    from lib_replicheck.provenance.verify import verify_file

    c2pa_module()
    if len(args.images) > MAX_IMAGES:
        raise ReplicheckError(f"{len(args.images)} images named; verify reads at most {MAX_IMAGES} at once")
    anchors = trusted_anchors(args)
    local_serial = keys.local_serial(default_home())
    worst = EXIT_OK
    for path in args.images:
        v = verify_file(path, anchors)
        status = status_of(v, args.any_signer)
        if args.json:
            print(json_text({"image": str(path), "state": v.state, "valid": v.intact, "trusted": v.trusted,
                             "changed": v.changed, "problem": v.problem, "signer": v.signer,
                             "generator": v.generator, "verdict": verdict_of(v.record) if v.record else None,
                             "record": v.record, "failures": [list(f) for f in v.failures], "exit": status}),
                  flush=True)
        else:
            print(format_text(v, args.any_signer, local_serial), flush=True)
        worst = max(worst, status)
    return worst
