"""HTTP API under /replicheck/v1/, mounted on the web UI's FastAPI app.

Request and response bodies are typed models (pydantic 1 in AUTOMATIC1111 1.10, pydantic 2 in
Forge: only features both share are used). The web UI's --api-auth protects these routes as it
protects /sdapi: the same HTTP basic credentials.
"""

import base64
import binascii
import io
import json
import secrets
from typing import Callable, List, Optional

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel

from .settings import Settings

PREFIX = "/replicheck/v1"
#: Largest accepted request body for /check (base64 inflates by 4/3: about 15 MB of image).
MAX_REQUEST_BYTES = 20 * 1024 * 1024


class CheckRequest(BaseModel):
    image: str  # base64, optionally a data: URL
    packs: Optional[List[str]] = None  # default: the packs chosen in Settings
    top_k: Optional[int] = None


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


class ReportModel(BaseModel):
    image: str
    verdict: str
    is_copy: bool
    best: Optional[MatchModel] = None
    matches: List[MatchModel] = []
    notes: List[str] = []
    error: Optional[str] = None
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


class DownloadModel(BaseModel):
    name: str
    total: int
    done: int
    state: str
    error: Optional[str] = None
    fraction: float = 0.0
    active: bool = False


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
    verdicts: List[Optional[str]] = []
    signals: dict = {}  # image index -> the memorization signal
    html: Optional[str] = None


def _report_model(report) -> ReportModel:
    d = report.to_dict()
    for m in ([d["best"]] if d["best"] else []) + d["matches"]:
        m.pop("thumbnail", None)  # a local path: not for API clients
    return ReportModel(**d)


def decode_image(data: str):
    """A PIL RGB image from base64 (or a data: URL); ValueError with a clear message otherwise."""
    from PIL import Image

    from .errors import ImageError
    from .images import MAX_PIXELS, to_rgb

    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise ValueError("field 'image': not valid base64") from None
    if not raw:
        raise ValueError("field 'image': empty")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ValueError(f"field 'image': {im.size[0]}x{im.size[1]} pixels is over the limit")
            im.seek(0)
            im.load()
            return to_rgb(im)
    except ValueError:
        raise
    except (ImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"field 'image': not a readable image ({e})") from None


def basic_auth(credentials_text: Optional[str]):
    """A FastAPI dependency checking HTTP basic credentials 'user:pass,user2:pass2' (--api-auth)."""
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    if not credentials_text:
        return None
    users = {}
    for pair in credentials_text.split(","):
        user, _, password = pair.strip().partition(":")
        users[user] = password

    def check(credentials: HTTPBasicCredentials = Depends(HTTPBasic())):
        expected = users.get(credentials.username)
        if expected is not None and secrets.compare_digest(credentials.password, expected):
            return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return check


