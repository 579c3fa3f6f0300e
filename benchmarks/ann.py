"""The ANN harness: every backend x build x search point of a grid on one data set, beside the raw libraries.

Method (as ann-benchmarks): recall@k against exact neighbours with a distance tolerance (groundtruth.py); QPS as
the best of `runs` timed repetitions; build time and memory per build. Each point is measured in four modes:
`batch-Nt` searches all queries in one call with N library threads; `single-Nt` sends one query per call from N
Python threads (the way a server calls the index), over the first `single_queries` queries. The project's
backend and the raw library are timed alternately, repetition by repetition, so that load from other work on a
shared machine falls on both alike and their ratio stays meaningful.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
from numpy.typing import NDArray
from tqdm import tqdm

from benchmarks.datasets import Dataset
from benchmarks.grids import Grid
from benchmarks.groundtruth import GroundTruth, recall
from benchmarks.raw import raw_index
from benchmarks.results import now_utc

log = logging.getLogger(__name__)

THREADS = {"1t": 1, "2t": 2}


class Subject:
    """Something to time: the project backend or the raw library behind a common face."""

    impl: str = ""

    def set_threads(self, n: int) -> None:
        raise NotImplementedError

    def set_search(self, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def prepare_thread(self) -> None:
        """Per-thread setup before a worker thread searches (OpenMP thread count)."""

    def search(self, xq: NDArray[np.float32], k: int) -> Any:
        raise NotImplementedError

    def labels(self, result: Any) -> NDArray[np.int64]:
        raise NotImplementedError


class WrapperSubject(Subject):
    """A backend of the indexer's registry, used through its public AnnBackend methods only."""

    impl = "project"

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def set_threads(self, n: int) -> None:
        self.backend.threads = n

    def set_search(self, params: dict[str, Any]) -> None:
        if params:
            self.backend.set_search_params(**params)

    def search(self, xq: NDArray[np.float32], k: int) -> Any:
        return self.backend.search(xq, k)

    def labels(self, result: Any) -> NDArray[np.int64]:
        return np.asarray(result[1], dtype=np.int64)


class RawSubject(Subject):
    impl = "raw"

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def set_threads(self, n: int) -> None:
        self.raw.set_threads(n)  # faiss: applies the OpenMP count to the calling thread at once

    def set_search(self, params: dict[str, Any]) -> None:
        if params:
            self.raw.set_search(params)

    def prepare_thread(self) -> None:
        self.raw.prepare_thread()

    def search(self, xq: NDArray[np.float32], k: int) -> Any:
        return self.raw.search(xq, k)

    def labels(self, result: Any) -> NDArray[np.int64]:
        return self.raw.labels(result)


