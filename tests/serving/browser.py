"""Helpers of the browser tests: a real ``llm4rec serve`` process, API keys, headless Chromium driven by Selenium.

The browser is Debian's (``/usr/bin/chromium`` with ``/usr/bin/chromedriver``), never a downloaded one: the
driver is started with an explicit ``Service(executable_path=...)`` so selenium-manager has nothing to fetch.
Every server and browser is on the loopback interface and stopped by the test that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: when set, every screenshot is also copied into this directory (the README's images)
SCREENSHOTS_VARIABLE = "LLM4REC_SCREENSHOTS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llm4rec(*args: str, timeout: float = 120) -> str:
    """Run the ``llm4rec`` command in a child process; its stdout (fails the test on a non-zero exit)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "llm4rec", *args], check=False, capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert done.returncode == 0, f"llm4rec {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def create_key(store: str, scopes: str, name: str = "browser test") -> str:
    """A new API key made by ``llm4rec keys create`` (it prints the key alone on stdout)."""
    return llm4rec("keys", "create", "--store", store, "--name", name, "--scopes", scopes).strip().splitlines()[-1]


class Server:
    """``llm4rec serve`` in a child process on a free loopback port."""

    def __init__(self, model: Path, store: str, log: Path, **options: str) -> None:
        self.model, self.store, self.log, self.options = model, store, log, options
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> Server:
        args = [sys.executable, "-m", "llm4rec", "serve", "--model", str(self.model), "--store", self.store,
                "--port", str(self.port), "--log-level", "warning"]
        for key, value in self.options.items():
            args += [f"--{key.replace('_', '-')}", value]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


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
