"""OS Cloud's own lab sheet, run with curl word for word (but for the port) against a real server
and a real VM: create my_vm (2G memory, 10G disk, with an ssh_key), list, info (its address answers
HTTP, SSH takes the key), stop, start, and the error cases in OS Cloud's words.

The commands are those of open-education-hub/operating-systems,
content/chapters/app-interact/lab/content/os-cloud.md, without the `| jq .` pretty-printing. The
tiny test guest stands in for Ubuntu: it is imported under the name `ubuntu_22.04`, so the
commands need no change."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.integration.conftest import (
    import_tiny,
    running_server,
    traversable_tmp,
    wait_guest_http,
    wait_guest_ssh,
)

pytestmark = pytest.mark.integration

# The lab sheet's commands, as printed there (its line continuations and tabs included).
WELCOME = "curl localhost:5000"
LIST = "curl localhost:5000/vm_list"
CREATE = (
    'curl -H "Content-Type: application/json" \\\n'
    """\t-d '{ "name": "my_vm", "image": "ubuntu_22.04", "network": "default", "mem_size": "2G", """
    """"disk_size": "10G"}' \\\n"""
    "\tlocalhost:5000/vm_create"
)
INFO = """curl -s -H "Content-Type: application/json" -d '{ "id": 1 }' localhost:5000/vm_info"""
STOP = """curl -H "Content-Type: application/json" -d '{ "id": 1}' localhost:5000/vm_stop"""
START = """curl -H "Content-Type: application/json" -d '{ "id": 1}' localhost:5000/vm_start"""


def sh(command: str, port: int, *, status: bool = False) -> str:
    """Run a lab command in bash on our port; with ``status``, the HTTP status follows the body
    on a line of its own (curl -w)."""
    command = command.replace("localhost:5000", f"localhost:{port}")
    if status:
        command += " -s -w '\\n%{http_code}'"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


def error(command: str, port: int, expected_status: int = 200) -> dict[str, Any]:
    body, _, code = sh(command, port, status=True).rpartition("\n")
    assert int(code) == expected_status, (command, body, code)
    answer: dict[str, Any] = json.loads(body)
    assert answer["status"] == "error" and answer["error_msg"], answer
    return answer


def test_the_lab_sheet_word_for_word(libvirt_conn, tiny_image, ssh_key) -> None:  # type: ignore[no-untyped-def]
    key_path, public_key = ssh_key
    port = free_port()
    env = {"CLOUDLET_OSCLOUD_LISTEN": f"127.0.0.1:{port}"}
    with running_server(libvirt_conn, traversable_tmp("oscloud-"), extra_env=env) as server:
        with server.client() as c:
            import_tiny(c, tiny_image, name="ubuntu_22.04")

        assert sh(WELCOME, port) == "Welcome to OS Cloud!\n"
        assert sh(LIST, port) == "[]\n"
        with_key = CREATE.replace('"disk_size": "10G"}', f'"disk_size": "10G", "ssh_key": "{public_key}"}}')
        assert sh(with_key, port) == '{"id":1,"status":"ok"}\n'
        assert sh(LIST, port) == '[{"id":1,"name":"my_vm"}]\n'
        info = json.loads(sh(INFO, port))
        ip = info.pop("ip")
        assert info == {
            "disk_size": 10737418240,
            "id": 1,
            "mem_size": 2147483648,
            "name": "my_vm",
            "network": "default",
            "os": "ubuntu_22.04",
            "state": "RUNNING",
        }
        wait_guest_http(ip, "my-vm")  # the guest's hostname, made from its name
        assert wait_guest_ssh(Path(key_path), ip) == "my-vm"  # root took the ssh_key
        with server.client() as c:  # the native API shows the same VM by the same name
            native = c.instance("my_vm")
            assert (native["name"], native["hostname"], native["ip"]) == ("my_vm", "my-vm", ip)
            assert (native["memory"], native["disk"]) == (2048, 10)

        assert sh(STOP, port) == '{"status":"ok"}\n'
        assert json.loads(sh(INFO, port))["state"] == "STOPPED"
        stopped_again = error(STOP, port)  # OS Cloud's reference answered an error here too
        assert stopped_again["error_msg"] == "vm '1' is already stopped"
        assert sh(START, port) == '{"status":"ok"}\n'
        assert json.loads(sh(INFO, port))["state"] == "RUNNING"
        assert sh(START, port) == '{"status":"ok"}\n'  # as OS Cloud's: ok, and the VM runs on
        wait_guest_http(ip, "my-vm")

        # The errors, in OS Cloud's words, with HTTP 200 as it answered them.
        assert error(CREATE, port)["error_msg"] == 'vm "my_vm" already exists'
        no_network = CREATE.replace('"network": "default", ', "")
        assert error(no_network, port)["error_msg"] == "VM network not provided"
        assert error(CREATE.replace('"my_vm"', '"vm2"').replace('"default"', '"lab"'), port)["error_msg"] == (
            'network "lab" not found'
        )
        other_image = CREATE.replace('"my_vm"', '"vm2"').replace("ubuntu_22.04", "debian_12")
        assert error(other_image, port)["error_msg"] == 'disk template "debian_12" not found'
        assert error(CREATE.replace('"2G"', '"lots"'), port)["error_msg"] == "Invalid mem_size: lots"
        assert error(INFO.replace('"id": 1', '"id": 99'), port)["error_msg"] == 'vm "99" not found'
        assert error(STOP.replace('"id": 1', '"id": 99'), port)["error_msg"] == "vm '99' not found"
        assert error(START.replace('"id": 1', '"id": 99'), port)["error_msg"] == "vm '99' not found"
        assert error(STOP.replace('"id": 1', '"ID": 1'), port)["error_msg"] == "VM id not provided"
        assert error(CREATE.replace('"my_vm"', '"My.VM"'), port)["code"] == "hostname_taken"
        assert error("curl localhost:5000/vm_delete", port, 404)["code"] == "not_found"
        form = "curl -d 'name=my_vm' localhost:5000/vm_create"  # no JSON type: refused, as Flask did
        assert error(form, port, 415)["code"] == "unsupported_media_type"
        assert sh(LIST, port) == '[{"id":1,"name":"my_vm"}]\n'

        # A deleted VM's id is never given again.
        with server.client() as c:
            c.delete_instance("my_vm", force=True)
        assert error(INFO, port)["error_msg"] == 'vm "1" not found'
        small = CREATE.replace('"my_vm"', '"Test.VM"').replace('"2G"', '"128M"').replace('"10G"', '"2G"')
        assert sh(small, port) == '{"id":2,"status":"ok"}\n'
        assert sh(LIST, port) == '[{"id":2,"name":"Test.VM"}]\n'
        info = json.loads(sh(INFO.replace('"id": 1', '"id": 2'), port))
        assert (info["name"], info["mem_size"], info["disk_size"]) == ("Test.VM", 128 * 1024**2, 2 * 1024**3)
