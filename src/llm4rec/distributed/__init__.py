"""Scale-out on Ray (extra ``llm4rec[ray]``): the same models, configs and bundles, run across a cluster.

Nothing outside this package imports ray. :func:`~llm4rec.distributed.cluster.connect`
joins a cluster (``auto``, an address, or ``local`` for one started in this
process); :class:`~llm4rec.distributed.cluster.LocalCluster` starts a head and
worker nodes as separate processes on this machine, for tests and benchmarks.
"""
