"""``ferry serve``: a read-only OCI distribution endpoint over the edge's layout ``EDGE/oci``.

A site without a registry lets its nodes pull what ferry imported (images, models) straight
from the layout. The HTTP layer is uvicorn (an ASGI server: HTTP/1.1 framing, keep-alive,
TLS, and write back-pressure, so that a slow client holds a socket and a chunk or two, never a
blob); this module is the ASGI application and the rules of what may be served.

What may be served (never anything else):

- Only files named ``blobs/sha256/<64 hex>`` below the layout, opened through folder
  descriptors with ``O_NOFOLLOW`` (a symbolic link anywhere below the layout is refused) and
  only when a regular file. No request text becomes a path: the route grammar
  (:func:`manifests.distribution.parse_route`) admits a checked sha256 digest only.
- Only digests that a repository's tags reach (:func:`manifests.distribution.build_catalog`).
- Only bytes whose sha256 is their name: manifests are hashed on every read; a blob is hashed
  in full before its first byte goes out, and again whenever the file's identity
  (device, inode, size, mtime, ctime) changes. A mismatch is answered 404 ``BLOB_UNKNOWN``
  and logged; the layout is then damaged and ``ferry import`` of the same bundle repairs it.

Blobs are streamed from an open descriptor in 512 KiB reads (:data:`CHUNK`) in worker threads,
so the event loop never waits on a disk and memory stays flat for any number of pulls.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import hmac
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from manifests.distribution import (Repository, RangeNotSatisfiable, Route, RouteError, build_catalog,
                                    error_body, parse_range, parse_route, referrers_index, tags_page)
from manifests.errors import FerryError, FormatError, PlaceError, UsageError
from manifests.oci import MAX_MANIFEST_BYTES, is_loopback_host

#: Bytes read from a blob file per step of a response.
CHUNK = 512 << 10
#: Most connections served at once; more are answered 503 by uvicorn.
MAX_CONNECTIONS = 512
#: Most bytes of a --token-file or --basic-auth-file (a few lines of secrets).
MAX_SECRET_FILE_BYTES = 1 << 20

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class BlobDamaged(Exception):
    """A file in the layout does not hash to its name."""


# --------------------------------------------------------------------------- the layout


class LayoutView:
    """Read-only, link-refusing access to one OCI layout folder, with a verified-blob cache."""

    def __init__(self, root: Path) -> None:
        """Open ``root`` (the layout folder).

        Raises:
            PlaceError (``state``) when the layout is missing or not one.
        """
        from importer.state import open_dir

        self.root = root
        try:
            self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            raise PlaceError("state", str(root), f"edge state {root.parent}: no OCI layout {root.name}/ to serve; "
                             "import images or models without --registry first") from None
        try:
            self.blobs_fd = open_dir(self.root_fd, "blobs/sha256")
        except (OSError, FerryError):
            os.close(self.root_fd)
            raise PlaceError("state", str(root), f"edge state {root.parent}: {root} is not an OCI layout "
                             "(no blobs/sha256 folder, or it is a link)") from None
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[int, ...]] = {}
        self._catalog: tuple[tuple[int, ...], dict[str, Repository]] | None = None
        self._hashing: dict[str, asyncio.Lock] = {}

    def close(self) -> None:
        os.close(self.blobs_fd)
        os.close(self.root_fd)

    # -- files

    def open_blob(self, digest: str) -> tuple[int, os.stat_result]:
        """An open descriptor and its stat for blob ``digest`` (a checked ``sha256:<hex>``).

        Raises:
            FileNotFoundError: absent, a link, or not a regular file.
        """
        hexpart = digest.split(":", 1)[1]
        try:
            fd = os.open(hexpart, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=self.blobs_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.ENXIO, errno.EISDIR):
                raise FileNotFoundError(digest) from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FileNotFoundError(digest)
        os.set_blocking(fd, True)
        return fd, st

    def read_manifest(self, digest: str) -> bytes:
        """A manifest's bytes, checked against ``digest`` (at most 4 MiB).

        Raises:
            FileNotFoundError: absent or not a regular file; FormatError: too big or damaged.
        """
        fd, st = self.open_blob(digest)
        try:
            if st.st_size > MAX_MANIFEST_BYTES:
                raise FormatError(f"manifest {digest} is over {MAX_MANIFEST_BYTES} bytes")
            data = os.pread(fd, MAX_MANIFEST_BYTES + 1, 0)
        finally:
            os.close(fd)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            _log(f"layout damaged: manifest {digest} does not match its digest")
            raise FormatError(f"manifest {digest} does not match its digest")
        return data

    def catalog(self) -> dict[str, Repository]:
        """The repositories ``index.json`` names now (rebuilt when the file changes)."""
        try:
            fd = os.open("index.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.root_fd)
        except OSError:
            return {}
        try:
            st = os.fstat(fd)
            key = _identity(st)
            with self._lock:
                if self._catalog is not None and self._catalog[0] == key:
                    return self._catalog[1]
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
                return {}
            data = os.pread(fd, MAX_MANIFEST_BYTES + 1, 0)
        finally:
            os.close(fd)
        try:
            repos = build_catalog(data, self.read_manifest)
        except FormatError as exc:
            _log(f"layout damaged: {exc}")
            repos = {}
        with self._lock:
            self._catalog = (key, repos)
        return repos

    async def verify_blob(self, digest: str, fd: int, st: os.stat_result) -> None:
        """Hash the open blob unless this very file was hashed before; one hash at a time per
        digest however many clients ask at once.

        Raises:
            BlobDamaged: the content does not match ``digest``.
        """
        key = _identity(st)
        if self._verified.get(digest) == key:
            return
        lock = self._hashing.setdefault(digest, asyncio.Lock())
        async with lock:
            if self._verified.get(digest) == key:
                return
            got = await asyncio.get_running_loop().run_in_executor(None, _sha256_fd, fd, st.st_size)
            if got != digest:
                _log(f"layout damaged: blob {digest} does not match its digest (got {got})")
                raise BlobDamaged(digest)
            self._verified[digest] = key


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _sha256_fd(fd: int, size: int) -> str:
    sha = hashlib.sha256()
    offset = 0
    while offset < size:
        data = os.pread(fd, min(4 * CHUNK, size - offset), offset)
        if not data:
            break
        sha.update(data)
        offset += len(data)
    return "sha256:" + sha.hexdigest()


def _log(message: str) -> None:
    sys.stderr.write(f"ferry serve: {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- authentication


@dataclass(frozen=True)
class Auth:
    """Who may pull: nobody asked (both empty), or a bearer token, or basic users, or both.

    ``basic`` maps user -> password; ``token`` is the one bearer token.
    """

    token: str | None = None
    basic: dict[str, str] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        return bool(self.token or self.basic)

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header value grants a pull (constant-time compares)."""
        if not self.required:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme.lower() == "basic" and self.basic:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            expected = self.basic.get(user)
            return bool(sep) and expected is not None and hmac.compare_digest(password.encode(), expected.encode())
        return False

    def challenges(self) -> list[tuple[bytes, bytes]]:
        """``WWW-Authenticate`` headers for a 401 (spec: "Authentication")."""
        out = []
        if self.basic:
            out.append((b"www-authenticate", b'Basic realm="ferry serve"'))
        if self.token:
            out.append((b"www-authenticate", b'Bearer realm="ferry serve",service="ferry"'))
        return out


