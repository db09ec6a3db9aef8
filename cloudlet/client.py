"""The Python SDK: what the CLI, the tests and users' scripts use to talk to a cloudlet server."""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

CONFIG_PATH = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "cloudlet" / "client.toml"
DEFAULT_URL = "http://127.0.0.1:8470"


def _seg(ref: str) -> str:
    """A name or id as one URL path segment: VM names may hold '?', '#', '%' or spaces."""
    return quote(ref, safe="")


class ApiError(Exception):
    """A problem+json answer from the server."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code: str = problem.get("code", "unknown")
        self.title: str = problem.get("title", "Error")
        self.detail: str = problem.get("detail", "")
        super().__init__(f"{self.title}: {self.detail} ({self.code}, HTTP {status})")


class OperationFailed(Exception):
    def __init__(self, operation: dict[str, Any]) -> None:
        self.operation = operation
        error = operation.get("error") or {}
        self.code: str = error.get("code", "unknown")
        self.detail: str = error.get("detail", "")
        super().__init__(f"operation {operation['kind']} failed: {self.detail} ({self.code})")


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The entries that are not None."""
    return {k: v for k, v in values.items() if v is not None}


def load_client_config(path: Path = CONFIG_PATH) -> dict[str, str]:
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return {k: str(v) for k, v in data.items()}


def save_client_config(
    url: str,
    token: str,
    path: Path = CONFIG_PATH,
    *,
    refresh_token: str | None = None,
    workspace: str | None = None,
) -> None:
    """Save where and as whom to connect (mode 0600). ``token`` is an API token or the access
    token of a sign-in, whose ``refresh_token`` then renews it."""
    import json

    values = {"url": url, "token": token, "refresh_token": refresh_token, "workspace": workspace}
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps quotes strings in a way that is valid TOML for these simple values.
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if v is not None)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


