"""Who may call the HTTP API: HTTP basic credentials (--api-auth), the web UI's own page (its
session, or same origin with the panel's header), and nothing from another site's page, nor from a
page that reaches the web UI under a name it is not served under (DNS rebinding, webui/hosts.py)."""

import base64
import binascii
import secrets
from typing import Callable, Optional

from fastapi import HTTPException, Request

from lib_replicheck.webui.origin import CSRF_HEADER, same_origin  # noqa: F401 - shared with ComfyUI's route


def parse_credentials(credentials_text: Optional[str]) -> dict:
    """--api-auth 'user:pass,user2:pass2' as {user: password}."""
    users = {}
    for pair in (credentials_text or "").split(","):
        user, sep, password = pair.strip().partition(":")
        if sep:
            users[user] = password
    return users


def _basic_ok(request: Request, users: dict) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return False
    try:
        user, sep, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    expected = users.get(user)
    return bool(sep) and expected is not None and secrets.compare_digest(password.encode(), expected.encode())


def _panel_header(request: Request) -> bool:
    return bool(request.headers.get(CSRF_HEADER))


def page_session(request: Request) -> bool:
    """A request from the web UI's own page: with gradio's login (--gradio-auth), its session cookie;
    without it the page is open to whoever reaches it, so a same-origin request with the panel's
    header (which no other site's page can send) stands for it."""
    app = request.scope.get("app") or getattr(request, "app", None)
    gradio_auth = getattr(app, "auth", None)
    if gradio_auth:
        tokens = getattr(app, "tokens", None) or {}
        return any(name.startswith("access-token") and value in tokens for name, value in request.cookies.items())
    return same_origin(request) and _panel_header(request)


def _unauthorized():
    return HTTPException(status_code=401, detail="Incorrect username or password",
                         headers={"WWW-Authenticate": "Basic"})


def guards(api_auth: Optional[str], host_refusal: Optional[Callable[[Optional[str]], Optional[str]]] = None):
    """FastAPI dependencies for read-only routes, changing routes and /check. `host_refusal(host)`
    says why a request addressed to `host` is refused (None: answered); every route asks it first."""
    users = parse_credentials(api_auth)

    def host(request: Request):
        why = host_refusal(request.headers.get("host")) if host_refusal is not None else None
        if why:
            raise HTTPException(status_code=403, detail=why)

    def read(request: Request):
        host(request)
        if users and not (_basic_ok(request, users) or page_session(request)):
            raise _unauthorized()

    def change(request: Request):
        host(request)
        if not same_origin(request):
            raise HTTPException(status_code=403, detail="cross-site request refused: changing routes only answer "
                                                        "requests from the web UI's own origin")
        if not _panel_header(request):
            raise HTTPException(status_code=403, detail=f"changing routes need the header '{CSRF_HEADER}: 1' "
                                                        "(it keeps other sites' pages out)")
        if users and not _basic_ok(request, users):  # the page never calls these: API clients only
            raise _unauthorized()

    def check(request: Request):
        host(request)
        if request.headers.get("origin") is not None and not same_origin(request):
            raise HTTPException(status_code=403, detail="cross-site request refused")
        kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HTTPException(status_code=415, detail="the body must be JSON (Content-Type: application/json)")
        if users and not _basic_ok(request, users):
            raise _unauthorized()

    return read, change, check


def basic_auth(credentials_text: Optional[str]):
    """A FastAPI dependency checking HTTP basic credentials 'user:pass,user2:pass2' (--api-auth)."""
    if not credentials_text:
        return None
    return guards(credentials_text)[0]
