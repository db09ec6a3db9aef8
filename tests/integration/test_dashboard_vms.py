"""The dashboard's VM pages in a real browser against a real server and real VMs: sign in, the
overview, the create wizard (the VM reaches running without a reload), the serial console shows
the guest, the VNC console connects, and the phone-width layout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.conftest import Server, import_tiny, ssh_run, wait_guest_ssh
from tests.integration.dashboard import dashboard_page, nav, shot

pytestmark = pytest.mark.timeout(600)
VM = "Web_VM.1"  # a name as OS Cloud took them: shown as given, the hostname made from it
HOST = "web-vm-1"


@pytest.fixture(scope="module")
def page(browser: Browser, sqlite_server: Server, tiny_image: Path) -> Iterator[Page]:
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
    with dashboard_page(browser, sqlite_server) as p:
        yield p


def test_the_server_serves_the_app_and_keeps_api_errors(sqlite_server: Server) -> None:
    deep = httpx.get(sqlite_server.url + "/vms/anything")
    assert deep.status_code == 200 and '<div id="root">' in deep.text
    assert deep.headers["cache-control"] == "no-cache"
    missing = httpx.get(sqlite_server.url + "/api/v1/no-such-thing")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    asset = re.search(r'src="(/assets/[^"]+\.js)"', deep.text)
    assert asset, deep.text
    cached = httpx.get(sqlite_server.url + asset.group(1))
    assert cached.status_code == 200 and "immutable" in cached.headers["cache-control"]


def test_a_wrong_password_shows_the_servers_message(browser: Browser, sqlite_server: Server) -> None:
    context = browser.new_context()
    try:
        p = context.new_page()
        p.goto(sqlite_server.url + "/vms")
        p.get_by_label("Username").fill("nobody")
        p.get_by_label("Password").fill("wrong-password")
        p.get_by_role("button", name="Sign in").click()
        expect(p.get_by_role("alert")).to_contain_text(re.compile("invalid|wrong|incorrect", re.I))
        shot(p, "login-error")
    finally:
        context.close()


def test_overview(page: Page) -> None:
    expect(page.get_by_role("heading", name="Host capacity")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^\d+ CPUs · "))).to_be_visible()
    shot(page, "overview")


def test_create_a_vm_with_the_wizard_and_see_it_run(page: Page, ssh_key: tuple[Path, str]) -> None:
    key, pub = ssh_key
    nav(page, "Virtual machines")
    page.get_by_role("link", name="New VM").click()
    page.get_by_label("Name").fill(VM)
    page.get_by_role("radio", name=re.compile("^tiny")).check()
    shot(page, "vm-wizard-image")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Memory (MiB)").fill("128")
    page.get_by_label("Disk (GB)").fill("1")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Next").click()  # network: the default
    page.get_by_label("SSH public keys").fill(pub)
    page.get_by_label("User-data (optional)").fill("#!/bin/sh\necho from-the-wizard > /run/wizard\n")
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("definition").filter(has_text="128 MiB")).to_be_visible()
    shot(page, "vm-wizard-review")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=VM)).to_be_visible(timeout=30_000)
    # The state changes arrive over the events websocket: no reload here.
    state = page.locator(".page-header [data-state]")
    expect(state).to_have_attribute("data-state", "running", timeout=180_000)
    expect(page.get_by_test_id("vm-ip")).to_have_text(re.compile(r"\d+\.\d+\.\d+\.\d+"))
    shot(page, "vm-detail")
    # What the wizard sent reached the guest: the SSH key and the user-data script.
    ip = page.get_by_test_id("vm-ip").inner_text()
    assert wait_guest_ssh(key, ip) == HOST
    assert ssh_run(key, ip, "cat /run/wizard").stdout.strip() == "from-the-wizard"


def test_the_serial_console_shows_the_guest(page: Page) -> None:
    page.get_by_role("tab", name="Serial console").click()
    expect(page.get_by_test_id("terminal-status")).to_have_text("connected", timeout=20_000)
    terminal = page.locator(".xterm-rows")
    page.locator(".xterm").click()
    # The guest is up (its SSH answered): Enter gets a fresh prompt from getty, and the
    # prompt echoes what is typed.
    page.keyboard.press("Enter")
    expect(terminal).to_have_text(re.compile(rf"{HOST} login:\s*$"), timeout=60_000)
    page.keyboard.type("root")
    expect(terminal).to_have_text(re.compile(rf"{HOST} login: root\s*$"), timeout=10_000)
    shot(page, "vm-serial-console")


def test_the_vnc_console_connects(page: Page, sqlite_server: Server) -> None:
    page.get_by_role("tab", name="Console", exact=True).click()
    expect(page.get_by_test_id("vnc-status")).to_have_text("connected", timeout=30_000)
    expect(page.locator(".vnc-screen canvas")).to_be_visible()
    log = sqlite_server.log.read_text()
    assert "/console/vnc" in log and "ticket=" not in log  # the ticket came as a subprotocol
    paste = page.get_by_label("Text to type")
    paste.fill("root")
    page.get_by_role("button", name="Type it").click()
    expect(paste).to_have_value("", timeout=20_000)  # typed: the box empties (an error would show)
    shot(page, "vm-vnc-console")


def test_disks_tab_attaches_and_detaches_a_new_volume(page: Page, ssh_key: tuple[Path, str]) -> None:
    key, _ = ssh_key
    page.get_by_role("tab", name="Disks").click()
    disks = page.get_by_role("table", name="Disks")
    expect(disks).to_contain_text("root (tiny)")
    page.get_by_label("Volume name").fill("webdata")
    page.get_by_role("button", name="Create and attach").click()
    row = disks.locator("tr[data-volume=webdata]")
    expect(row).to_contain_text("vdc", timeout=60_000)  # hot-plugged (vdb is the seed disk)
    page.get_by_role("tab", name="Summary").click()
    address = page.get_by_test_id("vm-ip").inner_text()
    sectors = ssh_run(key, address, "cat /sys/block/vdc/size").stdout.strip()
    assert sectors == str(1024**3 // 512)  # the guest sees the new 1 GB disk
    page.get_by_role("tab", name="Disks").click()
    shot(page, "vm-disks")
    row.get_by_role("button", name="Detach").click()
    expect(row).to_have_count(0, timeout=60_000)
    expect(page.get_by_label("Free volume")).to_contain_text("webdata")


def test_snapshots_tab(page: Page) -> None:
    page.get_by_role("tab", name="Snapshots").click()
    page.get_by_label("Snapshot name").fill("before")
    page.get_by_role("button", name="Take snapshot").click()
    row = page.get_by_role("table", name="Snapshots").get_by_role("row").filter(has_text="before")
    expect(row).to_contain_text("yes", timeout=120_000)  # with memory: the VM runs
    shot(page, "vm-snapshots")
    row.get_by_role("button", name="Delete").click()  # the confirmation is accepted
    expect(page.get_by_text("No snapshots.")).to_be_visible(timeout=60_000)


def test_metrics_and_events(page: Page) -> None:
    page.get_by_role("tab", name="Metrics").click()
    metrics = page.get_by_test_id("metrics")
    expect(metrics).to_contain_text("of 1 vCPU", timeout=20_000)
    expect(metrics).to_contain_text("128 MiB")
    shot(page, "vm-metrics")
    page.get_by_role("tab", name="Metrics").press("ArrowRight")  # keyboard: the next tab
    expect(page.get_by_role("tab", name="Events")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="Events")).to_be_focused()
    expect(page.get_by_role("list", name="Operations")).to_contain_text("Create instance")
    shot(page, "vm-events")


def test_vm_list_and_phone_width(page: Page, sqlite_server: Server) -> None:
    nav(page, "Virtual machines")
    row = page.locator(f'tr[data-vm="{VM}"]')
    expect(row.get_by_role("link", name=VM, exact=True)).to_be_visible()
    with sqlite_server.client() as c:  # the API shows it by the same name
        assert (c.instance(VM)["name"], c.instance(VM)["hostname"]) == (VM, HOST)
    expect(row.locator("[data-state]")).to_have_attribute("data-state", "running")
    shot(page, "vm-list")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_role("button", name="Menu")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    page.get_by_role("button", name="Menu").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    shot(page, "vm-list-phone")
    nav(page, "Overview")
    page.set_viewport_size({"width": 1280, "height": 860})


def test_dark_theme(page: Page) -> None:
    page.get_by_role("button", name=re.compile("Switch to (dark|light) theme")).click()
    theme = page.evaluate("document.documentElement.dataset.theme")
    assert theme in ("dark", "light")
    shot(page, f"overview-{theme}")
