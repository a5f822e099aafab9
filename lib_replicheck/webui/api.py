"""HTTP API under /replicheck/v1/, mounted on the web UI's FastAPI app.

Request and response bodies are typed models (pydantic 1 in AUTOMATIC1111 1.10, pydantic 2 in
Forge: only features both share are used).

Who may call what (every page in the user's browser can reach the web UI's port):
- Read-only routes (status, packs, live, downloads) are open, as the web UI's pages are; with
  --api-auth they need its HTTP basic credentials, or the web UI's own page session: gradio's
  login cookie when --gradio-auth is set, else a same-origin request carrying the panel's header
  (without gradio's login the page itself, and all it shows, is open to whoever reaches it).
  Changing routes and /check, which the page never calls, need the credentials under --api-auth.
- Changing routes (download, cancel, verify, remove, calibrate, and reading the registries) need a
  same-origin request (Origin and Referer, when sent, name the web UI's host) that carries the
  `X-Replicheck-Request` header, even without --api-auth: a cross-site page can only send it after a
  CORS preflight, which the web UI refuses, and a no-cors form or fetch cannot add it at all.
- Every route answers only requests addressed to a host the web UI is served under (webui/hosts.py:
  loopback, the addresses and names it listens on, the allow-list); others get 403, which keeps out
  a page that reaches the web UI by DNS rebinding, Origin and Host both its own name.
- /check needs a JSON body (`Content-Type: application/json`, which a no-cors request cannot send)
  and no foreign Origin; its body is read as a stream with a hard cap, and images are decoded off
  the event loop, a few at a time.
"""

import asyncio
import base64
import binascii
import json
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional

from fastapi import Depends, HTTPException, Request

from lib_replicheck.webui.api_auth import guards
from lib_replicheck.webui.hosts import ServerAddress, allow_list, refusal
from lib_replicheck.webui.api_models import (AvailableModel, CalibrateRequest, CalibrateResponse, CheckRequest,
                                            DownloadModel, LiveResponse, MessageResponse, PacksResponse,
                                            ReportModel, StatusResponse, report_model, pack_model)
from lib_replicheck.regions import check_mode
from lib_replicheck.webui.settings import Settings

PREFIX = "/replicheck/v1"
#: Largest accepted request body for /check (base64 inflates by 4/3: about 15 MB of image).
MAX_REQUEST_BYTES = 20 * 1024 * 1024
#: /check requests in flight at once (reading, decoding, checking); more wait for a slot.
MAX_CHECKS_IN_FLIGHT = 4
#: Images decoded at once (a 100 Mpx image takes 300 MB while it is converted).
MAX_DECODES = 2
SLOT_WAIT_SECONDS = 30.0
BODY_SECONDS = 60.0  # the whole body must arrive within this


def decode_base64(data: str) -> bytes:
    """The bytes of the request's `image` field (base64, or a data: URL); ValueError naming the field."""
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise ValueError("field 'image': not valid base64") from None
    if not raw:
        raise ValueError("field 'image': empty")
    return raw


def decode_image(data: str):
    """A PIL RGB image from base64 (or a data: URL); ValueError naming the field otherwise. Decoded by
    images.decode: the formats, pixel cap and orientation of the command line."""
    from lib_replicheck.errors import ImageError
    from lib_replicheck.images import decode

    raw = decode_base64(data)
    try:
        return decode(raw, name="field 'image'")
    except ImageError as e:
        raise ValueError(str(e)) from None


# -- who may call what ----------------------------------------------------------------------------

# -- /check: bounded body, decoding off the event loop ------------------------------------------------

class _Slots:
    """At most `n` requests in flight per event loop; the others wait (without a body read) or get 503."""

    def __init__(self, n: int):
        self.n = n
        self._sems: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            s = self._sems.get(loop)
            if s is None:
                s = self._sems[loop] = asyncio.Semaphore(self.n)
            return s


