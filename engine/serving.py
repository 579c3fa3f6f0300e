"""One served generation: its manifest record, encoder, loaded shards and catalog reader, swapped as a unit.

A `Serving` is immutable once built. The engine holds exactly one reference to the current one and replaces
it with a single assignment, so a request sees either the old generation with the old encoder or the new one
with the new encoder, never a mix of query and item spaces.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from engine.batcher import QueryEncoder
from engine.config import EngineConfig
from engine.errors import GenerationLoadFailed
from engine.hydrate import Hydrator

if TYPE_CHECKING:
    from indexer.manifest import GenerationRecord
    from indexer.sharded import ShardedIndex

log = logging.getLogger(__name__)

MB = 1 << 20


@dataclass(eq=False)
class Serving:
    """A loaded generation. `refs` counts requests using it; the manager closes it once retired and idle."""

    record: GenerationRecord
    model: QueryEncoder | None  # None: built from user vectors, only vector queries
    indices: dict[str, ShardedIndex]
    hydrator: Hydrator | None  # None when the catalog is absent or hydration is off
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    # The encoder's spaces (name -> dim), read once: the encoder computes them on every access.
    spaces: dict[str, int] = field(init=False)
    refs: int = 0
    retired: bool = False
    closed: bool = False
    _close_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.spaces = dict(self.model.spaces) if self.model is not None else {}

    @property
    def generation(self) -> int:
        return int(self.record.id)

    @property
    def checkpoint_id(self) -> str:
        return self.model.checkpoint_id if self.model is not None else ""

    def close(self) -> None:
        """Free the shards and catalog connections (the encoder may live on in the next generation)."""
        with self._close_lock:
            if self.closed:
                return
            self.closed = True
        for idx in self.indices.values():
            try:
                idx.close()
            except Exception:  # closing must not fail a request thread
                log.exception("closing an index of generation %s", self.record.id)
        if self.hydrator is not None:
            self.hydrator.close()
        log.info("generation %s closed", self.record.id)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def estimate_bytes(record: GenerationRecord, reuse_model: bool) -> int:
    """Memory a generation will take: its shard files, plus the checkpoint's weights unless reused."""
    total = sum(int(s.bytes) for ix in record.indices.values() for s in ix.shards)
    if record.checkpoint and not reuse_model:
        # fp32 weights on disk are about their size in memory; activations and tokenizer are small next to it.
        total += _dir_bytes(Path(record.checkpoint))
    return total


def check_headroom(record: GenerationRecord, config: EngineConfig, reuse_model: bool) -> None:
    """Refuse to load when the new generation would not fit beside the one being served."""
    need = int(estimate_bytes(record, reuse_model) * config.memory_headroom) + config.memory_reserve_mb * MB
    avail = int(psutil.virtual_memory().available)
    if need > avail:
        raise GenerationLoadFailed(
            f"generation {record.id} needs about {need // MB} MB (x{config.memory_headroom} headroom + "
            f"{config.memory_reserve_mb} MB reserve) but only {avail // MB} MB are available"
        )


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (otherwise autocast emulates it and is slower than fp32)."""
    try:
        import torch

        cpu: Any = torch.cpu
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except (ImportError, AttributeError):  # older torch: be conservative
        return False


def load_model(
    record: GenerationRecord, reuse: QueryEncoder | None, bf16: bool | None = None
) -> QueryEncoder | None:
    """The generation's encoder: the served one when its checkpoint id matches, else loaded from disk."""
    if not record.checkpoint:
        return None
    if reuse is not None and record.checkpoint_id and reuse.checkpoint_id == record.checkpoint_id:
        return reuse
    import encoders  # lazy: torch and transformers are heavy, and vector-only deployments never need them

    model: QueryEncoder = encoders.load(record.checkpoint)
    if record.checkpoint_id and model.checkpoint_id != record.checkpoint_id:
        raise GenerationLoadFailed(
            f"checkpoint {record.checkpoint} now holds weights {model.checkpoint_id}, but generation "
            f"{record.id} was built with {record.checkpoint_id}; its query and item spaces would not match"
        )
    use_bf16 = native_bf16() if bf16 is None else bf16
    if hasattr(model, "bf16"):
        model.bf16 = use_bf16
    log.info("encoder %s loaded (bf16 %s)", model.checkpoint_id, "on" if use_bf16 else "off")
    return model


def check_spaces(record: GenerationRecord, model: QueryEncoder | None) -> None:
    """Every index the encoder can query must have the encoder's dimension in that space."""
    if model is None:
        return
    for name, ix in record.indices.items():
        dim = model.spaces.get(ix.space)
        if dim is not None and int(dim) != int(ix.dim):
            raise GenerationLoadFailed(
                f"index {name!r} has dim {ix.dim} but the encoder's space {ix.space!r} has dim {dim}"
            )


def load_serving(
    record: GenerationRecord,
    config: EngineConfig,
    reuse_model: QueryEncoder | None = None,
    executor: Executor | None = None,
) -> Serving:
    """Load a generation beside whatever is being served.

    Raises:
        GenerationLoadFailed: not enough memory, a missing or corrupt shard, or an encoder that does not match.
    """
    from indexer.sharded import ShardedIndex

    reuse = reuse_model is not None and bool(record.checkpoint_id) and (
        reuse_model.checkpoint_id == record.checkpoint_id
    )
    indices: dict[str, Any] = {}
    try:
        check_headroom(record, config, reuse)
        model = load_model(record, reuse_model, config.encoder_bf16)
        check_spaces(record, model)
        for name, ix in record.indices.items():
            indices[name] = ShardedIndex.load(ix, verify=config.verify_checksums, executor=executor)
        hydrator = None
        if config.hydrate and config.home.catalog_db.exists():
            hydrator = Hydrator(config.home.catalog_db)
    except Exception as err:
        for idx in indices.values():
            idx.close()
        if isinstance(err, GenerationLoadFailed):
            raise
        raise GenerationLoadFailed(f"generation {record.id}: {type(err).__name__}: {err}") from err
    return Serving(record=record, model=model, indices=indices, hydrator=hydrator)


def warm_vectors(serving: Serving, n: int, seed: int = 0) -> None:
    """Run `n` searches of random unit vectors on every index (touches pages, builds lazy state)."""
    if n <= 0:
        return
    rng = np.random.default_rng(seed)
    for idx in serving.indices.values():
        if idx.count == 0:
            continue
        xq = rng.standard_normal((n, idx.dim)).astype(np.float32)  # (n, dim)
        xq /= np.linalg.norm(xq, axis=1, keepdims=True)
        for i in range(n):
            idx.search(xq[i : i + 1], min(10, idx.count))
