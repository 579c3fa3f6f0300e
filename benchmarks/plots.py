"""PNG plots of the results (matplotlib, Agg backend): ANN Pareto fronts and latency against concurrency."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

MODE_TITLES = {
    "single-1t": "one query per call, 1 thread (ann-benchmarks' setting)",
    "single-2t": "one query per call, 2 client threads",
    "batch-1t": "all queries in one call, 1 thread",
    "batch-2t": "all queries in one call, 2 threads",
}


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (recall, qps) points no other point beats on both; sorted by recall."""
    front: list[tuple[float, float]] = []
    best_qps = -1.0
    for r, q in sorted(points, key=lambda p: (-p[0], -p[1])):
        if q > best_qps:
            front.append((r, q))
            best_qps = q
    return sorted(front)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def ann_plot(result: dict[str, Any], path: Path) -> Path:
    """Recall@k against QPS (log scale) per backend, project backends solid, raw libraries dashed.

    One panel per timing mode among single-1t and batch-1t (those present in `result`).
    """
    ds = result["dataset"]
    k = result["k"]
    points = result["points"]
    present = {m for p in points for m in p["modes"]}
    modes = [m for m in ("single-1t", "batch-1t") if m in present] or sorted(present)[:2]
    backends = list(dict.fromkeys(p["backend"] for p in points))
    colors = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    fig, axes = plt.subplots(1, len(modes), figsize=(7.2 * len(modes), 5.6), squeeze=False)
    recalls = [p["recall"] for p in points]
    lo = max(0.0, min(recalls) - 0.03) if recalls else 0.0
    for ax, mode in zip(axes[0], modes, strict=True):
        for b in backends:
            for impl, style, fill in (("project", "-", True), ("raw", "--", False)):
                pts = [(p["recall"], p["modes"][mode]["qps"]) for p in points
                       if p["backend"] == b and p["impl"] == impl and mode in p["modes"]]
                if not pts:
                    continue
                front = pareto(pts)
                label = f"{b} ({'project backend' if impl == 'project' else 'raw library'})"
                ax.scatter([r for r, _ in pts], [q for _, q in pts], s=12, alpha=0.35, color=colors[b],
                           facecolors=colors[b] if fill else "none")
                ax.plot([r for r, _ in front], [q for _, q in front], style, marker="o", ms=5,
                        color=colors[b], mfc=colors[b] if fill else "white", label=label, lw=1.6)
        ax.set_yscale("log")
        ax.set_xlim(lo, 1.005)
        ax.set_xlabel(f"Recall@{k} (true {k} nearest found; distance tolerance {result['epsilon']:g})")
        ax.set_ylabel("Throughput (queries per second, log scale)")
        ax.set_title(MODE_TITLES.get(mode, mode), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8.5,
               frameon=False)
    machine = result.get("machine", {})
    fig.suptitle(
        f"ANN recall vs throughput on {ds['name']} ({ds['n']:,} x {ds['dim']}, {ds['nq']:,} queries, "
        f"{'angular / inner product' if ds['metric'] == 'ip' else 'Euclidean'}), upper right is better\n"
        f"{result['date'][:10]}, {machine.get('logical_cores', '?')} cores {machine.get('cpu', '')}; "
        f"best of {result['settings']['runs']} runs; {machine.get('note', '')}",
        fontsize=11,
    )
    rows = (len(labels) + 3) // 4
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, 1))
    return _save(fig, path)


