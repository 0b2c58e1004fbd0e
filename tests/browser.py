"""A real browser for tests: Debian's Chromium through chromium-driver, driven by Selenium.

Headless, sandbox off (the suite may run as root), no network of its own
(no component updates, sync or background requests) and a fresh profile per
browser. Paths are explicit so Selenium never looks for a driver elsewhere.
``serious_violations`` runs axe-core (shipped by axe-selenium-python) and
keeps what axe rates serious or critical.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1280, 900
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", f"--window-size={WIDTH},{HEIGHT}")


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                       else None)
        if found:
            return found
    pytest.fail(f"{' or '.join(names)} is missing: run hack/setup.sh (Debian chromium and "
                "chromium-driver)")


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="magtape-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=_binary("chromedriver")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def serious_violations(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    axe = Axe(driver)
    axe.inject()
    results = axe.run()
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in results["violations"] if v.get("impact") in ("serious", "critical")]


def full_page_screenshot(driver: webdriver.Chrome, path: Path) -> None:
    """The whole page, not just the window (Chrome DevTools' capture beyond the viewport)."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def navigate(browser: WebDriver, act: Callable[[], None]) -> None:
    """Do ``act`` (a click that loads a page) and wait until the new page has replaced the
    old one and finished loading: a read right after a click may still see the old page.

    The old page carries a marker on its window, which a page load always drops.
    (An element of the old page is no sign to wait on: while the page is being
    replaced, Chrome may report it neither stale nor alive, but as a node of no
    document.) Errors from a page caught in the middle of loading are retried.
    """
    browser.execute_script("window.magtapeOldPage = true")
    act()
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return !window.magtapeOldPage && document.readyState === 'complete'"))
