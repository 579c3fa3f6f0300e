"""Fitting the compatibility heads alone on a finished query tower, against frozen legacy item vectors.

The multi-task run trains a head per legacy space beside everything else; when early stopping keeps an early
step, a head has seen its pairs only a pass or two (BENCHMARKS.md, Model quality). Here the tower is fixed: each
query's pooled backbone state is computed once, and only the heads (a Linear each) and a fresh sampled-softmax
loss per space are optimised, so hundreds of steps cost seconds. The same fit adds a head for a legacy space the
model has never seen: a new legacy index becomes searchable by text without re-embedding a single item.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from catalog import Catalog, Home
from encoders.config import LossConfig, TrainConfig
from encoders.data import TaskData, load_tasks
from encoders.errors import ConfigError, NoTrainingData
from encoders.known import KnownPositives
from encoders.loss import SampledSoftmaxLoss
from encoders.model import OmniSearchSage, load, read_config
from encoders.pseudo import pseudo_queries
from encoders.query import head_key
from encoders.sketch import keys_of

log = logging.getLogger(__name__)


def load_legacy(cat: Catalog) -> tuple[dict[str, list[str]], dict[str, torch.Tensor], dict[str, str]]:
    """The catalog's legacy spaces: (space -> item ids, space -> (n, d) L2-normalised vectors, space -> description).

    Spaces without vectors are left out.
    """
    ids_of: dict[str, list[str]] = {}
    vecs_of: dict[str, torch.Tensor] = {}
    descriptions: dict[str, str] = {}
    if "legacy_spaces" in cat.db.table_names():
        descriptions = {r["name"]: r.get("description") or "" for r in cat.db["legacy_spaces"].rows}
    for space in cat.legacy_spaces():
        ids, vecs = cat.legacy_vectors(space)
        if ids:
            t = torch.from_numpy(vecs)
            ids_of[space], vecs_of[space] = ids, t / t.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return ids_of, vecs_of, descriptions


def legacy_pseudo_queries(
    cat: Catalog, legacy_ids: Mapping[str, Sequence[str]], fields: Sequence[str], per_item: int, seed: int = 0
) -> dict[str, list[tuple[str, str]]]:
    """Space -> pseudo-queries cut from the catalog text of the space's items (encoders/pseudo.py).

    Engaged queries are not item text and are never cut (they come from the train split's queries).
    """
    if per_item <= 0:
        return {}
    text_fields = [f for f in fields if f != "engaged_queries"]
    out: dict[str, list[tuple[str, str]]] = {}
    for n, (space, ids) in enumerate(sorted(legacy_ids.items())):
        rows = cat.get_entities(list(ids))
        out[space] = pseudo_queries((rows[i] for i in ids if i in rows), text_fields, per_item, seed + n)
        log.info("legacy space %s: %d pseudo-queries from the text of %d items", space, len(out[space]), len(rows))
    return out


@dataclass(frozen=True)
class HeadFit:
    """What fitting one space's head did (recorded in the checkpoint's config.json)."""

    space: str
    steps: int
    pairs: int  # train pairs of the space
    queries: int  # distinct queries embedded once for the fit
    seconds: float
    pseudo: int  # pseudo-queries cut from the items' text (encoders/pseudo.py)
    loss_first: float  # mean loss of the first tenth of the steps
    loss_last: float  # mean loss of the last tenth

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def pooled_states(
    model: OmniSearchSage, texts: Sequence[str], bf16: bool = True, chunk: int = 128, progress: bool = False
) -> torch.Tensor:
    """(n, h) pooled backbone states of query texts, computed once without autograd (length-sorted chunks)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), int(model.query.backbone.config.hidden_size))
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), chunk), desc="query states", disable=not progress, leave=False):
            rows = order[start : start + chunk]
            enc = model.query.tokenize([texts[i] for i in rows])
            out[rows] = model.query.pooled(enc["input_ids"], enc["attention_mask"], bf16=bf16).float()
    return out


