"""What the backend wrappers cost: build time and batched QPS of each wrapper next to the raw library.

Same data, same parameters, same thread count, in one process. Builds: the wrapper's `build` against the
library calls it makes (constructor, train, add), each built `repeats` times, interleaved, best time kept (the
machine is shared; the minimum is the least disturbed run). Search: the wrapper's `search` against the library's
own search method on the very same index object, so only the wrapper's work differs; best of `repeats` passes
over all queries. Run `python -m indexer.overhead` for a table and JSON.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import hnswlib
import numpy as np
from numpy.typing import NDArray

from indexer.backends import REGISTRY, backend_class, get_backend
from indexer.backends.faiss_common import FAISS_METRIC, omp_threads
from indexer.synthetic import clustered_with_queries, recall_at_k


def _raw_builder(name: str, params: dict[str, Any], dim: int, threads: int) -> Callable[[NDArray[np.float32]], Any]:
    """The library calls the wrapper makes to build, written out directly."""
    metric = FAISS_METRIC["ip"]
    if name == "hnswlib":

        def build_hnswlib(xb: NDArray[np.float32]) -> Any:
            index = hnswlib.Index(space="ip", dim=dim)
            index.init_index(max_elements=len(xb), M=params["M"], ef_construction=params["ef_construction"],
                             random_seed=params["seed"])
            index.add_items(xb, np.arange(len(xb)), num_threads=threads)
            index.set_ef(params["ef"])
            return index

        return build_hnswlib
    if name == "flat":
        spec = "Flat"
    elif name == "faiss-hnsw":
        spec = f"HNSW{params['M']},Flat"
    elif name == "faiss-ivf-flat":
        spec = f"IVF{params['nlist']},Flat"
    elif name == "faiss-ivfpq":
        spec = f"IVF{params['nlist']},PQ{params['m']}x{params['nbits']}{'fs' if params['fast_scan'] else ''}"
        spec += ",RFlat" if params["refine"] else ""
    elif name == "faiss-factory":
        spec = str(params["factory"])
    else:
        raise KeyError(name)

    def build_faiss(xb: NDArray[np.float32]) -> Any:
        with omp_threads(threads):
            index = faiss.index_factory(dim, spec, metric)
            if name == "faiss-hnsw":
                faiss.downcast_index(index).hnsw.efConstruction = params["efConstruction"]  # type: ignore[attr-defined]
            index.train(xb)
            index.add(xb)
        return index

    return build_faiss


def _best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_overhead(
    n: int = 100_000,
    dim: int = 64,
    nq: int = 1000,
    k: int = 10,
    threads: int = 2,
    repeats: int = 3,
    search_repeats: int = 15,
    backends: Sequence[str] | None = None,
    seed: int = 0,
    fast_build_rounds: int = 25,
    single_queries: int = 200,
) -> dict[str, dict[str, Any]]:
    """Wrapper vs raw library for each backend on clustered vectors (n, dim) and nq held-out queries.

    Args:
        n, dim, nq, k: data size and neighbours per query.
        threads: library threads for building and searching, the same on both sides.
        repeats: interleaved builds per side (best kept); builds under 0.5 s get `fast_build_rounds`.
        search_repeats: interleaved batched passes over all queries per side.
        backends: registry names (default: all).
        seed: data seed.
        fast_build_rounds: rounds for millisecond builds, where one hiccup would decide the ratio.
        single_queries: queries timed one per call (median) for the per-call overhead.

    Returns:
        {backend: {"params", "recall@10", "build_s_wrapper", "build_s_raw", "build_ratio" (wrapper / raw wall
        time, want <= 1.1), "build_cpu_ratio" (the same in process CPU time, less sensitive to other load),
        "build_pair_median_ratio" (median over back-to-back pairs), "qps_wrapper", "qps_raw", "qps_ratio"
        (wrapper / raw, want >= 0.95), "qps_cpu_ratio", "qps_pair_median_ratio",
        "single_query_us_wrapper", "single_query_us_raw"}} plus "_setup": the data and machine settings.
    """
    xb, xq = clustered_with_queries(n, nq, dim, seed=seed)
    exact = get_backend("flat", dim, "ip")
    exact.build(xb)
    truth = exact.search(xq, k)[1]
    out: dict[str, dict[str, Any]] = {
        "_setup": {"n": n, "dim": dim, "nq": nq, "k": k, "threads": threads, "repeats": repeats,
                   "search_repeats": search_repeats, "faiss": faiss.__version__}
    }
    for name in backends or sorted(REGISTRY):
        out[name] = _measure_one(name, xb, xq, truth, k, threads, repeats, search_repeats, fast_build_rounds,
                                 single_queries)
    return out


def _measure_one(
    name: str,
    xb: NDArray[np.float32],
    xq: NDArray[np.float32],
    truth: NDArray[np.int64],
    k: int,
    threads: int,
    repeats: int,
    search_repeats: int,
    fast_build_rounds: int,
    single_queries: int,
) -> dict[str, Any]:
    n, dim = xb.shape
    params = backend_class(name).resolve_params(n, dim, {})
    raw_build = _raw_builder(name, params, dim, threads)
    wrapper: Any = None
    wrapper_times: list[tuple[float, float]] = []  # (wall, cpu) seconds
    raw_times: list[tuple[float, float]] = []

    def timed(fn: Callable[[], Any]) -> tuple[Any, tuple[float, float]]:
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        return result, (time.perf_counter() - w0, time.process_time() - c0)

    def build_wrapper() -> Any:
        b = get_backend(name, dim, "ip", threads=threads, **params)
        b.build(xb)
        return b

    _, (first_wall, _) = timed(lambda: raw_build(xb))
    rounds = repeats if first_wall > 0.5 else max(repeats, fast_build_rounds)  # ms builds need many tries
    for r in range(rounds):  # interleaved, order alternating, so that background load hits both sides alike
        wrapper = None  # free the previous build first, on both orders
        if r % 2 == 0:
            raw, t_raw_build = timed(lambda: raw_build(xb))
            del raw
            wrapper, t_wrap_build = timed(build_wrapper)
        else:
            wrapper, t_wrap_build = timed(build_wrapper)
            raw, t_raw_build = timed(lambda: raw_build(xb))
            del raw
        raw_times.append(t_raw_build)
        wrapper_times.append(t_wrap_build)
    inner = wrapper.index  # the library object the wrapper built; raw search runs on it directly

    def raw_search(q: NDArray[np.float32]) -> Any:
        if name == "hnswlib":
            return inner.knn_query(q, k=k, num_threads=threads)
        with omp_threads(threads):
            return inner.search(q, k)

    def wrapped_search(q: NDArray[np.float32]) -> Any:
        return wrapper.search(q, k)

    raw_search(xq)  # warm caches on both paths
    wrapped_search(xq)
    s_raw: list[tuple[float, float]] = []
    s_wrap: list[tuple[float, float]] = []
    for r in range(search_repeats):
        first, second = (raw_search, wrapped_search) if r % 2 == 0 else (wrapped_search, raw_search)
        t_first = timed(functools.partial(first, xq))[1]
        t_second = timed(functools.partial(second, xq))[1]
        s_raw.append(t_first if first is raw_search else t_second)
        s_wrap.append(t_second if first is raw_search else t_first)
    singles = xq[:single_queries]
    one_raw = min(_per_query(raw_search, singles) for _ in range(3))
    one_wrap = min(_per_query(wrapped_search, singles) for _ in range(3))
    nq = len(xq)

    def best(ts: list[tuple[float, float]], i: int) -> float:
        return min(t[i] for t in ts)

    def pair_median(num: list[tuple[float, float]], den: list[tuple[float, float]]) -> float:
        # each pair ran back to back under about the same background load
        return float(np.median([a[0] / b[0] for a, b in zip(num, den, strict=True)]))

    return {
        "params": params,
        "recall@10": round(recall_at_k(wrapper.search(xq, k)[1], truth, k), 4),
        "build_s_wrapper": round(best(wrapper_times, 0), 4),
        "build_s_raw": round(best(raw_times, 0), 4),
        "build_ratio": round(best(wrapper_times, 0) / best(raw_times, 0), 3),
        "build_cpu_ratio": round(best(wrapper_times, 1) / best(raw_times, 1), 3),
        "qps_wrapper": round(nq / best(s_wrap, 0)),
        "qps_raw": round(nq / best(s_raw, 0)),
        "qps_ratio": round(best(s_raw, 0) / best(s_wrap, 0), 3),
        "qps_cpu_ratio": round(best(s_raw, 1) / best(s_wrap, 1), 3),
        "qps_pair_median_ratio": round(pair_median(s_raw, s_wrap), 3),
        "build_pair_median_ratio": round(pair_median(wrapper_times, raw_times), 3),
        "single_query_us_wrapper": round(one_wrap * 1e6, 1),  # median of one-query calls
        "single_query_us_raw": round(one_raw * 1e6, 1),
    }

def _per_query(search: Callable[..., Any], xq: NDArray[np.float32]) -> float:
    """Median seconds of one-query calls."""
    times = []
    for i in range(len(xq)):
        q = xq[i : i + 1]
        t0 = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def format_table(result: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of `measure_overhead`'s result."""
    lines = [
        "| backend | R@10 | build raw s | build wrapper s | ratio best / pairs / cpu | QPS raw | QPS wrapper "
        "| ratio best / pairs / cpu | 1-query us raw / wrapper |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result.items():
        if name.startswith("_"):
            continue
        lines.append(
            f"| {name} | {r['recall@10']:.3f} | {r['build_s_raw']:.3g} | {r['build_s_wrapper']:.3g} | "
            f"{r['build_ratio']:.3f} / {r['build_pair_median_ratio']:.3f} / {r['build_cpu_ratio']:.3f} | "
            f"{r['qps_raw']} | {r['qps_wrapper']} | "
            f"{r['qps_ratio']:.3f} / {r['qps_pair_median_ratio']:.3f} / {r['qps_cpu_ratio']:.3f} | "
            f"{r['single_query_us_raw']:.0f} / {r['single_query_us_wrapper']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", action="append", help="limit to these backends (repeatable)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    result = measure_overhead(n=args.n, dim=args.dim, nq=args.nq, threads=args.threads, repeats=args.repeats,
                              backends=args.backend)
    print(format_table(result))
    print(json.dumps(result["_setup"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
