"""The libvirt connection: opening, reconnecting, the event loop thread, host facts and the choice
of accelerator. One ``LibvirtHost`` per libvirt URI."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from cloudlet.config import Accelerator
from cloudlet.errors import DriverError, DriverUnavailable, NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")

# libvirt error codes that mean "the daemon or the connection is away, try again".
_TRANSIENT_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
}
_NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
}


def translate(err: libvirt.libvirtError, what: str) -> Exception:
    """Map a libvirt error to a domain error by its code, never by its message text."""
    code = err.get_error_code()
    msg = f"{what}: {err.get_error_message()}"
    if code in _NOT_FOUND_CODES:
        return NotFound(msg, code="backend_not_found")
    if code in _TRANSIENT_CODES:
        return DriverError(msg, transient=True)
    return DriverError(msg)


_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ensure_event_loop() -> None:
    """libvirt's default event implementation, driven by one daemon thread per process."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _silence_default_error_handler() -> None:
    # libvirt prints every error to stderr by default; errors reach us as exceptions anyway.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def kvm_usable() -> bool:
    """KVM works here only if /dev/kvm opens AND the CPU advertises vmx/svm (see HOST-NOTES:
    nested virtualization without the flags hangs guests right after the BIOS)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(
        word in ("vmx", "svm")
        for line in flags.splitlines()
        if line.startswith("flags")
        for word in line.split()
    )


def choose_domain_type(setting: Accelerator, kvm_probe: Callable[[], bool] = kvm_usable) -> str:
    """libvirt domain type for the accelerator setting: "kvm" or "qemu" (TCG)."""
    if setting is Accelerator.KVM:
        return "kvm"
    if setting is Accelerator.TCG:
        return "qemu"
    return "kvm" if kvm_probe() else "qemu"


def dac_label(capabilities_xml: str, domain_type: str) -> tuple[int, int] | None:
    """The (uid, gid) libvirt runs QEMU as for ``domain_type`` guests: its DAC security model's
    base label in the host capabilities ("+64055:+64055"; names are resolved too). None when
    libvirt has no DAC model (QEMU then runs as libvirt's own user)."""
    caps = ET.fromstring(capabilities_xml)
    for model in caps.findall("host/secmodel"):
        if model.findtext("model") != "dac":
            continue
        for label in model.findall("baselabel"):
            if label.get("type") == domain_type and label.text:
                user, _, group = label.text.strip().partition(":")
                return _uid(user), _gid(group)
    return None


def _uid(user: str) -> int:
    return int(user[1:]) if user.startswith("+") else pwd.getpwnam(user).pw_uid


def _gid(group: str) -> int:
    return int(group[1:]) if group.startswith("+") else grp.getgrnam(group).gr_gid


class LibvirtHost:
    """A lazily opened, self-healing connection to one libvirt daemon."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()
        self._on_connect: list[Callable[[libvirt.virConnect], None]] = []

    def on_connect(self, fn: Callable[[libvirt.virConnect], None]) -> None:
        """Run ``fn`` on every new connection (used to re-register event callbacks)."""
        with self._lock:
            self._on_connect.append(fn)
            if self._conn is not None:
                fn(self._conn)

    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None and self._conn.isAlive():
                return self._conn
            _silence_default_error_handler()
            _ensure_event_loop()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as err:
                raise DriverUnavailable(
                    f"cannot connect to libvirt at {self.uri}: {err.get_error_message()}"
                ) from err
            conn.setKeepAlive(5, 3)
            conn.registerCloseCallback(self._closed, None)
            self._conn = conn
            for fn in self._on_connect:
                fn(conn)
            return conn

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt connection to %s closed (reason %s); will reconnect", self.uri, reason)
        with self._lock:
            self._conn = None

    def call(self, what: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Run ``fn(conn)``, translating libvirt errors; a dead connection is reopened once."""
        for attempt in (1, 2):
            conn = self.conn()
            try:
                return fn(conn)
            except libvirt.libvirtError as err:
                translated = translate(err, what)
                reconnect = (
                    isinstance(translated, DriverError) and translated.transient and not conn.isAlive()
                )
                if attempt == 1 and reconnect:
                    with self._lock:
                        self._conn = None
                    continue
                raise translated from err
        raise AssertionError("unreachable")

    def dac_label(self, domain_type: str) -> tuple[int, int] | None:
        """The (uid, gid) QEMU runs as for ``domain_type`` guests (see ``dac_label``)."""
        return dac_label(self.call("reading host capabilities", lambda c: c.getCapabilities()), domain_type)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    log.debug("closing libvirt connection failed", exc_info=True)
                self._conn = None
