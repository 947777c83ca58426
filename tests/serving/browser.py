"""Helpers of the browser tests: headless Chromium driven by Selenium, and what every test does with it.

The server is :mod:`tests.serving._server`'s. The browser is Debian's (``/usr/bin/chromium`` with
``/usr/bin/chromedriver``), never a downloaded one: the driver is started with an explicit
``Service(executable_path=...)`` so selenium-manager has nothing to fetch.
Every server and browser is on the loopback interface and stopped by the test that started it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: when set, every screenshot is also copied into this directory (the README's images)
SCREENSHOTS_VARIABLE = "LLM4REC_SCREENSHOTS"


def make_driver(tmp_path: Path, width: int = 1280, height: int = 900) -> Any:
    """Headless Debian Chromium with a fresh profile under ``tmp_path``, the browser log kept at level ALL."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--hide-scrollbars",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_window_size(width, height)
    driver.implicitly_wait(0)
    return driver


class Browser:
    """A driver plus what every test does with it: wait, find by test id, check the console, screenshot."""

    def __init__(self, driver: Any, tmp_path: Path, base_url: str) -> None:
        self.driver, self.tmp_path, self.base_url = driver, tmp_path, base_url
        self.console: list[dict] = []

    def get(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def wait(self, predicate: Callable[[], Any], timeout: float = 20.0, message: str = "") -> Any:
        """Poll ``predicate`` until it returns something truthy; fail (with the console) after ``timeout``."""
        from selenium.common.exceptions import (
            StaleElementReferenceException,
            WebDriverException,
        )

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except (StaleElementReferenceException, WebDriverException) as exc:
                last = exc
            time.sleep(0.05)
        self.screenshot("timeout", copy=False)
        raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}"
                             f" (last error: {last}); page error: {self.text('#error')!r};"
                             f" console: {self.read_console()}")

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def find_all(self, css: str) -> list:
        return self.driver.find_elements("css selector", css)

    def by_id(self, test_id: str) -> Any:
        return self.find(f'[data-testid="{test_id}"]')

    def text(self, css: str) -> str:
        found = self.find_all(css)
        return found[0].text if found else ""

    def attr(self, css: str, name: str) -> str | None:
        found = self.find_all(css)
        return found[0].get_attribute(name) if found else None

    def visible(self, css: str) -> bool:
        found = self.find_all(css)
        return bool(found) and found[0].is_displayed()

    def rec_items(self) -> list[str]:
        return [e.get_attribute("data-item") for e in self.find_all('[data-testid="rec-item"]')]

    def fill(self, css: str, value: str) -> None:
        box = self.find(css)
        box.clear()
        box.send_keys(value)

    def read_console(self) -> list[dict]:
        """Browser console entries since the last read (chromedriver hands each entry out once)."""
        self.console += self.driver.get_log("browser")
        return self.console

    def assert_no_console_errors(self) -> None:
        severe = [e for e in self.read_console() if e.get("level") == "SEVERE"]
        assert not severe, "browser console errors:\n" + "\n".join(e.get("message", str(e)) for e in severe)

    def no_horizontal_scroll(self) -> bool:
        return self.driver.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")

    def screenshot(self, name: str, *, copy: bool = True, full_page: bool = False) -> Path:
        """Save a PNG under the test's tmp_path (and, with ``copy``, into $LLM4REC_SCREENSHOTS when set);
        ``full_page``: the window grown to the page's height (at most 2,400 px) for the picture, then restored."""
        path = self.tmp_path / f"{name}.png"
        size = self.driver.get_window_size()
        if full_page:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(size["width"], min(int(height) + 140, 2400))
        self.driver.save_screenshot(str(path))
        if full_page:
            self.driver.set_window_size(size["width"], size["height"])
        target = os.environ.get(SCREENSHOTS_VARIABLE)
        if target and copy:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)
        return path

    def quit(self) -> None:
        self.driver.quit()
