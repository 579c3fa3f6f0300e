"""`rebuild`: embed or read vectors, build sharded indices into a new generation, gate on recall, publish.

A build writes only inside `generations/<N>/` (temp folders renamed into place) and changes the manifest in
three transactions: begin (building), finish (indices + shards rows, ready) and publish (active; the previous
active generation retires). Any exception marks the generation failed with its message; a kill -9 leaves it
building, and the next rebuild (or gc) marks it failed and removes its folder. The active generation is never
touched by a build, so it keeps serving whatever happens.

Carry-over: a rebuild of some indices (`indices=[...]` or a vectors file) copies the other indices of the active
generation into the new one by hard-linking their shard files (no extra disk, and each generation folder stays
complete on its own so gc can delete any of them independently). Model-space indices are carried only when the
new generation uses the same checkpoint (or none); a full catalog rebuild rebuilds every legacy index itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from catalog import Catalog, Home
from indexer.backends import backend_class
from indexer.errors import BuildGateFailed, InvalidParameter
from indexer.gate import perturbed_queries, recall_against_exact
from indexer.lifecycle import build_lock, cleanup_leftovers, generation_dir
from indexer.manifest import GenerationRecord, IndexRecord, Manifest
from indexer.memory import check_memory
from indexer.sharded import ShardedIndex
from indexer.sharding import DEFAULT_SHARD_VECTORS, build_shards, default_shards, training_sample_size
from indexer.sources import (
    LEGACY_PREFIX,
    VECTORS_INDEX,
    Embedder,
    IndexPlan,
    IndexSource,
    catalog_source,
    file_source,
    plan_catalog_indices,
)
from indexer.storage import library_versions, link_shard

log = logging.getLogger(__name__)

BUILD_OVERHEAD = 1.3  # peak memory of a build vs the estimate of the finished index (buffers, copies)


@dataclass(frozen=True)
class BuildConfig:
    """How to build a generation (the CLI's flags)."""

    backend: str = "hnswlib"  # ANN backend name from the registry; hnswlib is the fastest on CPU here
    params: dict[str, Any] = field(default_factory=dict)  # backend parameters; missing ones use its defaults
    shards: int | None = None  # shards per index; None: one per `shard_vectors` vectors (one below that)
    shard_vectors: int = DEFAULT_SHARD_VECTORS  # most vectors per shard when `shards` is None (see sharding.py)
    threads: int = 2  # thread budget for building (the machine has 2 cores)
    gate: float = 0.9  # minimum recall@10 against exact search to publish
    gate_queries: int = 200  # queries sampled for the gate
    publish: bool = True  # make the generation active when it passes (else it stays ready)
    metric: str | None = None  # vectors files only: "ip" or "l2"; None = ip if unit-norm else l2
    progress: bool = True  # tqdm progress bars on stderr


def rebuild(
    home: Home | str | os.PathLike[str],
    indices: Sequence[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    vectors: str | os.PathLike[str] | None = None,
    ids: str | os.PathLike[str] | None = None,
    backend: str = "hnswlib",
    params: dict[str, Any] | None = None,
    shards: int | None = None,
    publish: bool = True,
    gate: float = 0.9,
    *,
    shard_vectors: int = DEFAULT_SHARD_VECTORS,
    threads: int = 2,
    metric: str | None = None,
    gate_queries: int = 200,
    progress: bool = True,
    on_shard: Callable[[str, int], None] | None = None,
) -> GenerationRecord:
    """Build a new generation and (by default) publish it.

    Args:
        home: the deployment home (catalog.db, manifest.db, generations/).
        indices: names to build; default: every index the catalog supports (with a checkpoint: one per entity
            kind and `queries`; always: one per legacy space), or `vectors` for a vectors file.
        checkpoint: model checkpoint folder (or the name of one in <home>/checkpoints); entities and queries
            are embedded with `encoders.load(dir)`.
        vectors: a .npy/.fvecs/.parquet file of vectors to index instead of the catalog.
        ids: ids of those vectors (text, one per line, .json list or parquet `id` column).
        backend: ANN backend name (see `indexer.backends.REGISTRY`).
        params: backend parameters.
        shards: shards per index; None sizes each index: one shard per `shard_vectors` vectors, at least one.
        publish: make the new generation active if it passes the gate.
        gate: minimum recall@10 against exact search.
        shard_vectors: most vectors per shard when `shards` is None.
        threads: thread budget of the build.
        metric: metric of a vectors file ("ip"/"l2"; default by norm).
        gate_queries: how many queries the gate samples.
        progress: show progress bars.
        on_shard: called with (index name, shard) after each shard is written (for tests).

    Returns:
        The generation's record (state active, or ready with publish=False).

    Raises:
        BuildGateFailed: recall below `gate` (the generation is marked failed, nothing published).
        InsufficientMemory: the build would not fit in available memory (marked failed).
        ManifestError: another build holds the lock.
    """
    h = home if isinstance(home, Home) else Home.resolve(home)
    if checkpoint is not None and not Path(checkpoint).is_dir() and (h.checkpoints / checkpoint).is_dir():
        checkpoint = h.checkpoints / checkpoint  # a bare name means <home>/checkpoints/<name>
    cfg = BuildConfig(backend=backend, params=dict(params or {}), shards=shards, shard_vectors=shard_vectors,
                      threads=threads, gate=gate, gate_queries=gate_queries, publish=publish, metric=metric,
                      progress=progress)
    _check_config(cfg, vectors, ids, checkpoint, indices)
    h.ensure()
    h.generations.mkdir(parents=True, exist_ok=True)
    plans: list[IndexPlan] = []
    if vectors is None:
        with Catalog(h.catalog_db, read_only=True) as cat:
            plans = plan_catalog_indices(cat, indices, with_model=checkpoint is not None)
    with build_lock(h), Manifest(h.manifest_db) as manifest:
        cleanup_leftovers(h, manifest)
        ckpt = str(Path(checkpoint).resolve()) if checkpoint is not None else None
        gen_id = manifest.begin_generation(ckpt, None, library_versions())
        log.info("generation %d: building in %s", gen_id, generation_dir(h, gen_id))
        try:
            record = _build(h, manifest, gen_id, cfg, plans, indices, ckpt, vectors, ids, on_shard)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, BuildGateFailed) else f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                manifest.fail_generation(gen_id, message)
            raise
        if cfg.publish:
            record = manifest.publish(gen_id)
            log.info("generation %d published", gen_id)
        return record


def _check_config(
    cfg: BuildConfig,
    vectors: str | os.PathLike[str] | None,
    ids: str | os.PathLike[str] | None,
    checkpoint: str | os.PathLike[str] | None,
    indices: Sequence[str] | None,
) -> None:
    """Cheap checks before a generation is created, so a typo does not leave a failed generation behind."""
    backend_class(cfg.backend)(1, "ip", **cfg.params)  # unknown backends and parameter names raise here
    if (cfg.shards is not None and cfg.shards < 1) or cfg.threads < 1 or cfg.shard_vectors < 1:
        raise InvalidParameter(f"shards, shard_vectors and threads must be at least 1 (got {cfg.shards}, "
                               f"{cfg.shard_vectors}, {cfg.threads})")
    if not 0.0 <= cfg.gate <= 1.0:
        raise InvalidParameter(f"gate must be in [0, 1], got {cfg.gate}")
    if vectors is not None and checkpoint is not None:
        raise InvalidParameter("give either --checkpoint or --vectors, not both")
    if ids is not None and vectors is None:
        raise InvalidParameter("--ids needs --vectors")
    if vectors is not None:
        if not Path(vectors).exists():
            raise InvalidParameter(f"vectors file {vectors} does not exist")
        if indices is not None and len(indices) != 1:
            raise InvalidParameter("a vectors file builds one index: give at most one --index NAME")
    if checkpoint is not None and not Path(checkpoint).is_dir():
        raise InvalidParameter(f"checkpoint folder {checkpoint} does not exist")
    if cfg.metric is not None and cfg.metric not in ("ip", "l2"):
        raise InvalidParameter(f"metric must be ip or l2, got {cfg.metric!r}")


def _load_model(checkpoint: str) -> Embedder:
    """`encoders.load(checkpoint)` (imported here: only builds with a checkpoint need torch)."""
    try:
        import encoders
    except ImportError as exc:  # pragma: no cover - encoders ships with the package
        raise InvalidParameter(f"cannot import encoders to embed with {checkpoint}: {exc}") from exc
    load: Callable[[str], Embedder] | None = getattr(encoders, "load", None)
    if load is None:  # the package re-exports it from encoders.model
        from encoders.model import load as model_load

        return model_load(checkpoint)
    return load(checkpoint)


def _build(
    home: Home,
    manifest: Manifest,
    gen_id: int,
    cfg: BuildConfig,
    plans: list[IndexPlan],
    indices: Sequence[str] | None,
    checkpoint: str | None,
    vectors: str | os.PathLike[str] | None,
    ids: str | os.PathLike[str] | None,
    on_shard: Callable[[str, int], None] | None,
) -> GenerationRecord:
    gen_dir = generation_dir(home, gen_id)
    gen_dir.mkdir(parents=True, exist_ok=False)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    model = _load_model(checkpoint) if checkpoint is not None else None
    checkpoint_id = model.checkpoint_id if model is not None else None
    records: list[IndexRecord] = []
    if vectors is not None:
        name = indices[0] if indices else VECTORS_INDEX
        source = file_source(name, vectors, ids, cfg.metric)
        records.append(_build_index(source, gen_dir, cfg, timings, on_shard))
    else:
        with Catalog(home.catalog_db, read_only=True) as cat:
            for plan in plans:
                t0 = time.perf_counter()
                source = catalog_source(cat, plan, model, cfg.gate_queries, cfg.progress)
                timings[f"{plan.name}.load"] = round(time.perf_counter() - t0, 3)
                records.append(_build_index(source, gen_dir, cfg, timings, on_shard))
                del source
    full_rebuild = indices is None and vectors is None
    carried, carried_ckpt = _carry_over(manifest, gen_dir, {r.name for r in records}, checkpoint_id, full_rebuild)
    records += carried
    if checkpoint is None and carried_ckpt is not None:
        checkpoint, checkpoint_id = carried_ckpt
    timings["total"] = round(time.perf_counter() - t_start, 3)
    summary = ", ".join(f"{r.name} recall@10 {r.recall:.3f}" if r.recall is not None else r.name
                        for r in records)
    return manifest.finish_generation(gen_id, records, timings, message=summary, checkpoint=checkpoint,
                                      checkpoint_id=checkpoint_id)


def _build_index(
    source: IndexSource,
    gen_dir: Path,
    cfg: BuildConfig,
    timings: dict[str, float],
    on_shard: Callable[[str, int], None] | None,
) -> IndexRecord:
    plan = source.plan
    x = source.vectors
    n, d = x.shape
    cls = backend_class(cfg.backend)
    params = cls.resolve_params(n, d, cfg.params)
    # the finished shards, plus each shard's copy of its rows and the training sample (the vectors themselves
    # are already in memory)
    need = int(cls.estimate_bytes(n, d, params) * BUILD_OVERHEAD) + 4 * d * (n + training_sample_size(n, params))
    check_memory(need, f"building index {plan.name!r} ({n} x {d}, {cfg.backend})")
    shards = cfg.shards if cfg.shards is not None else default_shards(n, cfg.shard_vectors)
    built = build_shards(
        x, source.ids, cfg.backend, source.metric, params, shards, gen_dir / plan.name, threads=cfg.threads,
        info={"index": plan.name, "space": plan.space, "generation": int(gen_dir.name)},
        progress=cfg.progress, on_shard=(lambda s: on_shard(plan.name, s)) if on_shard else None,
    )
    record = IndexRecord(
        name=plan.name, space=plan.space, entity_kind=plan.entity_kind, dim=d, metric=source.metric,
        backend=cfg.backend, params=built.params, count=n, recall=None, shards=built.records,
        build_seconds=round(built.train_seconds + built.build_seconds, 3),
    )
    t0 = time.perf_counter()
    index = ShardedIndex(record, built.backends, built.ids)
    recall = _gate_recall(index, source, cfg)
    timings[f"{plan.name}.train"] = round(built.train_seconds, 3)
    timings[f"{plan.name}.build"] = round(built.build_seconds, 3)
    timings[f"{plan.name}.gate"] = round(time.perf_counter() - t0, 3)
    index.close()
    log.info("index %s: %d vectors, recall@10 %.4f (gate %.2f)", plan.name, n, recall, cfg.gate)
    if recall < cfg.gate:
        raise BuildGateFailed(
            f"index {plan.name!r}: recall@10 {recall:.3f} is below the gate {cfg.gate:.2f} "
            f"({cfg.backend} {_fmt_params(built.params)}); raise the search effort (ef, nprobe, k_factor) "
            f"or lower --gate; generation {gen_dir.name} was not published"
        )
    return replace(record, recall=round(recall, 4))


def _gate_recall(index: ShardedIndex, source: IndexSource, cfg: BuildConfig) -> float:
    xq = source.gate_queries
    if xq is None or len(xq) == 0 or xq.shape[1] != index.dim:
        if len(source.ids) == 0:
            return 1.0
        xq = perturbed_queries(source.vectors, cfg.gate_queries, source.metric)
    return recall_against_exact(index, source.vectors, source.ids, np.ascontiguousarray(xq, dtype=np.float32))


def _fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))


