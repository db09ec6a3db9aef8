"""Issue 13, finding "consoles open to every local user": a VM's VNC display listens nowhere (no
TCP port, no socket), an older definition with a TCP listener is rewritten, a running QEMU with
one is told to stop listening, and libvirt's DAC label (which user QEMU runs as) is read from its
capabilities. The attack on a real VM, as the local user nobody, is in
tests/integration/test_security_consoles.py."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from cloudlet.drivers.libvirt import console
from cloudlet.drivers.libvirt.host import dac_label
from cloudlet.drivers.libvirt.xml import Domain, Graphics, has_vnc_port, to_string, without_vnc_port

GOLDEN = Path(__file__).parent / "golden"
OLD = '<graphics type="vnc" port="-1" autoport="yes" listen="127.0.0.1" />'
LIVE_OLD = (
    '<graphics type="vnc" port="5900" autoport="yes" listen="127.0.0.1">'
    '<listen type="address" address="127.0.0.1" /></graphics>'
)
NEW = """<graphics type="vnc">
  <listen type="none" />
</graphics>"""


def with_graphics(graphics: str) -> str:
    """The golden domain with another graphics element."""
    root = ET.fromstring((GOLDEN / "domain_basic.xml").read_text())
    devices = root.find("devices")
    assert devices is not None
    for el in devices.findall("graphics"):
        devices.remove(el)
    devices.append(ET.fromstring(graphics))
    return to_string(root)


def test_the_vnc_display_listens_nowhere() -> None:
    assert to_string(Graphics().to_element()) == NEW
    root = ET.fromstring((GOLDEN / "domain_basic.xml").read_text())
    (graphics,) = root.findall("devices/graphics")
    assert graphics.attrib == {"type": "vnc"}  # no port, autoport or listen address
    assert [el.attrib for el in graphics] == [{"type": "none"}]
    assert Domain.from_xml(to_string(root)).vnc
    assert not has_vnc_port(to_string(root))


@pytest.mark.parametrize(
    "graphics",
    [
        OLD,
        LIVE_OLD,
        '<graphics type="vnc" autoport="yes" />',  # no listen: qemu.conf's vnc_listen, a TCP address
        '<graphics type="vnc" port="5901"><listen type="network" network="default" /></graphics>',
    ],
)
def test_a_vnc_display_on_a_tcp_port_is_rewritten(graphics: str) -> None:
    old = with_graphics(graphics)
    assert has_vnc_port(old)
    fixed = without_vnc_port(old)
    assert fixed is not None and not has_vnc_port(fixed)
    (new,) = ET.fromstring(fixed).findall("devices/graphics")
    assert (new.attrib, [el.attrib for el in new]) == ({"type": "vnc"}, [{"type": "none"}])
    assert without_vnc_port(fixed) is None  # nothing left to do the second time
    # everything else of the definition is kept
    before, after = ET.fromstring(old), ET.fromstring(fixed)
    assert [el.tag for el in before.iter() if el.tag != "listen"] == [
        el.tag for el in after.iter() if el.tag != "listen"
    ]


@pytest.mark.parametrize(
    "graphics",
    [
        NEW,
        '<graphics type="vnc" socket="/var/lib/cloudlet/vnc.sock" />',
        '<graphics type="vnc"><listen type="socket" socket="/run/x.sock" /></graphics>',
        '<graphics type="spice" autoport="yes" />',  # cloudlet never made other kinds: left alone
    ],
)
def test_other_displays_are_left_as_they_are(graphics: str) -> None:
    assert without_vnc_port(with_graphics(graphics)) is None


CAPS = """<capabilities><host>
  <secmodel><model>none</model><doi>0</doi></secmodel>
  <secmodel><model>dac</model><doi>0</doi>
    <baselabel type='kvm'>+64055:+64055</baselabel>
    <baselabel type='qemu'>+64055:+114</baselabel>
  </secmodel>
</host></capabilities>"""


def test_the_user_qemu_runs_as_comes_from_libvirts_dac_label() -> None:
    assert dac_label(CAPS, "kvm") == (64055, 64055)
    assert dac_label(CAPS, "qemu") == (64055, 114)
    assert dac_label(CAPS.replace("+64055:+64055", "root:root"), "kvm") == (0, 0)
    no_dac = "<capabilities><host><secmodel><model>none</model></secmodel></host></capabilities>"
    assert dac_label(no_dac, "qemu") is None


class FakeDomain:
    """A libvirt domain as ``close_vnc_port`` sees it; records what was done to it."""

    def __init__(self, inactive: str, live: str | None) -> None:
        self.inactive, self.live = inactive, live
        self.defined: list[str] = []

    def isPersistent(self) -> bool:
        return True

    def isActive(self) -> bool:
        return self.live is not None

    def XMLDesc(self, flags: int) -> str:
        import libvirt

        if flags & libvirt.VIR_DOMAIN_XML_INACTIVE or self.live is None:
            return self.inactive
        return self.live

    def connect(self) -> FakeDomain:
        return self

    def defineXML(self, text: str) -> None:
        self.defined.append(text)
        self.inactive = text


def test_a_running_vm_with_a_tcp_port_is_closed_now_and_at_its_next_boot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict[str, Any]] = []
    listening = {"enabled": True, "service": "5900", "host": "127.0.0.1", "auth": "none"}

    def qmp(_dom: object, command: dict[str, Any]) -> dict[str, Any]:
        sent.append(command)
        return listening if command["execute"] == "query-vnc" else {}

    monkeypatch.setattr(console, "_qmp", qmp)
    dom = FakeDomain(with_graphics(OLD), with_graphics(LIVE_OLD))
    assert len(console.close_vnc_port(dom)) == 2  # type: ignore[arg-type]
    assert len(dom.defined) == 1 and not has_vnc_port(dom.defined[0])
    assert [c["execute"] for c in sent] == ["query-vnc", "display-update"]
    assert json.dumps(sent[1]["arguments"]) == json.dumps({"type": "vnc", "addresses": []})

    # the same QEMU again (a later start of cloudlet): it listens no more, nothing is sent
    sent.clear()
    listening = {"enabled": False}
    assert console.close_vnc_port(dom) == []  # type: ignore[arg-type]
    assert [c["execute"] for c in sent] == ["query-vnc"]
    # a VM defined by this version: not even asked
    sent.clear()
    fresh = FakeDomain(with_graphics(NEW), with_graphics(NEW))
    assert console.close_vnc_port(fresh) == []  # type: ignore[arg-type]
    assert sent == [] and fresh.defined == []
