"""State stays true: VMs stopped or destroyed behind cloudlet's back, and a server killed with
SIGKILL in the middle of a create, which the next start rolls back."""

from __future__ import annotations

import signal

import pytest

from tests.helpers import eventually
from tests.integration.conftest import (
    dhcp_macs,
    domain_exists,
    import_tiny,
    running_server,
    traversable_tmp,
    wait_state,
)

pytestmark = pytest.mark.integration


def test_reconciler_follows_changes_made_outside(sqlite_server, libvirt_conn, tiny_image):  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        c.create_instance(name="outside", image="tiny", memory=128)
        c.action("outside", "force-stop")
        assert c.instance("outside")["state"] == "stopped"
        c.action("outside", "start")
        vm = c.instance("outside")
        dom = libvirt_conn.lookupByName(f"cloudlet-{vm['id']}")
        dom.destroy()  # "virsh destroy" behind cloudlet's back
        wait_state(c, "outside", "stopped", timeout=20)
        dom.create()
        wait_state(c, "outside", "running", timeout=20)
        dom.destroy()
        dom.undefine()  # gone entirely
        gone = wait_state(c, "outside", "error", timeout=20)
        assert gone["error"]
        c.delete_instance("outside", force=True)
        assert all(v["name"] != "outside" for v in c.instances())


def test_kill_mid_create_is_rolled_back_on_restart(libvirt_conn, tiny_image):  # type: ignore[no-untyped-def]
    with running_server(libvirt_conn, traversable_tmp("srv-")) as server:
        with server.client() as c:
            import_tiny(c, tiny_image)
            bridge = c.network("default")["bridge"]
            op = c.create_instance(wait=False, name="doomed", image="tiny", memory=128)
            instance_id = op["target_id"]
            folder = server.data_dir / "instances" / instance_id
            # Kill as soon as the create has made something on the host.
            eventually(folder.exists, timeout=30, interval=0.01, what="the create to start")
        server.stop(signal.SIGKILL)
        server.start()
        with server.client() as c:
            assert all(v["name"] != "doomed" for v in c.instances())
            after = c.request("GET", f"/operations/{op['id']}")
            assert after["status"] == "failed" and after["error"]["code"] == "interrupted"
            assert c.network("default")["addresses_used"] == 0
            assert not domain_exists(libvirt_conn, instance_id)
            assert not folder.exists()
            assert dhcp_macs(libvirt_conn, bridge) == set()
            # The name is free again.
            c.create_instance(name="doomed", image="tiny", memory=128)
            assert c.instance("doomed")["state"] == "running"
