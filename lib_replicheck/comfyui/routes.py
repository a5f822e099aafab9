"""`GET /replicheck/v1/packs` under ComfyUI's server: the installed packs and their state.

The rule of the web UI's routes when its page has no login: a request is answered only when it
comes from ComfyUI's own page, that is same-origin (Origin and Referer, when sent, name the host
it was sent to) and carrying the `X-Replicheck-Request` header, which another site's page cannot
add without a CORS preflight that ComfyUI does not grant; and, as there, only under a host name
ComfyUI is served under (a page that reaches it by DNS rebinding is same-origin with it, but names
its own host, webui/hosts.py). The answer is built by `packs_answer`,
without aiohttp, and `add_routes` puts it on ComfyUI's route table.
"""

from __future__ import annotations

from lib_replicheck.webui import hosts
from lib_replicheck.webui.origin import CSRF_HEADER, same_origin

PACKS_ROUTE = "/replicheck/v1/packs"


def server_address(listen: str | None) -> hosts.ServerAddress:
    """Where ComfyUI serves, from its `--listen` value (127.0.0.1 by default; `--listen` alone gives
    "0.0.0.0,::"; a comma-separated list of addresses)."""
    bound = [a.strip() for a in str(listen or "").split(",") if a.strip()]
    if any(a in hosts.ANY_ADDRESS for a in bound):
        return hosts.ServerAddress(listen=True)
    return hosts.ServerAddress(server_name=bound[0] if bound else None)


def refusal(request, server: hosts.ServerAddress = hosts.ServerAddress()) -> tuple[int, str] | None:
    """(status, why) when the request may not be answered, else None."""
    wrong_host = hosts.refusal(request.headers.get("host"), server, hosts.allow_list())
    if wrong_host:
        return 403, wrong_host
    if not same_origin(request):
        return 403, "cross-site request refused: replicheck's routes only answer ComfyUI's own page"
    if not request.headers.get(CSRF_HEADER):
        return 403, f"replicheck's routes need the header '{CSRF_HEADER}: 1' (it keeps other sites' pages out)"
    return None


def packs_answer(service) -> dict:
    """Every installed pack as the web UI's packs route lists it, with whether it is loaded now."""
    from lib_replicheck.webui.api_models import pack_model

    status = service.status()
    loaded = set(status["loaded_packs"])
    rows = []
    for path in service.installed():
        model = pack_model(path, service)
        row = model.model_dump() if hasattr(model, "model_dump") else model.dict()
        row["loaded"] = path.name in loaded
        rows.append(row)
    return {"packs_dir": status["packs_dir"], "packs": rows, "loaded": status["loaded"],
            "embedders": status["embedders"], "last_error": status["last_error"]}


def add_routes(routes, service_of, listen: str | None = None) -> None:
    """Register the route on ComfyUI's `PromptServer.instance.routes` (an aiohttp RouteTableDef);
    `service_of()` gives the check service, `listen` is ComfyUI's --listen value."""
    from aiohttp import web

    server = server_address(listen)

    @routes.get(PACKS_ROUTE)
    async def replicheck_packs(request):
        refused = refusal(request, server)
        if refused:
            return web.json_response({"detail": refused[1]}, status=refused[0])
        return web.json_response(packs_answer(service_of()))


STYLE_ROUTE = "/replicheck/v1/style.css"


def add_style_route(routes, stylesheet) -> None:
    """The panel's stylesheet (the web UI's style.css), which the node's frontend links: a static file
    of the repository, as ComfyUI serves the frontend folder's files."""
    from aiohttp import web

    @routes.get(STYLE_ROUTE)
    async def replicheck_style(request):
        return web.FileResponse(stylesheet, headers={"Content-Type": "text/css"})