def load_auth(token_file: Path | None, basic_file: Path | None) -> Auth:
    """Credentials from files an operator keeps (a mounted secret, say).

    Args:
        token_file: a file whose first line is the bearer token, or None.
        basic_file: a file of ``USER:PASSWORD`` lines, or None.
    Raises:
        UsageError: a file is not UTF-8, empty, or has a line without ``:``. PlaceError: a file is
        missing or unreadable (``token file PATH: not found``, manifests.bundle.not_found).
    """
    token = None
    basic: dict[str, str] = {}
    if token_file is not None:
        lines = _read_secret(token_file, "--token-file")
        token = lines[0]
    if basic_file is not None:
        for i, line in enumerate(_read_secret(basic_file, "--basic-auth-file"), 1):
            user, sep, password = line.partition(":")
            if not sep or not user or not password:
                raise UsageError(f"--basic-auth-file {basic_file}: line {i} is not USER:PASSWORD")
            basic[user] = password
    return Auth(token, basic)


def _read_secret(path: Path, option: str) -> list[str]:
    from manifests.bundle import read_bounded

    what = option.removeprefix("--").replace("-file", " file")  # --token-file: "token file"
    data = read_bounded(path, MAX_SECRET_FILE_BYTES, what, place="source")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"{option} {path}: the file is empty")
    return lines


# --------------------------------------------------------------------------- the ASGI app


