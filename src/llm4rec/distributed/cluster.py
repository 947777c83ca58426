"""Joining a Ray cluster, and a multi-process cluster on this machine for tests and benchmarks.

``connect("auto")`` joins the cluster that ``ray start --head`` started on this
machine (or the one ``RAY_ADDRESS`` names); ``connect("ray://host:10001")`` or
``connect("host:6379")`` joins a remote one; ``connect("local")`` starts a
private one inside this process, sized to the machine. Every worker gets
``OPENBLAS_NUM_THREADS=1`` (implicit's BLAS must not oversubscribe) and the
shared-data and cache variables of this process.

:class:`LocalCluster` is a real cluster on one machine: a head node without
CPUs (it schedules, it does not compute) and ``workers`` worker nodes, each a
raylet process of its own with ``cpus_per_worker`` CPUs, so a test can kill
one (:meth:`LocalCluster.kill_worker`) and watch the work finish elsewhere.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llm4rec.errors import InputError

__all__ = ["LocalCluster", "check_address", "connect", "require_ray", "worker_env"]

#: environment variables passed on to every Ray worker when set here
_PASSED_ON = ("LLM4REC_SHARED_DATA", "LLM4REC_CACHE", "HF_HOME", "OMP_NUM_THREADS")


def require_ray() -> Any:
    """The ``ray`` module, or an InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("Ray is not installed", expected="the ray extra",
                         hint="pip install 'llm4rec[ray]'") from None
    return ray


def worker_env() -> dict[str, str]:
    """The environment every Ray worker runs with."""
    env = {"OPENBLAS_NUM_THREADS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.update({k: os.environ[k] for k in _PASSED_ON if k in os.environ})
    return env


#: a cluster address: [ray://]host:port, the host a name, an IPv4 address or a bracketed IPv6 one
_ADDRESS = re.compile(r"(?:ray://)?(?P<host>[A-Za-z0-9][A-Za-z0-9.\-]*|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")
_ADDRESS_EXPECTED = "auto, local, or the head's host:port (ray://host:port for Ray Client)"


def check_address(address: object, *, probe: bool = True) -> str:
    """``address`` if it is ``"auto"``, ``"local"`` or a well-formed ``[ray://]host:port``; with ``probe``, a
    host:port must also accept a TCP connection within 5 s (ray.init itself waits minutes on a wrong one).
    An InputError naming the address otherwise."""
    if not isinstance(address, str) or not address.strip():
        raise InputError("empty Ray address", value=address, expected=_ADDRESS_EXPECTED)
    if address in ("auto", "local"):
        return address
    match = _ADDRESS.fullmatch(address)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise InputError("not a Ray cluster address", value=address, expected=_ADDRESS_EXPECTED)
    if probe:
        host = match["host"].strip("[]")
        try:
            socket.create_connection((host, int(match["port"])), timeout=5).close()
        except OSError as exc:
            raise InputError(f"nothing answers at this Ray address ({exc.strerror or type(exc).__name__})",
                             value=address, expected="a running cluster: `ray start --head` prints the "
                                                     "address to use") from None
    return address


def connect(address: str = "auto", *, num_cpus: int | None = None) -> Any:
    """Join (or start, for ``"local"``) a Ray cluster; returns the ``ray`` module. Idempotent.

    Args:
        address: ``"auto"`` (the cluster started on this machine by ``ray start``), ``"local"`` (a private
            cluster in this process), or a cluster address (``host:port`` or ``ray://host:port``).
        num_cpus: CPUs of a ``"local"`` cluster (default: all).
    """
    ray = require_ray()
    check_address(address, probe=False)
    if ray.is_initialized():
        return ray
    check_address(address)
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": worker_env()}, "log_to_driver": False,
                              "logging_level": "warning"}
    # "local" is passed on: a bare ray.init() would join a cluster already running on this machine instead
    kwargs["address"] = address
    if address == "local":
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(f"cannot join the Ray cluster ({str(exc).splitlines()[0]})", value=address,
                         expected="a running cluster: `ray start --head` on this machine for auto, "
                                  "or the head's host:port") from None
    return ray


class LocalCluster:
    """A head node (no CPUs) and ``workers`` worker nodes, each its own raylet process, on this machine.

    Use as a context manager: it connects this process (the driver) on entry and
    shuts everything down on exit. :attr:`address` is what :func:`connect` and
    ``--ray`` take.
    """

    def __init__(self, workers: int = 2, cpus_per_worker: int = 1, *,
                 object_store_bytes: int = 256 * 1024 ** 2) -> None:
        if workers < 1 or cpus_per_worker < 1:
            raise InputError("a local cluster needs at least one worker of one CPU",
                             value=(workers, cpus_per_worker), expected="workers >= 1, cpus_per_worker >= 1")
        self.workers, self.cpus_per_worker = workers, cpus_per_worker
        self.object_store_bytes = object_store_bytes
        self._cluster: Any = None
        self._nodes: list[Any] = []

    @property
    def address(self) -> str:
        if self._cluster is None:
            raise RuntimeError("the local cluster is not running")
        return self._cluster.address

    def start(self) -> LocalCluster:
        require_ray()
        from ray.cluster_utils import Cluster

        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        self._cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "object_store_memory": self.object_store_bytes,
            "env_vars": worker_env()})
        for _ in range(self.workers):
            self.add_worker()
        self._cluster.wait_for_nodes()
        connect(self.address)
        return self

    def add_worker(self) -> Any:
        """Start one more worker node; returns its handle."""
        node = self._cluster.add_node(num_cpus=self.cpus_per_worker, object_store_memory=self.object_store_bytes,
                                      env_vars=worker_env())
        self._nodes.append(node)
        return node

    def kill_worker(self, index: int = -1) -> None:
        """Kill one worker node's processes at once (its raylet and the tasks and actors on it)."""
        node = self._nodes.pop(index)
        self._cluster.remove_node(node, allow_graceful=False)

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster, self._nodes = None, []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def session(address: str | None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """``connect(address, num_cpus=...)`` for the duration (the ray module; None: the cluster this process is
    connected to, else ``auto``); disconnects only if it connected."""
    ray = require_ray()
    was = ray.is_initialized()
    connect(address or "auto", num_cpus=num_cpus)
    try:
        yield ray
    finally:
        if not was:
            ray.shutdown()
