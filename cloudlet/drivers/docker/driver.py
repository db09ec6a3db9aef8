"""Containers on the Docker Engine, through the low-level SDK client (one HTTP call per step, so
cloudlet adds almost nothing to the raw engine's speed).

Every container, volume and network this driver makes carries cloudlet's labels (instance,
deployment, workspace, name); nothing without them is ever listed, changed or removed. Images are
never pulled implicitly: an image missing locally is a 422 ``unknown_image`` at create.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker.errors
import requests.exceptions
from docker.api import APIClient
from docker.types import IPAMConfig, IPAMPool

from cloudlet.drivers.base import (
    ContainerSpec,
    DriverCapabilities,
    DriverInfo,
    HostResources,
    InstanceSpec,
    InstanceStatus,
    NetworkSpec,
    PortSpec,
    PowerState,
    StateCallback,
)
from cloudlet.drivers.containers import (
    ContainerDetails,
    ContainerDriver,
    ContainerImage,
    ContainerStats,
    ExecResult,
    ExecSession,
    ProgressCallback,
    RegistryImage,
    Stream,
)
from cloudlet.drivers.docker import images
from cloudlet.drivers.docker.errors import docker_errors, translate
from cloudlet.drivers.docker.stats import _parse_time, parse_stats
from cloudlet.errors import CloudletError, Conflict, NotFound

log = logging.getLogger(__name__)

API_VERSION = "1.41"  # Engine 20.10 (Debian 12); newer engines still speak it
LABEL_INSTANCE = "cloudlet.instance"
LABEL_DEPLOYMENT = "cloudlet.deployment"
LABEL_WORKSPACE = "cloudlet.workspace"
LABEL_NAME = "cloudlet.name"

_STATES = {
    "created": PowerState.STOPPED,
    "running": PowerState.RUNNING,
    "restarting": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "exited": PowerState.STOPPED,
    "removing": PowerState.SHUTTING_DOWN,
    "dead": PowerState.CRASHED,
}
_EVENT_STATES = {
    "start": PowerState.RUNNING,
    "unpause": PowerState.RUNNING,
    "pause": PowerState.PAUSED,
    "die": PowerState.STOPPED,
    "stop": PowerState.STOPPED,
    "destroy": PowerState.MISSING,
    "oom": PowerState.STOPPED,
}


def container_name(spec: InstanceSpec) -> str:
    """Readable in `docker ps` and unique on the host across workspaces."""
    return f"{spec.name}-{spec.id[:8]}"


def volume_name(instance_id: str, volume: str) -> str:
    return f"cloudlet-{instance_id[:8]}-{volume}"


def port_bindings(ports: tuple[PortSpec, ...]) -> dict[str, list[tuple[str, int]]]:
    bindings: dict[str, list[tuple[str, int]]] = {}
    for p in ports:
        bindings.setdefault(f"{p.container}/{p.protocol}", []).append((p.host_ip, p.host))
    return bindings


def parse_ports(raw: dict[str, Any] | None) -> tuple[PortSpec, ...]:
    out = []
    for key, binds in (raw or {}).items():
        port, _, proto = key.partition("/")
        for b in binds or []:
            out.append(PortSpec(int(b["HostPort"]), int(port), proto or "tcp", b.get("HostIp", "")))
    return tuple(out)


class DockerExecSession(ExecSession):
    def __init__(self, api: APIClient, exec_id: str, sock: Any) -> None:
        self._api = api
        self._id = exec_id
        self._raw: socket.socket = getattr(sock, "_sock", sock)
        self._closed = False

    def read(self, size: int = 65536) -> bytes:
        try:
            return self._raw.recv(size)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        self._raw.sendall(data)

    def resize(self, rows: int, cols: int) -> None:
        with docker_errors("resizing the terminal"):
            self._api.exec_resize(self._id, height=rows, width=cols)

    def exit_code(self) -> int | None:
        with docker_errors("reading the exec's exit code"):
            info = self._api.exec_inspect(self._id)
        return None if info.get("Running") else info.get("ExitCode")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)
        self._raw.close()


class DockerDriver(ContainerDriver):
    name = "docker"
    capabilities = DriverCapabilities(pause=True)

    def __init__(self, url: str, deployment: str, *, timeout: float = 120.0) -> None:
        self.url = url
        self.deployment = deployment
        self.timeout = timeout
        self._api = self._client()
        self._ids: dict[str, str] = {}  # instance id -> container id (never changes)
        self._network_lock = threading.Lock()
        self._closing = threading.Event()
        self._streams: set[Any] = set()
        self._streams_lock = threading.Lock()
        self._watch_thread: threading.Thread | None = None

    def _client(self, timeout: float | None = None) -> APIClient:
        return APIClient(base_url=self.url, version=API_VERSION, timeout=timeout or self.timeout)

    def _labels(self, spec: InstanceSpec) -> dict[str, str]:
        return {
            LABEL_INSTANCE: spec.id,
            LABEL_DEPLOYMENT: self.deployment,
            LABEL_WORKSPACE: spec.workspace_id,
            LABEL_NAME: spec.name,
        }

    def _ours(self) -> dict[str, list[str]]:
        return {"label": [f"{LABEL_DEPLOYMENT}={self.deployment}"]}

    # -- health ----------------------------------------------------------------------------------
    def info(self) -> DriverInfo:
        try:
            version = self._api.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            return DriverInfo(self.name, None, ok=False, error=f"Docker engine at {self.url}: {err}")
        return DriverInfo(
            self.name,
            str(version.get("Version")),
            ok=True,
            details={"api_version": str(version.get("ApiVersion")), "url": self.url},
        )

    def host_resources(self) -> HostResources:
        with docker_errors("reading the Docker host"):
            info = self._api.info()
        total = int(info.get("MemTotal") or 0) // (1024 * 1024)
        available = total
        if self.url.startswith("unix://"):
            try:
                for line in Path("/proc/meminfo").read_text().splitlines():
                    if line.startswith("MemAvailable:"):
                        available = int(line.split()[1]) // 1024
            except OSError:
                pass
        return HostResources(
            cpus=int(info.get("NCPU") or 1), memory_total_mb=total, memory_available_mb=available
        )

    # -- life cycle ------------------------------------------------------------------------------
    def _cid(self, instance_id: str) -> str:
        cid = self._ids.get(instance_id)
        if cid is not None:
            return cid
        with docker_errors(f"finding container of instance {instance_id}"):
            found = self._api.containers(
                all=True, quiet=True, filters={"label": f"{LABEL_INSTANCE}={instance_id}"}
            )
        if not found:
            raise NotFound(f"no container for instance {instance_id}", code="backend_not_found")
        cid = str(found[0]["Id"])
        self._ids[instance_id] = cid
        return cid

    def _call(self, instance_id: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(container_id, ...)``; a container removed behind our back drops the cached id."""
        cid = self._cid(instance_id)
        try:
            with docker_errors(what):
                return fn(cid, *args, **kwargs)
        except NotFound:
            self._ids.pop(instance_id, None)
            raise

    def create(self, spec: InstanceSpec) -> None:
        c = spec.container
        if c is None:
            raise CloudletError("a container instance needs a container spec")
        labels = self._labels(spec)
        made_volumes: list[str] = []
        try:
            with docker_errors(f"creating container {spec.name}"):
                self._api.inspect_image(c.image)  # no implicit pull: a missing image is the caller's error
                binds: dict[str, dict[str, str]] = {}
                for m in c.mounts:
                    source = m.source
                    if not m.bind:
                        source = volume_name(spec.id, m.source)
                        self._api.create_volume(source, labels=labels)
                        made_volumes.append(source)
                    binds[source] = {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                networking, network_mode, mac = None, None, None
                if c.network is not None and spec.nics:
                    self.attach_network(c.network)
                    nic = spec.nics[0]
                    network_mode, mac = c.network.backend_name, nic.mac
                    networking = self._api.create_networking_config(
                        {network_mode: self._api.create_endpoint_config(ipv4_address=nic.ip)}
                    )
                host_config = self._api.create_host_config(
                    binds=binds or None,
                    port_bindings=port_bindings(c.ports) or None,
                    restart_policy=_restart_policy(c.restart_policy),
                    nano_cpus=int(c.cpu_limit * 1e9) if c.cpu_limit else None,
                    mem_limit=f"{c.memory_limit_mb}m" if c.memory_limit_mb else None,
                    privileged=c.privileged,
                    network_mode=network_mode,
                    init=True,  # a real PID 1: signals are handled, zombies reaped
                )
                created = self._api.create_container(
                    c.image,
                    command=list(c.command) if c.command is not None else None,
                    entrypoint=list(c.entrypoint) if c.entrypoint is not None else None,
                    hostname=spec.hostname,
                    user=c.user or None,
                    working_dir=c.workdir or None,
                    environment=[f"{k}={v}" for k, v in c.env] or None,
                    ports=[(p.container, p.protocol) for p in c.ports] or None,
                    name=container_name(spec),
                    labels=labels,
                    host_config=host_config,
                    networking_config=networking,
                    mac_address=mac,
                    detach=True,
                )
            self._ids[spec.id] = str(created["Id"])
        except Exception:
            for volume in made_volumes:
                self._remove_volume(volume)
            raise

    def start(self, instance_id: str) -> None:
        self._call(instance_id, f"starting container of {instance_id}", self._api.start)

    def stop(self, instance_id: str, *, force: bool = False, timeout: float = 60.0) -> None:
        if self.state(instance_id) is PowerState.PAUSED:
            self._call(instance_id, "unpausing before stop", self._api.unpause)
        if force:
            with contextlib.suppress(Conflict):  # not running: already stopped
                self._call(instance_id, "killing container", self._api.kill)
            self._wait_stopped(instance_id, 10.0)
            return
        self._call(instance_id, "stopping container", self._api.stop, timeout=int(max(timeout, 1)))

    def _wait_stopped(self, instance_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.state(instance_id) is PowerState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)

    def reboot(self, instance_id: str) -> None:
        self._call(instance_id, "restarting container", self._api.restart, timeout=10)

    def pause(self, instance_id: str) -> None:
        self._call(instance_id, "pausing container", self._api.pause)

    def resume(self, instance_id: str) -> None:
        self._call(instance_id, "resuming container", self._api.unpause)

    def kill(self, instance_id: str, signal: str = "SIGKILL") -> None:
        self._call(instance_id, f"sending {signal}", self._api.kill, signal=signal)

    def delete(self, instance_id: str) -> None:
        self._ids.pop(instance_id, None)
        with docker_errors(f"deleting container of {instance_id}"):
            found = self._api.containers(
                all=True, quiet=True, filters={"label": f"{LABEL_INSTANCE}={instance_id}"}
            )
            for c in found:
                with contextlib.suppress(docker.errors.NotFound):
                    self._api.remove_container(c["Id"], force=True, v=True)
            volumes = (
                self._api.volumes(filters={"label": f"{LABEL_INSTANCE}={instance_id}"}).get("Volumes") or []
            )
        for v in volumes:
            self._remove_volume(str(v["Name"]))

    def _remove_volume(self, volume: str) -> None:
        try:
            with docker_errors(f"removing volume {volume}"):
                self._api.remove_volume(volume, force=True)
        except NotFound:
            pass

    def state(self, instance_id: str) -> PowerState:
        info = self._call(instance_id, "inspecting container", self._api.inspect_container)
        return _STATES.get(str(info["State"]["Status"]), PowerState.UNKNOWN)

    def list_instances(self) -> list[InstanceStatus]:
        with docker_errors("listing containers"):
            rows = self._api.containers(all=True, filters=self._ours())
        return [
            InstanceStatus(
                str(r["Labels"][LABEL_INSTANCE]), _STATES.get(str(r.get("State")), PowerState.UNKNOWN)
            )
            for r in rows
            if LABEL_INSTANCE in (r.get("Labels") or {})
        ]

    def residue(self) -> list[str]:
        """Volumes of instances whose container is gone (a crash between volume and container)."""
        with docker_errors("listing volumes"):
            volumes = self._api.volumes(filters={"label": f"{LABEL_DEPLOYMENT}={self.deployment}"})
        return sorted({str(v["Labels"][LABEL_INSTANCE]) for v in volumes.get("Volumes") or []})

    # -- events ----------------------------------------------------------------------------------
    def watch(self, callback: StateCallback) -> None:
        def run() -> None:
            delay = 0.5
            while not self._closing.is_set():
                client = self._client(timeout=None)
                try:
                    stream = client.events(decode=True, filters={"type": ["container"], **self._ours()})
                    self._track(stream)
                    delay = 0.5
                    for event in stream:
                        attrs = (event.get("Actor") or {}).get("Attributes") or {}
                        instance_id = attrs.get(LABEL_INSTANCE)
                        state = _EVENT_STATES.get(str(event.get("Action") or event.get("status")))
                        if instance_id and state is not None:
                            if state is PowerState.MISSING:
                                self._ids.pop(instance_id, None)
                            callback(instance_id, state)
                except Exception as err:  # a restarted daemon: reconnect after a pause
                    if not self._closing.is_set():
                        log.warning("Docker event stream broke (%s); reconnecting", err)
                finally:
                    client.close()
                self._closing.wait(delay)
                delay = min(delay * 2, 10.0)

        self._watch_thread = threading.Thread(target=run, name="docker-events", daemon=True)
        self._watch_thread.start()

    def _track(self, stream: Any) -> None:
        with self._streams_lock:
            self._streams.add(stream)

    def _untrack(self, stream: Any) -> None:
        with self._streams_lock:
            self._streams.discard(stream)

    def close(self) -> None:
        self._closing.set()
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
        self._api.close()

    # -- details, logs, exec, stats --------------------------------------------------------------
    def details(self, instance_id: str, *, size: bool = False) -> ContainerDetails:
        info = self._call(instance_id, "inspecting container", self._api.inspect_container)
        sizes: dict[str, Any] = {}
        if size:  # the SDK's inspect has no size flag: ask the list call, filtered to this one
            with docker_errors("measuring container size"):
                rows = self._api.containers(all=True, size=True, filters={"id": info["Id"]})
            sizes = rows[0] if rows else {}
        state = info["State"]
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        ip = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
        return ContainerDetails(
            short_id=str(info["Id"])[:12],
            status=str(state.get("Status")),
            exit_code=state.get("ExitCode"),
            started_at=_maybe_time(state.get("StartedAt")),
            finished_at=_maybe_time(state.get("FinishedAt")),
            ports=parse_ports((info.get("HostConfig") or {}).get("PortBindings")),
            ip=ip,
            # the engine leaves out sizes that are zero
            size_rw=int(sizes.get("SizeRw") or 0) if size else None,
            size_root_fs=int(sizes.get("SizeRootFs") or 0) if size else None,
        )

    def logs(
        self,
        instance_id: str,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        timestamps: bool = False,
        follow: bool = False,
    ) -> Stream[bytes]:
        cid = self._cid(instance_id)
        client = self._client(timeout=None)
        try:
            with docker_errors("reading logs"):
                raw = client.logs(
                    cid,
                    stream=True,
                    follow=follow,
                    tail=tail if tail is not None else "all",
                    since=since,
                    until=until,
                    timestamps=timestamps,
                )
        except Exception:
            client.close()
            raise
        return self._stream(raw, client)

    def _stream(self, raw: Any, client: APIClient) -> Stream[Any]:
        """Wrap a Docker stream: closing it (from any thread, or closing the driver) closes the
        connection, which wakes the reader; errors after a close are the close, not failures."""

        def close() -> None:
            self._untrack(stream)
            try:
                raw.close()
            except Exception:  # already broken: nothing left to release but the client
                log.debug("closing a Docker stream", exc_info=True)
            client.close()

        def items() -> Iterator[Any]:
            try:
                yield from raw
            except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as err:
                if not (stream.closed or self._closing.is_set()):
                    raise translate(err, "streaming from the Docker engine") from err
            finally:
                stream.close()

        stream: Stream[Any] = Stream(items(), close)
        self._track(stream)
        return stream

    def exec_run(
        self,
        instance_id: str,
        command: list[str],
        *,
        tty: bool = False,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        max_output: int = 1 << 20,
    ) -> ExecResult:
        created = self._call(
            instance_id,
            "starting a command",
            self._api.exec_create,
            command,
            tty=tty,
            environment=env or None,
            workdir=workdir or None,
            user=user or "",
        )
        exec_id = str(created["Id"])
        chunks: list[bytes] = []
        size, truncated = 0, False
        with docker_errors("running a command"):
            for chunk in self._api.exec_start(exec_id, tty=tty, stream=True):
                if size < max_output:
                    chunks.append(chunk[: max_output - size])
                    truncated = truncated or len(chunk) > max_output - size
                else:
                    truncated = True
                size += len(chunk)
            code = self._api.exec_inspect(exec_id).get("ExitCode")
        return ExecResult(int(code if code is not None else -1), b"".join(chunks), truncated)

    def exec_interactive(
        self,
        instance_id: str,
        command: list[str],
        *,
        rows: int = 24,
        cols: int = 80,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> ExecSession:
        created = self._call(
            instance_id,
            "starting a terminal",
            self._api.exec_create,
            command,
            stdin=True,
            tty=True,
            environment=env or None,
            user=user or "",
        )
        exec_id = str(created["Id"])
        with docker_errors("attaching the terminal"):
            sock = self._api.exec_start(exec_id, tty=True, socket=True)
        session = DockerExecSession(self._api, exec_id, sock)
        with contextlib.suppress(CloudletError):  # the command may have ended; its output stays readable
            session.resize(rows, cols)
        return session

    def stats(self, instance_id: str) -> ContainerStats:
        raw = self._call(instance_id, "reading stats", self._api.stats, stream=False)
        return parse_stats(raw)

    def stats_stream(self, instance_id: str) -> Stream[ContainerStats]:
        cid = self._cid(instance_id)
        client = self._client(timeout=None)
        try:
            with docker_errors("reading stats"):
                raw = client.stats(cid, stream=True, decode=True)
        except Exception:
            client.close()
            raise
        samples = self._stream(raw, client)
        return Stream((parse_stats(r) for r in samples), samples.close)

    # -- images ----------------------------------------------------------------------------------
    def list_images(self) -> list[ContainerImage]:
        return images.list_images(self._api)

    def image(self, ref: str) -> ContainerImage:
        return images.get_image(self._api, ref)

    def pull_image(self, ref: str, progress: ProgressCallback) -> ContainerImage:
        return images.pull_image(self._api, ref, progress)

    def search_images(self, term: str, limit: int = 25) -> list[RegistryImage]:
        return images.search_images(self._api, term, limit)

    def image_users(self, image_id: str) -> list[str | None]:
        with docker_errors("listing the containers of an image"):
            rows = self._api.containers(all=True)
        return [
            (r.get("Labels") or {}).get(LABEL_WORKSPACE)
            if (r.get("Labels") or {}).get(LABEL_DEPLOYMENT) == self.deployment
            else None
            for r in rows
            if r.get("ImageID") == image_id
        ]

    def tag_image(self, image_id: str, ref: str) -> None:
        images.tag_image(self._api, image_id, ref)

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        images.remove_image(self._api, ref, force)

    def prune_images(self) -> tuple[list[str], int]:
        return images.prune_images(self._api)

    def build_image(
        self, context: Path, tags: list[str], log: ProgressCallback, *, dockerfile: str = "Dockerfile"
    ) -> ContainerImage:
        client = self._client(timeout=None)
        try:
            return images.build_image(
                client, context, tags, log, dockerfile, {LABEL_DEPLOYMENT: self.deployment}
            )
        finally:
            client.close()

    def ports_in_use(self, ports: list[PortSpec]) -> list[PortSpec]:
        if not self.url.startswith("unix://"):
            return []  # a remote engine's ports cannot be probed from here
        return [p for p in ports if not _bindable(p)]

    def sizes(self) -> dict[str, tuple[int | None, int | None]]:
        with docker_errors("measuring container sizes"):
            rows = self._api.containers(all=True, size=True, filters=self._ours())
        return {
            str(r["Labels"][LABEL_INSTANCE]): (int(r.get("SizeRw") or 0), int(r.get("SizeRootFs") or 0))
            for r in rows
            if LABEL_INSTANCE in (r.get("Labels") or {})
        }

    # -- networks --------------------------------------------------------------------------------
    def attach_network(self, spec: NetworkSpec) -> None:
        """A Docker bridge network on the cloudlet network's own bridge, so containers and VMs
        share one L2 segment; addresses come from cloudlet's IPAM, never Docker's."""
        with self._network_lock, docker_errors(f"attaching network {spec.backend_name}"):
            try:
                self._api.inspect_network(spec.backend_name)
                return
            except docker.errors.NotFound:
                pass
            try:
                self._api.create_network(
                    spec.backend_name,
                    driver="bridge",
                    options={
                        "com.docker.network.bridge.name": spec.bridge,
                        # libvirt's NAT already masquerades the subnet; isolated must not get out.
                        "com.docker.network.bridge.enable_ip_masquerade": "false",
                    },
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=spec.cidr, gateway=spec.gateway)]),
                    internal=spec.mode == "isolated",
                    labels={LABEL_DEPLOYMENT: self.deployment},
                    check_duplicate=True,
                )
            except docker.errors.APIError as err:
                if err.status_code != 409:
                    raise

    def detach_network(self, backend_name: str) -> None:
        with docker_errors(f"detaching network {backend_name}"), contextlib.suppress(docker.errors.NotFound):
            self._api.remove_network(backend_name)


def _bindable(port: PortSpec) -> bool:
    """Whether the host port is free now: try to bind it the way the engine's proxy would."""
    kind = socket.SOCK_DGRAM if port.protocol == "udp" else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in port.host_ip else socket.AF_INET
    with socket.socket(family, kind) as probe:
        try:
            probe.bind((port.host_ip or "0.0.0.0", port.host))
        except OSError:
            return False
    return True


def _restart_policy(name: str) -> dict[str, Any] | None:
    if name == "no":
        return None
    return {"Name": name, "MaximumRetryCount": 0}


def _maybe_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    return _parse_time(value)


__all__ = ["ContainerSpec", "DockerDriver"]