def mount(app, service, settings: Callable[[], Settings], *, api_auth: Optional[str] = None,
          platform: str = "", unsupported: Optional[List[str]] = None, manager=None, measure=None) -> None:
    """`manager`: a PackManager for the pack routes; `measure(prompt, seed) -> magnitude`: the
    memorization signal of one generation with the loaded model, for the calibration route."""
    """Add the routes to `app` (a FastAPI application)."""
    from . import __version__
    from .panel import render

    auth = basic_auth(api_auth)
    deps = [Depends(auth)] if auth else []

    async def check(request: Request) -> ReportModel:
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_REQUEST_BYTES:
            raise HTTPException(status_code=413, detail=f"request body over {MAX_REQUEST_BYTES} bytes")
        body = await request.body()
        if len(body) > MAX_REQUEST_BYTES:
            raise HTTPException(status_code=413, detail=f"request body over {MAX_REQUEST_BYTES} bytes")
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            req = CheckRequest(**data)
        except Exception as e:  # noqa: BLE001 - json, pydantic 1 and pydantic 2 raise different types
            raise HTTPException(status_code=422, detail=f"bad request body: {str(e).splitlines()[0][:300]}") from None
        try:
            image = decode_image(req.image)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        s = settings()
        if req.packs is not None:
            s.packs = list(req.packs)
        if req.top_k is not None:
            s.top_k = max(1, min(50, int(req.top_k)))
        import asyncio

        report = (await asyncio.get_running_loop().run_in_executor(None, service.check, [image], ["image"], s))[0]
        return _report_model(report)

    def packs(refresh: bool = False) -> PacksResponse:
        """Installed packs; with a manager, also the registries' packs (read now if refresh=true)."""
        installed = [pack_model(p) for p in service.installed()]
        if manager is None:
            return PacksResponse(installed=installed, packs_dir=str(service.packs_dir))
        if refresh:
            manager.refresh()
        names = {p.name for p in installed}
        return PacksResponse(
            installed=installed, packs_dir=str(service.packs_dir), registries=manager.registries(),
            available=[AvailableModel(**p.to_dict(), installed=p.name in names) for p in manager.available],
            registry_errors=list(manager.errors), downloads=[DownloadModel(**j.to_dict()) for j in manager.jobs.values()])

    def _act(fn, name: str, done: str) -> MessageResponse:
        from .errors import ReplicheckError

        try:
            fn(name)
        except ReplicheckError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None
        return MessageResponse(ok=True, message=done)

    def download(name: str) -> DownloadModel:
        from .errors import ReplicheckError

        try:
            return DownloadModel(**manager.start_download(name).to_dict())
        except ReplicheckError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None

    def downloads() -> List[DownloadModel]:
        return [DownloadModel(**j.to_dict()) for j in manager.jobs.values()]

    def cancel(name: str) -> MessageResponse:
        return _act(manager.cancel, name, f"cancelling the download of {name}")

    def verify(name: str) -> MessageResponse:
        return _act(manager.verify, name, f"{name}: every file matches its sha256")

    def remove(name: str) -> MessageResponse:
        return _act(manager.remove, name, f"removed {name}")

    def status() -> StatusResponse:
        return StatusResponse(version=__version__, enabled=settings().enabled, platform=platform,
                              unsupported=list(unsupported or []), **service.status())

    def live(tab: str = "txt2img", since: int = -1) -> LiveResponse:
        seq = service.live.seq
        job = service.live.get(tab)
        if job is None:
            return LiveResponse(seq=seq)
        n = max(job.expected, max(job.reports, default=-1) + 1)
        verdicts = [job.reports[i].verdict.value if i in job.reports and not job.reports[i].error else
                    ("error" if i in job.reports else None) for i in range(n)]
        html = None
        if since != seq:
            html = render(job.reports, state=job.state, message=job.message, input_reports=job.input_reports,
                          remote=settings().remote_thumbnails, signals=job.signals)
        return LiveResponse(seq=seq, job=job.id, state=job.state, expected=job.expected, verdicts=verdicts, html=html,
                            signals={str(i): sig.to_dict() for i, sig in job.signals.items()})

    def calibrate(req: CalibrateRequest) -> CalibrateResponse:
        from .calibration import calibrate as run
        from .errors import ReplicheckError

        try:
            return CalibrateResponse(**run(req.memorized, req.ordinary, measure, fpr=req.fpr, seed=req.seed,
                                           generations=max(1, min(8, req.generations))))
        except ReplicheckError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None

    if measure is not None:
        app.add_api_route(f"{PREFIX}/calibrate", calibrate, methods=["POST"], response_model=CalibrateResponse,
                          dependencies=deps)
    app.add_api_route(f"{PREFIX}/check", check, methods=["POST"], response_model=ReportModel, dependencies=deps)
    app.add_api_route(f"{PREFIX}/packs", packs, methods=["GET"], response_model=PacksResponse, dependencies=deps)
    app.add_api_route(f"{PREFIX}/status", status, methods=["GET"], response_model=StatusResponse, dependencies=deps)
    app.add_api_route(f"{PREFIX}/live", live, methods=["GET"], response_model=LiveResponse, dependencies=deps)
    if manager is not None:
        app.add_api_route(f"{PREFIX}/packs/{{name}}/download", download, methods=["POST"],
                          response_model=DownloadModel, dependencies=deps)
        app.add_api_route(f"{PREFIX}/downloads", downloads, methods=["GET"], response_model=List[DownloadModel],
                          dependencies=deps)
        app.add_api_route(f"{PREFIX}/downloads/{{name}}/cancel", cancel, methods=["POST"],
                          response_model=MessageResponse, dependencies=deps)
        app.add_api_route(f"{PREFIX}/packs/{{name}}/verify", verify, methods=["POST"], response_model=MessageResponse,
                          dependencies=deps)
        app.add_api_route(f"{PREFIX}/packs/{{name}}", remove, methods=["DELETE"], response_model=MessageResponse,
                          dependencies=deps)


def pack_model(path) -> PackModel:
    """packs.info.pack_info (shared with the command line, which has no FastAPI) as a model."""
    from .packs.info import pack_info

    return PackModel(**pack_info(path).to_dict())
