"""A domain's consoles through libvirt's own APIs: the serial port as a non-blocking libvirt stream
driven by the connection's event loop thread (as ``virsh console`` does), the VNC server through
a socket libvirt hands over (``virDomainOpenGraphicsFD``), key presses, and screenshots.

Only libvirt's event thread reads the serial stream; it hands the bytes to a buffer a websocket
thread waits on, so neither side ever blocks the other or the connection shared by every call.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import libvirt

from cloudlet.drivers.base import ConsoleStream
from cloudlet.drivers.libvirt import xml
from cloudlet.errors import DriverError, InvalidState

log = logging.getLogger(__name__)

# Serial output kept for a reader that falls behind; older bytes are dropped past this (a slow
# client misses output rather than the server holding an unbounded backlog).
MAX_BUFFERED = 1024 * 1024
CHUNK = 65536
# How long each chord is held down, in ms.
KEY_HOLD_MS = 10
# QEMU queues key events (ui/input.c): every press and release is an event, a sync and a delay of
# 10 ms in its queue, plus the hold time once per chord; past 1024 queued entries it drops events
# silently (measured here: typing 600 characters at once lost most after the first ~140). So keys
# go no faster than QEMU types them, keeping at most half its queue in flight.
QEMU_DELAY_MS = 10
QEMU_QUEUE_BUDGET = 512
SLOWDOWN = 1.5  # margin: the guest clock under emulation may lag the host's

_READ_EVENTS = (
    libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP
)


def require_running(dom: libvirt.virDomain, name: str) -> None:
    if not dom.isActive():
        raise InvalidState(f"VM {name} is not running", code="instance_not_running")


def stopped_meanwhile(err: libvirt.libvirtError, name: str) -> InvalidState | None:
    """The error a console call gets when the domain stopped after ``require_running`` passed."""
    if err.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
        return InvalidState(f"VM {name} is not running", code="instance_not_running")
    return None


class SerialConsole(ConsoleStream):
    """The first serial port of a running domain over a non-blocking libvirt stream."""

    def __init__(self, stream: libvirt.virStream) -> None:
        self._stream = stream
        self._cond = threading.Condition()
        self._inbox: deque[bytes] = deque()
        self._buffered = 0
        self._outbox = bytearray()
        self._ended = False  # no more bytes will come from the guest
        self._closed = False
        self._events = _READ_EVENTS
        stream.eventAddCallback(self._events, self._on_event, None)

    @classmethod
    def open(cls, conn: libvirt.virConnect, dom: libvirt.virDomain) -> SerialConsole:
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            # FORCE: a console left open by a vanished client must not lock the user out.
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            return cls(stream)
        except BaseException:
            _quietly(stream.abort)
            raise

    # -- libvirt's event thread --------------------------------------------------------------------
    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: Any) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            try:
                data = stream.recv(CHUNK)
            except libvirt.libvirtError as err:
                log.debug("serial console stream failed: %s", err.get_error_message())
                self._end()
                return
            if isinstance(data, bytes):
                if not data:  # end of stream: the domain stopped or another client took over
                    self._end()
                    return
                self._deliver(data)
        if events & libvirt.VIR_STREAM_EVENT_WRITABLE:
            with self._cond:
                self._flush()
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._end()

    def _deliver(self, data: bytes) -> None:
        with self._cond:
            self._inbox.append(data)
            self._buffered += len(data)
            while self._buffered > MAX_BUFFERED and len(self._inbox) > 1:
                self._buffered -= len(self._inbox.popleft())
            self._cond.notify_all()

    def _end(self) -> None:
        with self._cond:
            if self._ended:
                return
            self._ended = True
            self._cond.notify_all()
        _quietly(self._stream.eventRemoveCallback)

    # -- the reader's and writer's threads ---------------------------------------------------------
    def read(self, size: int = CHUNK) -> bytes:
        with self._cond:
            while not self._inbox and not self._ended and not self._closed:
                self._cond.wait()
            if self._closed or not self._inbox:
                return b""
            out = bytearray()
            while self._inbox and len(out) < size:
                chunk = self._inbox.popleft()
                self._buffered -= len(chunk)
                out += chunk
            return bytes(out)

    def write(self, data: bytes) -> None:
        with self._cond:
            if self._ended or self._closed:
                return
            self._outbox += data
            self._flush()

    def _flush(self) -> None:
        """Send what the stream takes now; wait for WRITABLE for the rest. Holds ``_cond``."""
        while self._outbox and not self._ended and not self._closed:
            try:
                sent = self._stream.send(bytes(self._outbox[:CHUNK]))
            except libvirt.libvirtError as err:
                log.debug("serial console write failed: %s", err.get_error_message())
                self._outbox.clear()
                return
            if sent == -2:  # would block
                break
            del self._outbox[:sent]
        wanted = _READ_EVENTS | (libvirt.VIR_STREAM_EVENT_WRITABLE if self._outbox else 0)
        if wanted != self._events and not self._ended and not self._closed:
            self._events = wanted
            _quietly(lambda: self._stream.eventUpdateCallback(wanted))

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            ended = self._ended
            self._cond.notify_all()
        if not ended:
            _quietly(self._stream.eventRemoveCallback)
        _quietly(self._stream.abort)


class VncConnection(ConsoleStream):
    """A socket to the domain's VNC server that libvirt connected for us."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._sock.setblocking(True)
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, dom: libvirt.virDomain) -> VncConnection:
        # SKIPAUTH: cloudlet's one-time ticket is the authentication. The VNC server listens
        # nowhere (xml.Graphics): this socket pair is the only way to it.
        return cls(dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH))

    def read(self, size: int = CHUNK) -> bytes:
        try:
            return self._sock.recv(size)
        except OSError:  # closed under us
            return b""

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        except OSError:
            log.debug("VNC socket already shut down")
        self._sock.close()


