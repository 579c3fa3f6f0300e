"""Split an index into shards by a stable hash of the id and build the shards in parallel.

The shard of an id is blake2b(utf-8 id) mod K: stable across processes, machines and Python versions (unlike
`hash()`), so an entity stays in the same shard from one build to the next. Trainable backends (IVF, PQ) are
trained once on a sample of all vectors; every shard starts from a copy of that trained state, so the
training is paid once and all shards share one coarse quantizer and one set of codebooks.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from indexer.backends import AnnBackend, backend_class, get_backend
from indexer.errors import InvalidParameter
from indexer.manifest import ShardRecord
from indexer.storage import write_shard

log = logging.getLogger(__name__)

TRAIN_SEED = 1234  # the sample used to train IVF/PQ is drawn with this seed, so rebuilds are repeatable
# Most vectors one shard holds when the shard count is left to the build. A query searches every shard (one
# after the other in the engine's request thread), and an HNSW search costs about the same on a graph of n/2
# as on one of n, so below this size extra shards only multiply the search CPU (2 shards of 50k cost ~2x one
# of 100k, BENCHMARKS.md "Server"). Above it, shards bound each graph's memory (~1.2 GB at 256-d), load and
# checksum time, and let builds and serving spread over processes or machines.
DEFAULT_SHARD_VECTORS = 1_000_000


def shard_of(entity_id: str, shards: int) -> int:
    """The shard of one id among `shards`."""
    digest = hashlib.blake2b(entity_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def assign_shards(ids: Sequence[str], shards: int) -> NDArray[np.int64]:
    """Shard number of every id, (n,)."""
    if shards < 1:
        raise InvalidParameter(f"shards must be at least 1, got {shards}")
    return np.fromiter((shard_of(i, shards) for i in ids), dtype=np.int64, count=len(ids))


def default_shards(n: int, shard_vectors: int = DEFAULT_SHARD_VECTORS) -> int:
    """Shards for an index of `n` vectors when none are asked for: one per `shard_vectors`, at least one.

    Raises:
        InvalidParameter: `shard_vectors` below 1.
    """
    if shard_vectors < 1:
        raise InvalidParameter(f"shard_vectors must be at least 1, got {shard_vectors}")
    return max(1, -(-n // shard_vectors))


def thread_plan(threads: int, shards: int) -> tuple[int, int]:
    """(shards built at once, library threads per shard) within a budget of `threads` threads."""
    threads = max(1, threads)
    workers = max(1, min(threads, shards))
    return workers, max(1, threads // workers)


def training_sample_size(n: int, params: dict[str, Any]) -> int:
    """Enough points for k-means on nlist cells (faiss itself never uses more than 256 per cell)."""
    nlist = params.get("nlist")
    per_cell = 256 * int(nlist) if isinstance(nlist, int) else 0
    return min(n, max(100_000, per_cell))


@dataclass(frozen=True)
class BuiltShards:
    """The outcome of building one index's shards."""

    backends: list[AnnBackend]  # in shard order, still in memory (the build gate searches them)
    ids: list[list[str]]  # entity ids per shard, position = label
    records: list[ShardRecord]
    params: dict[str, Any]  # resolved parameters (auto values fixed)
    train_seconds: float
    build_seconds: float


def build_shards(
    vectors: NDArray[np.float32],
    ids: Sequence[str],
    backend: str,
    metric: str,
    params: dict[str, Any],
    shards: int,
    out_dir: Path,
    threads: int = 2,
    info: dict[str, Any] | None = None,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> BuiltShards:
    """Build `shards` shard folders `out_dir/<s>/` from vectors (n, d) and their ids.

    Args:
        vectors: (n, d) float32, already validated.
        ids: n distinct entity ids.
        backend: registry name.
        metric: "ip" or "l2".
        params: backend parameters ("auto" values are resolved for n).
        shards: number of shards K.
        out_dir: the index folder inside the generation folder.
        threads: total thread budget; min(threads, K) shards build at once with threads // that each.
        info: extra fields for every shard's metadata.json.
        progress: show a progress bar over shards.
        on_shard: called with the shard number after each shard is written (used by tests).
    """
    n, d = vectors.shape
    if len(ids) != n:
        raise InvalidParameter(f"{len(ids)} ids for {n} vectors")
    if len(set(ids)) != n:
        raise InvalidParameter("ids are not unique")
    resolved = backend_class(backend).resolve_params(n, d, params)
    workers, per_shard = thread_plan(threads, shards)
    t0 = time.perf_counter()
    template = get_backend(backend, d, metric, threads=threads, **resolved)
    needs_training = getattr(template, "needs_training", lambda: True)()
    sample = training_sample_size(n, resolved)
    if needs_training and sample < n:
        rows = np.sort(np.random.default_rng(TRAIN_SEED).choice(n, size=sample, replace=False))
        template.train(vectors[rows])  # (sample, d)
    elif needs_training and n:
        template.train(vectors)
    train_seconds = time.perf_counter() - t0
    assignment = assign_shards(ids, shards)
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(s: int) -> tuple[AnnBackend, list[str], ShardRecord]:
        rows = np.flatnonzero(assignment == s)
        part = template.spawn()
        part.threads = per_shard
        part.build(vectors[rows])  # (n_s, d); labels 0..n_s-1 index into the shard's ids
        shard_ids = [ids[i] for i in rows.tolist()]
        record = write_shard(part, shard_ids, out_dir / str(s), {**(info or {}), "shard": s, "shards": shards})
        if on_shard is not None:
            on_shard(s)
        return part, shard_ids, record

    t1 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard") as pool:
        done = list(tqdm(pool.map(one, range(shards)), total=shards, desc=f"build {out_dir.name}",
                         unit="shard", disable=not progress, leave=False))
    build_seconds = time.perf_counter() - t1
    log.info("%s: %d vectors in %d shards, %.1fs training, %.1fs building (%d x %d threads)",
             out_dir.name, n, shards, train_seconds, build_seconds, workers, per_shard)
    return BuiltShards(
        backends=[b for b, _, _ in done],
        ids=[i for _, i, _ in done],
        records=[r for _, _, r in done],
        params=dict(template.params),
        train_seconds=train_seconds,
        build_seconds=build_seconds,
    )
