"""Every service's API docs work on a server with no network: ``/docs`` (Swagger UI) and
``/redoc`` reference only assets the service itself serves (each is fetched from it), a
headless Chromium renders the operations of ``/docs`` while loading nothing from
elsewhere (screenshot kept in the test's tmp dir), and the OpenAPI still lists every
route (a real edge and a real cloud on loopback, real Anvil)."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute

from service_kit.bounded import _flat_routes
from service_kit.serve import ServerThread
from chain.anvil import dev_key
from cloud_aggregator.app import create_app
from cloud_aggregator.settings import CloudSettings
from browser import CHROMEDRIVER, CHROMIUM, Browser
from service_fixtures import CLOUD, ServiceChain, start_edge_stack
from service_fixtures import service_chain  # noqa: F401
from tooling import needs_tool

PAGES = ("/docs", "/redoc")


class AssetLinks(HTMLParser):
    """URLs of the scripts, stylesheets, icons and images a page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        url = {"script": a.get("src"), "link": a.get("href"), "img": a.get("src")}.get(tag)
        if url:
            self.urls.append(url)


@pytest.fixture(scope="module")
def services(service_chain: ServiceChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerThread]]:
    directory = tmp_path_factory.mktemp("docs")
    stack = start_edge_stack(service_chain, directory, edges=1)
    settings = CloudSettings(
        rpc_url=service_chain.rpc_url, deployment=service_chain.deployment_file, private_key=dev_key(CLOUD),
        blob_store=str(directory / "blobs"), state_dir=directory / "cloud", edges=[{"url": stack.url(0)}],
    )  # fmt: skip
    cloud = ServerThread(create_app(settings)).start()
    try:
        yield {"edge": stack.servers[0], "cloud": cloud}
    finally:
        cloud.stop()
        stack.stop()


@pytest.mark.parametrize("service", ["edge", "cloud"])
@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_load_every_asset_from_the_service(services: dict[str, ServerThread], service: str, page: str) -> None:
    base = services[service].url
    html = httpx.get(base + page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    parser = AssetLinks()
    parser.feed(html.text)
    assert len(parser.urls) >= 2, parser.urls  # the UI's script and its stylesheet or icon
    for url in parser.urls:
        absolute = urljoin(base + page, url)
        assert urlsplit(absolute).netloc == urlsplit(base).netloc, f"{page} loads {url} from elsewhere"
        asset = httpx.get(absolute)
        assert asset.status_code == 200 and len(asset.content) > 0, url
    assert "cdn" not in html.text.lower() and "fonts.googleapis" not in html.text


@pytest.mark.parametrize("service", ["edge", "cloud"])
def test_openapi_lists_every_route_and_no_docs_page(services: dict[str, ServerThread], service: str) -> None:
    server = services[service]
    schema = httpx.get(server.url + "/openapi.json").json()
    app = server.server.config.app
    flat = [(path, methods) for _, route, path, methods in _flat_routes(app.router.routes) if isinstance(route, APIRoute) and route.include_in_schema]
    routes = {(path, m.lower()) for path, methods in flat for m in methods}
    listed = {(path, method) for path, ops in schema["paths"].items() for method in ops}
    assert routes == listed and routes
    assert not {"/docs", "/redoc"} & set(schema["paths"])


@needs_tool("chromium", bool(CHROMIUM and CHROMEDRIVER), "apt-get install chromium chromium-driver (make setup)")
@pytest.mark.parametrize("service", ["edge", "cloud"])
def test_a_headless_browser_renders_the_operations(services: dict[str, ServerThread], service: str, tmp_path: Path) -> None:
    base = services[service].url
    operations = len(httpx.get(base + "/openapi.json").json()["paths"])
    with Browser() as browser:
        browser.open(base + "/docs")
        browser.wait_for(".opblock")
        blocks = browser.count(".opblock")
        loaded = browser.script("return performance.getEntriesByType('resource').map(e => e.name)")
        shot = browser.screenshot()
    (tmp_path / f"{service}-docs.png").write_bytes(shot)
    assert blocks >= operations  # one block per operation (a path may have several)
    assert loaded and all(urlsplit(u).netloc == urlsplit(base).netloc for u in loaded), loaded
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
