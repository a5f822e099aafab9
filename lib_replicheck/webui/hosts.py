"""Which host names a request to /replicheck/v1 may be addressed to: the defence against DNS rebinding.

A page of evil.example can have the browser resolve evil.example to 127.0.0.1 once it is loaded:
its requests then reach the web UI as same-origin requests of evil.example (Origin and Host both
`evil.example:PORT`), with any header it likes, and it reads the answers. What gives them away is
the Host header: a name the web UI is not served under. A request is answered when its Host is
- a loopback name or address: localhost, *.localhost, 127.0.0.0/8, ::1 (always);
- the name or address given with --server-name;
- when the web UI listens beyond this machine (--listen, or --server-name 0.0.0.0 / ::): an IP
  address (a page can reach an address only by that address, which no one can rebind; it may be
  the machine's own or that of a port mapping in front of it), or this machine's host name
  (NAME and NAME.local);
- with --share, gradio's share links (*.gradio.live); with --ngrok, ngrok's (*.ngrok-free.app,
  *.ngrok.app, *.ngrok.io, *.ngrok-free.dev, *.ngrok.dev);
- on the allow-list: Settings -> Replicheck -> "Allowed host names", or $REPLICHECK_ALLOWED_HOSTS,
  comma-separated names, `*.example.org` for every name under example.org, `*` for any (a reverse
  proxy's public name, a name on the local network).
Nothing here does a DNS lookup: the check costs no network and never waits.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional
from urllib.parse import urlsplit

ENV = "REPLICHECK_ALLOWED_HOSTS"
SHARE_SUFFIXES = (".gradio.live",)
NGROK_SUFFIXES = (".ngrok-free.app", ".ngrok.app", ".ngrok.io", ".ngrok-free.dev", ".ngrok.dev")
ANY_ADDRESS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class ServerAddress:
    """Where the web UI is served, from its command line options (AUTOMATIC1111, Forge and SD.Next
    share them): --listen, --server-name, --share, --ngrok."""

    listen: bool = False
    server_name: Optional[str] = None
    share: bool = False
    ngrok: bool = False

    @classmethod
    def from_cmd_opts(cls, cmd_opts) -> "ServerAddress":
        return cls(listen=bool(getattr(cmd_opts, "listen", False)),
                   server_name=str(getattr(cmd_opts, "server_name", None) or "") or None,
                   share=bool(getattr(cmd_opts, "share", False)), ngrok=bool(getattr(cmd_opts, "ngrok", None)))

    @property
    def bound(self) -> Optional[str]:
        """The address gradio binds, as the web UI chooses it: --server-name, else 0.0.0.0 with
        --listen, else loopback (None)."""
        if self.server_name:
            return self.server_name.strip("[]").lower()
        return "0.0.0.0" if self.listen else None

    @property
    def public(self) -> bool:
        return self.bound in ANY_ADDRESS


def host_name(header: Optional[str]) -> Optional[str]:
    """The name or address of a Host header ('evil.example:8000', '[::1]:7860'), lowercase, without
    port or trailing dot; None when it is missing or not a host."""
    if not header or len(header) > 300 or any(c in header for c in "/\\?#@ \t"):
        return None
    try:
        parts = urlsplit("//" + header)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return None
    name = (parts.hostname or "").rstrip(".")
    return name or None


def _address(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):  # browsers resolve these to loopback themselves
        return True
    ip = _address(name)
    return ip is not None and (ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback))


@lru_cache(maxsize=1)
def own_names() -> frozenset:
    """This machine's host name, as a name on the local network may give it (no DNS lookup)."""
    name = socket.gethostname().lower().rstrip(".")
    short = name.split(".")[0]
    return frozenset(n for n in (name, short, f"{short}.local") if n)


def allow_list(setting: Iterable[str] = ()) -> list[str]:
    """The allow-list: the setting's names and those of $REPLICHECK_ALLOWED_HOSTS."""
    names = list(setting) + os.environ.get(ENV, "").split(",")
    return [n.strip().lower().rstrip(".") for n in names if n.strip()]


def _listed(name: str, allowed: Iterable[str]) -> bool:
    for entry in allowed:
        if entry == "*" or entry == name or (entry.startswith("*.") and name.endswith(entry[1:])):
            return True
    return False


def refusal(header: Optional[str], server: ServerAddress, allowed: Iterable[str] = ()) -> Optional[str]:
    """Why a request whose Host header is `header` is refused, or None when the web UI is served
    under that name."""
    name = host_name(header)
    if name is None:
        return "request refused: it names no valid host (Host header)"
    if _loopback(name) or name == server.bound or _listed(name, allowed):
        return None
    if server.public and (_address(name) is not None or name in own_names()):
        return None
    if server.share and name.endswith(SHARE_SUFFIXES) or server.ngrok and name.endswith(NGROK_SUFFIXES):
        return None
    where = "on this machine's addresses and host name" if server.public else \
        f"on {server.bound}" if server.bound else "on this machine only (loopback)"
    return (f"request refused: the host '{name[:100]}' is not a name this web UI is served under (it listens "
            f"{where}); a page can reach it under another name only by DNS rebinding. To use that name (a "
            f"reverse proxy, a name on your network), add it to Settings -> Replicheck -> Allowed host names "
            f"or to ${ENV}")