def _carry_over(
    manifest: Manifest,
    gen_dir: Path,
    built: set[str],
    checkpoint_id: str | None,
    full_rebuild: bool,
) -> tuple[list[IndexRecord], tuple[str | None, str | None] | None]:
    """Hard-link the active generation's other indices into this one (rules in the module docstring)."""
    active = manifest.active_generation()
    if active is None:
        return [], None
    out: list[IndexRecord] = []
    uses_model = False
    for name, rec in sorted(active.indices.items()):
        if name in built:
            continue
        if rec.space == "model" and checkpoint_id is not None and checkpoint_id != active.checkpoint_id:
            log.warning("not carrying %s over: built with checkpoint %s, this generation uses %s",
                        name, active.checkpoint_id, checkpoint_id)
            continue
        if rec.space.startswith(LEGACY_PREFIX) and full_rebuild:
            continue
        shards = [link_shard(s, gen_dir / name / str(s.shard)) for s in rec.shards]
        out.append(replace(rec, shards=shards, carried_from=rec.carried_from or active.id))
        uses_model = uses_model or rec.space == "model"
        log.info("index %s carried over from generation %d (hard links)", name, active.id)
    carried_ckpt = (active.checkpoint, active.checkpoint_id) if uses_model and checkpoint_id is None else None
    return out, carried_ckpt


__all__ = ["BuildConfig", "IndexPlan", "rebuild"]
