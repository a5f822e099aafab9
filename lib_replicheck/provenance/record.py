"""What the signed record says: replicheck's assertion built from a check's Report and the packs,
embedder and settings it ran with, and the C2PA manifest definition around it.

Everything here is plain data; the packs and embedders are read through the attributes the
Checker's own objects have (name, manifest, path; spec, runtime), so this module imports neither.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from lib_replicheck import __version__
from lib_replicheck.errors import clean_text
from lib_replicheck.hashing import sha256_file
from lib_replicheck.provenance import LABEL, RECORD_VERSION

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATED = IPTC + "trainedAlgorithmicMedia"
COMPOSITE = IPTC + "compositeWithTrainedAlgorithmicMedia"
#: Characters kept of a text field that came from a pack (a URL, a name).
MAX_TEXT = 500


@dataclass
class CheckContext:
    """What the check ran with, beside its Report: the packs and embedders (as the Checker holds
    them), the thresholds and region mode, and what the web UI measured around the generation."""

    packs: list = field(default_factory=list)  # packs.pack.Pack or anything with name, manifest, path
    embedders: list = field(default_factory=list)  # loaded embedders: spec, runtime
    tiers: dict = field(default_factory=dict)  # family -> thresholds.Tiers
    regions: str = "off"
    signal: object | None = None  # memorization.signal.Signal of this image, if measured
    prompt_hit: object | None = None  # memorization.prompts.PromptMatch of this image's prompt, if any
    prompt_checked: bool = False  # whether the prompt was compared with the known memorized prompts
    composite: bool = False  # img2img or inpainting: made from an input image
    generator: tuple[str, str] = ("replicheck command line", __version__)  # claim generator name, version

    @classmethod
    def of_checker(cls, checker, **kw) -> "CheckContext":
        """The packs, loaded embedders, thresholds and region mode of a Checker."""
        return cls(packs=list(checker.packs), embedders=checker.loaded_embedder_objects(), tiers=dict(checker.tiers),
                   regions=checker.regions, **kw)


def _sha256_file(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def pack_record(pack) -> dict:
    m = pack.manifest
    return {"name": clean_text(m.name, 64), "title": clean_text(m.title, 200), "built_at": clean_text(m.built_at, 64),
            "built_with": clean_text(m.tool_version, 64),
            "manifest_sha256": _sha256_file(Path(pack.path) / "manifest.json"),
            "images": int(m.count), "vectors": int(m.vectors), "bytes": int(sum(f.size for f in m.files)),
            "embedder": clean_text(m.embedder.id, 64)}


def embedder_record(embedder) -> dict:
    spec = embedder.spec
    runtime = str(getattr(embedder, "runtime", "builtin"))
    weights = spec.weights_for(runtime) if hasattr(spec, "weights_for") else None
    return {"id": clean_text(spec.id, 64), "model": clean_text(spec.model, 200), "runtime": runtime,
            "weights_sha256": getattr(weights, "sha256", None)}


def _tiers(tiers: dict) -> dict:
    return {family: {"measure": t.measure, "possible": t.possible, "likely": t.likely, "duplicate": t.duplicate}
            for family, t in sorted(tiers.items())}


def _best(report) -> dict | None:
    m = report.best
    if m is None:
        return None
    return {"pack": clean_text(m.pack, 64), "id": int(m.id), "similarity": round(float(m.similarity), 4),
            "score": m.score_label(), "distance": m.distance, "verdict": m.verdict.value,
            "embedder": clean_text(m.embedder, 64), "url": clean_text(m.url, MAX_TEXT) if m.url else None,
            "region": m.region.to_dict() if m.region is not None else None}


def assertion(report, context: CheckContext, now: datetime.datetime | None = None) -> dict:
    """replicheck's assertion: the verdict in the words users read everywhere, the best match,
    every pack checked, the embedders and their weights, the thresholds, the region mode, the
    memorization signal and known-prompt check where present, replicheck's version and the time."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    data = {
        "record_version": RECORD_VERSION,
        "replicheck_version": __version__,
        "time": now.astimezone(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "checked": report.error is None,
        "verdict": report.verdict.value if report.error is None else "not checked",
        "summary": report.summary(),
        "is_copy": bool(report.error is None and report.is_copy),
        "from_input": bool(report.from_input),
        "best": _best(report) if report.error is None else None,
        "packs": [pack_record(p) for p in context.packs],
        "embedders": [embedder_record(e) for e in context.embedders],
        "thresholds": _tiers(context.tiers),
        "regions": context.regions,
    }
    if context.signal is not None and getattr(context.signal, "magnitude", None) is not None:
        data["memorization_signal"] = context.signal.to_dict()
    if context.prompt_checked:
        data["known_prompt"] = context.prompt_hit.to_dict() if context.prompt_hit is not None else None
    return data


def manifest(record: dict, context: CheckContext, title: str | None = None) -> dict:
    """The C2PA manifest definition: the claim generator, the `c2pa.created` action with IPTC's
    digital source type (generated, or composite for img2img and inpainting), and the record."""
    name, version = context.generator
    definition = {
        "claim_generator_info": [{"name": clean_text(name, 64), "version": clean_text(version, 64)}],
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": COMPOSITE if context.composite else GENERATED,
                "softwareAgent": {"name": clean_text(name, 64), "version": clean_text(version, 64)}}]}},
            {"label": LABEL, "data": record},
        ],
    }
    if title:
        definition["title"] = clean_text(title, 200)
    return definition
