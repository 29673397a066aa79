"""The tests' headless Chromium lives in :mod:`launcher.browser` (the dashboard's
screenshot command uses it too)."""

from launcher.browser import CHROMEDRIVER, CHROMIUM, Browser

__all__ = ["CHROMEDRIVER", "CHROMIUM", "Browser"]
