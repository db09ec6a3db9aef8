"""Containers on the real Docker engine, through the API: build from a project with a live log,
run with a port mapping, HTTP, logs, stats, exec (TTY and not), stop, delete, nothing left."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime

import httpx
import pytest
from websockets.sync.client import connect

from cloudlet.client import ApiError, Client, OperationFailed
from tests.helpers import eventually, free_port
from tests.integration.docker_images import BUSYBOX_REF

pytestmark = pytest.mark.integration

DOCKERFILE = f"""FROM {BUSYBOX_REF}
COPY index.html /www/index.html
RUN echo built > /www/built.txt
EXPOSE 8080
CMD ["httpd", "-f", "-vv", "-p", "8080", "-h", "/www"]
"""


def labelled(engine, instance_id: str) -> list[object]:  # type: ignore[no-untyped-def]
    return engine.containers.list(all=True, filters={"label": f"cloudlet.instance={instance_id}"})


def ws_connect(server, path: str, **kw):  # type: ignore[no-untyped-def]
    """A websocket of the API, authenticated by header (never a token in the URL)."""
    url = server.url.replace("http", "ws", 1) + "/api/v1" + path
    return connect(url, additional_headers={"Authorization": f"Bearer {server.token}"}, **kw)


def follow_log(server, op_id: str, lines: list[tuple[float, str]]) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {server.token}"}
    url = f"{server.url}/api/v1/operations/{op_id}/log"
    with httpx.stream("GET", url, params={"follow": True}, headers=headers, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            lines.append((time.time(), line))


def build(server, c: Client, project: str, tag: str) -> tuple[dict, list[tuple[float, str]]]:  # type: ignore[no-untyped-def, type-arg]
    op = c.request("POST", f"/projects/{project}/build", json={"tags": [tag]})
    lines: list[tuple[float, str]] = []
    follower = threading.Thread(target=follow_log, args=(server, op["id"], lines))
    follower.start()
    try:
        final = c.wait(op, timeout=120)
    except OperationFailed as failed:
        final = failed.operation
    follower.join(timeout=30)
    return final, lines


def test_build_run_use_and_remove_a_container(sqlite_server, engine):  # type: ignore[no-untyped-def]
    port = free_port()
    with sqlite_server.client() as c:
        c.create_project("web", dockerfile=DOCKERFILE)
        c.put_project_file("web", "index.html", b"hello from cloudlet\n")

        op, lines = build(sqlite_server, c, "web", "web:1")
        assert op["status"] == "succeeded", op
        assert op["result"]["id"].startswith("sha256:") and "web:1" in op["result"]["tags"]
        text = [line for _, line in lines]
        assert any(line.startswith("Step 1/") and "FROM" in line for line in text), text
        assert any("Successfully built" in line for line in text), text
        # live: the first lines reached the follower before the operation had ended
        finished = datetime.fromisoformat(op["finished_at"]).timestamp()
        assert lines[0][0] < finished, "the first build line arrived only after the build ended"

        images = c.request("GET", "/container-images", params={"filter": "web:"})
        assert ["web:1"] in [i["tags"] for i in images]  # other tests may build "...web:" images meanwhile

        op = c.create_instance(
            kind="container",
            name="web",
            image="web:1",
            ports=[{"host": port, "container": 8080}],
            env={"GREETING": "hi"},
            volumes=[{"name": "data", "path": "/data"}],
            memory=64,
            cpus=0.5,
        )
        instance_id = op["result"]["instance_id"]
        ip = op["result"]["ip"]
        body = eventually(
            lambda: httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=2).text,
            timeout=20,
            what="the container's HTTP port",
        )
        assert body == "hello from cloudlet\n"

        shown = c.request("GET", "/instances/web", params={"size": True})
        assert shown["kind"] == "container" and shown["state"] == "running" and shown["ip"] == ip
        ct = shown["container"]
        assert ct["image"] == "web:1" and len(ct["short_id"]) == 12 and ct["status"] == "running"
        assert ct["ports"] == [{"host": port, "container": 8080, "protocol": "tcp", "host_ip": ""}]
        assert ct["size_rw"] is not None and ct["size_root_fs"] >= ct["size_rw"]
        listed = c.request("GET", "/instances", params={"kind": "container"})["items"]
        assert [i["container"]["short_id"] for i in listed] == [ct["short_id"]]
        (real,) = labelled(engine, instance_id)
        assert real.id.startswith(ct["short_id"]) and real.attrs["HostConfig"]["Memory"] == 64 * 2**20

        # logs: httpd -v logs each request
        logs = c.http.get("/api/v1/instances/web/logs", params={"tail": 50, "timestamps": True}).text
        assert "url:/index.html" in logs and logs.split(" ", 1)[0].startswith("20")
        with ws_connect(sqlite_server, "/instances/web/logs/ws?tail=0") as ws:
            time.sleep(0.3)
            httpx.get(f"http://127.0.0.1:{port}/again.html", timeout=5)
            seen = ""
            while "again.html" not in seen:
                seen += ws.recv(timeout=10)

        stats = c.request("GET", "/instances/web/stats")
        assert stats["memory_bytes"] > 0 and stats["memory_limit_bytes"] == 64 * 2**20 and stats["pids"] >= 1
        assert stats["network_rx_bytes"] > 0
        with ws_connect(sqlite_server, "/instances/web/stats/ws") as ws:
            samples = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
            assert samples[1]["read_at"] > samples[0]["read_at"]

        done = c.request("POST", "/instances/web/exec", json={"command": ["cat", "/www/built.txt"]})
        assert done == {"exit_code": 0, "output": "built\n", "output_base64": None, "truncated": False}
        failed = c.request(
            "POST", "/instances/web/exec", json={"command": ["sh", "-c", "echo $GREETING; exit 7"]}
        )
        assert failed["exit_code"] == 7 and failed["output"] == "hi\n"
        tty = c.request("POST", "/instances/web/exec", json={"command": ["tty"], "tty": True})
        assert tty["exit_code"] == 0 and tty["output"].startswith("/dev/pts/")

        with ws_connect(sqlite_server, "/instances/web/exec/ws?command=/bin/sh&rows=30&cols=100") as ws:
            ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 132}))
            ws.send(b"stty size; echo $((6*7)); exit 3\n")
            output, ended = b"", None
            while ended is None:
                frame = ws.recv(timeout=15)
                if isinstance(frame, bytes):
                    output += frame
                else:
                    ended = json.loads(frame)
            assert b"40 132" in output and b"42" in output, output
            assert ended == {"type": "exit", "code": 3}
        audited = c.request("GET", "/audit", params={"action": "container_exec_terminal"})
        assert audited and audited[0]["target"].startswith("ref=web command=/bin/sh")

        for action, state in (("pause", "paused"), ("resume", "running"), ("restart", "running")):
            assert c.action("web", action)["status"] == "succeeded"
            assert c.instance("web")["state"] == state
        assert c.action("web", "stop")["status"] == "succeeded"
        assert c.instance("web")["state"] == "stopped"
        assert c.instance("web")["container"]["status"] == "exited"
        assert c.action("web", "start")["status"] == "succeeded"
        assert c.action("web", "kill")["status"] == "succeeded"
        assert c.instance("web")["state"] == "stopped"

        c.delete_instance("web")
        assert labelled(engine, instance_id) == []
        assert engine.volumes.list(filters={"label": f"cloudlet.instance={instance_id}"}) == []
        assert all(i["id"] != instance_id for i in c.instances())
        c.request("DELETE", "/container-images/web:1")  # no container uses it any more
        assert all("web:1" not in i["tags"] for i in c.request("GET", "/container-images"))


def test_bad_input_is_refused_and_leaves_nothing(sqlite_server, engine):  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        before = {x.id for x in engine.containers.list(all=True)}

        def refused(status: int, code: str, **spec: object) -> None:
            with pytest.raises(ApiError) as err:
                c.create_instance(kind="container", **spec)
            assert (err.value.status, err.value.problem["code"]) == (status, code), err.value.problem

        refused(422, "unknown_image", name="x1", image="nothing/here:1")
        refused(422, "invalid_image_ref", name="x1", image="UPPER CASE")
        refused(422, "invalid_name", name="Bad_Name", image=BUSYBOX_REF)
        refused(
            403,
            "host_mounts_forbidden",
            name="x1",
            image=BUSYBOX_REF,
            volumes=[{"host_path": "/", "path": "/host"}],
        )
        refused(403, "privileged_forbidden", name="x1", image=BUSYBOX_REF, privileged=True)
        refused(
            422, "invalid_volume", name="x1", image=BUSYBOX_REF, volumes=[{"name": "v", "path": "../etc"}]
        )
        refused(422, "invalid_port", name="x1", image=BUSYBOX_REF, ports=[{"host": 70000, "container": 80}])
        with socket.socket() as holder:
            holder.bind(("0.0.0.0", 0))
            holder.listen()
            taken = holder.getsockname()[1]
            refused(
                409, "port_in_use", name="x1", image=BUSYBOX_REF, ports=[{"host": taken, "container": 80}]
            )

        # a Dockerfile whose step fails: the operation names the step and shows its output
        c.create_project("broken", dockerfile=f"FROM {BUSYBOX_REF}\nRUN echo about to fail && false\n")
        op, lines = build(sqlite_server, c, "broken", "broken:1")
        assert op["status"] == "failed" and op["error"]["code"] == "build_failed", op
        assert op["error"]["step"] == "RUN echo about to fail && false"
        assert "about to fail" in op["error"]["output"]
        assert any("returned a non-zero code" in line for _, line in lines)
        assert c.request("GET", "/container-images", params={"filter": "broken"}) == []
        with pytest.raises(ApiError) as err:
            c.put_project_file("broken", "../escape.txt", b"x")
        assert err.value.problem["code"] == "invalid_path"

        assert c.instances() == [] or all(i["kind"] != "container" for i in c.instances())
        assert {x.id for x in engine.containers.list(all=True)} == before


def test_images_list_delete_and_registry_errors(sqlite_server, engine):  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        images = c.request("GET", "/container-images")
        created = [i["created"] for i in images]
        assert created == sorted(created, reverse=True)
        assert any(BUSYBOX_REF in i["tags"] for i in images)
        assert c.request("GET", f"/container-images/{BUSYBOX_REF}")["tags"] == [BUSYBOX_REF]

        c.create_instance(kind="container", name="user", image=BUSYBOX_REF, command=["sleep", "600"])
        with pytest.raises(ApiError) as err:
            c.request("DELETE", f"/container-images/{BUSYBOX_REF}")
        assert (err.value.status, err.value.problem["code"]) == (409, "image_in_use")
        c.delete_instance("user", force=True)

        # a throw-away tag of busybox can be deleted; the image itself stays
        engine.images.get(BUSYBOX_REF).tag("local/throwaway", "1")
        c.request("DELETE", "/container-images/local/throwaway:1")
        assert c.request("GET", "/container-images", params={"filter": "throwaway"}) == []
        assert c.request("POST", "/container-images/prune")["space_reclaimed"] >= 0

        started = time.monotonic()
        with pytest.raises(ApiError) as err:
            c.request("GET", "/container-images/search", params={"q": "nginx"})
        assert (err.value.status, err.value.problem["code"]) == (502, "registry_unreachable")
        with pytest.raises(OperationFailed) as failed:
            c.wait(c.request("POST", "/container-images/pull", json={"image": "alpine:3"}), timeout=30)
        assert failed.value.operation["error"]["code"] == "registry_unreachable"
        assert failed.value.operation["error"]["status"] == 502
        assert time.monotonic() - started < 10, "no registry must fail fast"


def test_reconciler_follows_changes_made_outside(sqlite_server, engine):  # type: ignore[no-untyped-def]
    foreign = engine.containers.run(BUSYBOX_REF, ["sleep", "600"], detach=True, name=f"foreign-{free_port()}")
    try:
        with sqlite_server.client() as c:
            op = c.create_instance(
                kind="container", name="outside", image=BUSYBOX_REF, command=["sleep", "600"]
            )
            (real,) = labelled(engine, op["result"]["instance_id"])
            real.kill()
            eventually(
                lambda: c.instance("outside")["state"] == "stopped", timeout=15, what="stopped after kill"
            )
            real.remove(force=True)
            eventually(
                lambda: c.instance("outside")["state"] == "error", timeout=15, what="error after removal"
            )
            assert "lost" in (c.instance("outside")["error"] or "")
            c.delete_instance("outside")
        foreign.reload()
        assert foreign.status == "running", "a container without cloudlet's labels was touched"
    finally:
        foreign.remove(force=True)


def test_cli_drives_containers_images_and_projects(sqlite_server, engine, tmp_path):  # type: ignore[no-untyped-def]
    from tests.integration.test_events_and_cli import _cli

    port = free_port()
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    page = tmp_path / "index.html"
    page.write_text("from the cli\n")

    def ok(*args: str, stdin: str | None = None) -> str:
        done = _cli(sqlite_server, *args) if stdin is None else _cli_input(sqlite_server, stdin, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    ok("ct", "project", "create", "cliweb", "--dockerfile", str(dockerfile))
    ok("ct", "project", "put", "cliweb", "index.html", "--from", str(page))
    built = ok("ct", "project", "build", "cliweb", "--tag", "cliweb:1")
    assert "Step 1/" in built and "Successfully tagged cliweb:1" in built
    assert "cliweb:1" in ok("ct", "image", "list", "cliweb")

    ok("ct", "run", "cliweb", "cliweb:1", "-p", f"{port}:8080", "-e", "WHO=cli", "--memory", "32")
    assert (
        eventually(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text, timeout=20)
        == "from the cli\n"
    )
    listed = ok("ct", "list")
    assert "cliweb" in listed and f"{port}->8080/tcp" in listed
    assert "running" in ok("ct", "show", "cliweb")
    assert "url:/" in ok("ct", "logs", "cliweb", "--tail", "5")
    assert ok("ct", "exec", "cliweb", "--", "sh", "-c", "echo $WHO") == "cli\n"
    failed = _cli(sqlite_server, "ct", "exec", "cliweb", "--", "sh", "-c", "exit 5")
    assert failed.returncode == 5
    shell = _cli_input(
        sqlite_server, "echo $((6*7))\nexit 4\n", "ct", "exec", "-it", "cliweb", "--", "/bin/sh"
    )
    assert shell.returncode == 4 and "42" in shell.stdout, (shell.stdout, shell.stderr)
    assert "MEM" in ok("ct", "stats", "cliweb")
    ok("ct", "stop", "cliweb")
    ok("ct", "delete", "cliweb")
    ok("ct", "image", "delete", "cliweb:1")

    for args in (("ct", "image", "pull", "alpine:3"), ("ct", "image", "search", "nginx")):
        refused = _cli(sqlite_server, *args)
        assert refused.returncode != 0 and "registry_unreachable" in refused.stderr, refused.stderr
    bad = _cli(sqlite_server, "ct", "run", "x1", BUSYBOX_REF, "-v", "/etc:/host")
    assert bad.returncode == 2 and "host_mounts_forbidden" in bad.stderr


def _cli_input(server, stdin: str, *args: str):  # type: ignore[no-untyped-def]
    import os
    import subprocess

    from tests.integration.conftest import CLOUDLET

    env = {**os.environ, "CLOUDLET_URL": server.url, "CLOUDLET_TOKEN": server.token, "COLUMNS": "200"}
    return subprocess.run(
        [CLOUDLET, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_vm_and_container_on_one_network_reach_each_other(sqlite_server, engine, tiny_image, ssh_key):  # type: ignore[no-untyped-def]
    from tests.integration.conftest import import_tiny, ssh_run, wait_guest_http

    key, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        vm = c.create_instance(name="neighbour-vm", image="tiny", memory=128, ssh_keys=[pub], hostname="nvm")
        ct = c.create_instance(
            kind="container",
            name="neighbour-ct",
            image=BUSYBOX_REF,
            command=["httpd", "-f", "-p", "8080", "-h", "/etc"],
        )
        vm_ip, ct_ip = vm["result"]["ip"], ct["result"]["ip"]
        net = c.network("default")
        assert c.instance("neighbour-ct")["network"] == "default"
        # both addresses come from cloudlet's IPAM, on the same network
        import ipaddress

        assert {ipaddress.ip_address(vm_ip), ipaddress.ip_address(ct_ip)} <= set(
            ipaddress.ip_network(net["cidr"])
        )
        (real,) = labelled(engine, ct["result"]["instance_id"])
        assert next(iter(real.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"] == ct_ip

        wait_guest_http(vm_ip, "nvm")
        got = c.exec("neighbour-ct", ["wget", "-q", "-O", "-", f"http://{vm_ip}/"])
        assert got == {**got, "exit_code": 0, "output": "nvm\n"}, got
        back = eventually(
            lambda: (
                (p := ssh_run(key, vm_ip, "wget", "-q", "-O", "-", f"http://{ct_ip}:8080/passwd")).returncode
                == 0
                and p.stdout
            ),
            timeout=60,
            interval=2,
            what="the VM to fetch from the container",
        )
        assert back.startswith("root:")
        c.delete_instance("neighbour-ct", force=True)
        c.delete_instance("neighbour-vm", force=True)


def test_huge_logs_stream_without_filling_memory(sqlite_server, engine):  # type: ignore[no-untyped-def]
    """40 MB of output is streamed through the API while the server's memory stays flat."""
    import psutil

    with sqlite_server.client() as c:
        c.create_instance(
            kind="container",
            name="chatty",
            image=BUSYBOX_REF,
            command=[
                "sh",
                "-c",
                "yes 'a line of log output, over and over' | head -c 40000000; echo; echo END; sleep 600",
            ],
        )
        eventually(  # the engine's log writer lags behind the process: wait for the last line
            lambda: c.http.get("/api/v1/instances/chatty/logs", params={"tail": 1}).text == "END\n",
            timeout=120,
            interval=1,
            what="the whole output to be logged",
        )
        server = psutil.Process(sqlite_server.proc.pid)
        before = server.memory_info().rss
        peak, total = before, 0
        headers = {"Authorization": f"Bearer {sqlite_server.token}"}
        with httpx.stream(
            "GET", f"{sqlite_server.url}/api/v1/instances/chatty/logs", headers=headers, timeout=120
        ) as r:
            for chunk in r.iter_bytes():
                total += len(chunk)
                peak = max(peak, server.memory_info().rss)
        assert total == 40_000_005
        assert peak - before < 15 * 2**20, f"the server grew by {(peak - before) / 2**20:.0f} MiB"
        tail = c.http.get("/api/v1/instances/chatty/logs", params={"tail": 3}).text
        assert tail.count("\n") == 3
        c.delete_instance("chatty", force=True)


