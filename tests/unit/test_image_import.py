"""Image import from an http(s) URL, against a real HTTP server on a thread: streamed, hashed,
verified against a given sha256, with progress; every failure leaves no image row and no file.
The server is on loopback, which the ``sim`` here allow-lists (the address rules themselves are
tested in test_security_outbound.py)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudlet.errors import InsufficientResources, Invalid
from cloudlet.services.image_download import UNREACHABLE, Downloader
from cloudlet.services.outbound import OutboundPolicy
from tests.helpers import free_port
from tests.unit.conftest import SimCloud, sim_cloud
from tests.unit.test_images import assert_nothing_stored, image_rows, stored_files


class Handler(http.server.SimpleHTTPRequestHandler):
    """Files of a folder, plus /redirect?to=URL, /short (promises more than it sends) and
    /endless (8 MiB without a Content-Length)."""

    def do_GET(self) -> None:
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.end_headers()
        elif self.path == "/endless":  # no Content-Length: the body ends when the server closes
            self.send_response(200)
            self.end_headers()
            for _ in range(8):
                self.wfile.write(b"\0" * 1024 * 1024)
            self.close_connection = True
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"QFI\xfb" + b"\0" * 1000)
        else:
            super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


LOOPBACK = ["127.0.0.1"]
download = Downloader(policy=OutboundPolicy.from_entries(LOOPBACK)).fetch


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimCloud]:
    """The sim server, allowed to download from loopback (where the test's file server is)."""
    with sim_cloud(tmp_path, outbound_allow=LOOPBACK) as cloud:
        yield cloud


@dataclass
class FileServer:
    root: Path
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(root, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served_qcow2(files: FileServer, qcow2_image: Path) -> str:
    (files.root / "disk.qcow2").write_bytes(qcow2_image.read_bytes())
    return files.url("disk.qcow2")


def import_url(sim: SimCloud, name: str, url: str, **fields: Any) -> httpx.Response:
    return sim.post(  # type: ignore[no-any-return]
        "/api/v1/images", params={"wait": 20}, json={"name": name, "url": url, **fields}
    )


def test_url_import_downloads_verifies_and_stores(
    sim: SimCloud, served_qcow2: str, qcow2_image: Path
) -> None:
    sha = hashlib.sha256(qcow2_image.read_bytes()).hexdigest()
    resp = import_url(sim, "net", served_qcow2, sha256=sha.upper(), os="debian12", min_memory=256)
    assert resp.status_code == 200, resp.text
    op = resp.json()
    assert (op["kind"], op["status"], op["progress"]) == ("image.import", "succeeded", 100), op
    image = sim.get("/api/v1/images/net").json()
    assert (image["status"], image["format"], image["kind"]) == ("ready", "qcow2", "disk")
    assert (image["sha256"], image["file_size"], image["source"]) == (
        sha,
        qcow2_image.stat().st_size,
        served_qcow2,
    )
    assert (image["os"], image["min_memory"], image["min_disk"]) == ("debian12", 256, None)
    stored = sim.data_dir / "images" / f"{image['id']}.qcow2"
    assert stored_files(sim) == [stored.name]
    assert stored.read_bytes() == qcow2_image.read_bytes()


def test_url_import_without_sha256_keeps_the_computed_one(
    sim: SimCloud, served_qcow2: str, qcow2_image: Path
) -> None:
    op = import_url(sim, "net", served_qcow2).json()
    assert op["status"] == "succeeded"
    assert op["result"]["sha256"] == hashlib.sha256(qcow2_image.read_bytes()).hexdigest()


def test_redirects_are_followed(sim: SimCloud, files: FileServer, served_qcow2: str) -> None:
    op = import_url(sim, "net", files.url(f"redirect?to={served_qcow2}")).json()
    assert op["status"] == "succeeded", op


def test_sha256_mismatch_fails_and_leaves_nothing(sim: SimCloud, served_qcow2: str) -> None:
    op = import_url(sim, "net", served_qcow2, sha256="0" * 64).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "checksum_mismatch"
    assert "0" * 64 in op["error"]["detail"] and op["error"]["actual"] in op["error"]["detail"]
    assert_nothing_stored(sim)


def test_404_fails_with_the_status_and_leaves_nothing(sim: SimCloud, files: FileServer) -> None:
    op = import_url(sim, "net", files.url("missing.qcow2")).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "download_failed"
    assert op["error"]["detail"] == UNREACHABLE  # the status is in the server log only
    assert_nothing_stored(sim)


def test_connection_refused_fails_and_leaves_nothing(sim: SimCloud) -> None:
    op = import_url(sim, "net", f"http://127.0.0.1:{free_port()}/disk.qcow2").json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "download_failed"
    assert_nothing_stored(sim)


def test_truncated_download_fails(sim: SimCloud, files: FileServer) -> None:
    op = import_url(sim, "net", files.url("short")).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "download_failed"
    assert_nothing_stored(sim)


def test_downloaded_web_page_is_no_image(sim: SimCloud, files: FileServer) -> None:
    (files.root / "index.html").write_text("<html><body>Please log in</body></html>\n")
    op = import_url(sim, "net", files.url("index.html")).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "invalid_image"
    assert_nothing_stored(sim)


def test_declared_format_must_match(sim: SimCloud, served_qcow2: str) -> None:
    op = import_url(sim, "net", served_qcow2, format="raw").json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "format_mismatch"
    assert_nothing_stored(sim)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/disk.qcow2",
        "gopher://127.0.0.1/",
        "/srv/disk.qcow2",
        "http://",
        "http://exa mple.com/x",
        "https://" + "a" * 2100 + ".com/",
    ],
)
def test_only_http_and_https_urls_are_accepted(shared_sim: SimCloud, url: str) -> None:
    resp = import_url(shared_sim, "net", url)
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "invalid_url"
    assert image_rows(shared_sim) == 0


