"""How many threads torch's CPU kernels use in the harness's own processes.

torch defaults to one thread per core. On a small machine that is also running the executor, the
sandbox and the workflow workers, that oversubscribes the cores: SmolLM2-135M decoded at 0.8
tokens/s with 2 threads on a loaded 2-core box and at 8.4 with 1 (REFERENCES.md). The harness
sets the count itself: ``$SPOGW_TORCH_THREADS`` (the ``--threads`` option of ``spogw run``,
``eval`` and ``generate`` sets it), else half the cores this process may run on, at least one.
"""

from __future__ import annotations

import os

ENV = "SPOGW_TORCH_THREADS"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def torch_threads() -> int:
    """The thread count to use: $SPOGW_TORCH_THREADS, else max(1, usable cores // 2). Raises
    ValueError naming the variable when it is not a positive integer."""
    raw = os.environ.get(ENV)
    if raw is None or not raw.strip():
        return max(1, usable_cores() // 2)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${ENV}={raw!r}: give a positive number of threads")
    return value


def apply_torch_threads() -> int:
    """Set torch's intra-op thread count for this process (torch is imported here) and return it."""
    import torch

    threads = torch_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
