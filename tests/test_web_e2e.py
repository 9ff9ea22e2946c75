"""End to end in headless Chromium: a real worker parks real failures, an operator signs in, sees them
arrive without reloading, and presses Retry and Fail.

Needs Debian's ``chromium`` and ``chromium-driver`` (installed by .ci/run) and selenium (dev extra).
Set ``INTERACTIVE_WEB_SCREENSHOTS=1`` to refresh docs/web-list.png and docs/web-detail.png.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from celery.result import AsyncResult

from tests.conftest import running_worker
from tests.web_support import CAROL_PASSWORD, WEB_CONF, PartnerDown, console_in_thread, failing_task

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parent.parent / "docs"
WAIT_S = 30

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                       reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
                              "apt-get install -y chromium chromium-driver"),
]

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    # An explicit driver path: selenium's own driver manager would try the network.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def save_screenshot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if os.environ.get("INTERACTIVE_WEB_SCREENSHOTS"):
        time.sleep(2.5)  # for the docs only: let the "new row" highlight fade
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, "the screenshot is empty"
    if os.environ.get("INTERACTIVE_WEB_SCREENSHOTS"):
        shutil.copyfile(path, DOCS / name)


def test_operator_retries_and_fails_parked_flows_in_the_browser(app, browser, tmp_path):
    """Signed in, the list page shows each new failure without a reload; Retry (confirmed in the
    dialog) makes the flow SUCCESS under its task id, and Fail ends the second flow FAILURE."""
    app.conf.update(WEB_CONF)
    state: dict = {}
    task = failing_task(app, state)
    wait = WebDriverWait(browser, WAIT_S)
    with console_in_thread(app) as console, running_worker(app):
        browser.get(f"{console.url}/login")
        browser.find_element(By.ID, "username").send_keys("carol")
        browser.find_element(By.ID, "password").send_keys(CAROL_PASSWORD)
        browser.find_element(By.ID, "sign-in").click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#live.on")))
        assert "Nothing is waiting" in browser.find_element(By.ID, "live-region").text
        browser.execute_script("window.sameDocument = true")

        # Carol's open page is the only presence: that is what makes these failures park.
        first = task.delay("orders-2024-06-01.csv", message="orders-2024-06-01.csv has not arrived in /data/in")
        second = task.delay("invoices-0612", message="503 from api.partner.example: maintenance until 02:00")
        for result in (first, second):
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'tr.incident[data-id="{result.id}"]')))
        assert browser.execute_script("return window.sameDocument") is True, "the page was reloaded"
        row = browser.find_element(By.CSS_SELECTOR, f'tr.incident[data-id="{first.id}"]')
        assert "PartnerDown" in row.text and "has not arrived" in row.text
        save_screenshot(browser, tmp_path, "web-list.png")

        # Retry the first flow after "fixing" its cause.
        row.find_element(By.CSS_SELECTOR, "a.task").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "task-id"), first.id))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#live.on")))  # the page script runs
        save_screenshot(browser, tmp_path, "web-detail.png")
        state["fixed"] = True
        browser.find_element(By.CSS_SELECTOR, 'button[data-decision="retry"]').click()
        wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
        browser.find_element(By.ID, "confirm-reason").send_keys("file re-delivered by the partner")
        browser.find_element(By.ID, "confirm-ok").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "flash"), "Retry recorded by carol"))
        assert AsyncResult(first.id, app=app).get(timeout=WAIT_S) == "synced orders-2024-06-01.csv"
        wait.until(EC.text_to_be_present_in_element_attribute((By.ID, "incident-title"), "data-state", "succeeded"))

        # Fail the second one.
        state["fixed"] = False
        browser.get(f"{console.url}/incident/{second.id}")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#live.on")))
        browser.find_element(By.CSS_SELECTOR, 'button[data-decision="fail"]').click()
        wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
        browser.find_element(By.ID, "confirm-ok").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "flash"), "Fail recorded by carol"))
        with pytest.raises(PartnerDown, match="maintenance until 02:00"):
            AsyncResult(second.id, app=app).get(timeout=WAIT_S)
        assert AsyncResult(second.id, app=app).state == "FAILURE"
        wait.until(EC.text_to_be_present_in_element_attribute((By.ID, "incident-title"), "data-state", "failed"))
    assert AsyncResult(first.id, app=app).state == "SUCCESS"