class KeyPacer:
    """A model of QEMU's key queue: how many entries the chords sent so far still hold and when
    each is typed. ``wait_for`` sleeps until a chord fits in the budget."""

    def __init__(
        self,
        budget: int = QEMU_QUEUE_BUDGET,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.budget = budget
        self.clock, self.sleep = clock, sleep
        self._in_flight: deque[tuple[float, int]] = deque()  # (typed by, entries)
        self._queued = 0
        self._last_done = 0.0

    @staticmethod
    def cost(chord: Sequence[int]) -> tuple[int, float]:
        """Queue entries and seconds QEMU needs for one chord."""
        events = 2 * len(chord)  # each key pressed, then released
        return 3 * events + 1, SLOWDOWN * (events * QEMU_DELAY_MS + KEY_HOLD_MS) / 1000

    def wait_for(self, chord: Sequence[int]) -> None:
        entries, seconds = self.cost(chord)
        while True:
            now = self.clock()
            while self._in_flight and self._in_flight[0][0] <= now:
                self._queued -= self._in_flight.popleft()[1]
            if not self._in_flight or self._queued + entries <= self.budget:
                break
            self.sleep(self._in_flight[0][0] - now)
        done = max(now, self._last_done) + seconds
        self._in_flight.append((done, entries))
        self._queued += entries
        self._last_done = done


def close_vnc_port(dom: libvirt.virDomain) -> list[str]:
    """Shut a VNC display on a TCP port (an older version defined one, without a password: any
    local user could watch and type on the screen). The definition gets a display listening
    nowhere, for the next boot; a running QEMU stops listening at once, through QMP
    ``display-update`` (QEMU refuses a password set live on a display started without one, and
    libvirt cannot change a listen address live). cloudlet's own way in, a socket libvirt hands
    over, is unaffected. Returns what was done, for the log."""
    done = []
    if dom.isPersistent():
        fixed = xml.without_vnc_port(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        )
        if fixed is not None:
            dom.connect().defineXML(fixed)
            done.append("its definition no longer listens on a TCP port")
    if dom.isActive() and xml.has_vnc_port(dom.XMLDesc(0)) and _qemu_vnc_listens(dom):
        _qmp(dom, {"execute": "display-update", "arguments": {"type": "vnc", "addresses": []}})
        done.append("its running QEMU stopped listening")
    return done


def _qemu_vnc_listens(dom: libvirt.virDomain) -> bool:
    """Whether QEMU's VNC server has a listening address now (``query-vnc``)."""
    answer = _qmp(dom, {"execute": "query-vnc"})
    return bool(answer.get("enabled")) and "service" in answer


def _qmp(dom: libvirt.virDomain, command: dict[str, Any]) -> dict[str, Any]:
    """One QMP command to the domain's QEMU through libvirt (libvirt marks the domain tainted:
    used only to close what older versions opened)."""
    import libvirt_qemu  # type: ignore[import-untyped]  # part of libvirt-python, untyped like libvirt

    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(command), 0))
    result: dict[str, Any] = reply.get("return") or {}
    return result


def send_chords(
    dom: libvirt.virDomain, chords: Sequence[tuple[int, ...]], pacer: KeyPacer | None = None
) -> None:
    pacer = pacer or KeyPacer()
    for chord in chords:
        pacer.wait_for(chord)
        dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, KEY_HOLD_MS, list(chord), len(chord), 0)


def screenshot_png(conn: libvirt.virConnect, dom: libvirt.virDomain) -> bytes:
    """The first screen as PNG: libvirt hands over what QEMU wrote (PPM), Pillow converts it."""
    stream = conn.newStream(0)
    try:
        mime = dom.screenshot(stream, 0, 0)
        chunks: list[bytes] = []
        while True:
            data = stream.recv(CHUNK)
            if not isinstance(data, bytes) or not data:
                break
            chunks.append(data)
        stream.finish()
    except BaseException:
        _quietly(stream.abort)
        raise
    return to_png(b"".join(chunks), mime)


def to_png(data: bytes, mime: str = "image/x-portable-pixmap") -> bytes:
    """Any image Pillow reads (PPM from QEMU, PNG from some hypervisors) as PNG bytes."""
    from PIL import Image, UnidentifiedImageError

    if mime == "image/png" and data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.save(out, format="PNG")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DriverError(f"the hypervisor's screenshot ({mime}) could not be read: {err}") from None
    return out.getvalue()


def _quietly(fn: Callable[[], object]) -> None:
    """Tear-down calls on a stream that may already be gone."""
    try:
        fn()
    except libvirt.libvirtError as err:
        log.debug("console stream tear-down: %s", err.get_error_message())
