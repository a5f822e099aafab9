"""A real HTTP server on 127.0.0.1 that serves files with Range support, and misbehaves on request.

Each path can be given a fault: drop the connection mid-file (once, or always), ignore Range,
announce more bytes than it has, answer a status (a sequence of them, e.g. 503 then 200), loop
redirects (or `redirect` to `location`), stall after the headers, serve a corrupted copy, send an
endless body without a length (`endless`: the body repeated up to `limit` bytes), or trickle one
byte every `stall` seconds (`trickle`; `slow-headers`: the headers so). Every request is logged;
`sent` counts the body bytes written.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes
    fault: str = ""  # comma-separated: drop-once, drop-always, no-range, bigger, status, redirect-loop, stall, corrupt
    statuses: list[int] = field(default_factory=list)  # for "status": answered in turn, then 200
    stall: float = 5.0
    hits: int = 0
    limit: int = 256 * 1024 * 1024  # "endless": where the server gives up
    sent: int = 0
    location: str = ""  # for "redirect": where to


class FaultServer:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.log: list[tuple[str, str]] = []  # (path, Range header)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                outer.log.append((self.path, self.headers.get("Range", "")))
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.hits += 1
                faults = set(route.fault.split(","))
                body, start = route.body, 0
                if "status" in faults and route.statuses:
                    code = route.statuses.pop(0)
                    if code != 200:
                        self.send_response(code)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                if "redirect-loop" in faults or "redirect" in faults:
                    self.send_response(302)
                    self.send_header("Location", self.path if "redirect-loop" in faults else route.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if "endless" in faults:
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    chunk = (route.body or b"\0") * max(1, 65536 // max(1, len(route.body)))
                    try:
                        while route.sent < route.limit:
                            self.wfile.write(chunk)
                            route.sent += len(chunk)
                    except OSError:
                        pass  # the client stopped reading: what it should do
                    return
                if "slow-headers" in faults:  # the status line, then a header byte every `stall` seconds
                    head = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n" + "X-Pad: " + "x" * 200
                            + "\r\n\r\n").encode()
                    try:
                        for i in range(len(head)):
                            self.wfile.write(head[i:i + 1])
                            self.wfile.flush()
                            route.sent += 1  # header bytes, here
                            time.sleep(route.stall)
                        self.wfile.write(body)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                if "trickle" in faults:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    try:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            route.sent += 1
                            time.sleep(route.stall)
                    except OSError:
                        pass
                    return
                if "corrupt" in faults:
                    body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
                m = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if m and "no-range" not in faults:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                    self.send_header("Accept-Ranges", "none" if "no-range" in faults else "bytes")
                part = body[start:]
                announced = len(part) + (1000 if "bigger" in faults else 0)
                self.send_header("Content-Length", str(announced))
                self.end_headers()
                if "stall" in faults:
                    self.wfile.write(part[:10])
                    self.wfile.flush()
                    time.sleep(route.stall)
                    return
                drop = "drop-always" in faults or ("drop-once" in faults and route.hits == 1)
                if drop:
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)
                if "bigger" in faults:
                    self.wfile.write(b"\0" * 1000)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hung up is no news here
                import sys

                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes, fault: str = "", **kw) -> str:
        self.routes[path] = Route(body, fault, **kw)
        return self.url + path

    def close(self):
        self.server.shutdown()
        self.server.server_close()
