"""Issue 13, finding "consoles open to every local user": a VM's QEMU must listen on no TCP port
(its VNC server was on 127.0.0.1 without a password, so ``nobody`` read a tenant's screen), and
another local user must not reach its serial pty or its other sockets, while cloudlet's own VNC
and serial consoles keep working. A VM defined by an older version (VNC on a TCP port) is fixed
when the server starts: its definition loses the port, and its running QEMU stops listening."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.helpers import eventually
from tests.integration.conftest import Server, import_tiny, running_server, traversable_tmp, wait_state
from tests.integration.nobody import opened, probe

pytestmark = pytest.mark.integration
VM = "consec1"
OLD_GRAPHICS = '<graphics type="vnc" port="-1" autoport="yes" listen="127.0.0.1" />'
TCP_LISTEN = "0A"


@pytest.fixture(scope="module")
def server(libvirt_conn) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    with running_server(libvirt_conn, traversable_tmp("server-consec-")) as s:
        yield s


@pytest.fixture(scope="module")
def vm(server, tiny_image) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with server.client() as c:
        import_tiny(c, tiny_image)
        c.create_instance(name=VM, image="tiny", memory=128)
        vm: dict[str, Any] = c.instance(VM)
    return vm


def qemu_pid(instance_id: str) -> int:
    return int(Path(f"/run/libvirt/qemu/cloudlet-{instance_id}.pid").read_text())


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match.group(1))
    return inodes


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    # /proc/net/tcp* prints each 32-bit word of the address in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if address.is_unspecified:  # a wildcard listener is reached on loopback
        return "127.0.0.1" if address.version == 4 else "::1"
    return str(address)


def tcp_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(state, address, port) of each TCP socket QEMU holds, from /proc/net/tcp and tcp6."""
    mine = socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in mine:
                host, port = local.split(":")
                found.append((state, _address(host), int(port, 16)))
    return found


def unix_sockets(pid: int) -> list[str]:
    mine = socket_inodes(pid)
    paths = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in mine and fields[7].startswith("/"):
            paths.append(fields[7])
    return paths


def serial_pty(libvirt_conn, instance_id: str) -> str:  # type: ignore[no-untyped-def]
    live = ET.fromstring(libvirt_conn.lookupByName(f"cloudlet-{instance_id}").XMLDesc(0))
    source = live.find("devices/serial/source")
    assert source is not None and source.get("path"), "the serial port has no pty"
    return source.get("path", "")


def attack(pid: int, pty: str) -> dict[str, str]:
    """As nobody: every TCP port and UNIX socket QEMU holds, and the serial pty."""
    attempts = [("tcp", f"{host}:{port}") for _, host, port in tcp_sockets(pid)]
    attempts += [("unix", path) for path in unix_sockets(pid)]
    attempts.append(("open_rw", pty))
    return probe(attempts)


def vnc_handshake(c) -> bytes:  # type: ignore[no-untyped-def]
    ticket = c.console_ticket(VM)
    url, _ = c.ws_url(f"/instances/{VM}/console/vnc")
    protocols = c.ticket_protocols(ticket["ticket"], "binary")
    with connect(url, subprotocols=protocols, max_size=None) as ws:  # type: ignore[arg-type]
        frame = ws.recv(timeout=20)
        assert isinstance(frame, bytes)
        return frame


def graphics(libvirt_conn, instance_id: str, flags: int = 0) -> ET.Element:  # type: ignore[no-untyped-def]
    dom = libvirt_conn.lookupByName(f"cloudlet-{instance_id}")
    found = ET.fromstring(dom.XMLDesc(flags)).find("devices/graphics")
    assert found is not None
    return found


def test_qemu_listens_on_no_tcp_port_and_nobody_reaches_a_console(server, vm, libvirt_conn) -> None:  # type: ignore[no-untyped-def]
    pid = qemu_pid(vm["id"])
    assert [s for s in tcp_sockets(pid) if s[0] == TCP_LISTEN] == []
    pty = serial_pty(libvirt_conn, vm["id"])
    assert opened(attack(pid, pty)) == {}
    with server.client() as c:
        assert vnc_handshake(c).startswith(b"RFB 003.00")  # cloudlet's own way in still works


def test_a_vm_with_a_tcp_vnc_port_from_an_older_version_is_closed_at_start(server, vm, libvirt_conn) -> None:  # type: ignore[no-untyped-def]
    import libvirt

    # What an older version defined: VNC on a loopback TCP port, no password; it runs so.
    dom = libvirt_conn.lookupByName(f"cloudlet-{vm['id']}")
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    definition = ET.fromstring(dom.XMLDesc(flags))
    devices = definition.find("devices")
    assert devices is not None
    old = devices.find("graphics")
    assert old is not None
    devices.insert(list(devices).index(old), ET.fromstring(OLD_GRAPHICS))
    devices.remove(old)
    # A domain that is not cloudlet's, with the same listener: it must be left as it is.
    foreign_xml = ET.fromstring(dom.XMLDesc(flags))
    for tag in ("uuid", "metadata"):
        el = foreign_xml.find(tag)
        if el is not None:
            foreign_xml.remove(el)
    name = foreign_xml.find("name")
    assert name is not None
    name.text = f"not-cloudlet-{secrets.token_hex(4)}"
    foreign_devices = foreign_xml.find("devices")
    assert foreign_devices is not None
    for child in list(foreign_devices):
        if child.tag in ("graphics", "interface"):
            foreign_devices.remove(child)
    foreign_devices.append(ET.fromstring(OLD_GRAPHICS))
    foreign = libvirt_conn.defineXML(ET.tostring(foreign_xml, encoding="unicode"))
    try:
        server.stop()
        dom.destroy()
        libvirt_conn.defineXML(ET.tostring(definition, encoding="unicode"))
        dom.create()
        pid = qemu_pid(vm["id"])
        listening = [s for s in tcp_sockets(pid) if s[0] == TCP_LISTEN]
        assert listening, "the old definition listens on a TCP port"
        assert opened(attack(pid, serial_pty(libvirt_conn, vm["id"]))), "and nobody reads the screen"

        server.start()
        assert qemu_pid(vm["id"]) == pid  # the same QEMU, not restarted
        eventually(
            lambda: not [s for s in tcp_sockets(pid) if s[0] == TCP_LISTEN],
            timeout=30,
            what="QEMU to stop listening on TCP",
        )
        assert opened(attack(pid, serial_pty(libvirt_conn, vm["id"]))) == {}
        persistent = graphics(libvirt_conn, vm["id"], libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert [el.get("type") for el in persistent.findall("listen")] == ["none"]
        assert persistent.get("port") is None and persistent.get("listen") is None
        with server.client() as c:
            assert vnc_handshake(c).startswith(b"RFB 003.00")
            c.action(VM, "stop")
            c.action(VM, "start")
            wait_state(c, VM, "running")
        assert [el.get("type") for el in graphics(libvirt_conn, vm["id"]).findall("listen")] == ["none"]
        assert not [s for s in tcp_sockets(qemu_pid(vm["id"])) if s[0] == TCP_LISTEN]
        untouched = ET.fromstring(foreign.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).find("devices/graphics")
        assert untouched is not None and untouched.get("listen") == "127.0.0.1"
    finally:
        foreign.undefine()
        if server.proc is None:  # a failure above: the fixture's clean-up needs it running
            server.start()
