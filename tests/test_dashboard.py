"""The dashboard (``/ui``) in a real headless Chromium against a real stack (Anvil, 3
edges and the cloud as processes, 8 vehicles with one attacker, a 2-round task, settled):
every page renders, the figures it shows match the cloud's API and the chain (task count,
rounds, last accuracy, a payee's credit, the chain head's neighbourhood), every resource
the page loaded came from the cloud itself, and screenshots of each page at laptop and
phone widths land in the test's tmp dir."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from web3 import Web3

from bmfl.blobs.local import LocalBlobStore
from chain.deploy import Deployment
from chain.ledger import LedgerReader
from chain.registry import RegistryClient
from chain.tasks import TasksClient
from launcher.screenshots import PAGES, READY, capture, small_task
from browser import CHROMEDRIVER, CHROMIUM, Browser
from tooling import needs_tool, requires_anvil

pytestmark = [
    pytest.mark.slow, requires_anvil,
    needs_tool("chromium", bool(CHROMIUM and CHROMEDRIVER), "apt-get install chromium chromium-driver (make setup)"),
]  # fmt: skip

TAB = "\ue004"
STATUS = "return document.getElementById('updated').textContent"
RESOURCES = "return performance.getEntriesByType('resource').map(e => e.name)"


def text(browser: Browser, css: str) -> str:
    return browser.script(f"return document.querySelector({css!r}).textContent.trim()")


def eth(wei: int) -> str:
    return f"{wei // 10**18}.{(wei % 10**18) // 10**12:06d}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str, Path, str]]:
    run_dir = tmp_path_factory.mktemp("dashboard")
    with small_task(run_dir) as (stack, task_id):
        yield stack.cloud.url, task_id, stack.rpc_url, stack.deployment_file, stack.blob_store


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def loaded_from_elsewhere(browser: Browser, base: str) -> list[str]:
    return [u for u in browser.script(RESOURCES) if urlsplit(u).netloc != urlsplit(base).netloc]


def test_tasks_page_lists_what_the_api_lists(stack, browser: Browser) -> None:
    base, task_id, _, _, _ = stack
    tasks = httpx.get(base + "/tasks").json()
    browser.open(base + "/ui")
    assert browser.wait_for(READY["tasks"]) == len(tasks) == 1
    assert text(browser, "#task-count") == "1"
    row = f"#tasks tr[data-task='{task_id}']"
    assert text(browser, f"{row} [data-field=accuracy]") == f"{tasks[0]['accuracy'][-1]:.4f}"
    assert browser.script("return document.title") == "BMFL dashboard" and browser.count("th[scope=col]") == 6
    assert loaded_from_elsewhere(browser, base) == []


def test_task_page_matches_the_api_and_the_chain(stack, browser: Browser) -> None:
    base, task_id, rpc_url, deployment_file, _ = stack
    view = httpx.get(f"{base}/tasks/{task_id}").json()
    assert view["status"] == "finished" and view["rounds_finished"] == 2
    browser.open(f"{base}/ui/tasks/{task_id}")
    browser.wait_for(READY["task"])
    assert browser.wait_for("#payees tr[data-payee]") == len(view["ledger"]["payees"])
    assert text(browser, "#round-count") == "2 / 2"
    assert text(browser, "#last-accuracy") == f"{view['accuracy'][-1]:.4f}"
    assert browser.count("#rounds tr[data-round]") == 2
    # the chain agrees: finalized accuracy and a payee's credit read independently
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    deployment = Deployment.model_validate_json(Path(deployment_file).read_text())
    tasks = TasksClient(w3, deployment.tasks)
    assert abs(tasks.task(task_id).last_accuracy / 10**6 - view["accuracy"][-1]) < 1e-6
    ledger, _ = LedgerReader(w3, tasks, RegistryClient(w3, deployment.registry), deployment.block_number).read(task_id)
    vehicle = next(p for p in ledger.payees if p.role == "vehicle")
    cell = f"#payees tr[data-payee='{vehicle.payee}'] [data-field=credited]"
    assert text(browser, cell) == eth(vehicle.credited_wei) and vehicle.credited_wei > 0
    assert browser.script(f"return document.querySelector({cell + ' span'!r}).dataset.wei") == str(vehicle.credited_wei)
    # every blob link points at the cloud's own gateway, and it serves the global model
    links = browser.script("return [...document.querySelectorAll('#rounds a[href^=\"/ipfs/\"]')].map(a => a.href)")
    assert len(links) >= 2 and all(urlsplit(u).netloc == urlsplit(base).netloc for u in links)
    assert httpx.get(links[0]).status_code == 200
    audit = httpx.get(f"{base}/tasks/{task_id}/audit").json()  # the cheap audit: chain checks and blob digests
    assert audit["passed"] and audit["problems"] == [] and audit["comparisons"] > 10 and audit["blobs"] >= 7
    assert text(browser, "#audit-verdict") == "passed"
    assert httpx.get(f"{base}/tasks/99/audit").json()["reason"] == "unknown_task"
    assert browser.count("#chart .scatterlayer .trace") == 2  # accuracy and loss, drawn by the served Plotly
    assert loaded_from_elsewhere(browser, base) == []


def test_stack_page_shows_every_edge_healthy(stack, browser: Browser) -> None:
    base, _, rpc_url, _, _ = stack
    view = httpx.get(base + "/stack").json()
    assert len(view["edges"]) == 3 and all(e["healthy"] for e in view["edges"])
    assert all(e["uploads_accepted"] > 0 and e["last_round"] == {"1": 2} for e in view["edges"])
    assert view["gas_wei"] == httpx.get(base + "/tasks/1").json()["ledger"]["gas_wei"] > 0
    browser.open(base + "/ui/stack")
    assert browser.wait_for(READY["stack"]) == 3
    assert text(browser, "#healthy-edges") == "3 / 3"
    shown = int(text(browser, "#block"))
    assert view["block"] <= shown <= Web3(Web3.HTTPProvider(rpc_url)).eth.block_number
    assert text(browser, "#gas-total") == eth(view["gas_wei"])
    assert loaded_from_elsewhere(browser, base) == []


def test_pages_refresh_without_reloading(stack, browser: Browser) -> None:
    base, _, _, _, _ = stack
    browser.open(base + "/ui/stack")
    browser.wait_for(READY["stack"])
    browser.script("window.__marker = 1; document.getElementById('updated').textContent = 'stale'")
    deadline = time.monotonic() + 10
    while browser.script(STATUS) == "stale" and time.monotonic() < deadline:  # the 3 s poll rewrites it
        time.sleep(0.2)
    assert browser.script("return window.__marker") == 1
    assert browser.script(STATUS).startswith("updated")


@pytest.mark.parametrize("page", list(PAGES))
def test_pages_are_accessible(stack, browser: Browser, page: str) -> None:
    """Landmarks and headings, table headers and descriptions, a named chart, a skip link
    that is the first thing the keyboard reaches, and a focus ring on links."""
    base, task_id, _, _, _ = stack
    browser.open(base + PAGES[page].format(task_id=task_id))
    browser.wait_for(READY[page])
    checks = browser.script("""
        const tables = [...document.querySelectorAll('table')];
        return {
          lang: document.documentElement.lang, h1: document.querySelectorAll('h1').length,
          nav: !!document.querySelector('nav[aria-label]'), main: !!document.querySelector('main'),
          headed: tables.every(t => t.querySelectorAll('thead th[scope=col]').length > 0),
          described: tables.every(t => document.getElementById(t.getAttribute('aria-describedby'))),
          named: [...document.querySelectorAll('[role=img]')].every(e => e.getAttribute('aria-label')),
          current: document.querySelector('nav a[aria-current=page]')?.textContent,
          first: document.querySelector('a, button, [tabindex]:not([tabindex="-1"])').className,
          tables: tables.length,
        };""")
    assert checks == {
        "lang": "en", "h1": 1, "nav": True, "main": True, "headed": True, "described": True, "named": True,
        "current": "Stack" if page == "stack" else "Tasks", "first": "skip", "tables": checks["tables"],
    } and checks["tables"] >= 1
    browser.press(TAB)  # the keyboard reaches the skip link first, then the navigation, each with a focus ring
    focused = "const a = document.activeElement; return [a.className || a.textContent, getComputedStyle(a).outlineStyle]"
    assert browser.script(focused) == ["skip", "solid"]
    browser.press(TAB)
    assert browser.script(focused) == ["Tasks", "solid"]


def test_assets_come_from_the_service_and_bad_names_are_refused(stack) -> None:
    base, _, _, _, _ = stack
    page = httpx.get(base + "/ui")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css", "plotly.min.js"):
        assert httpx.get(f"{base}/ui/assets/{name}").status_code == 200
    refused = httpx.get(f"{base}/ui/assets/index.py")  # only the listed files are served
    assert refused.status_code == 404 and refused.json()["reason"] == "unknown_asset"
    assert httpx.get(f"{base}/ui/assets/..%2Frouters%2Fui.py").status_code == 404
    assert httpx.get(f"{base}/ui/tasks/1").status_code == 200


def test_screenshots_of_every_page_at_laptop_and_phone_widths(stack, tmp_path: Path) -> None:
    base, task_id, _, _, _ = stack
    shots = capture(base, task_id, tmp_path)
    assert {p.name for p in shots} == {f"{page}-{device}.png" for page in PAGES for device in ("laptop", "phone")}
    for shot in shots:
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG") and 10_000 < len(data) < 600_000, (shot.name, len(data))


def test_a_tampered_blob_fails_the_audit_on_the_page(stack, browser: Browser) -> None:
    """Last: it breaks the stack's store. One byte of round 2's global model flipped on
    disk, a block mined: the audit names the blob and the page says failed."""
    base, task_id, rpc_url, _, blob_store = stack
    cid = httpx.get(f"{base}/tasks/{task_id}/rounds/2").json()["global_cid"]
    path = LocalBlobStore(blob_store).path_of(cid)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    Web3(Web3.HTTPProvider(rpc_url)).provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    audit = httpx.get(f"{base}/tasks/{task_id}/audit").json()
    assert not audit["passed"] and any(cid in p for p in audit["problems"]), audit
    browser.open(f"{base}/ui/tasks/{task_id}")
    browser.wait_for("#audit-verdict")
    assert text(browser, "#audit-verdict") == "failed"
