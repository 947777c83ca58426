"""A sharded P-LOO split on Ray: ``llm4rec data split --ray``, the same files as the single-process run.

:mod:`llm4rec.data.shards` cuts an interaction log into shards of users and splits each on its own, one step
after another. Here the same steps run as Ray tasks of one CPU each: a map task per read of the Parquet
table (rows to one part per shard), one task for the item vocabulary, then a reduce task per shard. A task
holds one read or one shard, so a node needs memory for that, not for the log: the shard count sets it.

Everything is written under a temporary sibling of the output that is renamed only at the end, and every
file a task writes appears whole or not at all. A task whose worker or node dies is retried (``retries``)
on another node and writes the same file again; what a killed task had half-written is dropped before the
rename. The files are byte for byte the single-process ones.

Where the data lives: tasks read the table and write the output **by path**, so every node must see both
at the same path (a :class:`~llm4rec.distributed.cluster.LocalCluster`, or a shared file system).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llm4rec._atomic import atomic_dir
from llm4rec.data.shards import check_request, finish, map_read, open_source, reduce_shard, write_items
from llm4rec.errors import InputError

__all__ = ["split_ray"]


def split_ray(data: str | Path, out: str | Path, shards: int = 16, *, protocol: str = "loo", seed: int = 2026,
              overwrite: bool = False, address: str = "auto", retries: int = 3,
              progress: Callable[[str, int, int], None] | None = None) -> dict:
    """:func:`llm4rec.data.shards.split_to_shards` with its steps as Ray tasks; returns the manifest.

    Args:
        address: ``auto``, ``local`` or ``host:port`` (see :func:`~llm4rec.distributed.cluster.connect`);
            a driver already connected to Ray uses that cluster.
        retries: how often a task is run again after its worker process or node dies (an exception in the
            step itself, such as bad input, is never retried).
        progress: ``(step, done, total)`` after each task.
    """
    from llm4rec.distributed.cluster import check_address, session

    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InputError("bad retry count", value=retries, expected="an integer >= 0")
    protocol = check_request(out, shards, protocol, overwrite)
    source = open_source(data)
    check_address(address, probe=False)
    report = progress or (lambda step, done, total: None)
    with session(address) as ray, atomic_dir(out, replace=overwrite) as work:
        if int(ray.cluster_resources().get("CPU", 0)) < 1:
            raise InputError("the Ray cluster has no CPUs", value=address, expected="worker nodes with CPUs")
        task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)
        work_dir = str(work)

        def run(step: str, refs: list) -> list:
            """Wait for ``refs`` as they finish (the first failure raises); their results in order."""
            pending, done = list(refs), 0
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                ray.get(ready)
                done += 1
                report(step, done, len(refs))
            return ray.get(refs)

        mapper = task(map_read)
        run("reading and cutting by user", [mapper.remote(source, r, shards, work_dir)
                                            for r in range(len(source.reads))])
        (n_items,) = run("item vocabulary", [task(write_items).remote(source, work_dir)])
        reducer = task(reduce_shard)
        counts = run("splitting the shards", [reducer.remote(source, s, protocol, seed, work_dir)
                                              for s in range(shards)])
        return finish(source, work, shards, protocol, seed, n_items, counts)