def latency_plot(result: dict[str, Any], path: Path) -> Path:
    """p50/p95/p99 latency (ms, log scale) and QPS against concurrency, per target (engine, echo floor)."""
    runs = result["runs"]
    targets = list(dict.fromkeys(r["target"] for r in runs))
    fig, (ax_lat, ax_qps) = plt.subplots(1, 2, figsize=(13, 5.2))
    cmap = plt.get_cmap("tab10")
    for i, target in enumerate(targets):
        rs = sorted((r for r in runs if r["target"] == target), key=lambda r: r["concurrency"])
        conc = [r["concurrency"] for r in rs]
        for pct, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax_lat.plot(conc, [r["latency_ms"][pct] for r in rs], style, marker="o", color=cmap(i),
                        label=f"{target} {pct}")
        ax_qps.plot(conc, [r["qps"] for r in rs], "-", marker="o", color=cmap(i), label=target)
    levels = sorted({r["concurrency"] for r in runs})
    for ax in (ax_lat, ax_qps):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("Concurrency (requests in flight, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("Latency per request (ms, log scale)")
    ax_lat.set_title("Latency percentiles", fontsize=10)
    ax_qps.set_ylabel("Throughput (requests per second)")
    ax_qps.set_title("Throughput", fontsize=10)
    ax_lat.legend(fontsize=8)
    ax_qps.legend(fontsize=8)
    machine = result["machine"]
    if machine.get("other_load_cores_incl_server") is not None:
        shared = f"; other processes (server included) used {machine['other_load_cores_incl_server']:.2f} cores"
    elif machine.get("other_load_cores") is not None:
        shared = f"; other processes used {machine['other_load_cores']:.2f} cores"
    else:
        shared = ""
    fig.suptitle(f"{result['title']}\n{result['date'][:10]}, {result['machine'].get('logical_cores', '?')} cores "
                 f"{result['machine'].get('cpu', '')}; {result['duration_s']:g} s per setting{shared}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


def swap_timeline_plot(result: dict[str, Any], path: Path) -> Path | None:
    """Latency over time during a swap run (one panel per concurrency): p50/p99/max per 0.25 s, builds shaded,
    publish and first-served moments marked, failed requests as red crosses. None when there were no swaps."""
    runs = [r for r in result["runs"] if r.get("swap")]
    if not runs:
        return None
    fig, axes = plt.subplots(len(runs), 1, figsize=(12, 3.6 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        sw = run["swap"]
        tl = sw["timeline"]
        t = [row[0] for row in tl]
        for col, label, style in ((2, "p50", "-"), (3, "p99", "--"), (4, "max", ":")):
            ax.plot(t, [row[col] for row in tl], style, label=f"{label} per 0.25 s", lw=1.2)
        bad = [(row[0], row[5]) for row in tl if row[5]]
        if bad:
            ax.scatter([b[0] for b in bad], [1.0] * len(bad), marker="x", color="red", label="failed requests")
        for i, ev in enumerate(sw["events"]):
            end = ev["published"] if ev["published"] is not None else ev["build_start"]
            first = i == 0  # one legend entry per kind of mark
            ax.axvspan(ev["build_start"], end, color="grey", alpha=0.2,
                       label="building a generation" if first else None)
            if ev["published"] is not None:
                ax.axvline(ev["published"], color="black", lw=0.8, label="published" if first else None)
            if ev["served"] is not None:
                ax.axvline(ev["served"], color="green", lw=0.8, ls="--",
                           label="first answer from it" if first else None)
        ax.set_yscale("log")
        ax.set_xlabel("Time since the first measured request (s)")
        ax.set_ylabel("Latency (ms, log scale)")
        ax.set_title(f"concurrency {run['concurrency']}: {len([e for e in sw['swaps'] if e['generation']])} swaps, "
                     f"{sw['failed_requests']} failed requests", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle(f"{result['title']}: latency over time\n{result['date'][:10]}, "
                 f"{result['machine'].get('logical_cores', '?')} cores {result['machine'].get('cpu', '')}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def paired_plot(data: dict[str, Any], path: Path) -> Path | None:
    """Per-language differences, model minus each baseline, with their paired bootstrap 95% intervals
    (`benchmarks quality` output). One panel per baseline and multilingual task; None when there is none."""
    paired = data["results"].get("model", {}).get("paired", {})
    panels = [(base, task, entry["languages"]) for base, table in paired.items()
              for task, entry in table.items() if entry.get("languages")]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.8 * len(panels)), squeeze=False)
    for ax, (base, task, langs) in zip(axes[:, 0], panels, strict=True):
        names = sorted(langs)
        metrics = sorted({m for cols in langs.values() for m in cols})
        width = 0.7 / len(metrics)
        for j, metric in enumerate(metrics):
            xs, ys, below, above = [], [], [], []
            for i, lang in enumerate(names):
                p = langs[lang].get(metric)
                if p is None:
                    continue
                xs.append(i + (j - (len(metrics) - 1) / 2) * width)
                ys.append(p["diff"])
                below.append(p["diff"] - p["lo"])
                above.append(p["hi"] - p["diff"])
            ax.errorbar(xs, ys, yerr=[below, above], fmt="o", capsize=3, label=metric)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(f"model minus {base}")
        queries = max(p["queries"] for cols in langs.values() for p in cols.values())
        ax.set_title(f"{task}: model minus {base} per language (up to {queries} queries each), "
                     "paired bootstrap 95% interval", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{data.get('checkpoint') or 'latest checkpoint'}, {str(data.get('date', ''))[:10]}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, path)
