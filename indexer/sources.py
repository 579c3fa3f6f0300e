"""Where an index's vectors come from: vector files a user brings, or the catalog (embedded or legacy).

Index names: `pins`, `products`, `docs` (entities of kind pin/product/doc embedded with the checkpoint's
`embed_entities`; any other kind K gives an index `Ks`), `queries` (catalog queries embedded with
`embed_related`, in space "model"), `legacy-<name>` (the catalog's stored vectors of legacy space <name>,
never re-embedded), and any other name for vectors read from a file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from catalog import Catalog
from indexer.backends.base import as_vectors
from indexer.errors import DimensionMismatch, InvalidParameter

log = logging.getLogger(__name__)

KIND_INDEX = {"pin": "pins", "product": "products", "doc": "docs"}  # entity kind -> index name
QUERIES_INDEX = "queries"
LEGACY_PREFIX = "legacy-"
VECTORS_INDEX = "vectors"  # default name of an index built from a vectors file
EMBED_CHUNK = 2048  # rows handed to the model per call (the model batches inside); sets the progress step
GATE_QUERY_SEED = 99  # seed of the sample of catalog queries used by the build gate


class Embedder(Protocol):
    """The part of `encoders.OmniSearchSage` the indexer uses."""

    @property
    def checkpoint_id(self) -> str: ...

    @property
    def spaces(self) -> dict[str, int]: ...

    def embed_queries(self, texts: list[str], space: str = "model", batch_size: int = 64) -> Any: ...

    def embed_entities(self, rows: list[dict[str, Any]], batch_size: int = 256) -> Any: ...

    def embed_related(self, texts: list[str], batch_size: int = 64) -> Any: ...


@dataclass(frozen=True)
class IndexPlan:
    """One index to build: its name, the space its vectors live in and the entity kind (if any)."""

    name: str
    space: str  # "model", "legacy-<name>" or "vectors"
    entity_kind: str | None


@dataclass(frozen=True)
class IndexSource:
    """Vectors of one index, ready to build, and the queries the gate should use."""

    plan: IndexPlan
    ids: list[str]
    vectors: NDArray[np.float32]  # (n, d)
    metric: str
    gate_queries: NDArray[np.float32] | None = None  # (nq, d) real query embeddings, if any


def index_for_kind(kind: str) -> str:
    return KIND_INDEX.get(kind, f"{kind}s")


def kind_for_index(name: str, kinds: Sequence[str]) -> str | None:
    for kind in kinds:
        if index_for_kind(kind) == name:
            return kind
    return None


# --------------------------------------------------------------------- files
def read_vectors(path: str | os.PathLike[str]) -> tuple[NDArray[np.float32], list[str] | None]:
    """Vectors from .npy, .fvecs or .parquet; also the ids when a parquet file has an `id` column.

    Parquet: the column `vector` (a list or fixed-size list of floats), else the only list column, else every
    numeric column in order (one dimension each).
    """
    p = Path(path)
    if not p.exists():
        raise InvalidParameter(f"vectors file {p} does not exist")
    suffix = p.suffix.lower()
    ids: list[str] | None = None
    if suffix == ".npy":
        x = np.load(p, mmap_mode="r", allow_pickle=False)
    elif suffix == ".fvecs":
        x = _read_fvecs(p)
    elif suffix in (".parquet", ".pq"):
        x, ids = _read_parquet_vectors(p)
    else:
        raise InvalidParameter(f"{p}: vectors must be .npy, .fvecs or .parquet")
    if x.ndim != 2:
        raise DimensionMismatch(f"{p}: expected a 2-D array of vectors, got shape {x.shape}")
    return as_vectors(x, int(x.shape[1]), str(p)), ids


def _read_fvecs(p: Path) -> NDArray[np.float32]:
    raw = np.fromfile(p, dtype="<i4")
    if raw.size == 0:
        return np.empty((0, 0), np.float32)
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1):
        raise DimensionMismatch(f"{p}: not an .fvecs file (first dim {d}, {raw.size} words)")
    rows = raw.reshape(-1, d + 1)  # (n, 1 + d): dim header then d floats
    if (rows[:, 0] != d).any():
        raise DimensionMismatch(f"{p}: rows of different dimensions")
    return np.ascontiguousarray(rows[:, 1:].view("<f4"), dtype=np.float32)


def _read_parquet_vectors(p: Path) -> tuple[NDArray[np.float32], list[str] | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    ids = [str(v) for v in table.column("id").to_pylist()] if "id" in table.column_names else None
    list_cols = [f.name for f in table.schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
                 or pa.types.is_large_list(f.type)]
    if "vector" in table.column_names or len(list_cols) == 1:
        col = table.column("vector" if "vector" in table.column_names else list_cols[0]).combine_chunks()
        n = len(col)
        values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        if n and values.size % n:
            raise DimensionMismatch(f"{p}: vectors of different lengths")
        return values.reshape(n, values.size // n if n else 0), ids
    numeric = [f.name for f in table.schema if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)]
    numeric = [c for c in numeric if c != "id"]
    if not numeric:
        raise InvalidParameter(f"{p}: no `vector` column, list column or numeric columns")
    return np.column_stack([table.column(c).to_numpy().astype(np.float32) for c in numeric]), ids


def read_ids(path: str | os.PathLike[str]) -> list[str]:
    """Ids from a text file (one per line), a JSON list, or a parquet file's `id` column."""
    p = Path(path)
    if not p.exists():
        raise InvalidParameter(f"ids file {p} does not exist")
    if p.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(p, columns=["id"])
        return [str(v) for v in table.column("id").to_pylist()]
    if p.suffix.lower() == ".json":
        return [str(v) for v in json.loads(p.read_text())]
    lines = p.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def auto_metric(x: NDArray[np.float32]) -> str:
    """"ip" when the vectors are unit-norm (a cosine space), else "l2"."""
    if len(x) == 0:
        return "ip"
    norms = np.linalg.norm(x[: min(len(x), 10_000)], axis=1)
    return "ip" if np.allclose(norms, 1.0, atol=1e-3) else "l2"


