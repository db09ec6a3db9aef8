"""Issue 13, finding 1, on a real server process: an image URL import cannot reach the server's
own loopback (by address, by name, or through a redirect from an allow-listed source), no
connection even arrives, and every failure reads the same. Only loopback listeners are used."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cloudlet.services.image_download import UNREACHABLE
from tests.helpers import free_port
from tests.integration.conftest import Server, running_server, traversable_tmp
from tests.unit.test_security_outbound import Listener, Redirector

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(libvirt_conn) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """A server that may download from 127.0.0.2 only (an admin's allow-listed mirror)."""
    allow = {"CLOUDLET_OUTBOUND_ALLOW": json.dumps(["127.0.0.2"]), "CLOUDLET_IMAGE_DOWNLOAD_TIMEOUT": "2"}
    with running_server(libvirt_conn, traversable_tmp("server-outbound-"), extra_env=allow) as s:
        yield s


@pytest.fixture(scope="module")
def mirror() -> Iterator[str]:
    """The allow-listed source: redirects on request, 404 otherwise."""
    site = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Redirector)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


def failed_import(server: Server, name: str, url: str) -> dict[str, Any]:
    with server.client() as c:
        op = c.request("POST", "/images", json={"name": name, "url": url}, params={"wait": 60})
        assert op["status"] == "failed", op
        assert not [i for i in c.images() if i["name"] == name]
    error: dict[str, Any] = op["error"]
    return error


def test_loopback_is_refused_and_never_reached(server: Server, mirror: str) -> None:
    port = Listener("127.0.0.1")
    try:
        urls = {
            "address": port.url(),
            "name": port.url(host="localhost"),
            "redirect": f"{mirror}/redirect?to={port.url()}",
        }
        errors = {how: failed_import(server, f"ssrf-{how}", url) for how, url in urls.items()}
        assert port.arrived() == 0  # the server never connected to the loopback listener
    finally:
        port.close()
    expected = {"code": "download_failed", "status": 422, "detail": UNREACHABLE}
    assert errors == dict.fromkeys(urls, expected)


def test_a_closed_port_a_silent_port_and_a_404_read_the_same(server: Server, mirror: str) -> None:
    silent = Listener("127.0.0.2")
    try:
        urls = {
            "closed": f"http://127.0.0.2:{free_port()}/disk.qcow2",
            "silent": silent.url(),
            "404": f"{mirror}/missing.qcow2",
            "refused": f"http://127.0.0.3:{free_port()}/disk.qcow2",
        }
        errors = {why: failed_import(server, f"scan-{why}", url) for why, url in urls.items()}
    finally:
        silent.close()
    assert len({json.dumps(e, sort_keys=True) for e in errors.values()}) == 1, errors
    assert errors["404"]["detail"] == UNREACHABLE
    log = server.log.read_text()  # the admin still learns what happened
    assert "the server answered 404" in log and "Connection refused" in log and "loopback" in log