def fit_heads(
    model: OmniSearchSage,
    tasks: Sequence[TaskData],
    query_text: Mapping[str, str],
    legacy_vecs: Mapping[str, torch.Tensor],
    legacy_ids: Mapping[str, Sequence[str]],
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    loss: LossConfig | None = None,
    seed: int = 0,
    bf16: bool = True,
    progress: bool = False,
    query_group: Mapping[str, str] | None = None,
    pseudo: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    pseudo_share: float = 0.5,
) -> list[HeadFit]:
    """Fit the head of every legacy task's space for `steps` steps; the rest of the model is not touched.

    Args:
        tasks: legacy tasks (target "legacy"); their pairs are (query id, item id with a legacy vector).
        query_text: query id -> text, for every query of the pairs.
        legacy_vecs: space -> (n, d) L2-normalised frozen item vectors; legacy_ids: space -> the n item ids.
        steps: optimizer steps per space (cosine decay to a tenth of `lr`).
        bf16: bf16 autocast for the query states (as training and serving run the backbone).
        query_group: query id -> group id (translations share one), for masking known positives.
        pseudo: space -> (text, item id) pseudo-queries cut from the items' own text (encoders/pseudo.py).
        pseudo_share: share of each batch drawn from a space's pseudo-queries when it has any.
    """
    if model.cfg.compat_mode != "head":
        raise ConfigError(f"only compat_mode='head' has heads to fit (this model: {model.cfg.compat_mode!r})")
    lc = loss or LossConfig()
    fits: list[HeadFit] = []
    for n, task in enumerate(t for t in tasks if t.target == "legacy"):
        if not task.pairs:
            log.info("%s: no train pairs, head left as it is", task.name)
            continue
        known = KnownPositives(task.pairs, query_group or {}) if lc.mask_known else None
        fits.append(_fit_one(model, task, query_text, legacy_vecs[task.kind], legacy_ids[task.kind], steps,
                             batch_size, lr, lc, seed + n, bf16, progress, known,
                             (pseudo or {}).get(task.kind, ()), pseudo_share))
    return fits


