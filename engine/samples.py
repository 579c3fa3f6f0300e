"""Sample Search calls (several languages, every index kind) and their printing, for demos and smoke checks."""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from engine.client import EngineClient

# Texts follow the shipped data: XQuAD paragraphs (pins, 12 languages), ESCI/Home Depot products (en, es),
# SciFact abstracts (docs), the catalog's queries, and whatever legacy space the generation has.
DEFAULT_SAMPLES: tuple[dict[str, Any], ...] = (
    {"text": "Which team won Super Bowl 50?", "index": "pins", "k": 3},
    {"text": "Wer gewann den Super Bowl 50?", "index": "pins", "k": 3, "languages": ["de"]},
    {"text": "¿Qué es la selva amazónica?", "index": "pins", "k": 3},
    {"text": "Где родился Никола Тесла?", "index": "pins", "k": 3},
    {"text": "特斯拉在哪里出生？", "index": "pins", "k": 3},
    {"text": "cordless drill with battery", "index": "products", "k": 3},
    {"text": "zapatillas de running para mujer", "index": "products", "k": 3},
    {"text": "vitamin D supplements and bone fractures", "index": "docs", "k": 3},
    {"text": "nikola tesla", "index": "queries", "k": 3},
    {"text": "garden hose", "index": "legacy-*", "k": 3},
)


@dataclass
class SampleResult:
    sample: dict[str, Any]
    index: str
    hits: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    client_ms: float = 0.0
    error: str = ""


def load_samples(path: str | Path) -> list[dict[str, Any]]:
    """Samples from a JSON list or JSONL file of {text|vector, index, k, kinds?, languages?}."""
    text = Path(path).read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
    else:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(data, list) or not all(isinstance(d, dict) and "index" in d for d in data):
        raise ValueError(f"{path}: expected a list of objects with at least 'index'")
    return data


def _resolve(index: str, available: Sequence[str] | None) -> str | None:
    if not any(c in index for c in "*?["):
        return index
    matches = sorted(fnmatch.filter(available or (), index))
    return matches[0] if matches else None


def run_samples(
    client: EngineClient,
    samples: Iterable[dict[str, Any]] = DEFAULT_SAMPLES,
    indices: Sequence[str] | None = None,
    include_fields: bool = True,
) -> list[SampleResult]:
    """Send each sample as one Search call; failures are recorded per sample, not raised.

    Args:
        client: a connected client.
        samples: dicts with `text` or `vector`, `index` (a glob like "legacy-*" picks the first match among
            `indices`), and optional `k`, `kinds`, `languages`.
        indices: index names the server has (for globs and to skip samples of absent indices); None sends all.
        include_fields: ask for display fields (titles) with the hits.
    """
    out: list[SampleResult] = []
    for sample in samples:
        index = _resolve(str(sample["index"]), indices)
        res = SampleResult(sample=dict(sample), index=index or str(sample["index"]))
        out.append(res)
        if index is None or (indices is not None and index not in indices):
            res.error = "skipped: the served generation has no such index"
            continue
        t0 = time.perf_counter()
        try:
            resp = client.search(
                index=index,
                k=int(sample.get("k", 5)),
                text=sample.get("text"),
                vector=sample.get("vector"),
                kinds=sample.get("kinds", ()),
                languages=sample.get("languages", ()),
                include_fields=include_fields,
            )
        except grpc.RpcError as err:
            res.error = f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
            continue
        res.client_ms = (time.perf_counter() - t0) * 1000.0
        res.generation = int(resp.generation)
        t = resp.timings
        res.timings = {
            "embed_ms": t.embed_ms, "search_ms": t.search_ms, "hydrate_ms": t.hydrate_ms,
            "total_ms": t.total_ms, "cache_hit": float(t.cache_hit), "batch_size": float(t.batch_size),
        }
        res.hits = [{"id": h.id, "score": h.score, "kind": h.kind, "fields": dict(h.fields)} for h in resp.hits]
    return out


def _title(fields: dict[str, str], width: int = 70) -> str:
    text = fields.get("title") or fields.get("text") or fields.get("description") or ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_results(results: Iterable[SampleResult]) -> str:
    """Human-readable block per sample: query, timings, then one line per hit."""
    lines: list[str] = []
    for r in results:
        query = r.sample.get("text") or f"<vector of {len(r.sample.get('vector') or [])}>"
        lines.append(f"{r.index:>12}  {query!r}")
        if r.error:
            lines.append(f"{'':>14}{r.error}")
            continue
        t = r.timings
        lines.append(
            f"{'':>14}generation {r.generation}  client {r.client_ms:.1f} ms  server {t['total_ms']:.1f} ms "
            f"(embed {t['embed_ms']:.1f}, search {t['search_ms']:.2f}, catalog {t['hydrate_ms']:.2f})"
            f"{'  cache hit' if t['cache_hit'] else ''}"
        )
        for i, h in enumerate(r.hits, 1):
            lang = h["fields"].get("lang", "")
            lines.append(f"{'':>14}{i}. {h['score']:+.3f}  {h['id']}  [{h['kind']}{' ' + lang if lang else ''}]  "
                         f"{_title(h['fields'])}")
    return "\n".join(lines)