def test_volumes_persist_and_networks_detach(sqlite_server, engine):  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        c.create_network("ctnet", "10.199.77.0/24")
        op = c.create_instance(
            kind="container",
            name="keeper",
            image=BUSYBOX_REF,
            command=["sleep", "600"],
            network="ctnet",
            volumes=[{"name": "state", "path": "/state"}],
        )
        assert op["result"]["ip"] == "10.199.77.2"
        assert c.exec("keeper", ["sh", "-c", "echo kept > /state/file"])["exit_code"] == 0
        c.action("keeper", "restart")
        assert c.exec("keeper", ["cat", "/state/file"])["output"] == "kept\n"
        backend = c.network("ctnet")

        def on_bridge() -> list[object]:
            return [
                n
                for n in engine.networks.list()
                if (n.attrs.get("Options") or {}).get("com.docker.network.bridge.name") == backend["bridge"]
            ]

        assert len(on_bridge()) == 1, (
            "the container joined the network through a Docker network on its bridge"
        )
        with pytest.raises(ApiError) as err:
            c.delete_network("ctnet")
        assert err.value.problem["code"] == "network_in_use"
        c.delete_instance("keeper", force=True)
        c.delete_network("ctnet")
        assert on_bridge() == [], "the Docker side of a deleted network was left behind"