def _fit_one(
    model: OmniSearchSage,
    task: TaskData,
    query_text: Mapping[str, str],
    vecs: torch.Tensor,
    ids: Sequence[str],
    steps: int,
    batch_size: int,
    lr: float,
    lc: LossConfig,
    seed: int,
    bf16: bool,
    progress: bool,
    known: KnownPositives | None,
    pseudo: Sequence[tuple[str, str]] = (),
    pseudo_share: float = 0.5,
) -> HeadFit:
    t0 = time.perf_counter()
    space = task.kind
    if space not in model.legacy:
        model.add_legacy_space(space, int(vecs.shape[1]))
    elif model.legacy[space] != int(vecs.shape[1]):
        raise ConfigError(f"legacy space {space!r} has {int(vecs.shape[1])}-d vectors in the catalog but the "
                          f"model's head gives {model.legacy[space]} dims")
    head = model.query.heads[head_key(space)]
    pos_of = {i: n for n, i in enumerate(ids)}
    pseudo = [(text, item) for text, item in pseudo if item in pos_of]
    # Pseudo-queries are rows after the real queries; their ids only serve as sketch keys and never match a
    # real query's group, so known-positive masks leave them alone.
    pairs = [*task.pairs, *((f"~pseudo:{n}", item) for n, (_, item) in enumerate(pseudo))]
    texts = {**query_text, **{f"~pseudo:{n}": text for n, (text, _) in enumerate(pseudo)}}
    qids = sorted({q for q, _ in pairs})
    row_of = {q: i for i, q in enumerate(qids)}
    states = pooled_states(model, [texts[q] for q in qids], bf16, progress=progress)
    q_rows = torch.tensor([row_of[q] for q, _ in pairs])
    p_rows = torch.tensor([pos_of[t] for _, t in pairs])
    q_keys_all = keys_of([q for q, _ in pairs])
    p_keys_all = keys_of([t for _, t in pairs])
    item_keys = keys_of(list(ids))
    crit = SampledSoftmaxLoss((int(vecs.shape[1]),), (1.0,), lc.temperature, lc.max_scale, lc.logq,
                              lc.sketch_width, lc.sketch_depth, seed=seed)
    params = [*head.parameters(), *crit.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    rng = np.random.default_rng(seed)
    n_real = len(task.pairs)
    n_pseudo = round(batch_size * pseudo_share) if pseudo else 0
    real_order, real_at = rng.permutation(n_real), 0
    fake_order, fake_at = rng.permutation(len(pseudo)) + n_real, 0
    losses: list[float] = []
    was_training = model.training
    head.train()
    for _ in tqdm(range(steps), desc=f"compat {space}", disable=not progress, leave=False):
        k = batch_size - n_pseudo
        if real_at + k > n_real:  # a fresh order each pass
            real_order, real_at = rng.permutation(n_real), 0
        if fake_at + n_pseudo > len(pseudo):
            fake_order, fake_at = rng.permutation(len(pseudo)) + n_real, 0
        b = torch.from_numpy(np.concatenate([real_order[real_at : real_at + k],
                                             fake_order[fake_at : fake_at + n_pseudo]]))
        real_at, fake_at = real_at + k, fake_at + n_pseudo
        neg_idx = torch.from_numpy(rng.integers(0, len(ids), lc.random_negatives * len(b)))
        q = F.normalize(head(states[q_rows[b]]), dim=-1)
        has_neg = len(neg_idx) > 0
        mask = neg_mask = None
        if known is not None:
            batch_q = [pairs[i][0] for i in b.tolist()]
            mask = known.mask(batch_q, [pairs[i][1] for i in b.tolist()])  # (B, B)
            neg_mask = known.mask(batch_q, [ids[i] for i in neg_idx.tolist()]) if has_neg else None  # (B, R)
        out = crit(q, vecs[p_rows[b]], q_keys_all[b], p_keys_all[b], vecs[neg_idx] if has_neg else None,
                   item_keys[neg_idx] if has_neg else None, len(ids), None, mask, neg_mask)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        sched.step()
        losses.append(float(out.total.detach()))
    model.train(was_training)
    tenth = max(1, len(losses) // 10)
    fit = HeadFit(space, steps, len(task.pairs), len(qids), time.perf_counter() - t0, len(pseudo),
                  float(np.mean(losses[:tenth])) if losses else float("nan"),
                  float(np.mean(losses[-tenth:])) if losses else float("nan"))
    log.info("compat head %s: %d steps over %d pairs and %d pseudo-queries (%d queries) in %.1f s, loss %.3f -> "
             "%.3f", space, steps, fit.pairs, fit.pseudo, fit.queries, fit.seconds, fit.loss_first, fit.loss_last)
    return fit


def fit_checkpoint(
    home: Home,
    checkpoint: Path,
    out: Path | None = None,
    steps: int = 300,
    spaces: Sequence[str] = (),
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    pseudo_per_item: int = 0,
) -> tuple[str, list[HeadFit]]:
    """Fit the heads of a saved checkpoint on the catalog's legacy spaces (all, or `spaces`) and save it.

    A space the checkpoint lacks gets a new head. With `pseudo_per_item`, half of each batch is pseudo-queries
    cut from the items' own text (up to that many per item; encoders/pseudo.py). Everything else in the
    checkpoint is kept as it is, its training record included; the weights file changes, so the checkpoint id
    does too.

    Returns:
        (checkpoint id of the saved model, one HeadFit per fit space)
    """
    cfg = read_config(checkpoint)
    train_cfg = cfg.get("training", {}).get("config", {}).get("train", {})
    min_grade = float(train_cfg.get("min_relative_grade", TrainConfig().min_relative_grade))
    model = load(checkpoint)
    with Catalog(home.catalog_db, read_only=True) as cat:
        ids, vecs, descriptions = load_legacy(cat)
        unknown = sorted(set(spaces) - set(ids))
        if unknown:
            raise ConfigError(f"no legacy vectors in the catalog for {unknown}; spaces there: {sorted(ids)}")
        chosen = {s: ids[s] for s in (spaces or ids)}
        if not chosen:
            raise NoTrainingData("the catalog has no legacy space with vectors (`catalog import` them first)")
        tasks = [t for t in load_tasks(cat, {"query->legacy": 1.0}, min_grade, chosen) if t.target == "legacy"]
        if not tasks:
            raise NoTrainingData(f"no train pairs reach an item of {sorted(chosen)}; run `catalog split` first?")
        rows = cat.get_queries(sorted({q for t in tasks for q, _ in t.pairs}))
        texts = {q: str(r["text"]) for q, r in rows.items()}
        groups = {q: str(r.get("group_id") or q) for q, r in rows.items()}
        pseudo = legacy_pseudo_queries(cat, chosen, model.cfg.entity.fields, pseudo_per_item, seed)
    for t in tasks:
        t.pairs = [p for p in t.pairs if p[0] in texts]
    fits = fit_heads(model, tasks, texts, vecs, ids, steps, batch_size, lr, LossConfig(), seed, progress=progress,
                     query_group=groups, pseudo=pseudo)
    for f in fits:
        if not model.legacy_descriptions.get(f.space):
            model.legacy_descriptions[f.space] = descriptions.get(f.space, "")
    extra = {k: v for k, v in cfg.items() if k not in ("format", "model", "backbone", "legacy", "checkpoint_id")}
    extra["compat_fit"] = [*extra.get("compat_fit", []), *(f.as_dict() for f in fits)]
    return model.save(out or checkpoint, extra=extra), fits