async def read_body(request: Request, limit: int = MAX_REQUEST_BYTES, seconds: float = BODY_SECONDS) -> bytes:
    """The request body, read as it arrives: 413 as soon as it passes `limit` (whatever
    Content-Length said, chunked or not), 408 when it is not all there after `seconds`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPException(status_code=413, detail=f"request body over {limit} bytes")
        except ValueError:
            raise HTTPException(status_code=400, detail="bad Content-Length") from None
    chunks, size = [], 0
    end = time.monotonic() + seconds
    stream = request.stream().__aiter__()
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise HTTPException(status_code=408, detail=f"the request body did not arrive within {seconds:g} s")
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=left)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise HTTPException(status_code=408, detail=f"the request body did not arrive within {seconds:g} s") from None
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _field_error(e: Exception) -> str:
    """pydantic 1 and 2 both offer errors(): name the field."""
    try:
        err = e.errors()[0]  # type: ignore[attr-defined]
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        return f"field '{loc}': {err.get('msg', 'invalid')}"
    except Exception:  # noqa: BLE001 - not a validation error
        return f"bad request body: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}"


def json_object(body: bytes, fields: str) -> dict:
    """The body as a JSON object; 422 saying what it is not (`fields`: what the object holds)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise HTTPException(status_code=422, detail=f"the body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise HTTPException(status_code=422, detail=f"the body must be a JSON object with {fields}")
    return data


def parse_check_request(body: bytes) -> CheckRequest:
    data = json_object(body, "the field 'image'")
    try:
        return CheckRequest(**data)
    except Exception as e:  # noqa: BLE001 - pydantic 1 and 2 raise different types
        raise HTTPException(status_code=422, detail=_field_error(e)) from None


#: Largest accepted body of a pack's download or build (its choices: a path of 4,096 characters at most).
MAX_CHOICES_BYTES = 16 * 1024


def parse_choices(body: bytes):
    """A download's body as the recipe choices the tab offers (registry/recipe_choices.RecipeChoices,
    whose rule checks them): none when the body is empty; a null field is one not given. 422 naming the
    field for anything else."""
    from dataclasses import fields

    from lib_replicheck.registry.recipe_choices import ChoiceError, RecipeChoices

    if not body.strip():
        return None
    names = [f.name for f in fields(RecipeChoices)]
    data = json_object(body, f"the fields {', '.join(names)} (each optional)")
    unknown = [k for k in data if k not in names]
    if unknown:
        raise HTTPException(status_code=422, detail=f"field {unknown[0][:40]!r}: unknown; a download takes "
                                                    f"{', '.join(names)}")
    try:
        return RecipeChoices(**{k: v for k, v in data.items() if v is not None})
    except ChoiceError as e:
        raise refused_choice(e) from None


def refused_choice(e) -> HTTPException:
    """A recipe_choices.ChoiceError as the API says it: 422, naming the body's fields."""
    return HTTPException(status_code=422, detail=e.named(lambda name: f"field '{name}'"))


def mount(app, service, settings: Callable[[], Settings], **kwargs) -> None:
    """Add the routes to `app` (a FastAPI application); see `router` for the arguments."""
    attach(app, router(service, settings, **kwargs))


def attach(app, built) -> None:
    """Put the routes of `built` (from `router`) into `app` as they are: no model or dependency is
    analysed again, so this takes microseconds however busy the web UI is while it starts."""
    app.router.routes.extend(built.routes)
    app.openapi_schema = None  # /docs lists them too


def router(service, settings: Callable[[], Settings], *, api_auth: Optional[str] = None,
           platform: str = "", unsupported: Optional[List[str]] = None, manager=None, measure=None,
           on_poll: Optional[Callable[[], None]] = None, audits=None, server: Optional[ServerAddress] = None):
    """The /replicheck/v1 routes as a FastAPI APIRouter, built ahead of the app that will serve them.

    `server`: where the web UI is served (its --listen, --server-name, --share, --ngrok; default:
    this machine only), which with the allow-list decides the host names requests may name.

    `manager`: a PackManager for the pack routes; `measure(prompt, seed) -> magnitude`: the
    memorization signal of one generation with the loaded model, for the calibration route;
    `on_poll()`: run before /live answers (closes the job of a generation that failed); `audits`: an
    audits.AuditJobs whose folder checks (started in the tab) are read at /audits/ID and whose reports,
    only those, are served at /audits/ID/report."""
    from fastapi import APIRouter

    from lib_replicheck import __version__
    from lib_replicheck.errors import ReplicheckError
    from lib_replicheck.report import verdict_label
    from lib_replicheck.webui.panel import render

    server = server or ServerAddress()
    read_guard, change_guard, check_guard = guards(
        api_auth, lambda host: refusal(host, server, allow_list(settings().allowed_hosts)))
    read_deps, change_deps, check_deps = [Depends(read_guard)], [Depends(change_guard)], [Depends(check_guard)]
    slots = _Slots(MAX_CHECKS_IN_FLIGHT)
    decoder = ThreadPoolExecutor(max_workers=MAX_DECODES, thread_name_prefix="replicheck-decode")

    def _resolve_packs(s: Settings, requested: Optional[List[str]]) -> None:
        """A pack the request names must be installed (404 naming it). The server's own state (no
        pack installed, packs chosen in Settings missing) gives a 'not checked' report saying so."""
        if requested is None:
            return
        installed = {p.name for p in service.installed()}
        missing = [n for n in requested if n not in installed]
        if missing:
            raise HTTPException(status_code=404, detail=f"pack(s) not installed: {', '.join(map(str, missing))}"
                                                        f" (installed: {', '.join(sorted(installed)) or 'none'})")
        s.packs = list(requested)

    async def check(request: Request) -> ReportModel:
        sem = slots.sem()
        try:
            await asyncio.wait_for(sem.acquire(), timeout=SLOT_WAIT_SECONDS)
        except asyncio.TimeoutError:
            raise HTTPException(status_code=503, detail="too many checks at once; try again",
                                headers={"Retry-After": "5"}) from None
        try:
            req = parse_check_request(await read_body(request))
            s = settings()
            _resolve_packs(s, req.packs)
            if req.top_k is not None:
                s.top_k = max(1, min(50, int(req.top_k)))
            if req.regions is not None:
                try:
                    s.regions = check_mode(req.regions)
                except ReplicheckError as e:
                    raise HTTPException(status_code=422, detail=str(e)) from None
            loop = asyncio.get_running_loop()
            try:
                image = await loop.run_in_executor(decoder, decode_image, req.image)
            except ValueError as e:
                raise HTTPException(status_code=422, detail=str(e)) from None
            report = (await loop.run_in_executor(None, service.check, [image], ["image"], s))[0]
            return report_model(report)
        finally:
            sem.release()

    def packs(refresh: bool = False) -> PacksResponse:
        """Installed packs; with a manager, also the registries' packs (read now if refresh=true:
        one registry that cannot be read is reported in registry_errors, never a 500)."""
        installed = [pack_model(p, service) for p in service.installed()]
        if manager is None:
            return PacksResponse(installed=installed, packs_dir=str(service.packs_dir))
        names = {p.name for p in installed if not p.error}
        return PacksResponse(
            installed=installed, packs_dir=str(service.packs_dir), registries=manager.registries(),
            available=[AvailableModel(**p.to_dict(), installed=p.name in names) for p in manager.available],
            registry_errors=list(manager.errors), downloads=[DownloadModel(**j.to_dict()) for j in manager.jobs.values()])

    def refresh_packs() -> PacksResponse:
        manager.refresh()
        return packs()

    def packs_route(request: Request, refresh: bool = False) -> PacksResponse:
        if refresh and manager is not None:
            change_guard(request)  # reading the registries goes to the network: not for other sites' pages
            return refresh_packs()
        return packs()

    def _act(fn, name: str, done: str) -> MessageResponse:
        try:
            fn(name)
        except ReplicheckError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None
        return MessageResponse(ok=True, message=done)

    async def download(name: str, request: Request) -> DownloadModel:
        """A pack's download, or a recipe's build with the choices in the JSON body (accept_unpinned,
        sample, list_path: as the tab's Build takes them); 422 names a field that is wrong or needed."""
        from lib_replicheck.registry.recipe_choices import ChoiceError

        choices = parse_choices(await read_body(request, limit=MAX_CHOICES_BYTES))
        try:  # in a thread: the first one reads the registries
            job = await asyncio.get_running_loop().run_in_executor(None, manager.start_download, name, choices)
        except ChoiceError as e:
            raise refused_choice(e) from None
        except ReplicheckError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None
        return DownloadModel(**job.to_dict())

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
        if on_poll is not None:
            try:
                on_poll()
            except Exception:  # noqa: BLE001 - the panel must keep answering
                pass
        seq = service.live.seq
        job = service.live.get(tab)
        if job is None:
            return LiveResponse(seq=seq)
        n = max(job.expected, max(job.reports, default=-1) + 1)
        reports = [job.reports.get(i) for i in range(n)]
        verdicts = [verdict_label(r) if r is not None else None for r in reports]
        html = None
        prompt_hits = list(getattr(job, "prompt_hits", None) or [])
        if since != seq:
            html = render(job.reports, state=job.state, message=job.message, input_reports=job.input_reports,
                          remote=settings().remote_thumbnails, signals=job.signals, expected=job.expected,
                          prompt_hits=prompt_hits, prompt_error=getattr(job, "prompt_error", "") or "",
                          sign_error=getattr(job, "sign_error", "") or "")
        return LiveResponse(seq=seq, job=job.id, state=job.state, expected=job.expected, verdicts=verdicts,
                            flagged=[r is not None and r.flagged() for r in reports], html=html,
                            signals={str(i): sig.to_dict() for i, sig in job.signals.items()},
                            prompt_hits=[m.to_dict() for m in prompt_hits])

    def calibrate(req: CalibrateRequest) -> CalibrateResponse:
        from lib_replicheck.memorization.calibration import calibrate as run

        try:
            return CalibrateResponse(**run(req.memorized, req.ordinary, measure, fpr=req.fpr, seed=req.seed,
                                           generations=max(1, min(8, req.generations))))
        except ReplicheckError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None

    def audit_status(job_id: str) -> dict:
        from lib_replicheck.webui.audits import REPORT_ROUTE

        job = audits.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail="no such folder check (the web UI keeps the last few)")
        return {**job.to_dict(), "report": REPORT_ROUTE.format(id=job.id) if job.report else None}

    def audit_report(job_id: str):
        from fastapi.responses import FileResponse

        from lib_replicheck.html_report import csp

        path = audits.report_file(job_id)
        if path is None:
            raise HTTPException(status_code=404, detail="no such report (the web UI keeps the last few)")
        return FileResponse(path, media_type="text/html; charset=utf-8", headers={
            "Content-Security-Policy": csp(), "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"})

    app = APIRouter()
    if audits is not None:
        app.add_api_route(f"{PREFIX}/audits/{{job_id}}", audit_status, methods=["GET"], dependencies=read_deps)
        app.add_api_route(f"{PREFIX}/audits/{{job_id}}/report", audit_report, methods=["GET"], dependencies=read_deps)
    if measure is not None:
        app.add_api_route(f"{PREFIX}/calibrate", calibrate, methods=["POST"], response_model=CalibrateResponse,
                          dependencies=change_deps)
    app.add_api_route(f"{PREFIX}/check", check, methods=["POST"], response_model=ReportModel, dependencies=check_deps)
    app.add_api_route(f"{PREFIX}/packs", packs_route, methods=["GET"], response_model=PacksResponse,
                      dependencies=read_deps)
    app.add_api_route(f"{PREFIX}/status", status, methods=["GET"], response_model=StatusResponse, dependencies=read_deps)
    app.add_api_route(f"{PREFIX}/live", live, methods=["GET"], response_model=LiveResponse, dependencies=read_deps)
    if manager is not None:
        app.add_api_route(f"{PREFIX}/packs/{{name}}/download", download, methods=["POST"],
                          response_model=DownloadModel, dependencies=change_deps)
        app.add_api_route(f"{PREFIX}/downloads", downloads, methods=["GET"], response_model=List[DownloadModel],
                          dependencies=read_deps)
        app.add_api_route(f"{PREFIX}/downloads/{{name}}/cancel", cancel, methods=["POST"],
                          response_model=MessageResponse, dependencies=change_deps)
        app.add_api_route(f"{PREFIX}/packs/{{name}}/verify", verify, methods=["POST"], response_model=MessageResponse,
                          dependencies=change_deps)
        app.add_api_route(f"{PREFIX}/packs/{{name}}", remove, methods=["DELETE"], response_model=MessageResponse,
                          dependencies=change_deps)
    return app


