"""A real ``llm4rec serve`` process for the tests: a free loopback port, keys made by the CLI, start and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


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
        """SIGTERM (a clean shutdown), SIGKILL if it does not end within 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and wait for the process to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
