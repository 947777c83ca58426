"""What a run record says about where it ran: versions, git commit, threads, device, peak memory.

``environment()`` is the same for every record of one process (computed once);
``PeakMemory`` measures one step's peak resident memory.
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PeakMemory", "environment", "git_commit", "threads", "versions"]

_PACKAGES = ("llm4rec", "numpy", "scipy", "torch", "transformers", "sentence-transformers", "implicit",
             "faiss-cpu", "polars", "optuna")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    """Python's version and each installed package's (None when not installed)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in packages}}


@functools.cache
def git_commit() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git work tree llm4rec is imported from, or None (an installed wheel)."""
    here = Path(__file__).resolve().parent
    if not any((p / ".git").exists() for p in here.parents):
        return None
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(status.strip())}


def threads() -> dict[str, Any]:
    """CPU count, the thread pools in use (BLAS/OpenMP through threadpoolctl, torch if loaded), the BLAS
    libraries with their CPU kernel (``architecture``: results of BLAS-heavy solvers such as ALS differ in the
    last digits between kernels), thread env vars."""
    from threadpoolctl import threadpool_info

    info = threadpool_info()
    pools = {p["internal_api"]: p["num_threads"] for p in info}
    blas = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "threading_layer")}
            for p in info if p.get("user_api") == "blas"]
    if "torch" in sys.modules:
        pools["torch"] = sys.modules["torch"].get_num_threads()
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
           if k in os.environ}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": os.cpu_count(), "usable_cpus": usable, "pools": pools, "blas": blas, "env": env}


def environment(device: str = "cpu") -> dict[str, Any]:
    """The record's ``environment``: versions, git commit, platform, threads and ``device``."""
    return {"versions": versions(), "git": git_commit(), "platform": platform.platform(),
            "machine": platform.machine(), "threads": threads(), "device": device}


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory of this process over a block, in MiB (``mib`` after the block).

    On Linux the kernel's high-water mark is reset at the start (``/proc/self/clear_refs``), so the peak is the
    block's own (nested blocks keep the outer one's peak right); elsewhere it is the process's peak so far
    (``ru_maxrss``), which ``per_block = False`` says.
    """

    _active: list[PeakMemory] = []

    def __enter__(self) -> PeakMemory:
        self.mib, self._seen = 0.0, 0
        now = _status_kib("VmHWM")
        for outer in self._active:  # the reset below must not lose what the outer blocks have seen
            outer._seen = max(outer._seen, now or 0)
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.per_block = now is not None
        except OSError:
            self.per_block = False
        self._active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._active.remove(self)
        kib = _status_kib("VmHWM") if self.per_block else None
        if kib is None:  # ru_maxrss: KiB on Linux, bytes on macOS
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
        kib = max(kib, self._seen)
        for outer in self._active:
            outer._seen = max(outer._seen, kib)
        self.mib = round(kib / 1024, 1)
