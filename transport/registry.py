"""A small client for the OCI distribution API, used by the hub (pull) and the edge (push).

Why not oras-py: it downloads blobs to files and uploads from files, does not expose
manifest bytes exactly as served, HEAD of a manifest, or cross-repository mount, and ties
its auth to its own registry object. ferry needs streaming both ways (memory flat whatever
the layer size), exact manifest bytes (the digest must survive the air gap), and a one-line
error for every failure, so this speaks the API directly with ``requests``.

Transport follows Docker: plain HTTP to loopback hosts (127.0.0.0/8, ``localhost``, ``::1``);
HTTPS with certificate checks otherwise; for a host listed in ``insecure_registries``,
HTTPS without certificate checks, falling back to plain HTTP. Credentials come from the
Docker config (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``): ``auths``
entries (``auth``, ``username``/``password``, ``identitytoken``), ``credHelpers`` and
``credsStore``. Both Basic and Bearer-token challenges are answered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlencode

from manifests.errors import FerryError, RegistryError, VerificationError
from manifests.oci import ACCEPT_MANIFESTS, MAX_MANIFEST_BYTES, DigestReader, check_registry_host, is_loopback_host

if TYPE_CHECKING:
    import requests

#: Blobs up to this size are uploaded in one PUT; larger ones stream in one chunked PATCH.
MONOLITHIC_MAX = 1 << 20
_TIMEOUT = (10, 300)  # connect, read (seconds)
#: Largest answer read whole (catalog pages, tokens, error documents).
_BODY_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def _config_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        keys.insert(0, "https://index.docker.io/v1/")
    return keys


def load_credentials(host: str, config_path: Path | None = None) -> Credentials | None:
    """Credentials for ``host`` from the Docker config, or None. A broken config file is a
    clear error rather than a silent anonymous attempt."""
    path = config_path or docker_config_path()
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: cannot read the Docker config ({exc})") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: the Docker config is not a JSON object")
    keys = _config_keys(host)
    helpers: dict[str, Any] = config["credHelpers"] if isinstance(config.get("credHelpers"), dict) else {}
    for key in keys:
        if isinstance(helpers.get(key), str):
            return _from_helper(helpers[key], host)
    auths: dict[str, Any] = config["auths"] if isinstance(config.get("auths"), dict) else {}
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
            return Credentials(identity_token=entry["identitytoken"])
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"{path}: the auth entry for {key} is not base64 of user:password") from None
            return Credentials(user, password)
        if isinstance(entry.get("username"), str):
            return Credentials(entry["username"], str(entry.get("password", "")))
    if isinstance(config.get("credsStore"), str) and config["credsStore"]:
        return _from_helper(config["credsStore"], host)
    return None


def _from_helper(helper: str, host: str) -> Credentials | None:
    """Ask ``docker-credential-<helper>`` (the Docker credential-helper protocol)."""
    if not re.match(r"^[A-Za-z0-9_.-]+\Z", helper):
        raise RegistryError(f"Docker config names an invalid credential helper {helper!r}")
    try:
        done = subprocess.run([f"docker-credential-{helper}", "get"], input=host, capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        return None
    user, secret = answer.get("Username"), answer.get("Secret")
    if not isinstance(secret, str) or not secret:
        return None
    if user == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(user if isinstance(user, str) else None, secret)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Bearer realm="...",service="...",scope="..."`` -> scheme, params."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in re.finditer(r'([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))', rest)}
    return scheme.lower(), params


def _scope(repo: str | None, push: bool, mount_from: str | None) -> tuple[str, ...]:
    scopes = []
    if repo:
        scopes.append(f"repository:{repo}:{'pull,push' if push else 'pull'}")
    if mount_from:
        scopes.append(f"repository:{mount_from}:pull")
    return tuple(scopes)


@dataclass
class RegistryClient:
    """One registry host. ``calls`` counts requests by method (tests use it to prove that a
    blob already present is not uploaded again)."""

    host: str
    insecure_registries: frozenset[str] = frozenset()
    config_path: Path | None = None
    calls: dict[str, int] = field(default_factory=dict)
    _session: Any = field(default=None, repr=False)
    _base: str | None = field(default=None, repr=False)
    _verify: bool = field(default=True, repr=False)
    _creds: Credentials | None = field(default=None, repr=False)
    _creds_loaded: bool = field(default=False, repr=False)
    _basic: bool = field(default=False, repr=False)
    _tokens: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_registry_host(self.host)

    # ---- transport

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = "ferry"
            if is_loopback_host(self.host):
                self._session.trust_env = False  # no proxy between us and a loopback registry
        return self._session

    @property
    def base(self) -> str:
        """``scheme://host``, chosen on first use (see the module docstring)."""
        if self._base is None:
            if is_loopback_host(self.host):
                self._base = f"http://{self.host}"
            elif self.host in self.insecure_registries:
                self._verify = False
                self._base = f"https://{self.host}"
                try:
                    self._send("GET", "/v2/", None, False, None)
                except FerryError:
                    self._base = f"http://{self.host}"
            else:
                self._base = f"https://{self.host}"
        return self._base

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _url(self, path: str) -> str:
        return urljoin(self.base + "/", path) if not path.startswith(("http://", "https://")) else path

    def _send(self, method: str, path: str, auth: str | None, stream: bool, data: Any,
              headers: dict[str, str] | None = None) -> requests.Response:
        import requests
        import urllib3

        url = self._url(path)
        hdrs = dict(headers or {})
        if auth:
            hdrs["Authorization"] = auth
        self.calls[method] = self.calls.get(method, 0) + 1
        try:
            resp = self.session.request(method, url, headers=hdrs, data=data, stream=True,
                                        timeout=_TIMEOUT, verify=self._verify, allow_redirects=True)
            if not stream:  # small answers (JSON, errors) are read here, bounded: a registry is not trusted
                body = resp.raw.read(_BODY_LIMIT + 1, decode_content=True)
                if len(body) > _BODY_LIMIT:
                    resp.close()
                    raise RegistryError(f"registry {self.host}: {method} {path} answered more than {_BODY_LIMIT} bytes")
                resp._content = body  # what requests does when not streaming
                resp._content_consumed = True  # type: ignore[attr-defined]  # private in requests' stubs
            return resp
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"registry {self.host}: TLS failed ({_reason(exc)}); if this registry has no "
                             f"valid certificate, pass --insecure-registry {self.host}") from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise RegistryError(f"registry {self.host} is unreachable ({_reason(exc)})") from None

    def request(self, method: str, path: str, *, repo: str | None = None, push: bool = False,
                mount_from: str | None = None, stream: bool = False, data: Any = None,
                headers: dict[str, str] | None = None) -> requests.Response:
        """Send one request, answering an auth challenge once. ``data`` that is an iterator
        is only sent after auth is settled (callers start with a request that settles it)."""
        self.base  # noqa: B018 - choose the scheme first
        scopes = _scope(repo, push, mount_from)
        resp = self._send(method, path, self._auth_header(scopes), stream, data, headers)
        if resp.status_code != 401 or isinstance(data, Iterator):
            return resp
        challenge = resp.headers.get("WWW-Authenticate", "")
        resp.close()
        self._answer(challenge, scopes)
        resp = self._send(method, path, self._auth_header(scopes), stream, data, headers)
        if resp.status_code == 401 and self._basic:
            resp.close()
            raise RegistryError(f"registry {self.host} refused the credentials from the Docker config "
                             f"(run `docker login {self.host}`)")
        return resp

    # ---- auth

    def _credentials(self) -> Credentials | None:
        if not self._creds_loaded:
            self._creds = load_credentials(self.host, self.config_path)
            self._creds_loaded = True
        return self._creds

    def _auth_header(self, scopes: tuple[str, ...]) -> str | None:
        if scopes in self._tokens:
            return f"Bearer {self._tokens[scopes]}"
        creds = self._credentials()
        if self._basic and creds and creds.username is not None:
            raw = f"{creds.username}:{creds.password or ''}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        return None

    def _answer(self, challenge: str, scopes: tuple[str, ...]) -> None:
        scheme, params = parse_challenge(challenge)
        creds = self._credentials()
        if scheme == "basic":
            if not creds or creds.username is None:
                raise RegistryError(f"registry {self.host} requires a login (run `docker login {self.host}`; "
                                 "ferry reads ~/.docker/config.json)")
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"registry {self.host} asks for an authentication scheme ferry does not speak: {challenge!r}")
        wanted = list(scopes)
        if params.get("scope") and params["scope"] not in wanted:
            wanted.append(params["scope"])
        query: list[tuple[str, str]] = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in wanted]
        auth = None
        if creds and creds.identity_token:
            resp = self._send("POST", params["realm"], None, False,
                              {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                               "client_id": "ferry", **dict(query[:1]), "scope": " ".join(wanted)})
        else:
            if creds and creds.username is not None:
                auth = "Basic " + base64.b64encode(f"{creds.username}:{creds.password or ''}".encode()).decode()
            resp = self._send("GET", f"{params['realm']}?{urlencode(query)}", auth, False, None)
        if resp.status_code in (401, 403):
            who = "the credentials from the Docker config were refused" if creds else "anonymous access was refused"
            raise RegistryError(f"registry {self.host}: login failed ({who}; run `docker login {self.host}`)")
        if resp.status_code != 200:
            raise RegistryError(f"registry {self.host}: token service answered {resp.status_code}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {self.host}: token service gave no token")
        self._tokens[scopes] = token

    # ---- API

    def fail(self, resp: requests.Response, what: str) -> RegistryError:
        """The one-line error for an unexpected answer."""
        detail = ""
        try:
            errors = resp.json().get("errors") or []
            if errors and isinstance(errors[0], dict):
                detail = f": {errors[0].get('code', '')} {errors[0].get('message', '')}".rstrip()
        except (ValueError, AttributeError):
            pass
        resp.close()
        if resp.status_code in (401, 403):
            return RegistryError(f"registry {self.host}: access to {what} denied ({resp.status_code}{detail})")
        return RegistryError(f"registry {self.host}: {what} failed ({resp.status_code}{detail})")

    def ping(self) -> None:
        """Prove the registry answers the distribution API (401 counts: it is there)."""
        resp = self.request("GET", "/v2/")
        resp.close()
        if resp.status_code not in (200, 401):
            raise RegistryError(f"registry {self.host}: /v2/ answered {resp.status_code}; not an OCI registry?")

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """Exact bytes, media type and digest of ``repo:reference`` (a tag or a digest).
        The digest is computed from the bytes; a pinned reference must match it."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", repo=repo, stream=True,
                            headers={"Accept": ACCEPT_MANIFESTS})
        if resp.status_code == 404:
            resp.close()
            raise RegistryError(f"image {self.host}/{repo}:{reference} not found" if ":" not in reference
                             else f"image {self.host}/{repo}@{reference} not found")
        if resp.status_code != 200:
            raise self.fail(resp, f"manifest {repo}:{reference}")
        with resp:
            data = resp.raw.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
        if len(data) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"registry {self.host}: manifest {repo}:{reference} is over {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise VerificationError(f"registry {self.host}: manifest {repo}@{reference} does not match its digest")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return data, media_type, digest

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """The digest ``repo:reference`` resolves to, or None if there is no such manifest."""
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", repo=repo,
                            headers={"Accept": ACCEPT_MANIFESTS})
        resp.close()
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self.fail(resp, f"manifest {repo}:{reference}")
        digest = resp.headers.get("Docker-Content-Digest")
        if digest is None and reference.startswith("sha256:"):
            digest = reference
        return digest

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo)
        resp.close()
        if resp.status_code == 404:
            return False
        if resp.status_code != 200:
            raise self.fail(resp, f"blob {repo}@{digest}")
        return True

    def open_blob(self, repo: str, digest: str, size: int) -> DigestReader:
        """Stream a blob, checking its size and sha256 as it is read."""
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo, stream=True)
        if resp.status_code == 404:
            resp.close()
            raise RegistryError(f"registry {self.host}: blob {digest} of {repo} not found")
        if resp.status_code != 200:
            raise self.fail(resp, f"blob {repo}@{digest}")

        def read(n: int) -> bytes:
            try:
                return resp.raw.read(n, decode_content=False)
            except Exception as exc:  # urllib3 errors are not OSErrors: name the blob, one line
                raise RegistryError(f"registry {self.host}: reading blob {digest} of {repo} failed ({_reason(exc)})") from None

        return DigestReader(read, digest, size, f"blob {digest} of {self.host}/{repo}", close=resp.close)

    def open_range(self, repo: str, digest: str, start: int, length: int) -> RangeAnswer:
        """Bytes ``start`` .. ``start + length - 1`` of a blob, by an HTTP Range request
        (RFC 9110 section 14), as an open answer to read in parts of the caller's sizes
        (:class:`RangeAnswer`); the caller closes it (a ``with`` block).

        The bytes are not checked here (a range has no digest): the caller verifies what it
        reads (ferry checks every chunk against its signed id). A registry that answers 200
        (it ignores Range) is read from the start and the bytes before ``start`` are dropped.

        Args:
            repo: repository path; digest: ``sha256:`` of the blob; start, length: bytes (length >= 1).
        Raises:
            RegistryError: not found, a refusal, or a 206 whose Content-Range is not the range
            asked for (the registry lies about Range).
        """
        end = start + length - 1
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo, stream=True,
                            headers={"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"})
        what = f"blob {digest} of {self.host}/{repo}"
        if resp.status_code == 404:
            resp.close()
            raise RegistryError(f"registry {self.host}: blob {digest} of {repo} not found")
        if resp.status_code not in (200, 206):
            raise self.fail(resp, f"blob {repo}@{digest}")
        if resp.status_code == 206:
            got = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", resp.headers.get("Content-Range", ""))
            if not got or int(got.group(1)) != start or int(got.group(2)) != end:
                resp.close()
                raise RegistryError(f"registry {self.host}: {what}: asked for bytes {start}-{end}, the answer says "
                                    f"{resp.headers.get('Content-Range', 'no Content-Range')!r}; not trusted")

        def read(n: int) -> bytes:
            try:
                return resp.raw.read(n, decode_content=False)
            except Exception as exc:  # urllib3 errors are not OSErrors: one line naming the blob
                raise RegistryError(f"registry {self.host}: reading {what} failed ({_reason(exc)})") from None

        answer = RangeAnswer(read, start, length, f"registry {self.host}: {what}", close=resp.close)
        if resp.status_code == 200:
            answer.skip_head(start)
        return answer

    def tags(self, repo: str) -> list[str]:
        """The tags of ``repo`` (``GET /v2/REPO/tags/list``, following ``Link`` pages, at most 100 pages).

        Raises RegistryError: the registry refused or is unreachable (a repository it does not
        know has no tags: an empty list)."""
        out: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list?n=1000"
        for _ in range(100):
            if path is None:
                break
            resp = self.request("GET", path, repo=repo)
            with resp:
                if resp.status_code == 404:
                    return out
                if resp.status_code != 200:
                    raise self.fail(resp, f"tags of {repo}")
                try:
                    tags = resp.json().get("tags") or []
                except (ValueError, AttributeError):
                    raise RegistryError(f"registry {self.host}: tags of {repo}: the answer is not JSON") from None
                out += [t for t in tags if isinstance(t, str)]
                link = resp.headers.get("Link", "")
                m = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
                path = m.group(1) if m else None
        return out

    def repositories(self, limit: int = 1000) -> list[str]:
        """Repositories the registry lists (first page only; empty when it will not say)."""
        resp = self.request("GET", f"/v2/_catalog?n={limit}")
        with resp:
            if resp.status_code != 200:
                return []
            try:
                repos = resp.json().get("repositories") or []
            except (ValueError, AttributeError):
                return []
        return [r for r in repos if isinstance(r, str)]

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Link a blob the registry holds under ``from_repo`` into ``repo`` without sending it."""
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?{urlencode({'mount': digest, 'from': from_repo})}",
                            repo=repo, push=True, mount_from=from_repo)
        resp.close()
        if resp.status_code == 201:
            return True
        if resp.status_code == 202 and resp.headers.get("Location"):
            self._cancel(repo, resp.headers["Location"])
            return False
        raise self.fail(resp, f"mounting {digest} into {repo}")

    def upload_blob(self, repo: str, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """Upload a blob from ``chunks``: one PUT when small, else one streamed PATCH and a
        closing PUT. The registry checks ``digest``; if ``chunks`` raises, the upload is
        cancelled and nothing is committed, and that error is raised."""
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, push=True)
        resp.close()
        if resp.status_code != 202 or not resp.headers.get("Location"):
            raise self.fail(resp, f"starting the upload of {digest} to {repo}")
        location = resp.headers["Location"]
        scopes = _scope(repo, True, None)
        failure: list[BaseException] = []

        def guarded() -> Iterator[bytes]:
            try:
                yield from chunks
            except BaseException as exc:  # keep the source's own error, not the transport's
                failure.append(exc)
                raise

        try:
            if size <= MONOLITHIC_MAX:
                body = b"".join(guarded())
                resp = self.request("PUT", _with_query(self._url(location), digest=digest), repo=repo, push=True,
                                    data=body, headers={"Content-Type": "application/octet-stream"})
            else:
                try:
                    resp = self._send("PATCH", self._url(location), self._auth_header(scopes), False, guarded(),
                                      {"Content-Type": "application/octet-stream"})
                except BaseException:
                    if failure:
                        raise failure[0] from None
                    raise
                if failure:
                    raise failure[0]
                if resp.status_code != 202:
                    raise self.fail(resp, f"uploading {digest} to {repo}")
                location = resp.headers.get("Location", location)
                # a token may expire during a long PATCH: request() answers a new challenge
                resp = self.request("PUT", _with_query(self._url(location), digest=digest), repo=repo, push=True,
                                    data=b"")
        except BaseException:
            self._cancel(repo, location)
            raise
        resp.close()
        if resp.status_code != 201:
            if resp.status_code == 400:
                raise VerificationError(f"registry {self.host} refused blob {digest} for {repo}: "
                                        "content does not match its digest")
            raise self.fail(resp, f"uploading {digest} to {repo}")

    def _cancel(self, repo: str, location: str) -> None:
        try:
            self._send("DELETE", self._url(location), self._auth_header(_scope(repo, True, None)), False, None).close()
        except FerryError:
            pass

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Store manifest bytes exactly under a tag or digest; returns (and checks) the digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", repo=repo, push=True, data=data,
                            headers={"Content-Type": media_type})
        resp.close()
        if resp.status_code not in (200, 201):
            raise self.fail(resp, f"storing manifest {digest} as {repo}:{reference}")
        served = resp.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise VerificationError(f"registry {self.host} stored manifest {repo}:{reference} as {served}, "
                                    f"not {digest}; it rewrote the bytes")
        return digest

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """Delete manifest ``repo@digest`` and so every tag naming it (distribution spec,
        "Deleting tags/manifests"; the registry collects unreferenced blobs itself).

        Returns:
            True when deleted, False when the registry held no such manifest.
        Raises:
            RegistryError: the registry does not allow deletes (405, or ``UNSUPPORTED``), or refused.
        """
        resp = self.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo, push=True)
        if resp.status_code in (200, 202):
            resp.close()
            return True
        if resp.status_code == 404:
            resp.close()
            return False
        if resp.status_code == 405:
            resp.close()
            raise RegistryError(f"registry {self.host} does not allow deletes (405 for {repo}@{digest}; "
                                "docker-registry needs storage.delete.enabled)")
        raise self.fail(resp, f"deleting manifest {repo}@{digest}")


