"""A headless Chromium driven through chromedriver's W3C WebDriver HTTP API (Debian's
``chromium`` and ``chromium-driver``; ``make setup`` installs them as root), with
nothing but httpx: start, open a page, wait for elements, run a script, screenshot (the
viewport, or the whole page through chromedriver's DevTools bridge). ``phone`` emulates a
390 px wide phone screen."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Any

import httpx

from chain.anvil import free_port

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
PHONE = {"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 1.0}}


class Browser:
    """``with Browser() as b: b.open(url); b.wait_for(".opblock")``: one session, a fresh profile."""

    def __init__(self, width: int = 1280, height: int = 2000, phone: bool = False) -> None:
        self.window, self.phone = f"--window-size={width},{height}", phone
        self.port = free_port()
        self.profile = tempfile.TemporaryDirectory(prefix="bmfl-chromium-")
        self.driver = subprocess.Popen([str(CHROMEDRIVER), f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.session = ""

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        reply = self.http.request(method, f"/session/{self.session}{path}" if self.session else path, json=body)
        reply.raise_for_status()
        return reply.json()["value"]

    def start(self) -> "Browser":
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        options: dict[str, Any] = {"binary": CHROMIUM, "args": [*FLAGS, self.window, f"--user-data-dir={self.profile.name}"]}
        if self.phone:
            options["mobileEmulation"] = PHONE
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]
        return self

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def count(self, css: str) -> int:
        return len(self._call("POST", "/elements", {"using": "css selector", "value": css}))

    def wait_for(self, css: str, timeout: float = 30.0) -> int:
        """How many elements match ``css``, once at least one does."""
        deadline = time.monotonic() + timeout
        while (found := self.count(css)) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {css!r} on the page after {timeout} s")
            time.sleep(0.2)
        return found

    def press(self, key: str) -> None:
        """Press and release one key (WebDriver code point, e.g. ``"\\ue004"`` for Tab)."""
        keys = [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self._call("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": keys}]})

    def script(self, source: str) -> Any:
        return self._call("POST", "/execute/sync", {"script": source, "args": []})

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", "/screenshot"))

    def full_page_screenshot(self) -> bytes:
        """The whole page, below the fold too (DevTools ``Page.captureScreenshot``)."""
        params = {"format": "png", "captureBeyondViewport": True}
        shot = self._call("POST", "/goog/cdp/execute", {"cmd": "Page.captureScreenshot", "params": params})
        return base64.b64decode(shot["data"])

    def stop(self) -> None:
        if self.session:
            try:
                self._call("DELETE", "")
            except httpx.HTTPError:
                pass
        self.driver.terminate()
        self.driver.wait(10)
        self.http.close()
        self.profile.cleanup()

    def __enter__(self) -> "Browser":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
