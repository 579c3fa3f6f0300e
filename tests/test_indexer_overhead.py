"""The wrapper-vs-raw measurement runs and reports what the benchmark harness reads."""

from __future__ import annotations

from indexer.overhead import format_table, measure_overhead


def test_measure_overhead_reports_ratios_for_each_backend() -> None:
    result = measure_overhead(n=2000, dim=16, nq=50, repeats=1, search_repeats=2,
                              backends=["hnswlib", "faiss-ivf-flat"], fast_build_rounds=1, single_queries=10)
    assert set(result) == {"_setup", "hnswlib", "faiss-ivf-flat"}
    for name in ("hnswlib", "faiss-ivf-flat"):
        r = result[name]
        assert r["recall@10"] >= 0.9
        assert r["build_s_raw"] > 0 and r["build_s_wrapper"] > 0 and r["qps_raw"] > 0 and r["qps_wrapper"] > 0
        assert r["build_ratio"] > 0 and r["qps_ratio"] > 0 and r["qps_cpu_ratio"] > 0
    table = format_table(result)
    assert table.count("\n") == 3 and "| hnswlib |" in table
