"""VM consoles: the US keymap, the key pacer, PPM to PNG, one-time tickets (once, expiry, bound to
instance, console and workspace, stored as hashes), and the routes' answers on the simulated
driver (whose consoles are loopbacks: the real ones are proven in tests/integration)."""

from __future__ import annotations

import hashlib
import io
import string
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

from cloudlet.db.models import AuditEntry, ConsoleTicket, Instance, utcnow
from cloudlet.db.session import transaction
from cloudlet.drivers import keymap
from cloudlet.drivers.libvirt.console import QEMU_QUEUE_BUDGET, KeyPacer, to_png
from cloudlet.errors import DriverError
from tests.unit.conftest import SimCloud
from tests.unit.test_tenancy import add_member, bearer, login, make_user

# -- the keymap ------------------------------------------------------------------------------------


def test_every_printable_ascii_character_newline_and_tab_are_typable() -> None:
    typable = string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    assert keymap.untypable(typable) == []
    assert len(keymap.US) == 95 + 2  # the printable ASCII range, newline and tab


def test_known_keys_of_a_us_keyboard() -> None:
    L, SHIFT = keymap, keymap.KEY_LEFTSHIFT
    assert keymap.chords("aA1!\n\t ") == [(30,), (SHIFT, 30), (2,), (SHIFT, 2), (L.KEY_ENTER,), (15,), (57,)]
    assert keymap.chords("q0p") == [(16,), (11,), (25,)]
    assert keymap.chords('"|?~_') == [
        (SHIFT, L.KEY_APOSTROPHE),
        (SHIFT, L.KEY_BACKSLASH),
        (SHIFT, L.KEY_SLASH),
        (SHIFT, L.KEY_GRAVE),
        (SHIFT, L.KEY_MINUS),
    ]


def test_shift_makes_capitals_and_symbols_from_the_same_keys() -> None:
    for lower in string.ascii_lowercase:
        assert keymap.US[lower.upper()] == (keymap.KEY_LEFTSHIFT, *keymap.US[lower])
    for plain, shifted in zip("1234567890-=[];'`\\,./", '!@#$%^&*()_+{}:"~|<>?', strict=True):
        assert keymap.US[shifted] == (keymap.KEY_LEFTSHIFT, *keymap.US[plain])
    codes = [chord[-1] for chord in keymap.US.values()]
    assert len(set(codes)) == 47 + 3  # 47 keys with two characters each, plus space, Enter, tab


def test_untypable_characters_are_listed_once_in_order() -> None:
    assert keymap.untypable("héllo wörld é€\x07") == ["é", "ö", "€", "\x07"]
    assert keymap.describe(["é", "\x07"]) == "'é', U+0007"


def test_line_ends_are_one_enter_each() -> None:
    assert keymap.chords("a\r\nb\rc\n") == [(30,), (28,), (48,), (28,), (46,), (28,)]


# -- pacing keys for QEMU's queue -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        self.slept += seconds


def test_key_pacer_keeps_qemus_queue_within_its_budget() -> None:
    clock = FakeClock()
    pacer = KeyPacer(clock=clock, sleep=clock.sleep)
    chords = keymap.chords("Hello World! " * 40)
    entries_per_second: list[tuple[float, int]] = []
    for chord in chords:
        pacer.wait_for(chord)
        entries_per_second.append((clock.now, pacer._queued))
        assert pacer._queued <= QEMU_QUEUE_BUDGET
    # The first chords go at once; the rest at the pace QEMU types them.
    first_wait = next(i for i, (t, _) in enumerate(entries_per_second) if t > 100.0)
    assert 30 < first_wait < 100
    typing_time = sum(KeyPacer.cost(c)[1] for c in chords)
    assert typing_time * 0.7 < clock.slept < typing_time


# -- screenshots ------------------------------------------------------------------------------------


def test_ppm_becomes_a_png_with_the_same_pixels() -> None:
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90])
    png = to_png(b"P6\n3 2\n255\n" + pixels)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (3, 2)
        assert image.convert("RGB").tobytes() == pixels


def test_a_png_passes_through_and_garbage_is_a_driver_error() -> None:
    png = to_png(b"P6\n1 1\n255\n\x01\x02\x03")
    assert to_png(png, "image/png") == png
    with pytest.raises(DriverError):
        to_png(b"not an image at all")


# -- tickets ----------------------------------------------------------------------------------------


def ticket(sim: SimCloud, vm: str, console: str = "vnc") -> str:
    resp = sim.post(f"/api/v1/instances/{vm}/console/ticket", json={"console": console})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["path"] == f"/api/v1/instances/{vm}/console/{console}"
    return body["ticket"]  # type: ignore[no-any-return]


