"""A loopback HTTP proxy in front of the real registry fixture that injects link faults.

Read-only traffic (GET, HEAD) is forwarded to the registry; a fault, when set, rewrites the
answer. ``times`` limits how many answers a fault spoils (then it heals: a retry succeeds);
None spoils every one. Faults (``Proxy.fault``):

- ``truncate``: a blob answer stops after half of its bytes, the connection closed;
  ``truncate-pack``: the same for pack blob answers only;
- ``corrupt``: a byte of every pack blob answer is flipped (bytes that do not match their digest);
- ``ignore-range``: the Range header is dropped (the registry answers 200 with the whole blob);
- ``lie-range``: a Range answer says 206 and names the range asked in its Content-Range, but
  carries the bytes one further on;
- ``no-packs``: pack blobs answer 404 (the signature arrives, the packs never do);
- ``flip-tag``: each GET of the tag's manifest alternates between the registry's answer and
  the manifest of ``other_tag``.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fault: str | None = None
        self.times: int | None = None
        self.other_tag: str | None = None
        self.requests: list[tuple[str, str, str]] = []  # method, path, Range
        self.range_bytes = 0
        self.pack_digests: set[str] = set()
        self._flip = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                proxy._handle(self, "HEAD")

            def do_GET(self) -> None:
                proxy._handle(self, "GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(self, fault: str | None, times: int | None = None) -> None:
        with self._lock:
            self.fault, self.times = fault, times
            self.requests.clear()
            self.range_bytes = 0

    def _spoil(self, applies: bool) -> bool:
        with self._lock:
            if not applies or self.fault is None:
                return False
            if self.times is None:
                return True
            if self.times > 0:
                self.times -= 1
                return True
            return False

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path
        rng = h.headers.get("Range", "")
        with self._lock:
            self.requests.append((method, path, rng))
        fault = self.fault
        blob = "/blobs/sha256:" in path
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "range", "authorization")}
        if fault == "flip-tag" and method == "GET" and "/manifests/" in path and self.other_tag \
                and not path.rsplit("/", 1)[1].startswith("sha256:"):
            with self._lock:
                self._flip += 1
                if self._flip % 2 == 0:
                    path = path.rsplit("/", 1)[0] + "/" + self.other_tag
        if blob and fault == "ignore-range" and self._spoil(bool(rng)):
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        lie = blob and fault == "lie-range" and bool(rng) and self._spoil(True)
        if lie:  # ask for the bytes one further on, keep the status and say so honestly in Content-Range
            a, b = rng.removeprefix("bytes=").split("-")
            headers["Range"] = f"bytes={int(a) + 1}-{int(b) + 1}"
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read() if method == "GET" else b""
        status = resp.status
        out_headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in ("content-length", "transfer-encoding", "connection")]
        conn.close()
        if lie:
            out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-range"]
            out_headers.append(("Content-Range", f"bytes {rng.removeprefix('bytes=')}/*"))
        if blob and fault == "no-packs" and self._is_pack(path) and self._spoil(True):
            status, body, out_headers = 404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}', \
                [("Content-Type", "application/json")]
        if blob and fault == "corrupt" and method == "GET" and body and self._is_pack(path) and self._spoil(True):
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
        if blob and rng and status in (200, 206):
            self.range_bytes += len(body)
        h.send_response(status)
        for k, v in out_headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if method == "GET" else resp.getheader("Content-Length", "0")))
        h.end_headers()
        if method != "GET":
            return
        if blob and (fault == "truncate" or fault == "truncate-pack" and self._is_pack(path)) and len(body) > 1 \
                and self._spoil(True):
            h.wfile.write(body[:len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            try:
                h.connection.shutdown(2)
            except OSError:
                pass
            return
        h.wfile.write(body)

    def _is_pack(self, path: str) -> bool:
        return path.split("/blobs/")[1] in self.pack_digests

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