def file_source(
    name: str, vectors: str | os.PathLike[str], ids: str | os.PathLike[str] | None, metric: str | None
) -> IndexSource:
    """An index from a user's vectors file (and ids file; row numbers when neither gives ids)."""
    x, file_ids = read_vectors(vectors)
    if ids is not None:
        id_list = read_ids(ids)
    elif file_ids is not None:
        id_list = file_ids
    else:
        log.warning("no ids given for %s: using row numbers as ids", vectors)
        id_list = [str(i) for i in range(len(x))]
    if len(id_list) != len(x):
        raise DimensionMismatch(f"{len(id_list)} ids for {len(x)} vectors ({ids or vectors})")
    chosen = metric or auto_metric(x)
    log.info("index %s: %d x %d vectors from %s, metric %s", name, len(x), x.shape[1], vectors, chosen)
    return IndexSource(IndexPlan(name, "vectors", None), id_list, x, chosen)


# --------------------------------------------------------------------- catalog
def plan_catalog_indices(cat: Catalog, requested: Sequence[str] | None, with_model: bool) -> list[IndexPlan]:
    """The indices to build from the catalog: the requested names, or everything the catalog supports."""
    kinds = cat.entity_kinds()
    legacy = cat.legacy_spaces()
    has_queries = cat.db.execute("select 1 from queries limit 1").fetchone() is not None
    if requested is None:
        names: list[str] = []
        if with_model:
            names += [index_for_kind(k) for k in kinds]
            names += [QUERIES_INDEX] if has_queries else []
        names += [f"{LEGACY_PREFIX}{s}" for s in sorted(legacy)]
        if not names:
            raise InvalidParameter(
                "nothing to build: the catalog has no legacy vectors; give --checkpoint DIR to embed "
                "entities and queries, or --vectors FILE"
            )
        requested = names
    plans: list[IndexPlan] = []
    for name in requested:
        if name.startswith(LEGACY_PREFIX):
            space = name[len(LEGACY_PREFIX):]
            if space not in legacy:
                raise InvalidParameter(f"index {name!r}: no legacy space {space!r} in the catalog "
                                       f"(known: {sorted(legacy)})")
            plans.append(IndexPlan(name, name, None))
            continue
        kind = kind_for_index(name, kinds)
        if name != QUERIES_INDEX and kind is None:
            known = [index_for_kind(k) for k in kinds] + [QUERIES_INDEX] + [f"{LEGACY_PREFIX}{s}" for s in legacy]
            raise InvalidParameter(f"unknown index {name!r}; the catalog supports {sorted(known)} "
                                   "(other names need --vectors FILE)")
        if not with_model:
            raise InvalidParameter(f"index {name!r} is embedded by the model: give --checkpoint DIR")
        if name == QUERIES_INDEX and not has_queries:
            raise InvalidParameter("index 'queries': the catalog has no queries")
        plans.append(IndexPlan(name, "model", kind))
    return plans


