"""The dashboard's pool, network, VM image and admin pages in a real browser against a real
server and real VMs: a pool made in the dialog fills, a checkout shows the VM's address, the
lease counts down under My leases, check-in; networks are made and deleted, one in use is
refused; the VM images tab lists, uploads and shows a failed import; admin makes a token (the
secret shown once), lists the audit log and edits a quota."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.conftest import Server, import_tiny, traversable_tmp
from tests.integration.dashboard import REFUSALS, dashboard_page, nav, shot

pytestmark = pytest.mark.timeout(900)
POOL = "webpool"
NET = "webnet"
IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


@pytest.fixture(scope="module")
def page(browser: Browser, sqlite_server: Server, tiny_image: Path) -> Iterator[Page]:
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
    with dashboard_page(browser, sqlite_server) as p:
        yield p


def test_create_a_pool_in_the_dialog_and_it_fills(page: Page) -> None:
    nav(page, "Pools")
    expect(page.get_by_role("heading", name="Pools")).to_be_visible()
    page.get_by_role("button", name="New pool").click()
    dialog = page.get_by_role("dialog", name="New pool")
    dialog.get_by_label("Name").fill(POOL)
    dialog.get_by_label("Image").select_option("tiny")
    dialog.get_by_label("Memory (MiB)").fill("128")
    dialog.get_by_label("Disk (GB)").fill("1")
    dialog.get_by_label("Ready VMs kept (min_ready)").fill("1")
    dialog.get_by_label("Most VMs (max_size)").fill("1")
    dialog.get_by_label("On check-in").select_option("reuse")
    shot(page, "pool-create-dialog")
    dialog.get_by_role("button", name="Create pool").click()
    expect(page.get_by_role("heading", name=POOL)).to_be_visible(timeout=15_000)
    # Live over the events websocket: provisioning, then ready, with no reload.
    expect(page.get_by_test_id("count-available")).to_have_text("1", timeout=240_000)
    expect(page.locator("[data-pool-state=available]")).to_have_count(1)
    shot(page, "pool-detail")
    page.get_by_role("link", name="All pools").click()
    row = page.locator(f"tr[data-pool={POOL}]")
    expect(row.locator("[data-count=available]")).to_have_text("1")
    shot(page, "pool-list")


def test_check_out_shows_the_address_and_the_lease_counts_down(page: Page) -> None:
    page.locator(f"tr[data-pool={POOL}]").get_by_role("link", name=POOL).click()
    page.get_by_label("Lease (minutes)").fill("30")
    page.get_by_role("button", name="Check out").click()
    expect(page.get_by_test_id("checkout-ip")).to_have_text(IP, timeout=60_000)
    ip = page.get_by_test_id("checkout-ip").inner_text()
    expect(page.get_by_test_id("count-checked-out")).to_have_text("1")
    leases = page.get_by_role("table", name="My leases")
    expect(leases).to_contain_text(ip)
    countdown = leases.get_by_test_id("lease-countdown")
    expect(countdown).to_have_text(re.compile(r"^(29|30):\d\d$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first, timeout=5_000)  # it ticks
    shot(page, "pool-checked-out")
    leases.get_by_role("button", name="Extend 1 h").click()
    expect(countdown).to_have_text(re.compile(r"^(59:\d\d|1h 00m)$"), timeout=10_000)
    # My leases on the pools page too
    page.get_by_role("link", name="All pools").click()
    expect(page.get_by_role("table", name="My leases")).to_contain_text(ip)
    shot(page, "pool-my-leases")


def test_check_in(page: Page) -> None:
    page.get_by_role("table", name="My leases").get_by_role("button", name="Check in").click()
    expect(page.get_by_text("You hold no VMs")).to_be_visible(timeout=15_000)
    expect(page.locator(f"tr[data-pool={POOL}] [data-count=available]")).to_have_text("1", timeout=60_000)


def test_edit_the_pool_in_place(page: Page, sqlite_server: Server) -> None:
    page.get_by_role("link", name=POOL).first.click()
    page.get_by_role("button", name="Edit").click()
    form = page.get_by_role("form", name=f"Edit pool {POOL}")
    form.get_by_label("Most VMs (max_size)").fill("2")
    form.get_by_label("Default lease (minutes)").fill("30")
    shot(page, "pool-edit-dialog")
    form.get_by_role("button", name="Save").click()
    expect(page.get_by_text("at most 2; lease 30 min")).to_be_visible()
    with sqlite_server.client() as c:
        pool = c.request("GET", f"/pools/{POOL}")
    assert (pool["max_size"], pool["lease_default"], pool["template"]["image"]) == (2, 1800, "tiny")


def test_networks_create_show_and_delete(page: Page, sqlite_server: Server) -> None:
    nav(page, "Networks")
    expect(page.locator("tr[data-network=default]")).to_be_visible()
    page.get_by_role("button", name="New network").click()
    dialog = page.get_by_role("dialog", name="New network")
    dialog.get_by_label("Name").fill(NET)
    dialog.get_by_label("CIDR").fill(f"10.{sqlite_server.cidr.split('.')[1]}.251.0/24")
    dialog.get_by_role("radio", name=re.compile("Isolated")).check()
    dialog.get_by_role("button", name="Create network").click()
    row = page.locator(f"tr[data-network={NET}]")
    expect(row).to_contain_text("isolated", timeout=30_000)
    expect(row.get_by_role("meter")).to_be_visible()
    # the default network's allocations: the pool's VM holds an address there
    page.locator("tr[data-network=default]").get_by_role("button", name="default").click()
    expect(page.get_by_role("table", name="Allocations of default")).to_contain_text(POOL)
    shot(page, "networks")
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0, timeout=30_000)


def test_a_network_or_image_in_use_is_not_deleted(browser: Browser, sqlite_server: Server) -> None:
    with dashboard_page(browser, sqlite_server, expected=REFUSALS) as p:
        nav(p, "Networks")
        p.locator("tr[data-network=default]").get_by_role("button", name="Delete").click()
        expect(p.get_by_role("alert")).to_contain_text(re.compile("used by|in use", re.I))
        expect(p.locator("tr[data-network=default]")).to_be_visible()
        shot(p, "networks-in-use")
        # the pool's VM runs from tiny: the image is not deleted either
        nav(p, "Images")
        p.locator("tr[data-image=tiny]").get_by_role("button", name="Delete").click()
        expect(p.get_by_role("alert")).to_contain_text(re.compile("used by|in use", re.I))
        expect(p.locator("tr[data-image=tiny]")).to_be_visible()
        shot(p, "images-in-use")


def test_vm_images_list_upload_and_a_failed_import(page: Page, tiny_image: Path) -> None:
    nav(page, "Images")
    row = page.locator("tr[data-image=tiny]")
    expect(row.get_by_text("ready")).to_be_visible()
    shot(page, "images-vm")
    # an import from a URL nothing answers: the operation fails and says why
    page.get_by_role("button", name="Import from URL").click()
    dialog = page.get_by_role("dialog", name="Import from URL")
    dialog.get_by_label("Name").fill("nowhere")
    dialog.locator("input[name=url]").fill("http://127.0.0.1:9/nothing.qcow2")
    dialog.get_by_role("button", name="Import").click()
    status = dialog.get_by_test_id("import-operation")
    expect(status).to_have_attribute("data-status", "failed", timeout=30_000)
    expect(dialog.get_by_role("alert")).to_contain_text("Import failed")
    shot(page, "images-import-failed")
    dialog.get_by_role("button", name="Close").click()
    # an upload, with its progress, then the image is ready and can be edited and deleted
    folder = traversable_tmp("upload-")
    copy = folder / "tiny-up.qcow2"
    shutil.copy(tiny_image, copy)
    page.get_by_role("button", name="Upload").click()
    dialog = page.get_by_role("dialog", name="Upload an image")
    dialog.locator("input[type=file]").set_input_files(str(copy))
    expect(dialog.get_by_label("Name")).to_have_value("tiny-up")
    dialog.get_by_role("button", name="Upload").click()
    expect(dialog.get_by_test_id("import-operation")).to_have_attribute(
        "data-status", "succeeded", timeout=60_000
    )
    shot(page, "images-uploaded")
    dialog.get_by_role("button", name="Close").click()
    up = page.locator("tr[data-image=tiny-up]")
    expect(up.get_by_text("ready")).to_be_visible(timeout=15_000)
    up.get_by_role("button", name="Edit").click()
    edit = page.get_by_role("dialog", name="Edit tiny-up")
    edit.get_by_label("Guest OS").fill("tinylinux")
    edit.get_by_label("Min memory (MiB)").fill("96")
    edit.get_by_role("button", name="Save").click()
    expect(up).to_contain_text("tinylinux")
    expect(up).to_contain_text("96 MiB")
    up.get_by_role("button", name="Delete").click()
    expect(up).to_have_count(0, timeout=30_000)
    shutil.rmtree(folder, ignore_errors=True)


def test_admin_tokens_audit_and_quota(page: Page) -> None:
    nav(page, "Admin")
    expect(page.get_by_role("heading", name="Admin")).to_be_visible()
    expect(page.get_by_role("table", name="Users")).to_be_visible()
    shot(page, "admin-users")
    page.get_by_role("tab", name="Members & roles").click()
    expect(page.get_by_role("table", name="Roles")).to_contain_text("viewer")
    shot(page, "admin-members")

    page.get_by_role("tab", name="API tokens").click()
    page.get_by_role("button", name="New token").click()
    dialog = page.get_by_role("dialog", name="New API token")
    dialog.get_by_label("Name").fill("ci-token")
    dialog.get_by_role("button", name="Create token").click()
    secret = dialog.get_by_test_id("token-secret")
    expect(secret).to_have_text(re.compile(r"^clt_\S{16,}"))
    value = secret.inner_text()
    shot(page, "admin-token-created")
    dialog.get_by_role("button", name="Done").click()
    row = page.locator("tr[data-token=ci-token]")
    expect(row).to_contain_text("active")
    expect(page.get_by_text(value)).to_have_count(0)  # shown once only
    shot(page, "admin-tokens")

    page.get_by_role("tab", name="Audit log").click()
    log = page.get_by_role("table", name="Audit log")
    expect(log.locator("tbody tr").first).to_be_visible(timeout=10_000)
    expect(page.get_by_role("link", name="Export (JSON lines)")).to_have_attribute(
        "href", re.compile("/audit/export")
    )
    shot(page, "admin-audit")

    page.get_by_role("tab", name="Quota").click()
    page.get_by_role("button", name="Edit limits").click()
    page.get_by_label("Instances limit").fill("7")
    page.get_by_role("button", name="Save limits").click()
    expect(page.get_by_test_id("limit-instances")).to_have_text("7")
    shot(page, "admin-quota")
    page.get_by_role("tab", name="Workspaces").click()
    expect(page.get_by_role("table", name="Workspaces")).to_be_visible()
    shot(page, "admin-workspaces")


def test_phone_width_dark_theme_and_delete_the_pool(page: Page) -> None:
    nav(page, "Pools")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator(f"tr[data-pool={POOL}]")).to_be_visible()
    shot(page, "pools-phone")
    page.get_by_role("button", name=re.compile("Switch to (dark|light) theme")).click()
    theme = page.evaluate("document.documentElement.dataset.theme")
    shot(page, f"pools-phone-{theme}")
    page.get_by_role("button", name=re.compile("Switch to (dark|light) theme")).click()
    page.set_viewport_size({"width": 1280, "height": 860})
    page.locator(f"tr[data-pool={POOL}]").get_by_role("link", name=POOL).click()
    page.get_by_role("button", name="Delete pool").click()
    expect(page.get_by_role("heading", name="Pools")).to_be_visible(timeout=30_000)
    expect(page.locator(f"tr[data-pool={POOL}]")).to_have_count(0)
