"""Markdown tables of result JSON files (for BENCHMARKS.md): ANN points and overhead, load runs, swaps."""

from __future__ import annotations

from typing import Any


def _fmt_params(p: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in p.items()) or "-"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def _qps(modes: dict[str, Any], mode: str) -> str:
    v = modes.get(mode, {}).get("qps")
    return "-" if v is None else f"{v:,.0f}"


def ann_table(result: dict[str, Any]) -> str:
    """Every project-backend point with the raw library's QPS beside it, and build figures per build."""
    modes = result["settings"]["modes"]
    raw = {(p["backend"], repr(p["build"]), repr(p["search"])): p for p in result["points"] if p["impl"] == "raw"}
    head = ["backend", "build", "search", f"recall@{result['k']}"]
    for m in modes:
        head += [f"QPS {m}", "raw"]
    head += ["p50 us single-1t (raw)", "build s (raw)", "index MiB", "peak RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in result["points"]:
        if p["impl"] != "project":
            continue
        r = raw.get((p["backend"], repr(p["build"]), repr(p["search"])))
        row = [p["backend"], _fmt_params(p["build"]), _fmt_params(p["search"]), f"{p['recall']:.3f}"]
        for m in modes:
            row += [_qps(p["modes"], m), _qps(r["modes"], m) if r else "-"]
        p50 = p["modes"].get("single-1t", {}).get("p50_us")
        rp50 = r["modes"].get("single-1t", {}).get("p50_us") if r else None
        row.append(f"{p50:.0f} ({rp50:.0f})" if p50 and rp50 else (f"{p50:.0f}" if p50 else "-"))
        row.append(f"{p['build_s']:.1f} ({r['build_s']:.1f})" if r else f"{p['build_s']:.1f}")
        row += [_mib(p["index_bytes"]), _mib(p["peak_rss_bytes"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def overhead_table(result: dict[str, Any]) -> str:
    """Project/raw QPS ratio per backend and mode: median and range over the search settings."""
    rows: dict[tuple[str, str], list[float]] = {}
    for o in result["overhead"]:
        rows.setdefault((o["backend"], o["mode"]), []).append(o["ratio"])
    modes = result["settings"]["modes"]
    backends = list(dict.fromkeys(b for b, _ in rows))
    lines = ["| backend | " + " | ".join(f"{m} project/raw (min-max)" for m in modes) + " |",
             "|" + "---|" * (len(modes) + 1)]
    for b in backends:
        cells = []
        for m in modes:
            v = sorted(rows.get((b, m), []))
            cells.append(f"{v[len(v) // 2]:.2f} ({v[0]:.2f}-{v[-1]:.2f})" if v else "-")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def serve_table(result: dict[str, Any]) -> str:
    """One row per target and concurrency: QPS, latency percentiles, errors (and engine/floor ratios)."""
    ratio = {r["concurrency"]: r for r in result.get("floor_ratio", [])}
    lines = ["| target | concurrency | QPS | p50 ms | p95 ms | p99 ms | errors | QPS / floor | p50 / floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lat = r["latency_ms"]
        fr = ratio.get(r["concurrency"]) if r["target"] == "engine" else None
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['qps']:,.0f} | {lat['p50']} | {lat['p95']} | {lat['p99']} | "
            f"{r['errors']} | {fr['qps_ratio'] if fr else '-'} | {fr['p50_ratio'] if fr else '-'} |"
        )
    return "\n".join(lines) + "\n"


def swap_table(result: dict[str, Any]) -> str:
    """Per concurrency: swaps done, failed requests, and latency while building, while swapping, and steady."""
    lines = ["| concurrency | swaps | failed requests | window | requests | QPS | p50 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        sw = r.get("swap")
        if not sw:
            continue
        done = sum(1 for s in sw["swaps"] if s["generation"])
        for window in ("steady", "during_build", "during_swap"):
            w = sw.get(window)
            if not w:
                continue
            lat = w["latency_ms"]
            lines.append(f"| {r['concurrency']} | {done} | {sw['failed_requests']} | {window.replace('_', ' ')} | "
                         f"{w['requests']} | {w['qps']:,.0f} | {lat['p50']} | {lat['p99']} | {lat['max']} |")
    return "\n".join(lines) + "\n"


def markdown(result: dict[str, Any]) -> str:
    """The tables that fit a result file's kind."""
    kind = result.get("kind")
    if kind == "ann":
        return ann_table(result) + "\n" + overhead_table(result)
    if kind in ("serve", "echo-floor"):
        out = serve_table(result)
        if any("swap" in r for r in result["runs"]):
            out += "\n" + swap_table(result)
        return out
    raise ValueError(f"no table for result kind {kind!r}")
