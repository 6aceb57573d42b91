"""Headless Chromium driven by Selenium: Debian's chromium and chromium-driver (installed
by .ci/run); the tests skip, saying why, when they are missing. Screenshots of each page
go to test-screenshots/dashboard/ (CLINAI_SCREENSHOT_DIR to change it), kept by CI."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(
    os.environ.get(
        "CLINAI_SCREENSHOT_DIR",
        Path(__file__).resolve().parents[2] / "test-screenshots" / "dashboard",
    )
)


def browser_missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing: install Debian's {package} (apt-get install {package})"
    return None


@contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root in CI; the pages are our own
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    """Wait until `condition(driver)` is truthy (a deadline, not a sleep); its value. On
    timeout, the failure shows the page's text and console errors, and a screenshot
    (timeout.png) is kept."""
    try:
        # A script may replace what the condition looks at while it looks: ask again.
        waiting = WebDriverWait(
            driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        )
        return waiting.until(condition)
    except TimeoutException as err:
        screenshot(driver, "timeout")
        page = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(
            f"waited {timeout} s at {driver.current_url}; the page says:\n{page}\n"
            f"console errors: {console_errors(driver)}"
        ) from err


def screenshot(driver: WebDriver, name: str, *, full_page: bool = False) -> Path:
    """The window (or the whole page, `full_page`) as <SCREENSHOTS>/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    size = driver.get_window_size()
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], max(size["height"], int(height) + 100))
    try:
        driver.save_screenshot(str(path))
    finally:
        if full_page:
            driver.set_window_size(size["width"], size["height"])
    return path


def console_errors(driver: WebDriver) -> list[str]:
    """The page's console errors (a script that failed, a CSP violation)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