def refused(sim: SimCloud, path: str, **kw: Any) -> tuple[int, str]:
    with pytest.raises(WebSocketDisconnect) as info, sim.client.websocket_connect(path, **kw):
        pass
    return info.value.code, info.value.reason


def test_a_vnc_ticket_works_once_and_speaks_rfb(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    secret = ticket(sim, "web")
    url = "/api/v1/instances/web/console/vnc"
    with sim.client.websocket_connect(url, subprotocols=["binary", f"ticket.{secret}"]) as ws:
        assert ws.accepted_subprotocol == "binary"  # the ticket is never echoed back
        assert ws.receive_bytes() == b"RFB 003.008\n"
        ws.send_bytes(b"RFB 003.008\n")
        assert ws.receive_bytes() == b"RFB 003.008\n"  # the loopback echoes
    code, reason = refused(sim, url, subprotocols=[f"ticket.{secret}"])
    assert code == 4401 and reason.startswith("ticket_used")
    # only a hash is kept, and the audit log names the session
    with sim.cloud.db.reads() as s:
        row = s.scalars(select(ConsoleTicket)).one()
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr([getattr(row, c.key) for c in ConsoleTicket.__table__.columns])
    sim.cloud.audit.flush()
    with sim.cloud.db.reads() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "vm_vnc_console")).one()
        assert entry.method == "WS" and entry.target is not None and "auth=ticket" in entry.target


