"""Memory checks before building or loading: stop with a message rather than be killed by the kernel."""

from __future__ import annotations

import os

import psutil

from indexer.errors import InsufficientMemory

ENV_LIMIT = "OMNISEARCH_MEMORY_LIMIT"  # bytes; caps what the checks consider available (tests, shared hosts)
HEADROOM = 0.9  # use at most this fraction of available memory


def available_bytes() -> int:
    """Memory available to this process: psutil's estimate, capped by $OMNISEARCH_MEMORY_LIMIT."""
    avail = int(psutil.virtual_memory().available)
    limit = os.environ.get(ENV_LIMIT)
    return min(avail, int(float(limit))) if limit else avail


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def check_memory(needed: int, what: str, available: int | None = None) -> None:
    """Raise InsufficientMemory when `needed` bytes exceed the headroom of available memory."""
    avail = available_bytes() if available is None else available
    if needed > HEADROOM * avail:
        raise InsufficientMemory(
            f"{what} needs about {human(needed)} but only {human(avail)} is available "
            f"(using at most {int(HEADROOM * 100)}%); free memory, use fewer shards at once (--threads), "
            f"or a smaller index type (for example --backend faiss-ivfpq --param refine=false)"
        )
