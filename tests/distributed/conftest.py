"""One local Ray cluster (a head and two one-CPU worker nodes, separate processes) for the whole session."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="session")
def ray_cluster():
    """A running :class:`~llm4rec.distributed.cluster.LocalCluster` this process is connected to."""
    from llm4rec.distributed.cluster import LocalCluster

    cluster = LocalCluster(workers=2, cpus_per_worker=1)
    cluster.start()
    yield cluster
    cluster.stop()