class RangeAnswer:
    """An open answer to a Range request (:meth:`RegistryClient.open_range`): ``length`` bytes
    from blob offset ``start``, read in parts of any size. Each part is one call to ``read``
    when the answer delivers it whole (the usual case: no extra copy), else joined.

    Args:
        read: ``read(n)``: up to ``n`` bytes of the answer, b"" at its end. start, length:
            the range asked for, in bytes. label: names the answer in errors. close: closes it.
    """

    def __init__(self, read: Callable[[int], bytes], start: int, length: int, label: str,
                 close: Callable[[], None] | None = None) -> None:
        self._read, self._close, self.label = read, close, label
        self.start, self.length = start, length
        #: bytes of the range not yet read
        self.left = length
        #: bytes of the range received, a read that failed half-way included
        self.received = 0

    def _exactly(self, n: int) -> bytes:
        data = self._read(n)
        self.received += len(data)
        if len(data) == n:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            if not data:
                raise RegistryError(f"{self.label}: the answer ended {self.left - got} bytes short of the range "
                                    f"{self.start}-{self.start + self.length - 1} (truncated)")
            data = self._read(n - got)
            self.received += len(data)
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def skip_head(self, n: int, piece: int = 1 << 20) -> None:
        """Drop ``n`` bytes that come before the range (a registry that answered 200 sends the
        whole blob); raise RegistryError if the answer ends first."""
        while n:
            k = min(n, piece)
            data = self._read(k)
            if not data:
                raise RegistryError(f"{self.label}: the answer ended {n + self.left} bytes short of the range "
                                    f"{self.start}-{self.start + self.length - 1} (truncated)")
            n -= len(data)

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes of the range (``n`` <= :attr:`left`).

        Raises:
            RegistryError: the answer ended first (truncated) or the connection failed.
        """
        if n > self.left:
            raise ValueError(f"{n} bytes asked, {self.left} left in the range")
        data = self._exactly(n) if n else b""
        self.left -= n
        return data

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> RangeAnswer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _reason(exc: BaseException) -> str:
    """The innermost, most telling part of a requests/urllib3 error."""
    text = str(exc)
    m = re.search(r"IncompleteRead\((\d+) bytes read", text)
    if m:
        return f"connection lost after {m.group(1)} bytes"
    for pattern in (r"\[Errno -?\d+\] ([^'\")]+)", r"(Connection refused)", r"(timed out)", r"(Name or service not known)"):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
