"""The HTTP API's request and response models (pydantic), and reports and packs turned into them."""

from pathlib import Path
from typing import List, Optional

from pydantic import BaseModel


class CheckRequest(BaseModel):
    image: str  # base64, optionally a data: URL
    packs: Optional[List[str]] = None  # default: the packs chosen in Settings
    top_k: Optional[int] = None
    regions: Optional[str] = None  # off, fast or thorough; default: the setting


class RegionModel(BaseModel):
    x: int
    y: int
    w: int
    h: int
    image_w: int  # the checked image's size, which the box lies in
    image_h: int


class MatchModel(BaseModel):
    pack: str
    id: int
    similarity: float
    distance: Optional[int] = None
    verdict: str
    embedder: str
    url: Optional[str] = None
    caption: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    source: Optional[str] = None
    license: Optional[str] = None
    region: Optional[RegionModel] = None  # where in the checked image it was found; null: the whole image
    judged_on: str = "whole image"  # what the verdict was judged on: whole image, region, region above background
    judged_score: Optional[float] = None  # that number (Match.judged_score)


class ReportModel(BaseModel):
    image: str
    verdict: str
    summary: str = ""  # the infotext's words: 'no copy (best 0.31 in laion-6.5)', 'likely copy (best 0.88 in demo)'
    is_copy: bool
    best: Optional[MatchModel] = None
    matches: List[MatchModel] = []
    notes: List[str] = []
    error: Optional[str] = None
    withheld: Optional[str] = None  # why a readable image got no verdict ('flat image'): verdict 'not checked'
    from_input: bool = False
    seconds: float = 0.0


class PackModel(BaseModel):
    name: str
    title: str
    description: str = ""
    embedder: str
    metric: str
    count: int
    size_bytes: int
    source: dict = {}
    background: str = "none"  # packs.info.background_text: what its region matches are normalised against
    error: Optional[str] = None


class AvailableModel(BaseModel):
    name: str
    title: str
    description: str = ""
    version: str = ""
    source: dict = {}
    embedder: dict = {}
    count: int = 0
    size: int = 0
    registry: str = ""
    installed: bool = False
    kind: str = "pack"  # or "recipe": built here (`estimate_s`: embedding time by device, where measured)
    estimate_s: dict = {}


class DownloadModel(BaseModel):
    name: str
    total: int
    done: int
    state: str
    error: Optional[str] = None
    fraction: float = 0.0
    active: bool = False
    kind: str = "pack"  # or "recipe"
    stage: str = ""  # a recipe's stage: list, fetch, embed, index
    message: str = ""


class PacksResponse(BaseModel):
    installed: List[PackModel]
    available: List[AvailableModel] = []
    registries: List[str] = []
    registry_errors: List[str] = []
    downloads: List[DownloadModel] = []
    packs_dir: str


class MessageResponse(BaseModel):
    ok: bool
    message: str


class StatusResponse(BaseModel):
    version: str
    enabled: bool
    packs_dir: str
    models_dir: str
    installed_packs: List[str]
    loaded: bool
    loaded_packs: List[str]
    embedders: List[str]
    checked_images: int
    clip_model_bytes: int = 0  # what the loaded CLIP model holds (freed when unused)
    last_error: Optional[str] = None
    platform: str = ""
    unsupported: List[str] = []


class CalibrateRequest(BaseModel):
    memorized: List[str]
    ordinary: List[str]
    fpr: float = 0.01
    seed: int = 0
    generations: int = 1  # seeds per prompt, averaged (Wen et al. report 1 and 4)


class CalibrateResponse(BaseModel):
    auc: float
    threshold: float
    tpr: float
    fpr: float
    requested_fpr: float
    n_memorized: int
    n_ordinary: int
    generations: int
    memorized: List[dict]
    ordinary: List[dict]


class LiveResponse(BaseModel):
    seq: int
    job: Optional[int] = None
    state: str = "idle"
    expected: int = 0
    verdicts: List[Optional[str]] = []  # per image: 'no copy', 'likely copy', ..., 'not checked', None (not yet)
    flagged: List[bool] = []  # per image: a copy the model made (not one already in the img2img input)
    signals: dict = {}  # image index -> the memorization signal
    prompt_hits: List[dict] = []  # known memorized prompts the job's prompts match (PromptMatch.to_dict)
    html: Optional[str] = None


def report_model(report) -> ReportModel:
    from lib_replicheck.report import verdict_label

    d = report.to_dict()
    d["verdict"] = verdict_label(report)
    for m in ([d["best"]] if d["best"] else []) + d["matches"]:
        m.pop("thumbnail", None)  # a local path: not for API clients
    return ReportModel(**d)


def pack_model(path, service=None) -> PackModel:
    """packs.info.pack_info (shared with the command line, which has no FastAPI) as a model; a pack
    whose files do not match its manifest, or that failed to open, carries why in `error`."""
    from lib_replicheck.errors import clean_text
    from lib_replicheck.packs.info import MAX_ERROR, pack_info
    from lib_replicheck.webui.pack_jobs import PackManager

    info = pack_info(path)
    if info.error is None:
        problem = PackManager.problem(path) or (service.pack_errors.get(Path(path).name) if service else None)
        if problem:
            info.error = clean_text(problem, MAX_ERROR)
    return PackModel(**info.to_dict())
