"""Bad input on the real backend: clear errors, and nothing left behind."""

from __future__ import annotations

import pytest

from cloudlet.client import ApiError
from tests.integration.conftest import cache_dir, domain_exists, import_tiny, next_subnet

pytestmark = pytest.mark.integration


def _nothing_left(server, libvirt_conn, before_dirs: set[str]) -> None:  # type: ignore[no-untyped-def]
    dirs = {p.name for p in (server.data_dir / "instances").glob("*")}
    assert dirs == before_dirs
    for dom in libvirt_conn.listAllDomains(0):
        assert dom.name().removeprefix("cloudlet-") not in dirs - before_dirs


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ({"name": "bad/name"}, 422, "invalid_name"),
        ({"name": " lead"}, 422, "invalid_name"),
        ({"name": "x" * 64}, 422, "invalid_name"),
        ({"memory": 16}, 422, "validation_error"),
        ({"cpus": 0}, 422, "validation_error"),
        ({"disk": 0}, 422, "validation_error"),
        ({"image": "no-such-image"}, 422, "unknown_image"),
        ({"network": "no-such-net"}, 422, "unknown_network"),
        ({"ssh_keys": ["not a key"]}, 422, "invalid_ssh_key"),
        ({"memory": 1024 * 1024}, 409, "insufficient_memory"),
    ],
)
def test_bad_create_is_refused_and_leaves_nothing(
    sqlite_server, libvirt_conn, tiny_image, spec, status, code
):  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        before = {p.name for p in (sqlite_server.data_dir / "instances").glob("*")}
        used = c.network("default")["addresses_used"]
        body = {"name": "bad1", "image": "tiny", "memory": 128, **spec}
        with pytest.raises(ApiError) as err:
            c.create_instance(**body)
        assert (err.value.status, err.value.code) == (status, code)
        assert err.value.problem["type"].endswith(code)
        if code == "insufficient_memory":
            assert "1048576 MiB requested" in err.value.detail and "available" in err.value.detail
        assert all(v["name"] != body["name"] for v in c.instances())
        assert c.network("default")["addresses_used"] == used
        _nothing_left(sqlite_server, libvirt_conn, before)


def test_full_network_and_in_use_guards(sqlite_server, libvirt_conn, tiny_image):  # type: ignore[no-untyped-def]
    """A /29 holds 4 VMs (6 hosts less gateway and DHCP spare); the 5th gets a clear 409."""
    cidr = next_subnet().replace(".0/24", ".64/29")
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        c.create_network("small", cidr)
        ips = set()
        for i in range(4):
            c.create_instance(name=f"fill{i}", image="tiny", memory=128, network="small")
            ips.add(c.instance(f"fill{i}")["ip"])
        assert len(ips) == 4
        with pytest.raises(ApiError) as err:
            c.create_instance(name="fill4", image="tiny", memory=128, network="small")
        assert (err.value.status, err.value.code) == (409, "network_exhausted")
        assert all(v["name"] != "fill4" for v in c.instances())

        with pytest.raises(ApiError) as err:
            c.delete_network("small")
        assert (err.value.status, err.value.code) == (409, "network_in_use")
        with pytest.raises(ApiError) as err:
            c.delete_image("tiny")
        assert (err.value.status, err.value.code) == (409, "image_in_use")

        # Invalid transitions name the action and the state.
        with pytest.raises(ApiError) as err:
            c.action("fill0", "start")
        assert err.value.status == 409 and "start" in err.value.detail and "running" in err.value.detail
        with pytest.raises(ApiError) as err:
            c.delete_instance("fill0")
        assert (err.value.status, err.value.code) == (409, "instance_running")

        ids = [c.instance(f"fill{i}")["id"] for i in range(4)]
        for i in range(4):
            c.delete_instance(f"fill{i}", force=True)
        assert not any(domain_exists(libvirt_conn, i) for i in ids)
        c.delete_network("small")
        assert all(n["name"] != "small" for n in c.networks())


def test_path_import_is_confined_to_allowed_folders(sqlite_server, tmp_path):  # type: ignore[no-untyped-def]
    """Importing /etc/shadow as a 'raw image' would let any API user read host files."""
    with sqlite_server.client() as c:
        for path in ("/etc/shadow", str(cache_dir() / ".." / ".." / ".bashrc")):
            with pytest.raises(ApiError) as err:
                c.import_image("sneaky", path)
            assert (err.value.status, err.value.code) == (403, "import_path_forbidden")
        link = cache_dir() / f"link-{tmp_path.name}"
        link.symlink_to("/etc/passwd")
        try:
            with pytest.raises(ApiError) as err:
                c.import_image("sneaky", str(link))
            assert err.value.code == "import_path_forbidden"
        finally:
            link.unlink()
        assert all(i["name"] != "sneaky" for i in c.images())