@pytest.mark.parametrize("sha", ["abc", "g" * 64, "0" * 63, "0" * 65])
def test_malformed_sha256_is_422(shared_sim: SimCloud, sha: str) -> None:
    resp = import_url(shared_sim, "net", "http://127.0.0.1/x.qcow2", sha256=sha)
    assert resp.status_code == 422
    assert resp.json()["code"] == "invalid_sha256"
    assert image_rows(shared_sim) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x"},
        {"name": "x", "url": "http://127.0.0.1/x", "source_path": "/tmp/x"},
        {"name": "x", "source_path": "/tmp/x", "sha256": "0" * 64},
    ],
)
def test_one_source_is_required(shared_sim: SimCloud, body: dict[str, Any]) -> None:
    resp = shared_sim.post("/api/v1/images", json=body)
    assert resp.status_code == 422
    assert resp.json()["code"] == "invalid_source"


def test_bad_name_is_refused_before_downloading(shared_sim: SimCloud, files: FileServer) -> None:
    resp = import_url(shared_sim, "../etc", files.url("disk.qcow2"))
    assert resp.status_code == 422
    assert resp.json()["code"] == "invalid_name"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x"])
def test_metadata_addresses_are_refused(sim: SimCloud, url: str) -> None:
    op = import_url(sim, "net", url).json()
    assert op["status"] == "failed"
    assert (op["error"]["code"], op["error"]["status"]) == ("download_failed", 422)
    assert_nothing_stored(sim)


def test_a_redirect_to_the_metadata_address_is_refused(sim: SimCloud, files: FileServer) -> None:
    op = import_url(sim, "net", files.url("redirect?to=http://169.254.169.254/latest/")).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "download_failed"
    assert_nothing_stored(sim)


def test_download_reports_progress_in_bytes(files: FileServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 12_000  # about 3 MiB: several chunks
    (files.root / "blob").write_bytes(data)
    seen: list[tuple[int, int | None]] = []
    got = download(files.url("blob"), tmp_path / "blob", progress=lambda d, t: seen.append((d, t)))
    assert (got.size, got.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert seen and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert (tmp_path / "blob").read_bytes() == data


def test_download_errors_are_domain_errors(files: FileServer, tmp_path: Path) -> None:
    with pytest.raises(Invalid) as err:
        download(files.url("nothing"), tmp_path / "x")
    assert err.value.code == "download_failed"
    with pytest.raises(Invalid) as err:
        download("http://169.254.169.254/", tmp_path / "x")  # refused before any packet is sent
    assert err.value.code == "download_failed"


def test_a_failed_url_import_does_not_block_the_name(
    sim: SimCloud, files: FileServer, served_qcow2: str
) -> None:
    assert import_url(sim, "net", files.url("missing")).json()["status"] == "failed"
    assert import_url(sim, "net", served_qcow2).json()["status"] == "succeeded"
    assert image_rows(sim) == 1


def test_an_image_larger_than_the_free_space_is_refused(files: FileServer, tmp_path: Path) -> None:
    (files.root / "blob").write_bytes(b"x" * 10_000)
    with pytest.raises(InsufficientResources) as err:
        download(files.url("blob"), tmp_path / "blob", max_bytes=9_999)
    assert (err.value.code, err.value.status) == ("insufficient_storage", 409)
    assert not (tmp_path / "blob").exists()  # refused from Content-Length, before writing
    assert download(files.url("blob"), tmp_path / "fits", max_bytes=10_000).size == 10_000


def test_a_body_longer_than_the_free_space_is_cut_off(files: FileServer, tmp_path: Path) -> None:
    """Without a Content-Length the limit holds while writing (a chunked or lying server)."""
    with pytest.raises(InsufficientResources):
        download(files.url("endless"), tmp_path / "endless", max_bytes=3 * 1024 * 1024)