def test_tickets_are_refused_when_unknown_expired_or_missing(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    assert refused(sim, "/api/v1/instances/web/console/vnc")[0] == 4401
    code, reason = refused(sim, "/api/v1/instances/web/console/vnc", subprotocols=["ticket.cct_nonsense"])
    assert (code, reason.split(":")[0]) == (4401, "invalid_ticket")
    code, reason = refused(sim, "/api/v1/instances/web/console/vnc", subprotocols=[f"ticket.{sim.token}"])
    assert (code, reason.split(":")[0]) == (4401, "invalid_ticket")  # an API token is not a ticket
    secret = ticket(sim, "web")
    with transaction(sim.cloud.db.sessions) as s:
        s.scalars(select(ConsoleTicket)).one().expires_at = utcnow() - timedelta(seconds=1)
    code, reason = refused(sim, "/api/v1/instances/web/console/vnc", subprotocols=[f"ticket.{secret}"])
    assert (code, reason.split(":")[0]) == (4401, "ticket_expired")


def test_a_ticket_is_bound_to_its_instance_console_and_workspace(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    create_vm("db")
    secret = ticket(sim, "web")
    for path in ("db/console/vnc", "nope/console/vnc", "web/console/serial"):
        code, reason = refused(sim, f"/api/v1/instances/{path}", subprotocols=[f"ticket.{secret}"])
        assert (code, reason.split(":")[0]) == (4403, "ticket_mismatch"), path
    # a ticket issued in another workspace does not reach this workspace's VM of that name
    with transaction(sim.cloud.db.sessions) as s:
        s.scalars(select(ConsoleTicket)).one().workspace_id = "another-workspace"
    code, _ = refused(sim, "/api/v1/instances/web/console/vnc", subprotocols=[f"ticket.{secret}"])
    assert code == 4403
    with transaction(sim.cloud.db.sessions) as s:
        web = s.scalars(select(Instance).where(Instance.name == "web")).one()
        s.scalars(select(ConsoleTicket)).one().workspace_id = web.workspace_id
    # refusals did not use it up
    vnc = "/api/v1/instances/web/console/vnc"
    with sim.client.websocket_connect(vnc, subprotocols=[f"ticket.{secret}"]) as ws:
        assert ws.receive_bytes().startswith(b"RFB ")


def test_deleting_a_vm_takes_its_tickets(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    ticket(sim, "web")
    assert sim.delete("/api/v1/instances/web", params={"force": True, "wait": 10}).status_code == 200
    with sim.cloud.db.reads() as s:
        assert s.scalars(select(ConsoleTicket)).all() == []


# -- the serial console -----------------------------------------------------------------------------


def test_serial_console_with_a_token_or_a_serial_ticket(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    with sim.client.websocket_connect("/api/v1/instances/web/console/serial", headers=sim.headers) as ws:
        assert ws.receive_bytes() == b"\r\nweb login: "
        ws.send_bytes(b"root")
        assert ws.receive_bytes() == b"root"
        ws.send_text("é\r")  # xterm.js sends keys as text frames
        assert ws.receive_bytes() == "é\r".encode()
        ws.send_text('{"type": "resize", "rows": 50, "cols": 100}')  # meaningless on a serial line
        ws.send_text('{"type": "input", "data": "ls\\n"}')  # the exec terminal's input message
        assert ws.receive_bytes() == b"ls\n"
    secret = ticket(sim, "web", "serial")
    serial = "/api/v1/instances/web/console/serial"
    with sim.client.websocket_connect(serial, subprotocols=[f"ticket.{secret}"]) as ws:
        assert ws.receive_bytes().endswith(b"login: ")
    assert refused(sim, "/api/v1/instances/web/console/serial", subprotocols=[f"ticket.{secret}"])[0] == 4401
    assert refused(sim, "/api/v1/instances/web/console/serial")[0] == 4401  # no credentials


def test_the_console_closes_when_the_vm_stops(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    with sim.client.websocket_connect("/api/v1/instances/web/console/serial", headers=sim.headers) as ws:
        ws.receive_bytes()
        assert sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10}).status_code == 200
        assert ws.receive() == {"type": "websocket.close", "code": 1000, "reason": ""}


# -- type and screenshot ------------------------------------------------------------------------------


def test_typing_text_sends_its_chords(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    vm_id = create_vm("web").json()["target_id"]
    resp = sim.post("/api/v1/instances/web/console/type", json={"text": "Ls -l\n"})
    assert resp.status_code == 200 and resp.json() == {"keys": 6}
    assert sim.driver.typed[vm_id] == [(42, 38), (31,), (57,), (12,), (38,), (28,)]


def test_untypable_or_too_long_text_is_refused_before_anything_is_typed(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    vm_id = create_vm("web").json()["target_id"]
    resp = sim.post("/api/v1/instances/web/console/type", json={"text": "naïve café ☃"})
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "untypable_text" and resp.json()["characters"] == ["ï", "é", "☃"]
    assert sim.post("/api/v1/instances/web/console/type", json={"text": ""}).status_code == 422
    too_long = sim.post("/api/v1/instances/web/console/type", json={"text": "a" * 257})
    assert too_long.status_code == 422
    assert vm_id not in sim.driver.typed


def test_a_screenshot_is_a_png(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    resp = sim.get("/api/v1/instances/web/console/screenshot")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(resp.content)) as image:
        assert image.format == "PNG" and image.size == sim.driver.SCREEN


# -- refusals -----------------------------------------------------------------------------------------


def test_stopped_vms_containers_and_unknown_instances(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10})
    body = {"kind": "container", "name": "box", "image": "local/busybox:latest"}
    assert sim.post("/api/v1/instances", json=body, params={"wait": 10}).status_code == 200
    calls = {
        "ticket": lambda ref: sim.post(f"/api/v1/instances/{ref}/console/ticket"),
        "type": lambda ref: sim.post(f"/api/v1/instances/{ref}/console/type", json={"text": "x"}),
        "screenshot": lambda ref: sim.get(f"/api/v1/instances/{ref}/console/screenshot"),
    }
    for what, call in calls.items():
        for ref, status, code in (
            ("web", 409, "instance_not_running"),
            ("box", 422, "not_a_vm"),
            ("nope", 404, "instance_not_found"),
        ):
            resp = call(ref)
            assert (resp.status_code, resp.json()["code"]) == (status, code), (what, ref, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
    assert sim.post("/api/v1/instances/web/console/ticket").json()["state"] == "stopped"
    for ref, close in (("web", 4409), ("box", 4422), ("nope", 4404)):
        code, _ = refused(sim, f"/api/v1/instances/{ref}/console/serial", headers=sim.headers)
        assert code == close, ref


def test_viewers_get_no_console(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    make_user(sim, "vera")
    add_member(sim, "vera", "viewer")
    viewer = bearer(login(sim, "vera")["access_token"])
    for resp in (
        sim.client.post("/api/v1/instances/web/console/ticket", headers=viewer),
        sim.client.post("/api/v1/instances/web/console/type", json={"text": "x"}, headers=viewer),
        sim.client.get("/api/v1/instances/web/console/screenshot", headers=viewer),
    ):
        assert (resp.status_code, resp.json()["code"]) == (403, "permission_denied")
    code, _ = refused(sim, "/api/v1/instances/web/console/serial", headers=viewer)
    assert code == 4403


def test_a_ticket_offered_as_a_subprotocol_stays_out_of_the_url(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    secret = ticket(sim, "web")
    url = "/api/v1/instances/web/console/vnc"
    with sim.client.websocket_connect(url, subprotocols=["binary", f"ticket.{secret}"]) as ws:
        assert ws.accepted_subprotocol == "binary"  # never the ticket echoed back
        assert ws.receive_bytes() == b"RFB 003.008\n"
    code, reason = refused(sim, url, subprotocols=["binary", f"ticket.{secret}"])
    assert code == 4401 and reason.startswith("ticket_used")
    serial = ticket(sim, "web", "serial")
    path = "/api/v1/instances/web/console/serial"
    with sim.client.websocket_connect(path, subprotocols=["binary", f"ticket.{serial}"]) as ws:
        assert ws.accepted_subprotocol == "binary"