class Client:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        workspace: str | None = None,
    ) -> None:
        config = load_client_config()
        self.url = (url or os.environ.get("CLOUDLET_URL") or config.get("url") or DEFAULT_URL).rstrip("/")
        self.token = token or os.environ.get("CLOUDLET_TOKEN") or config.get("token")
        # a saved sign-in renews its short-lived access token with its refresh token
        self.refresh_token = (
            config.get("refresh_token") if not (token or os.environ.get("CLOUDLET_TOKEN")) else None
        )
        self.workspace = workspace or os.environ.get("CLOUDLET_WORKSPACE") or config.get("workspace")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.workspace:
            headers["X-Cloudlet-Workspace"] = self.workspace
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, "/api/v1" + path, **kw)
        if resp.status_code == 401 and self.refresh_token and self._renew():
            resp = self.http.request(method, "/api/v1" + path, **kw)
        self._check(resp)
        return resp.json() if resp.content else None

    def _renew(self) -> bool:
        """Trade the saved refresh token for a new pair and save it; False if that fails."""
        resp = self.http.post("/api/v1/auth/refresh", json={"refresh_token": self.refresh_token})
        if resp.status_code != 200:
            return False
        pair = resp.json()
        self.token, self.refresh_token = pair["access_token"], pair["refresh_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        save_client_config(self.url, self.token, refresh_token=self.refresh_token, workspace=self.workspace)
        return True

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Sign in with a password; the client then uses the new access token."""
        pair: dict[str, Any] = self.request(
            "POST", "/auth/login", json={"username": username, "password": password}
        )
        self.token, self.refresh_token = pair["access_token"], pair["refresh_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return pair

    def wait(
        self,
        op: dict[str, Any],
        timeout: float = 600.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait for an operation to finish; raise OperationFailed if it failed."""
        deadline = time.monotonic() + timeout
        while op["status"] not in ("succeeded", "failed"):
            if on_progress:
                on_progress(op)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"operation {op['id']} still {op['status']} after {timeout:.0f}s")
            op = self.request("GET", f"/operations/{op['id']}", params={"wait": min(remaining, 2.0)})
        if on_progress:
            on_progress(op)
        if op["status"] == "failed":
            raise OperationFailed(op)
        return op

    def _op(self, method: str, path: str, wait: bool, **kw: Any) -> dict[str, Any]:
        op: dict[str, Any] = self.request(method, path, **kw)
        return self.wait(op) if wait else op

    # -- resources -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/info")
        return result

    def operations(self, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else {}
        return list(self.request("GET", "/operations", params=params)["items"])

    def images(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/images"))

    def image(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/images/{ref}")
        return result

    def import_image(
        self, name: str, source_path: str, wait: bool = True, **options: str | int | None
    ) -> dict[str, Any]:
        """Import a file on the server host. ``options``: ``format`` and the properties ``os``,
        ``min_disk`` (GiB), ``min_memory`` (MiB); the ones given are sent."""
        body = {"name": name, "source_path": source_path, **_given(options)}
        return self._op("POST", "/images", wait, json=body)

    def import_url(
        self,
        name: str,
        url: str,
        sha256: str | None = None,
        wait: bool = True,
        **options: str | int | None,
    ) -> dict[str, Any]:
        """Have the server download an image from an http(s) URL (checked against ``sha256`` when
        given). ``options`` as for ``import_image``."""
        body = {"name": name, "url": url, "sha256": sha256, **_given(options)}
        return self._op("POST", "/images", wait, json=_given(body))

    def update_image(self, ref: str, **fields: str | int | bool | None) -> dict[str, Any]:
        """Change ``os``, ``min_disk``, ``min_memory`` (None clears one) or ``public``: the keys given."""
        result: dict[str, Any] = self.request("PATCH", f"/images/{ref}", json=fields)
        return result

    def publish_instance(
        self, ref: str, name: str, wait: bool = True, **properties: str | int | None
    ) -> dict[str, Any]:
        """Make an image named ``name`` of a stopped VM's disk."""
        body = {"name": name, **_given(properties)}
        return self._op("POST", f"/instances/{_seg(ref)}/publish", wait, json=body)

    def eject(self, ref: str, wait: bool = True) -> dict[str, Any]:
        """Eject the installer ISO from a VM's CD-ROM."""
        return self._op("POST", f"/instances/{_seg(ref)}/cdrom/eject", wait)

    def upload_image(
        self, name: str, fh: BinaryIO, wait: bool = True, **options: str | int | None
    ) -> dict[str, Any]:
        def chunks() -> Iterator[bytes]:
            while chunk := fh.read(1024 * 1024):
                yield chunk

        return self._op(
            "POST",
            "/images/upload",
            wait,
            params={"name": name, **_given(options)},
            content=chunks(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=None,
        )

    def delete_image(self, ref: str, wait: bool = True) -> dict[str, Any]:
        return self._op("DELETE", f"/images/{ref}", wait)

    def networks(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/networks"))

    def network(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/networks/{ref}")
        return result

    def create_network(self, name: str, cidr: str, mode: str = "nat", wait: bool = True) -> dict[str, Any]:
        return self._op("POST", "/networks", wait, json={"name": name, "cidr": cidr, "mode": mode})

    def delete_network(self, ref: str, wait: bool = True) -> dict[str, Any]:
        return self._op("DELETE", f"/networks/{ref}", wait)

    def instances(
        self, state: str | None = None, name: str | None = None, limit: int = 1000, kind: str | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if kind:
            params["kind"] = kind
        if state:
            params["state"] = state
        if name:
            params["name"] = name
        return list(self.request("GET", "/instances", params=params)["items"])

    def instance(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/instances/{_seg(ref)}")
        return result

    def create_instance(self, wait: bool = True, **spec: Any) -> dict[str, Any]:
        return self._op("POST", "/instances", wait, json=spec)

    def action(self, ref: str, action: str, wait: bool = True) -> dict[str, Any]:
        return self._op("POST", f"/instances/{_seg(ref)}/actions/{action}", wait)

    def resize_instance(self, ref: str, wait: bool = True, **size: int | None) -> dict[str, Any]:
        """``cpus``, ``memory`` (MiB), ``disk`` (GiB): the ones given change."""
        body = {k: v for k, v in size.items() if v is not None}
        return self._op("POST", f"/instances/{_seg(ref)}/resize", wait, json=body)

    def snapshots(self, ref: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.request("GET", f"/instances/{_seg(ref)}/snapshots")
        return found

    def create_snapshot(
        self, ref: str, name: str, description: str = "", wait: bool = True
    ) -> dict[str, Any]:
        body = {"name": name, "description": description}
        return self._op("POST", f"/instances/{_seg(ref)}/snapshots", wait, json=body)

    def revert_snapshot(self, ref: str, snapshot: str, wait: bool = True) -> dict[str, Any]:
        return self._op("POST", f"/instances/{_seg(ref)}/snapshots/{_seg(snapshot)}/revert", wait)

    def delete_snapshot(self, ref: str, snapshot: str, wait: bool = True) -> dict[str, Any]:
        return self._op("DELETE", f"/instances/{_seg(ref)}/snapshots/{_seg(snapshot)}", wait)

    def rename_instance(self, ref: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("PATCH", f"/instances/{_seg(ref)}", json={"name": name})
        return found

    def apply(self, document: Any, dry_run: bool = False) -> dict[str, Any]:
        """The plan, and the apply's operation when something was to be done (not waited on)."""
        body = {"document": document, "dry_run": dry_run}
        result: dict[str, Any] = self.request("POST", "/apply", json=body)
        return result

    def clone_instance(self, ref: str, name: str, wait: bool = True, **options: Any) -> dict[str, Any]:
        """``mode`` ("linked" or "full"), ``snapshot``, ``start``, ``hostname``, ``ssh_keys``."""
        body = {"name": name, **{k: v for k, v in options.items() if v is not None}}
        return self._op("POST", f"/instances/{_seg(ref)}/clone", wait, json=body)

    # -- VM consoles -----------------------------------------------------------------------------
    def console_ticket(self, ref: str, console: str = "vnc") -> dict[str, Any]:
        """A one-time ticket (valid ~30 s) for a running VM's ``vnc`` or ``serial`` console: open
        ``ws_url(result["path"])`` offering ``ticket_protocols(result["ticket"], "binary")``."""
        result: dict[str, Any] = self.request(
            "POST", f"/instances/{_seg(ref)}/console/ticket", json={"console": console}
        )
        return result

    def type_text(self, ref: str, text: str) -> dict[str, Any]:
        """Type text on a running VM's keyboard (US layout; newline is Enter)."""
        result: dict[str, Any] = self.request(
            "POST", f"/instances/{_seg(ref)}/console/type", json={"text": text}, timeout=120
        )
        return result

    def screenshot(self, ref: str) -> bytes:
        """A running VM's screen as PNG bytes."""
        resp = self.http.get(f"/api/v1/instances/{_seg(ref)}/console/screenshot")
        if resp.status_code == 401 and self.refresh_token and self._renew():
            resp = self.http.get(f"/api/v1/instances/{_seg(ref)}/console/screenshot")
        self._check(resp)
        return resp.content

    def delete_instance(self, ref: str, force: bool = False, wait: bool = True) -> dict[str, Any]:
        return self._op("DELETE", f"/instances/{_seg(ref)}", wait, params={"force": force})

    # -- storage pools and volumes ---------------------------------------------------------------
    def storage_pools(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.request("GET", "/storage-pools")
        return found

    def storage_pool(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/storage-pools/{ref}")
        return found

    def create_storage_pool(
        self,
        name: str,
        path: str,
        kind: str = "dir",
        source_host: str | None = None,
        source_path: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """A ``dir`` pool at ``path``, or a ``netfs`` pool mounting ``source_host:source_path`` there."""
        body = {
            "name": name,
            "kind": kind,
            "path": path,
            "source_host": source_host,
            "source_path": source_path,
        }
        return self._op("POST", "/storage-pools", wait, json=body)

    def delete_storage_pool(self, ref: str, wait: bool = True) -> dict[str, Any]:
        return self._op("DELETE", f"/storage-pools/{ref}", wait)

    def volumes(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.request("GET", "/volumes")
        return found

    def volume(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/volumes/{ref}")
        return found

    def create_volume(
        self, name: str, size: int, pool: str | None = None, wait: bool = True
    ) -> dict[str, Any]:
        """An empty volume of ``size`` GiB in ``pool`` (the default pool when None)."""
        return self._op("POST", "/volumes", wait, json={"name": name, "size": size, "pool": pool})

    def resize_volume(self, ref: str, size: int, wait: bool = True) -> dict[str, Any]:
        return self._op("POST", f"/volumes/{ref}/resize", wait, json={"size": size})

    def delete_volume(self, ref: str, wait: bool = True) -> dict[str, Any]:
        return self._op("DELETE", f"/volumes/{ref}", wait)

    def instance_volumes(self, ref: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.request("GET", f"/instances/{_seg(ref)}/volumes")
        return found

    def attach_volume(self, ref: str, volume: str, wait: bool = True) -> dict[str, Any]:
        return self._op("POST", f"/instances/{_seg(ref)}/volumes", wait, json={"volume": volume})

    def detach_volume(self, ref: str, volume: str, wait: bool = True) -> dict[str, Any]:
        return self._op("DELETE", f"/instances/{_seg(ref)}/volumes/{_seg(volume)}", wait)

    # -- Dockerfile projects -----------------------------------------------------------------------
    @staticmethod
    def _project_url(name: str, path: str | None = None) -> str:
        """URL of a project or one of its files, quoted so that '#', '?' or '%' in a name stay text
        and a '.' or '..' part reaches the server (which refuses it) instead of being resolved here."""
        from urllib.parse import quote

        url = f"/projects/{quote(name, safe='')}"
        if path is None:
            return url
        parts = [p.replace(".", "%2E") if p in (".", "..") else quote(p, safe="") for p in path.split("/")]
        return f"{url}/files/{'/'.join(parts)}"

    def projects(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/projects"))

    def project(self, name: str) -> dict[str, Any]:
        """A project with its ``files``."""
        result: dict[str, Any] = self.request("GET", self._project_url(name))
        return result

    def create_project(self, name: str, dockerfile: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", "/projects", json={"name": name, "dockerfile": dockerfile}
        )
        return result

    def delete_project(self, name: str) -> None:
        self.request("DELETE", self._project_url(name))

    def project_file(self, name: str, path: str) -> bytes:
        """A file's bytes, as stored."""
        resp = self.http.request("GET", "/api/v1" + self._project_url(name, path))
        self._check(resp)
        return resp.content

    def put_project_file(self, name: str, path: str, content: bytes) -> dict[str, Any]:
        """Create or replace a file (at most 10 MiB); returns its path, size and time."""
        result: dict[str, Any] = self.request(
            "PUT",
            self._project_url(name, path),
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return result

    def delete_project_file(self, name: str, path: str) -> None:
        self.request("DELETE", self._project_url(name, path))

    # -- containers ------------------------------------------------------------------------------
    @staticmethod
    def _check(resp: httpx.Response) -> None:
        """Raise the server's problem+json (or what stands in for it) as an ApiError."""
        if resp.status_code >= 400:
            resp.read()
            try:
                problem = resp.json()
            except ValueError:
                problem = {"title": resp.reason_phrase, "detail": resp.text[:500], "code": "http_error"}
            raise ApiError(resp.status_code, problem)

    def _stream(self, path: str, params: dict[str, Any]) -> Iterator[bytes]:
        with self.http.stream("GET", "/api/v1" + path, params=params, timeout=None) as resp:
            self._check(resp)
            yield from resp.iter_bytes()

    def ws_url(self, path: str, **params: Any) -> tuple[str, dict[str, str]]:
        """The websocket URL of an API path, and the headers that authenticate it. No secret goes
        in the URL (the server refuses ``token``/``ticket`` there): a console ticket is offered
        as a subprotocol, see ``ticket_protocols``."""
        from urllib.parse import urlencode

        in_url = sorted({"token", "ticket", "access_token"} & set(params))
        if in_url:
            raise ValueError(f"no secret in a URL ({', '.join(in_url)}): use headers or subprotocols")
        base = self.url.replace("http", "ws", 1) + "/api/v1" + path
        query = urlencode(params, doseq=True)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return (f"{base}?{query}" if query else base), headers

    @staticmethod
    def ticket_protocols(ticket: str, *plain: str) -> list[str]:
        """The websocket subprotocols to offer with a console ticket: ``plain`` ones the endpoint
        speaks (``binary``), then ``ticket.<ticket>``, which the server reads and never echoes."""
        return [*plain, f"ticket.{ticket}"]

    def container_logs(
        self, ref: str, *, follow: bool = False, tail: int | None = None, timestamps: bool = False
    ) -> Iterator[bytes]:
        params: dict[str, Any] = {"follow": follow, "timestamps": timestamps}
        if tail is not None:
            params["tail"] = tail
        return self._stream(f"/instances/{_seg(ref)}/logs", params)

    def exec(self, ref: str, command: list[str], tty: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/instances/{_seg(ref)}/exec", json={"command": command, "tty": tty}, timeout=None
        )
        return result

    def container_stats(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/instances/{_seg(ref)}/stats")
        return result

    def instance_stats(self, ref: str) -> dict[str, Any]:
        """One resource sample of a running VM or container (the same endpoint)."""
        return self.container_stats(ref)

    def container_images(self, filter: str | None = None) -> list[dict[str, Any]]:
        return list(self.request("GET", "/container-images", params={"filter": filter} if filter else {}))

    def pull_image(self, ref: str, wait: bool = True) -> dict[str, Any]:
        return self._op("POST", "/container-images/pull", wait, json={"image": ref})

    def search_images(self, term: str, limit: int = 25) -> list[dict[str, Any]]:
        return list(self.request("GET", "/container-images/search", params={"q": term, "limit": limit}))

    def delete_container_image(self, ref: str, force: bool = False) -> None:
        self.request("DELETE", f"/container-images/{ref}", params={"force": force})

    def prune_images(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/container-images/prune")
        return result

    def build_project(self, name: str, tags: list[str], wait: bool = True) -> dict[str, Any]:
        return self._op("POST", f"{self._project_url(name)}/build", wait, json={"tags": tags})

    def operation_log(self, op_id: str, follow: bool = False) -> Iterator[bytes]:
        return self._stream(f"/operations/{op_id}/log", {"follow": follow})