def _embed_in_chunks(
    fn: Callable[[list[Any]], Any], items: list[Any], desc: str, progress: bool
) -> NDArray[np.float32]:
    out: list[NDArray[np.float32]] = []
    with tqdm(total=len(items), desc=desc, unit="row", disable=not progress, leave=False) as bar:
        for start in range(0, len(items), EMBED_CHUNK):
            chunk = items[start : start + EMBED_CHUNK]
            out.append(np.asarray(fn(chunk), dtype=np.float32))
            bar.update(len(chunk))
    if not out:
        return np.empty((0, 0), np.float32)
    return np.ascontiguousarray(np.concatenate(out, axis=0))  # (n, d)


def _gate_query_texts(cat: Catalog, kind: str | None, limit: int) -> list[str]:
    """A seeded sample of catalog query texts, preferring queries engaged with entities of `kind`."""
    engaged: set[str] = set()
    if kind is not None:
        engaged = {r["query_id"] for r in cat.engagements(target_type="entity", entity_kind=kind)}
    rows = cat.get_queries(sorted(engaged)).values() if engaged else list(cat.queries())
    texts = sorted({r["text"] for r in rows if r.get("text")})
    if len(texts) > limit:
        rng = np.random.default_rng(GATE_QUERY_SEED)
        texts = [texts[i] for i in sorted(rng.choice(len(texts), size=limit, replace=False))]
    return texts


def catalog_source(
    cat: Catalog,
    plan: IndexPlan,
    model: Embedder | None,
    gate_queries: int = 200,
    progress: bool = True,
) -> IndexSource:
    """Vectors of one planned index: embedded with `model`, or the stored legacy vectors."""
    if plan.space.startswith(LEGACY_PREFIX):
        ids, x = cat.legacy_vectors(plan.space[len(LEGACY_PREFIX):])
        xq = None
        if model is not None and plan.space in model.spaces:
            texts = _gate_query_texts(cat, None, gate_queries)
            xq = np.asarray(model.embed_queries(texts, space=plan.space), dtype=np.float32) if texts else None
        return IndexSource(plan, ids, as_vectors(x, x.shape[1], plan.name), "ip", xq)
    if model is None:
        raise InvalidParameter(f"index {plan.name!r} is embedded by the model: give --checkpoint DIR")
    if plan.name == QUERIES_INDEX:
        rows = list(cat.queries())
        ids = [r["id"] for r in rows]
        texts = [r["text"] or "" for r in rows]
        x = _embed_in_chunks(model.embed_related, texts, f"embed {plan.name}", progress)
    else:
        rows = list(cat.entities(plan.entity_kind))
        ids = [r["id"] for r in rows]
        x = _embed_in_chunks(model.embed_entities, rows, f"embed {plan.name}", progress)
    texts = _gate_query_texts(cat, plan.entity_kind, gate_queries)
    xq = np.asarray(model.embed_queries(texts, space="model"), dtype=np.float32) if texts else None
    dim = int(model.spaces.get("model", x.shape[1] if x.size else 0))
    return IndexSource(plan, ids, as_vectors(x.reshape(len(ids), dim), dim, plan.name), "ip", xq)