class RegistryApp:
    """The ASGI application: GET and HEAD of the distribution API's pull side."""

    def __init__(self, layout: LayoutView, auth: Auth) -> None:
        self.layout, self.auth = layout, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        started = False

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._http(scope, tracked)
        except Exception as exc:  # noqa: BLE001 - one line in the log, never a traceback
            _log(f"{scope.get('method')} {str(scope.get('path', ''))[:200]!r}: {type(exc).__name__}: {exc}")
            if not started:
                await _error(send, 500, "UNKNOWN", "internal error (see the ferry serve log)",
                             scope.get("method") == "HEAD")
            # once started, the body is cut short and the connection ends: never padded

    async def _http(self, scope: Scope, send: Send) -> None:
        head = scope["method"] == "HEAD"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self.auth.allows(headers.get("authorization")):
            await _error(send, 401, "UNAUTHORIZED", "authentication required", head, self.auth.challenges())
            return
        try:
            route = parse_route(scope["path"])
        except RouteError as exc:
            await _error(send, exc.status, exc.code, str(exc), head)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _error(send, 405, "UNSUPPORTED", "this registry is read-only", head,
                         [(b"allow", b"GET, HEAD")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            await self._dispatch(route, headers, query, head, send)
        except RouteError as exc:
            await _error(send, exc.status, exc.code, str(exc), head)

    async def _dispatch(self, route: Route, headers: dict[str, str], query: dict[str, list[str]],
                        head: bool, send: Send) -> None:
        if route.kind == "base":
            await _respond(send, 200, b"{}", "application/json", head)
            return
        assert route.name is not None
        loop = asyncio.get_running_loop()
        repos = await loop.run_in_executor(None, self.layout.catalog)
        repo = repos.get(route.name)
        if repo is None:
            raise RouteError(404, "NAME_UNKNOWN", "repository name not known to registry")
        if route.kind == "tags":
            try:
                doc, more = tags_page(route.name, repo.tags, _one(query, "n"), _one(query, "last"))
            except UsageError as exc:
                raise RouteError(400, "PAGINATION_NUMBER_INVALID", str(exc)) from None
            extra = []
            if more is not None:
                link = f'</v2/{route.name}/tags/list?n={len(doc["tags"])}&last={quote(more)}>; rel="next"'
                extra.append((b"link", link.encode()))
            import json

            await _respond(send, 200, json.dumps(doc).encode(), "application/json", head, extra)
            return
        assert route.reference is not None
        if route.kind == "referrers":
            artifact_type = _one(query, "artifactType")
            body = referrers_index(repo.referrers.get(route.reference, []), artifact_type)
            extra = [(b"oci-filters-applied", b"artifactType")] if artifact_type else []
            await _respond(send, 200, body, "application/vnd.oci.image.index.v1+json", head, extra)
            return
        if route.kind == "manifest":
            digest = repo.tags.get(route.reference, route.reference)
            media_type = repo.manifests.get(digest)
            if media_type is None:
                raise RouteError(404, "MANIFEST_UNKNOWN", "manifest unknown to registry")
            try:
                data = await loop.run_in_executor(None, self.layout.read_manifest, digest)
            except (FileNotFoundError, FormatError):
                raise RouteError(404, "MANIFEST_UNKNOWN", "manifest missing or damaged in the layout") from None
            await _respond(send, 200, data, media_type, head, [(b"docker-content-digest", digest.encode())])
            return
        await self._blob(route.reference, repo, headers.get("range"), head, send)

    async def _blob(self, digest: str, repo: Repository, range_header: str | None, head: bool, send: Send) -> None:
        if digest not in repo.blobs and digest not in repo.manifests:
            raise RouteError(404, "BLOB_UNKNOWN", "blob unknown to registry")
        try:
            fd, st = self.layout.open_blob(digest)
        except FileNotFoundError:
            raise RouteError(404, "BLOB_UNKNOWN", "blob missing from the layout") from None
        try:
            try:
                await self.layout.verify_blob(digest, fd, st)
            except BlobDamaged:
                raise RouteError(404, "BLOB_UNKNOWN", "blob damaged in the layout (content does not match its digest)") from None
            size = st.st_size
            common = [(b"docker-content-digest", digest.encode()), (b"accept-ranges", b"bytes"),
                      (b"content-type", b"application/octet-stream"),
                      (b"docker-distribution-api-version", b"registry/2.0")]
            try:
                wanted = parse_range(range_header, size)
            except RangeNotSatisfiable as exc:
                await _error(send, 416, "RANGE_INVALID", str(exc), head,
                             [(b"content-range", f"bytes */{size}".encode())])
                return
            if wanted is None:
                first, last, status = 0, size - 1, 200
                extra = common
            else:
                first, last = wanted
                status = 206
                extra = [*common, (b"content-range", f"bytes {first}-{last}/{size}".encode())]
            length = last - first + 1 if size else 0
            await send({"type": "http.response.start", "status": status,
                        "headers": [*extra, (b"content-length", str(length).encode())]})
            if head or length == 0:
                await send({"type": "http.response.body", "body": b""})
                return
            loop = asyncio.get_running_loop()
            offset, end = first, last + 1
            while offset < end:
                data = await loop.run_in_executor(None, os.pread, fd, min(CHUNK, end - offset), offset)
                if not data:  # the file shrank under us: end the connection, never pad
                    raise ConnectionAbortedError(f"blob {digest} shrank while being served")
                offset += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": offset < end})
        finally:
            os.close(fd)


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


async def _respond(send: Send, status: int, body: bytes, content_type: str, head: bool,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"docker-distribution-api-version", b"registry/2.0"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _error(send: Send, status: int, code: str, message: str, head: bool,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, status, error_body(code, message), "application/json", head, extra)


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class Listen:
    """Where to listen: ``host`` (a name or address, IPv6 without brackets) and ``port``."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    def url(self, tls: bool) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if tls else 'http'}://{host}:{self.port}"


def parse_listen(text: str) -> Listen:
    """``HOST:PORT`` or ``[IPV6]:PORT`` (port 0 picks a free one).

    Raises:
        UsageError: anything else.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535 or len(port) > 5 or any(
            c.isspace() or c in "/[]" for c in host):
        raise UsageError(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:5000 or [::1]:5000)")
    return Listen(host, int(port))


def check_transport(listen: Listen, tls_cert: Path | None, tls_key: Path | None, plain_http: bool) -> None:
    """Refuse what would expose the layout unintentionally.

    Raises:
        UsageError: only one of cert and key; plain HTTP beyond loopback without the explicit
            ``--plain-http``; ``--plain-http`` together with TLS. PlaceError: a TLS file is missing.
    """
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    from manifests.bundle import not_found

    for what, path in (("TLS certificate", tls_cert), ("TLS key", tls_key)):
        if path is not None and not path.exists():
            raise PlaceError("source", str(path), not_found(what, path))
    tls = tls_cert is not None
    if tls and plain_http:
        raise UsageError("--plain-http and --tls-cert exclude each other")
    if not tls and not listen.loopback and not plain_http:
        raise UsageError(f"--listen {listen.host}:{listen.port} is beyond loopback: give --tls-cert and "
                         "--tls-key, or --plain-http to serve unencrypted on the network on purpose")


def bind(listen: Listen) -> socket.socket:
    """A listening socket for ``listen``.

    Raises:
        UsageError: the address cannot be bound (in use, not local, not resolvable).
    """
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--listen {listen.host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--listen {listen.host}:{listen.port}: cannot listen there ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopping gracefully on SIGINT/SIGTERM without re-raising them
        afterwards (uvicorn does, which would turn a requested stop into a failure)."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def serve(layout_dir: Path, sock: socket.socket, *, auth: Auth, tls_cert: Path | None = None,
          tls_key: Path | None = None, access_log: bool = False,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve ``layout_dir`` on the bound ``sock`` until SIGINT/SIGTERM.

    Args:
        layout_dir: the OCI layout (``EDGE/oci``).
        sock: from :func:`bind`.
        auth: who may pull (:func:`load_auth`).
        tls_cert, tls_key: PEM files, both or neither.
        access_log: log each request on stderr.
        on_ready: called once the server accepts connections.
    Raises:
        FerryError: no layout there; UsageError: TLS files unreadable.
    """
    import ssl

    import uvicorn

    view = LayoutView(layout_dir)
    try:
        config = uvicorn.Config(RegistryApp(view, auth), log_level="info" if access_log else "error", access_log=access_log,
                                lifespan="off", limit_concurrency=MAX_CONNECTIONS, server_header=False,
                                ssl_certfile=str(tls_cert) if tls_cert else None,
                                ssl_keyfile=str(tls_key) if tls_key else None)
        try:
            config.load()
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--tls-cert/--tls-key: cannot load them ({getattr(exc, 'strerror', None) or exc})") from None
        server = _server_class()(config)

        async def main() -> None:
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            if server.started and on_ready is not None:
                on_ready()
            await task

        asyncio.run(main())
    finally:
        view.close()
