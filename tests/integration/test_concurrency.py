"""Concurrent users on the real backend, with SQLite and PostgreSQL: distinct addresses for
parallel creates, and one winner for a contested name."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cloudlet.client import ApiError
from tests.helpers import eventually
from tests.integration.conftest import import_tiny

pytestmark = pytest.mark.integration


def test_parallel_creates_get_distinct_addresses_and_names_have_one_winner(server, tiny_image):  # type: ignore[no-untyped-def]
    with server.client() as c:
        import_tiny(c, tiny_image)

    def create(name: str) -> str:
        with server.client() as c:
            try:
                c.create_instance(name=name, image="tiny", memory=128)
            except ApiError as err:
                return err.code
            return "created"

    names = [f"par{i}" for i in range(6)] + ["contested"] * 4
    with ThreadPoolExecutor(len(names)) as pool:
        outcomes = list(pool.map(create, names))
    assert outcomes[:6] == ["created"] * 6
    assert sorted(outcomes[6:]) == ["created", "name_taken", "name_taken", "name_taken"]
    with server.client() as c:
        vms = c.instances()
        ips = [v["ip"] for v in vms]
        assert len(vms) == 7 and len(set(ips)) == 7
        # Seven TCG guests booting at once on two cores: a guest may be caught in a reboot for a
        # moment (libvirt restarts the domain), so wait for the states to settle, then check them.
        eventually(
            lambda: all(v["state"] == "running" for v in c.instances()),
            timeout=60,
            what=f"all running (now {[(v['name'], v['state']) for v in c.instances()]})",
        )
        assert c.network("default")["addresses_used"] == 7
        with ThreadPoolExecutor(7) as pool:
            list(pool.map(lambda v: c.delete_instance(v["id"], force=True), vms))
        assert c.instances() == [] and c.network("default")["addresses_used"] == 0