class PeakRss:
    """Samples this process's RSS in a thread while a block runs: peak and retained growth in bytes."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.proc = psutil.Process()
        self.before = self.peak = self.after = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.before = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.after = self.proc.memory_info().rss
        self.peak = max(self.peak, self.after)

    @property
    def peak_delta(self) -> int:
        return self.peak - self.before

    @property
    def retained_delta(self) -> int:
        return self.after - self.before


@dataclass
class Timing:
    """Best-of-runs figures of one mode."""

    qps: float = 0.0
    p50_us: float | None = None  # one-query modes: median call latency
    p99_us: float | None = None

    def better(self, other: Timing) -> Timing:
        return other if other.qps > self.qps else self


def time_batch(subject: Subject, xq: NDArray[np.float32], k: int) -> tuple[Timing, Any]:
    t0 = time.perf_counter()
    result = subject.search(xq, k)
    dt = time.perf_counter() - t0
    return Timing(qps=len(xq) / max(dt, 1e-12)), result


def time_single(subject: Subject, rows: list[NDArray[np.float32]], k: int, threads: int) -> Timing:
    """One query per call from `threads` Python threads; QPS over the wall time, latencies of every call.

    Each worker stamps its own first start and last end: the wall time is their span, so a coordinating
    thread that is descheduled on a busy machine cannot shorten or stretch it.
    """
    lat = np.zeros(len(rows), dtype=np.int64)
    parts = [range(i, len(rows), threads) for i in range(threads)]
    spans = [(0, 0)] * threads
    start = threading.Barrier(threads)

    def work(w: int) -> None:
        subject.prepare_thread()
        search = subject.search
        clock = time.perf_counter_ns
        start.wait()
        first = clock()
        for i in parts[w]:
            t0 = clock()
            search(rows[i], k)
            lat[i] = clock() - t0
        spans[w] = (first, clock())

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(work, w) for w in range(threads)]:
            f.result()
    wall = (max(e for _, e in spans) - min(b for b, _ in spans)) / 1e9
    return Timing(
        qps=len(rows) / max(wall, 1e-12),
        p50_us=float(np.percentile(lat, 50)) / 1e3,
        p99_us=float(np.percentile(lat, 99)) / 1e3,
    )


@dataclass
class Point:
    """One measured (backend, build params, search params, implementation) combination."""

    backend: str
    impl: str  # "project" (the indexer's backend) or "raw" (the library called directly)
    build: dict[str, Any]
    search: dict[str, Any]
    recall: float
    modes: dict[str, dict[str, float | None]]
    build_s: float
    index_bytes: int | None
    peak_rss_bytes: int
    retained_rss_bytes: int
    params: dict[str, Any] = field(default_factory=dict)  # every resolved parameter

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "impl": self.impl,
            "build": self.build,
            "search": self.search,
            "recall": round(self.recall, 5),
            "modes": self.modes,
            "build_s": round(self.build_s, 4),
            "index_bytes": self.index_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "retained_rss_bytes": self.retained_rss_bytes,
            "params": self.params,
        }


def _modes_dict(best: dict[str, Timing]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for mode, t in best.items():
        out[mode] = {"qps": round(t.qps, 1)}
        if t.p50_us is not None:
            out[mode]["p50_us"] = round(t.p50_us, 1)
            out[mode]["p99_us"] = round(t.p99_us or 0.0, 1)
    return out


def measure_search(
    subjects: list[Subject],
    ds: Dataset,
    gt: GroundTruth,
    k: int,
    modes: tuple[str, ...],
    runs: int,
    single_queries: int,
) -> list[tuple[float, dict[str, Timing]]]:
    """Recall and best-of-runs timings per mode for each subject, timed in alternation."""
    rows = [ds.xq[i : i + 1] for i in range(min(single_queries, len(ds.xq)))]  # (1, d) views
    best: list[dict[str, Timing]] = [{m: Timing() for m in modes} for _ in subjects]
    found: list[NDArray[np.int64] | None] = [None] * len(subjects)
    for mode in modes:
        kind, threads = mode.split("-")
        n = THREADS[threads]
        for _ in range(runs):
            for j, s in enumerate(subjects):
                if kind == "batch":
                    s.set_threads(n)
                    t, result = time_batch(s, ds.xq, k)
                    if found[j] is None:
                        found[j] = s.labels(result)
                else:
                    s.set_threads(1)  # each caller thread runs single-threaded searches
                    t = time_single(s, rows, k, n)
                best[j][mode] = best[j][mode].better(t)
    out = []
    for j, s in enumerate(subjects):
        s.set_threads(-1)  # back to the defaults (the next build must not inherit a 1-thread setting)
        labels = found[j]
        if labels is None:  # no batch mode asked for: one untimed search for the recall
            labels = s.labels(s.search(ds.xq, k))
        out.append((recall(ds, gt, labels, k), best[j]))
    return out


@dataclass(frozen=True)
class AnnRun:
    """Everything `run_ann` measured, ready to be written as JSON."""

    points: list[Point]
    seconds: float
    started: str


def run_ann(
    ds: Dataset,
    gt: GroundTruth,
    grid: Grid,
    backends: list[str] | None = None,
    k: int = 10,
    progress: Callable[[str], None] | None = None,
) -> AnnRun:
    """Measure every point of `grid` (restricted to `backends`) on `ds`.

    Returns:
        The points, project and raw alternately per parameter setting.
    """
    from indexer.backends import backend_class, get_backend

    st = grid.settings
    started = now_utc()
    t_start = time.monotonic()
    if st.max_queries is not None and len(ds.xq) > st.max_queries:
        ds = Dataset(ds.name, ds.xb, ds.xq[: st.max_queries], ds.metric, ds.source)
        gt = GroundTruth(gt.ids[: st.max_queries], gt.dist[: st.max_queries], gt.path, gt.cached)
    points: list[Point] = []
    plan = [(bg, b) for bg in grid.for_backends(backends) for b in bg.builds()]
    for bg, build in tqdm(plan, desc=f"ann {ds.name}", unit="build"):
        cls = backend_class(bg.backend)
        searches = bg.searches()
        resolved = cls.resolve_params(len(ds.xb), ds.dim, {**build, **searches[0]})
        search_keys = list(getattr(cls, "SEARCH_DEFAULTS", {}))
        build_resolved = {key: v for key, v in resolved.items() if key not in search_keys}
        msg = f"{bg.backend} {build_resolved}"
        log.info("building %s", msg)
        if progress:
            progress(f"build {msg}")

        backend = get_backend(bg.backend, ds.dim, ds.metric, st.build_threads, **build)
        with PeakRss() as mem:
            t0 = time.perf_counter()
            backend.build(ds.xb)
            build_s = time.perf_counter() - t0
        subjects: list[Subject] = [WrapperSubject(backend)]
        builds = [(build_s, int(backend.memory_bytes()), mem.peak_delta, mem.retained_delta)]

        raw = raw_index(bg.backend, ds.dim, ds.metric, build_resolved) if st.raw else None
        if raw is not None:
            with PeakRss() as rmem:
                t0 = time.perf_counter()
                raw.build(ds.xb, st.build_threads)
                rbuild_s = time.perf_counter() - t0
            subjects.append(RawSubject(raw))
            builds.append((rbuild_s, None, rmem.peak_delta, rmem.retained_delta))  # type: ignore[arg-type]

        for search in searches:
            canon = cls.resolve_params(len(ds.xb), ds.dim, {**build, **search})
            search_canon = {key: canon[key] for key in search_keys if key in canon}
            subjects[0].set_search(search)
            if raw is not None:
                subjects[1].set_search(search_canon)
            measured = measure_search(subjects, ds, gt, k, st.modes, st.runs, st.single_queries)
            for s, (rec, best), (b_s, nbytes, peak, kept) in zip(subjects, measured, builds, strict=True):
                points.append(Point(bg.backend, s.impl, build, search, rec, _modes_dict(best), b_s, nbytes,
                                    peak, kept, {**canon}))
            if progress:
                qps = {s.impl: round(best.get("batch-1t", Timing()).qps) for s, (_, best) in
                       zip(subjects, measured, strict=True)}
                progress(f"  {bg.backend} {search} recall={measured[0][0]:.3f} batch-1t qps={qps}")
        for s in subjects:
            if isinstance(s, RawSubject):
                s.raw.close()
        del subjects, backend, raw
        gc.collect()
    return AnnRun(points, time.monotonic() - t_start, started)


def overhead(points: list[Point]) -> list[dict[str, Any]]:
    """Project / raw QPS ratio per (backend, build, search, mode): 1.0 means the wrapper costs nothing."""
    raw = {(p.backend, repr(p.build), repr(p.search)): p for p in points if p.impl == "raw"}
    out = []
    for p in points:
        if p.impl != "project":
            continue
        r = raw.get((p.backend, repr(p.build), repr(p.search)))
        if r is None:
            continue
        for mode, fig in p.modes.items():
            rq = r.modes.get(mode, {}).get("qps")
            pq = fig.get("qps")
            if rq and pq:
                out.append({
                    "backend": p.backend, "build": p.build, "search": p.search, "mode": mode,
                    "project_qps": pq, "raw_qps": rq, "ratio": round(pq / rq, 3),
                    "recall_project": round(p.recall, 4), "recall_raw": round(r.recall, 4),
                })
    return out


def ann_benchmark(
    ds: Dataset,
    grid: Grid,
    cache: Any,
    out_dir: Any,
    backends: list[str] | None = None,
    k: int = 10,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """Ground truth (cached), every grid point, JSON and Pareto PNG in `out_dir`.

    Returns:
        (result dict, JSON path, PNG path); files are `ann-<dataset>.json` / `.png`.
    """
    from pathlib import Path

    from benchmarks.groundtruth import EPSILON, ground_truth
    from benchmarks.machine import OtherLoad, load_note, machine_info
    from benchmarks.plots import ann_plot
    from benchmarks.results import command_line, slug, write_json

    load = OtherLoad().start()
    machine = machine_info()
    t0 = time.monotonic()
    gt = ground_truth(ds, Path(cache) if cache is not None else None, max(k, 100))
    gt_s = time.monotonic() - t0
    if progress:
        progress(f"ground truth {'read from' if gt.cached else 'computed into'} {gt.path} ({gt_s:.1f} s)")
    run = run_ann(ds, gt, grid, backends, k, progress)
    other = load.cores()
    nq = len(ds.xq) if grid.settings.max_queries is None else min(len(ds.xq), grid.settings.max_queries)
    result: dict[str, Any] = {
        "kind": "ann",
        "dataset": {**ds.describe(), "nq": nq},
        "date": run.started,
        "command": command_line(),
        "grid": grid.name,
        "settings": {
            "runs": grid.settings.runs,
            "single_queries": min(grid.settings.single_queries, nq),
            "modes": list(grid.settings.modes),
            "build_threads": grid.settings.build_threads,
        },
        "k": k,
        "epsilon": EPSILON,
        "ground_truth": {"path": str(gt.path) if gt.path else None, "cached": gt.cached, "seconds": round(gt_s, 2)},
        "seconds": round(run.seconds, 1),
        "machine": {**machine, "other_load_cores": round(other, 2), "note": load_note(other)},
        "points": [p.as_dict() for p in run.points],
        "overhead": overhead(run.points),
    }
    out = Path(out_dir)
    name = slug(ds.name)
    json_path = write_json(out / f"ann-{name}.json", result)
    png_path = ann_plot(result, out / f"ann-{name}.png")
    return result, json_path, png_path
