"""The HTML report and the page in headless Chromium: what people see, and axe's verdict.

``magtape check -o html testing/`` is opened as the file a CI artifact would
be: the denied test-deploy02 and its five failures must be visible (not
only present in the markup). The page (``magtape ui``'s app under waitress,
the model fed as its watches feed it) is opened view by view. Against the
real API server: tests/e2e/test_ui_e2e.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from browser import REPO, chromium, navigate, serious_violations
from magtape.listeners import ListenerLimits, create_bounded_server
from magtape.server import stop_waitress
from magtape.ui.web import VIEWS, create_app
from uisupport import filled_model


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def test_the_check_report_shows_test_deploy02_and_its_five_failures(
        browser: WebDriver, tmp_path: Path) -> None:
    report = tmp_path / "magtape-check.html"
    run = subprocess.run([sys.executable, "-m", "magtape", "check", "-o", "html", "testing/"],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 1, run.stderr
    report.write_text(run.stdout)
    browser.get(report.as_uri())
    assert browser.title == "MagTape check report"
    denied = browser.find_element(
        By.CSS_SELECTOR, 'tr.denied[data-object="Deployment test1/test-deploy02"]')
    assert denied.is_displayed()
    cells = [td.text for td in denied.find_elements(By.TAG_NAME, "td")]
    assert cells == ["Deployment test1/test-deploy02", "5", "MT2001"]
    failures = browser.find_elements(
        By.CSS_SELECTOR, 'tr.result[data-object="Deployment test1/test-deploy02"]')
    assert len(failures) == 5 and all(f.is_displayed() for f in failures)
    texts = sorted(f.text for f in failures)
    assert sum("denied" in t for t in texts) == 1 and sum("warned" in t for t in texts) == 4
    # The link to the failing check's section works within the file.
    denied.find_element(By.LINK_TEXT, "MT2001").click()
    assert browser.current_url.endswith("#check-MT2001")
    # Passes are collapsed until opened.
    passed = browser.find_element(By.XPATH, "//details[summary[contains(., 'passed')]]")
    item = passed.find_element(By.TAG_NAME, "li")
    assert not item.is_displayed()
    passed.find_element(By.TAG_NAME, "summary").click()
    assert item.is_displayed()
    assert serious_violations(browser) == []


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    server = create_bounded_server(create_app(filled_model()), "127.0.0.1", 0,
                                   ListenerLimits(threads=2), "magtape-ui-test")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    stop_waitress(server, thread, 5.0)


@pytest.mark.parametrize("view", [v for v, _ in VIEWS])
def test_every_view_has_no_serious_accessibility_violation(browser: WebDriver, page_url: str,
                                                            view: str) -> None:
    browser.get(f"{page_url}/{view}")
    assert browser.find_element(By.CSS_SELECTOR, "nav a[aria-current=page]").get_attribute(
        "href").endswith(f"/{view}")
    assert serious_violations(browser) == []


def test_filters_and_sorting_work_in_the_browser(browser: WebDriver, page_url: str) -> None:
    browser.get(f"{page_url}/namespaces")
    navigate(browser, lambda: browser.find_element(By.LINK_TEXT, "Namespace").click())
    names = [r.get_attribute("data-namespace") for r in
             browser.find_elements(By.CSS_SELECTOR, "tr.ns")]
    assert names == ["team-a", "team-b", "team-c"]
    browser.find_element(By.CSS_SELECTOR, "select#f-severity option[value=medium]").click()
    navigate(browser, lambda: browser.find_element(By.CSS_SELECTOR, "form.filters button").click())
    assert "severity=medium" in browser.current_url and "sort=name" in browser.current_url
    navigate(browser, lambda: browser.find_element(By.LINK_TEXT, "team-b").click())
    objects = [r.get_attribute("data-object") for r in
               browser.find_elements(By.CSS_SELECTOR, "tr.result")]
    assert objects == ["Deployment team-b/web"]


def test_the_accessibility_scan_can_fail(browser: WebDriver, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                   '<form><input id="q"></form><a href="#"></a></body></html>')
    browser.get(bad.as_uri())
    found = {v["id"] for v in serious_violations(browser)}
    assert {"label", "html-has-lang"} <= found, found
