"""What machine a figure was measured on: cores, CPU model and flags, memory, load, library versions."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

# The flags that decide which SIMD kernels faiss, hnswlib and torch can use.
FLAGS_OF_INTEREST = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)
PACKAGES = ("numpy", "faiss-cpu", "hnswlib", "torch", "grpcio", "transformers")


def _cpuinfo() -> tuple[str, list[str]]:
    model = platform.processor() or "unknown"
    flags: list[str] = []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("unknown", "", platform.processor()):
            model = value.strip()
        elif key == "flags" and not flags:
            present = set(value.split())
            flags = [f for f in FLAGS_OF_INTEREST if f in present]
    return model, flags


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """A JSON-able description of this machine and the moment (load average shows whether it was shared)."""
    model, flags = _cpuinfo()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu_flags": flags,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_1m": round(load[0], 2),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
    }


class OtherLoad:
    """Measures how many cores other processes kept busy while a benchmark ran (the machine may be shared).

    System-wide busy CPU time minus this process's own (and its children's) CPU time, over the wall time.
    """

    def __init__(self) -> None:
        self._t0 = 0.0
        self._sys0 = 0.0
        self._own0 = 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0)
                     + getattr(t, "softirq", 0.0))

    @staticmethod
    def _own() -> float:
        t = psutil.Process().cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)

    def start(self) -> OtherLoad:
        self._t0 = time.monotonic()
        self._sys0, self._own0 = self._busy(), self._own()
        return self

    def cores(self) -> float:
        """Average cores used by other processes since `start()`."""
        wall = max(time.monotonic() - self._t0, 1e-9)
        other = (self._busy() - self._sys0) - (self._own() - self._own0)
        return max(0.0, other / wall)


def load_note(other_cores: float, cores: int | None = None) -> str:
    """A sentence saying whether other work shared the cores during a run."""
    total = cores or os.cpu_count() or 1
    if other_cores >= 0.1:
        return f"shared machine: other processes used {other_cores:.2f} of {total} cores on average during the run"
    return f"quiet machine: other processes used {other_cores:.2f} of {total} cores on average during the run"
