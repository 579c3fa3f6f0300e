"""CPU affinity of the gRPC threads: the handlers and the poller share a few CPUs instead of roaming all of them.

Every gRPC thread of the sync server runs Python, so they take turns on one GIL. When they roam over all CPUs,
each turn hands the GIL (and the thread's cache-warm state) to another core, and each wake-up of a sleeping
thread on an idle core costs an inter-processor interrupt; on the 2-core target (a VM) this cost a vector query
about 190 us of server CPU, more than the whole Search handler (BENCHMARKS.md, Server). Threads that spend
their time outside the GIL (the encoder, torch and faiss pools) keep every CPU.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def request_cpu_set(count: int) -> frozenset[int] | None:
    """The last `count` CPUs this process may use, or None when pinning would not restrict anything.

    None for `count` 0, on platforms without CPU affinity, and when the process may not use more than
    `count` CPUs anyway.
    """
    if count <= 0 or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) <= count:
        return None
    return frozenset(allowed[-count:])


def pin_thread(cpus: frozenset[int] | None, native_id: int = 0) -> bool:
    """Restrict one thread (0: the calling one) to `cpus`; False if the OS refused (logged, never raised).

    On Linux, affinity belongs to a thread: threads it starts later inherit it, the rest of the process keeps its
    own.
    """
    if cpus is None:
        return False
    try:
        os.sched_setaffinity(native_id, cpus)
    except (OSError, ValueError) as err:  # a CPU removed by a cgroup since, a thread that already ended; never
        # raise: a thread pool whose initializer raises refuses every later task
        log.debug("cannot pin thread %d to CPUs %s: %s", native_id, sorted(cpus), err)
        return False
    return True
