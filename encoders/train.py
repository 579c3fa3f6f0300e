"""Multi-task training of OmniSearchSage on the catalog's train split: mixed batches, resumable checkpoints."""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from catalog import Catalog, Home
from encoders.average import WeightAverage
from encoders.backbones import resolve_backbone
from encoders.compat import HeadFit, fit_heads, legacy_pseudo_queries, load_legacy
from encoders.config import RunConfig, run_config_from_dict, to_dict
from encoders.data import TaskData, engaged_queries, load_tasks, split_exists
from encoders.errors import NoTrainingData
from encoders.evaluate import dev_tasks, evaluate_system
from encoders.features import EntityFeatures, passage_text, query_key
from encoders.interpolate import Weights, interpolate, snapshot
from encoders.known import KnownPositives
from encoders.lexical import LexicalEncoder
from encoders.loss import SampledSoftmaxLoss
from encoders.model import OmniSearchSage, load
from encoders.retrieval import Pools
from encoders.sketch import keys_of
from encoders.systems import ModelRetriever
from encoders.tokenize import EntityTokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced and how fast."""

    out: Path
    checkpoint_id: str
    steps: int
    pairs: int  # (query, target) pairs consumed
    train_seconds: float  # optimisation time (excludes data preparation and evaluation)
    prep_seconds: float  # catalog loading, vocabularies, tokenization
    pairs_per_second: float
    tasks: dict[str, int]  # task -> train pairs
    dev: dict[str, Any] = field(default_factory=dict)  # last dev evaluation (model only)


class TaskSampler:
    """Cycles through a task's pairs in a fresh seeded order each epoch.

    With `groups` (a label per pair), each take draws from one group: the group is picked with probability
    proportional to the pairs it has left this epoch, so every pair is still seen once per epoch. A step's pairs
    then share, say, their target's language, and its in-batch negatives are items the query's own candidates
    compete with (TrainConfig.language_batches).
    """

    def __init__(self, n: int, seed: int, groups: Sequence[str] | None = None) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.pos = 0
        self.epoch = 0
        self.groups: dict[str, np.ndarray] | None = None
        if groups is not None:
            if len(groups) != n:
                raise ValueError(f"{len(groups)} group labels for {n} pairs")
            labels = np.asarray(groups, dtype=object)
            self.groups = {g: np.flatnonzero(labels == g) for g in sorted(set(groups))}
        self._shuffle()

    def __setstate__(self, state: dict[str, Any]) -> None:  # resumable states written before `groups` existed
        self.__dict__.update({"groups": None, **state})

    def _shuffle(self) -> None:
        if self.groups is None:
            self.order = self.rng.permutation(self.n)
        else:
            self.queues = {g: self.rng.permutation(idx) for g, idx in self.groups.items()}
            self.heads = dict.fromkeys(self.groups, 0)

    @property
    def epochs(self) -> float:
        """Passes over the pairs so far (fractional)."""
        return self.epoch + self.pos / max(1, self.n)

    def take(self, k: int) -> np.ndarray:
        out: list[int] = []
        group: str | None = None
        while len(out) < k:
            if self.pos >= self.n:
                self._shuffle()
                self.pos = 0
                self.epoch += 1
                group = None
            if self.groups is None:
                step = min(k - len(out), self.n - self.pos)
                out.extend(self.order[self.pos : self.pos + step].tolist())
            else:
                left = {g: len(q) - self.heads[g] for g, q in self.queues.items()}
                if group is None or left[group] == 0:  # a group ran out mid-take: the rest comes from another
                    names = [g for g in left if left[g]]
                    weights = np.array([left[g] for g in names], dtype=float)
                    group = names[int(self.rng.choice(len(names), p=weights / weights.sum()))]
                step = min(k - len(out), left[group])
                head = self.heads[group]
                out.extend(self.queues[group][head : head + step].tolist())
                self.heads[group] = head + step
            self.pos += step
        return np.asarray(out, dtype=np.int64)


def allocate(batch: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `batch` across tasks in proportion to weights (largest remainder), at least 2 pairs each."""
    total = sum(weights.values())
    raw = {t: batch * w / total for t, w in weights.items()}
    out = {t: max(2, int(math.floor(v))) for t, v in raw.items()}
    rest = batch - sum(out.values())
    for t in sorted(raw, key=lambda t: raw[t] - math.floor(raw[t]), reverse=True):
        if rest <= 0:
            break
        out[t] += 1
        rest -= 1
    while rest < 0:  # the minimum of 2 overshot: take back from the largest share
        t = max(out, key=lambda t: out[t])
        out[t] -= 1
        rest += 1
    return out


class Trainer:
    """Prepares data from the catalog, trains, evaluates on dev, and saves to `out`."""

    def __init__(self, home: Home, cfg: RunConfig, out: Path | None = None, progress: bool = True) -> None:
        self.home, self.cfg, self.progress = home, cfg, progress
        self.out = Path(out) if out else home.checkpoints / cfg.train.name
        self.resume_dir = self.out.with_name(self.out.name + ".resume")

    # ------------------------------------------------------------------ preparation
    def prepare(self) -> None:
        t0 = time.perf_counter()
        cfg, tc = self.cfg, self.cfg.train
        torch.set_num_threads(tc.threads)
        random.seed(tc.seed)
        np.random.seed(tc.seed)
        torch.manual_seed(tc.seed)
        self.cat = Catalog(self.home.catalog_db, read_only=True)
        if not split_exists(self.cat):
            raise NoTrainingData("the catalog has no train split; run `catalog split --by query --dev 0.1 --seed 0`")
        self.legacy_ids: dict[str, list[str]] = {}  # space -> item ids, in the order of legacy_vecs' rows
        self.legacy_vecs: dict[str, torch.Tensor] = {}
        descriptions: dict[str, str] = {}
        if cfg.model.compat_mode != "off":
            self.legacy_ids, self.legacy_vecs, descriptions = load_legacy(self.cat)
        self.legacy_pos = {space: {i: n for n, i in enumerate(ids)} for space, ids in self.legacy_ids.items()}
        self.tasks: list[TaskData] = load_tasks(
            self.cat, tc.tasks, tc.min_relative_grade, self.legacy_ids, pivot=tc.pivot
        )
        if not self.tasks:
            raise NoTrainingData("no task has train pairs; import data and run `catalog split` first")
        for task in self.tasks:
            log.info("task %s: %d train pairs, weight %g", task.name, len(task.pairs), task.weight)
        legacy_dims = {s: int(v.shape[1]) for s, v in self.legacy_vecs.items()
                       if any(t.kind == s and t.target == "legacy" for t in self.tasks)}
        self.resumed = False
        if (self.resume_dir / "state.pt").exists() and (self.resume_dir / "model").exists():
            self.model = load(self.resume_dir / "model")
            self.resumed = True
            log.info("resuming from %s", self.resume_dir)
        else:
            engaged = (
                engaged_queries(self.cat, tc.min_relative_grade, cfg.model.entity.max_engaged_queries,
                                cfg.model.entity.engaged_translations)
                if cfg.model.entity.engaged_queries else {}
            )
            tokenizer = self._build_vocab(engaged)
            lexical = None
            if cfg.model.lexical.dim:  # document frequencies over every entity's own text (not its queries)
                texts = (passage_text(r, cfg.model.entity.fields) for r in self.cat.entities())
                lexical = LexicalEncoder.build(cfg.model.lexical, texts)
                log.info("lexical channel: %d tokens over %d entities", len(lexical.df), lexical.n_docs)
            self.model = OmniSearchSage(
                cfg.model, resolve_backbone(cfg.model.query.backbone), tokenizer, legacy_dims, engaged,
                {s: descriptions.get(s, "") for s in legacy_dims}, lexical=lexical,
            )
        self.model.train()
        self._featurize()
        # the weights training starts from (after order_by_variance), kept only for train.interpolate
        self.start_weights: Weights | None = (
            snapshot(self.model) if cfg.train.interpolate and not self.resumed else None)
        self.losses = nn.ModuleDict()
        for i, task in enumerate(self.tasks):
            lc = cfg.loss
            dims, weights = lc.prefix_dims, lc.prefix_weights
            if task.target == "legacy":  # a frozen space has no nested prefixes
                dims, weights = (int(self.legacy_vecs[task.kind].shape[1]),), (1.0,)
            self.losses[task.name] = SampledSoftmaxLoss(
                dims, weights, lc.temperature, lc.max_scale, lc.logq, lc.sketch_width, lc.sketch_depth,
                seed=tc.seed + i,
            )
        self.samplers = {t.name: TaskSampler(len(t.pairs), tc.seed + 101 * i, self._pair_languages(t))
                         for i, t in enumerate(self.tasks)}
        self.known = {t.name: KnownPositives(t.pairs, self.query_group) for t in self.tasks if cfg.loss.mask_known}
        self.neg_rng = np.random.default_rng(tc.seed + 7)
        self.optimizer = self._optimizer()
        self.average = WeightAverage(self.model, tc.ema_decay) if tc.ema_decay else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.pooled_cache: dict[str, torch.Tensor] = {}  # query -> pooled state (frozen backbone)
        self.state_cache: dict[str, torch.Tensor] = {}  # query -> (tokens, h) output of the frozen blocks
        self.anchor_cache: dict[str, torch.Tensor] = {}  # query -> (h,) untuned embedding (anchor_weight > 0)
        self.phase_seconds: dict[str, float] = {}  # where training time goes (recorded in config.json)
        self.pairs_seen = 0
        self.best: dict[str, Any] | None = None  # keep_best: {"step", "score", "weights"} of the best dev check
        self.train_seconds = 0.0
        self.train_cpu_seconds = 0.0  # CPU time of all threads: the yardstick when other jobs share the cores
        if self.resumed:
            self._load_state()
        self.prep_seconds = time.perf_counter() - t0
        log.info("prepared in %.1f s", self.prep_seconds)

    def _build_vocab(self, engaged: dict[str, list[str]]) -> EntityTokenizer:
        ec = self.cfg.model.entity

        def texts() -> Any:
            for row in self.cat.entities():
                for f in ec.fields:
                    if row.get(f):
                        yield str(row[f])
            for qs in engaged.values():
                yield from qs

        return EntityTokenizer.build(
            texts(),
            {"unigram": ec.unigram_vocab, "bigram": ec.bigram_vocab, "trigram": ec.trigram_vocab},
            ec.oov_buckets,
            ec.min_count,
            ec.max_tokens_per_field,
        )

    def _featurize(self) -> None:
        """Tokenize every entity of the trained kinds and every query once."""
        fz = self.model.featurizer
        self.entity_ids: dict[str, list[str]] = {}
        self.entity_feats: dict[str, list[EntityFeatures]] = {}
        self.entity_pos: dict[str, dict[str, int]] = {}
        self.entity_langs: dict[str, list[str]] = {}
        self.lang_members: dict[str, dict[str, np.ndarray]] = {}  # kind -> language -> its entities' positions
        kinds = sorted({t.kind for t in self.tasks if t.target == "entity"})
        text_vecs: list[np.ndarray] = []
        for kind in kinds:
            rows = list(self.cat.entities(kind))
            feats = [fz.features(r) for r in tqdm(rows, desc=f"tokenizing {kind}s", disable=not self.progress,
                                                  leave=False)]
            if self.model.passage is not None:  # the untuned backbone's view of each entity, computed once
                vecs = self.model.text_vectors(rows, progress=self.progress)
                for f, v in zip(feats, vecs, strict=True):
                    f.text_vec = v
                text_vecs.append(vecs)
            self.entity_ids[kind] = [r["id"] for r in rows]
            self.entity_feats[kind] = feats
            self.entity_pos[kind] = {r["id"]: n for n, r in enumerate(rows)}
            self.entity_langs[kind] = [str(r.get("lang") or "") for r in rows]
            langs = np.asarray(self.entity_langs[kind], dtype=object)
            self.lang_members[kind] = {g: np.flatnonzero(langs == g) for g in set(self.entity_langs[kind])}
        if text_vecs and not self.resumed and self.cfg.model.init_from_backbone:
            self.model.order_by_variance(np.concatenate(text_vecs))
        for task in self.tasks:  # pairs whose target is missing from the catalog cannot be trained on
            if task.target == "entity":
                pos = self.entity_pos[task.kind]
                task.pairs = [p for p in task.pairs if p[1] in pos]
        qids = sorted({q for t in self.tasks for q, _ in t.pairs}
                      | {x for t in self.tasks if t.target == "query" for _, x in t.pairs})
        queries = self.cat.get_queries(qids)
        self.query_text = {q: str(r["text"]) for q, r in queries.items()}
        self.query_group = {q: str(r.get("group_id") or q) for q, r in queries.items()}  # translations share one
        keys: dict[str, set[str]] = {}
        for q, group in self.query_group.items():
            keys.setdefault(group, set()).add(query_key(self.query_text[q]))
        self.group_keys = {g: frozenset(k) for g, k in keys.items()}
        tok = self.model.query.tokenizer
        prefix = self.model.query.prefix
        texts = [prefix + self.query_text[q] for q in qids if q in self.query_text]
        enc = tok(texts, truncation=True, max_length=self.cfg.model.query.max_length)["input_ids"]
        self.query_ids = dict(zip([q for q in qids if q in self.query_text], enc, strict=True))
        for task in self.tasks:
            task.pairs = [p for p in task.pairs if p[0] in self.query_ids
                          and (task.target != "query" or p[1] in self.query_ids)]
        self.tasks = [t for t in self.tasks if t.pairs]

    def _optimizer(self) -> torch.optim.Optimizer:
        tc = self.cfg.train
        bag = self.model.entity.bag
        hash_params = [bag.table.weight, bag.importance]
        hash_ids = {id(p) for p in hash_params}
        backbone = [p for p in self.model.query.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in backbone}
        rest = [p for p in [*self.model.parameters(), *self.losses.parameters()]
                if p.requires_grad and id(p) not in hash_ids and id(p) not in backbone_ids]
        decay = [p for p in rest if p.ndim >= 2]
        no_decay = [p for p in rest if p.ndim < 2]
        groups = [
            {"params": hash_params, "lr": tc.lr_hash, "weight_decay": 0.0},
            {"params": decay, "lr": tc.lr, "weight_decay": tc.weight_decay},
            {"params": no_decay, "lr": tc.lr, "weight_decay": 0.0},
        ]
        if backbone:
            groups.append({"params": backbone, "lr": tc.lr_backbone, "weight_decay": tc.weight_decay})
        return torch.optim.AdamW(groups, fused=True)  # fused CPU kernel: one pass over the 25M-row table

    def _lr_factor(self, step: int) -> float:
        tc = self.cfg.train
        if step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        progress = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ one step
    def _query_batch(self, qids: list[str]) -> dict[str, torch.Tensor]:
        seqs = [self.query_ids[q] for q in qids]
        width = max(len(s) for s in seqs)
        pad = self.model.query.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def _pooled(self, qids: list[str]) -> torch.Tensor:
        """(U, h) pooled backbone states of the queries.

        A frozen backbone (train_layers 0) gives each query the same state every time: it is computed once,
        without autograd, and cached. With only the top blocks trained, the frozen blocks' output is cached per
        query the same way (BERT-family backbones) and only the top blocks run each step. Queries run in
        length-sorted chunks, which pads less than one batch of mixed lengths.
        """
        bf16 = self.cfg.train.bf16
        query = self.model.query
        if self.cfg.model.query.train_layers == 0:
            missing = sorted({q for q in qids if q not in self.pooled_cache}, key=lambda q: len(self.query_ids[q]))
            with torch.inference_mode():
                for start in range(0, len(missing), 128):
                    chunk = missing[start : start + 128]
                    enc = self._query_batch(chunk)
                    states = query.pooled(enc["input_ids"], enc["attention_mask"], bf16=bf16)  # (c, h)
                    for q, v in zip(chunk, states, strict=True):
                        self.pooled_cache[q] = v.clone()
            return torch.stack([self.pooled_cache[q] for q in qids])
        order = sorted(range(len(qids)), key=lambda i: len(self.query_ids[qids[i]]))
        parts: list[torch.Tensor] = []
        split = query.frozen_depth() > 0 and query.can_split()
        if split:  # the frozen blocks' output of each query is computed once and cached (bf16)
            missing = sorted({q for q in qids if q not in self.state_cache}, key=lambda q: len(self.query_ids[q]))
            for start in range(0, len(missing), 128):
                chunk = missing[start : start + 128]
                enc = self._query_batch(chunk)
                states = query.lower(enc["input_ids"], enc["attention_mask"], bf16=bf16)  # (c, L, h)
                for i, q in enumerate(chunk):
                    self.state_cache[q] = states[i, : len(self.query_ids[q])].to(torch.bfloat16).clone()
                if anchor_in_loss(self.cfg) and self.model.passage is not None and self.model.passage.split:
                    anchors = self.model.passage.top_pooled(states, enc["attention_mask"])  # (c, h), same pass
                    self.anchor_cache.update((q, v.clone()) for q, v in zip(chunk, anchors, strict=True))
        for start in range(0, len(order), 64):
            chunk = [qids[i] for i in order[start : start + 64]]
            enc = self._query_batch(chunk)
            if split:
                width = enc["input_ids"].shape[1]
                states = torch.zeros(len(chunk), width, self.state_cache[chunk[0]].shape[-1], dtype=torch.bfloat16)
                for i, q in enumerate(chunk):
                    states[i, : len(self.query_ids[q])] = self.state_cache[q]
                parts.append(query.upper(states if bf16 else states.float(), enc["attention_mask"], bf16=bf16))
            else:
                parts.append(query.pooled(enc["input_ids"], enc["attention_mask"], bf16=bf16))  # (c, h)
        pooled = torch.cat(parts)  # (U, h) in length order
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return pooled[inverse]

    def _pair_languages(self, task: TaskData) -> list[str] | None:
        """The target language of each pair of a `train.language_batches` task (None: mixed steps)."""
        if task.name not in self.cfg.train.language_batches:
            return None
        if task.target != "entity":
            log.warning("train.language_batches: %s has no entity targets; its steps stay mixed", task.name)
            return None
        langs, pos = self.entity_langs[task.kind], self.entity_pos[task.kind]
        return [langs[pos[t]] for _, t in task.pairs]

    def _negatives(self, task: TaskData, pairs: list[tuple[str, str]], n: int) -> np.ndarray:
        """Positions of `n` random negatives: uniform over the task's kind, or over the step's language."""
        feats = self.entity_feats[task.kind]
        if not n:
            return np.zeros(0, int)
        if self.samplers[task.name].groups is None:
            return self.neg_rng.integers(0, len(feats), n)
        lang = self.entity_langs[task.kind][self.entity_pos[task.kind][pairs[0][1]]]
        return self.neg_rng.choice(self.lang_members[task.kind][lang], n)

    def _leave_out(self, qid: str) -> str | frozenset[str]:
        """What a training query hides from its positive's engaged-queries bag: itself, and with
        `engaged_translations` every query of its group (its translations are in that bag too)."""
        if not self.cfg.model.entity.engaged_translations:
            return query_key(self.query_text[qid])
        return self.group_keys.get(self.query_group[qid], frozenset({query_key(self.query_text[qid])}))

    def _anchor(self, qids: list[str]) -> torch.Tensor:
        """(U, h) untuned backbone embeddings of the queries (fixed: computed once per query, then cached)."""
        missing = [q for q in dict.fromkeys(qids) if q not in self.anchor_cache]
        if missing:
            vecs = self.model.passage.encode([self.query_text[q] for q in missing], passage=False)  # type: ignore
            self.anchor_cache.update((q, torch.from_numpy(v)) for q, v in zip(missing, vecs, strict=True))
        return torch.stack([self.anchor_cache[q] for q in qids])

    def active_tasks(self) -> list[TaskData]:
        """The tasks still in the batch mix (all of them unless `train.max_epochs` caps their passes)."""
        cap = self.cfg.train.max_epochs
        return [t for t in self.tasks if not cap or self.samplers[t.name].epochs < cap]

    def train_step(self) -> dict[str, float]:
        tc, lc = self.cfg.train, self.cfg.loss
        tasks = self.active_tasks()
        alloc = allocate(tc.batch_size, {t.name: t.weight for t in tasks})
        picked: dict[str, list[tuple[str, str]]] = {}
        for task in tasks:
            idx = self.samplers[task.name].take(alloc[task.name])
            picked[task.name] = [task.pairs[i] for i in idx]
        # One backbone pass for every query of the step (and the query targets of query->query).
        need = sorted({q for pairs in picked.values() for q, _ in pairs}
                      | {x for t in tasks if t.target == "query" for _, x in picked[t.name]})
        row_of = {q: i for i, q in enumerate(need)}
        clock = time.perf_counter()
        pooled = self._pooled(need)  # (U, h)
        qvec = self.model.query.project(pooled)  # (U, D)
        # The anchor block's part of the served score is fixed: it enters the logits as an offset, so the towers
        # learn what the untuned backbone misses (ModelConfig.anchor_in_loss, encoders/loss.py).
        w_anchor = self.cfg.model.anchor_weight if anchor_in_loss(self.cfg) else 0.0
        anchor = self._anchor(need) if w_anchor else None  # (U, h)
        clock = self._tick("query_forward", clock)
        total = torch.zeros(())
        weight_sum = sum(t.weight for t in tasks)
        logs: dict[str, float] = {}
        for task in tasks:
            pairs = picked[task.name]
            qrows = torch.tensor([row_of[q] for q, _ in pairs])
            queries = [q for q, _ in pairs]
            q_keys = keys_of(queries)
            p_keys = keys_of([t for _, t in pairs])
            known_pos = self.known.get(task.name)
            known = known_pos.mask(queries, [t for _, t in pairs]) if known_pos else None  # (B, B)
            neg_known = None
            neg = neg_keys = None
            n_cand = None
            q_item_keys = None
            offset = neg_offset = None
            n_neg = tc.task_negatives.get(task.name, lc.random_negatives if task.target != "query" else 0)
            if task.target == "entity":
                feats = self.entity_feats[task.kind]
                pos_index = self.entity_pos[task.kind]
                pos_feats = [feats[pos_index[t]] for _, t in pairs]
                exclude: list[str | frozenset[str] | None] = [self._leave_out(q) for q, _ in pairs]
                neg_idx = self._negatives(task, pairs, n_neg * len(pairs))
                all_feats = pos_feats + [feats[i] for i in neg_idx]
                exclude += [None] * len(neg_idx)
                ec = self.cfg.model.entity
                batch = self.model.featurizer.collate(
                    all_feats, exclude, self.neg_rng, ec.token_dropout, ec.engaged_dropout
                )
                evec = self.model.entity(batch)  # (B + R, D)
                q = qvec[qrows]
                p = evec[: len(pairs)]
                if anchor is not None:
                    tvec = torch.from_numpy(np.stack([f.text_vec for f in all_feats]))  # type: ignore[arg-type, misc]
                    sim = w_anchor * anchor[qrows] @ tvec.T  # (B, B + R)
                    offset, neg_offset = sim[:, : len(pairs)], sim[:, len(pairs) :]
                if len(neg_idx):
                    neg = evec[len(pairs) :]
                    neg_ids = [self.entity_ids[task.kind][i] for i in neg_idx]
                    neg_keys = keys_of(neg_ids)
                    neg_known = known_pos.mask(queries, neg_ids) if known_pos else None  # (B, R)
                    # The whole kind even when negatives come from one language: the streaming in-batch
                    # frequencies are per step over all steps too, so both logQ terms stay on one scale.
                    n_cand = len(feats)
            elif task.target == "query":
                q = qvec[qrows]
                trows = torch.tensor([row_of[t] for _, t in pairs])
                p = qvec[trows]
                q_item_keys = q_keys
                if anchor is not None and self.cfg.model.anchor_related:
                    offset = w_anchor * anchor[qrows] @ anchor[trows].T  # (B, B)
            else:  # legacy: the item tower is the identity over frozen stored vectors
                vecs = self.legacy_vecs[task.kind]
                q = self.model.query.legacy_embed(pooled[qrows], task.kind)
                p = vecs[torch.tensor([self.legacy_pos[task.kind][t] for _, t in pairs])]
                if n_neg:
                    neg_idx = self.neg_rng.integers(0, vecs.shape[0], n_neg * len(pairs))
                    neg = vecs[torch.from_numpy(neg_idx)]
                    ids = self.legacy_ids[task.kind]
                    neg_ids = [ids[i] for i in neg_idx]
                    neg_keys = keys_of(neg_ids)
                    neg_known = known_pos.mask(queries, neg_ids) if known_pos else None  # (B, R)
                    n_cand = int(vecs.shape[0])
            clock = self._tick("entity_forward", clock)
            parts = self.losses[task.name](q, p, q_keys, p_keys, neg, neg_keys, n_cand, q_item_keys, known, neg_known,
                                           offset, neg_offset if neg is not None else None)
            clock = self._tick("loss", clock)
            total = total + (task.weight / weight_sum) * parts.total
            logs[task.name] = float(parts.total.detach())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        clock = self._tick("backward", clock)
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 5.0)
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)
        self._tick("optimizer", clock)
        self.step += 1
        self.pairs_seen += sum(len(v) for v in picked.values())
        logs["loss"] = float(total.detach())
        return logs

    def fit_compat(self) -> list[HeadFit]:
        """`train.compat_steps`: the heads alone, fit again on the final (or kept) query tower."""
        tasks = [t for t in self.tasks if t.target == "legacy"]
        if not tasks or self.cfg.model.compat_mode != "head":
            log.info("no compatibility heads to fit (legacy tasks: %d, compat_mode %s)", len(tasks),
                     self.cfg.model.compat_mode)
            return []
        tc = self.cfg.train
        ids = {t.kind: self.legacy_ids[t.kind] for t in tasks}
        pseudo = legacy_pseudo_queries(self.cat, ids, self.cfg.model.entity.fields, tc.compat_pseudo, tc.seed)
        return fit_heads(self.model, tasks, self.query_text, self.legacy_vecs, ids, tc.compat_steps, tc.batch_size,
                         tc.compat_lr, self.cfg.loss, tc.seed, tc.bf16, self.progress, self.query_group, pseudo)

    def _interpolate(self, score: float, history: list[dict[str, Any]]) -> dict[str, Any]:
        """`train.interpolate`: keep the point between the start and the trained weights with the best dev score.

        `score` is the dev score of the trained (or kept) weights on the same dev queries, NaN if not measured.
        """
        if self.start_weights is None:
            log.warning("train.interpolate: the starting weights are unknown (resumed from an older state); "
                        "keeping the trained weights")
            return {}
        trained = snapshot(self.model)
        if math.isnan(score):
            score = dev_score(self.evaluate_dev(self.cfg.train.eval_max_queries))
        tried = [{"alpha": 1.0, "score": round(score, 4)}]
        best_alpha, best_score = 1.0, score
        for alpha in sorted(set(self.cfg.train.interpolate) - {1.0}, reverse=True):
            interpolate(self.model, self.start_weights, trained, alpha)
            dev = self.evaluate_dev(self.cfg.train.eval_max_queries)
            history.append({"step": self.step, "alpha": alpha, **_summary(dev)})
            s = dev_score(dev)
            tried.append({"alpha": alpha, "score": round(s, 4)})
            log.info("interpolation %.2f of the way to the trained weights: dev nDCG@10 %.4f", alpha, s)
            if s > best_score:
                best_alpha, best_score = alpha, s
        interpolate(self.model, self.start_weights, trained, best_alpha)
        log.info("keeping the weights %.2f of the way from the start to the trained ones (dev %.4f)", best_alpha,
                 best_score)
        return {"alpha": best_alpha, "tried": tried}

    def _tick(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + now - since
        return now

    # ------------------------------------------------------------------ evaluation and state
    def evaluate_dev(self, max_queries: int | None) -> dict[str, Any]:
        try:
            tasks = dev_tasks(self.cat, self.cfg.train.min_relative_grade, list(self.cfg.train.eval_tasks) or None)
        except Exception as exc:  # no dev split: training still works, it just is not measured
            log.warning("no dev evaluation: %s", exc)
            return {}
        if max_queries:
            tasks = [t.subset(max_queries, self.cfg.train.seed) for t in tasks]
        self.model.eval()
        # bf16 autocast for the dev check's query pass (cosine ~0.9999 to float32): most of a check's time is
        # embedding the related-search pool, every query of the catalog
        bf16, self.model.bf16 = self.model.bf16, self.cfg.train.bf16
        try:
            pools = Pools(self.cat)
            result = evaluate_system(ModelRetriever(self.model, pools), tasks, pools)
        finally:
            self.model.bf16 = bf16
            self.model.train()
        for name, entry in result["tasks"].items():
            log.info("dev step %d %s: nDCG@10 %.3f Recall@10 %.3f MRR@10 %.3f", self.step, name,
                     entry["nDCG@10"], entry["Recall@10"], entry["MRR@10"])
        return result

    def _remember_if_best(self, dev: dict[str, Any]) -> None:
        """keep_best: copy the weights when this dev check beats every earlier one."""
        score = dev_score(dev)
        if not self.cfg.train.keep_best or math.isnan(score):
            return
        if self.best is None or score > self.best["score"]:
            frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad}  # never change
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k not in frozen}
            self.best = {"step": self.step, "score": score, "weights": weights}

    def _save_state(self) -> None:
        tmp = self.resume_dir.with_name(self.resume_dir.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self.model.save(tmp / "model")
        torch.save(
            {
                "config": to_dict(self.cfg),
                "step": self.step,
                "pairs_seen": self.pairs_seen,
                "train_seconds": self.train_seconds,
                "train_cpu_seconds": self.train_cpu_seconds,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "losses": self.losses.state_dict(),
                "samplers": self.samplers,
                "best": self.best,
                "average": self.average.state_dict() if self.average is not None else None,
                "start_weights": self.start_weights,
                "neg_rng": self.neg_rng,
                "torch_rng": torch.get_rng_state(),
            },
            tmp / "state.pt",
        )
        if self.resume_dir.exists():
            shutil.rmtree(self.resume_dir)
        tmp.rename(self.resume_dir)

    def _load_state(self) -> None:
        state = torch.load(self.resume_dir / "state.pt", weights_only=False)
        if run_config_from_dict(state["config"]) != self.cfg:
            log.warning("the resumable state in %s was made with another config; starting afresh", self.resume_dir)
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.losses.load_state_dict(state["losses"])
        self.samplers = state["samplers"]
        self.best = state.get("best")
        if self.average is not None and state.get("average"):
            self.average.load_state_dict(state["average"])
        self.start_weights = state.get("start_weights")
        self.neg_rng = state["neg_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.step, self.pairs_seen = int(state["step"]), int(state["pairs_seen"])
        self.train_seconds = float(state["train_seconds"])
        self.train_cpu_seconds = float(state.get("train_cpu_seconds", 0.0))
        log.info("resumed at step %d", self.step)

    # ------------------------------------------------------------------ the run
    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train to `steps` (or a time limit), then save. `stop_after` steps simulates an interruption."""
        started = time.perf_counter()
        self.prepare()
        tc = self.cfg.train

        def in_time() -> bool:
            run_ok = not tc.run_time_limit_s or time.perf_counter() - started < tc.run_time_limit_s
            return run_ok and self.train_seconds < tc.time_limit_s

        dev: dict[str, Any] = {}
        history: list[dict[str, Any]] = []
        last_state = time.perf_counter()
        bar = tqdm(total=tc.steps, initial=self.step, desc="training", disable=not self.progress)
        smooth: dict[str, float] = {}  # losses for the progress bar, smoothed over ~10 steps
        done_in_call = 0
        left = {t.name for t in self.active_tasks()}
        while self.step < tc.steps and in_time():
            active = {t.name for t in self.active_tasks()}
            for name in sorted(left - active):
                log.info("task %s leaves the mix at step %d (%g passes over its pairs)", name, self.step,
                         tc.max_epochs)
            left = active
            if not active:
                log.info("every task has had %g passes over its pairs: stopping at step %d", tc.max_epochs,
                         self.step)
                break
            t0, c0 = time.perf_counter(), time.process_time()
            logs = self.train_step()
            self.train_seconds += time.perf_counter() - t0
            self.train_cpu_seconds += time.process_time() - c0
            done_in_call += 1
            for k, v in logs.items():
                smooth[k] = v if k not in smooth else 0.9 * smooth[k] + 0.1 * v
            bar.update(1)
            bar.set_postfix({k.replace("query->", "q>"): f"{v:.3f}" for k, v in smooth.items()})
            if tc.eval_every and self.step % tc.eval_every == 0 and self.step < tc.steps:
                with self.average.applied(self.model) if self.average is not None else nullcontext():
                    dev = self.evaluate_dev(tc.eval_max_queries)
                    history.append({"step": self.step, **_summary(dev)})
                    self._remember_if_best(dev)
            if stop_after is not None and done_in_call >= stop_after:
                self._save_state()
                bar.close()
                raise KeyboardInterrupt(f"stopped after {done_in_call} steps (state saved)")
            if time.perf_counter() - last_state > tc.checkpoint_every_s and self.step < tc.steps:
                self._save_state()
                last_state = time.perf_counter()
        bar.close()
        if self.step < tc.steps and not in_time():
            log.warning("time limit reached at step %d of %d (training %.0f s of %.0f; preparation and training "
                        "%.0f s of %s)", self.step, tc.steps, self.train_seconds, tc.time_limit_s,
                        time.perf_counter() - started, f"{tc.run_time_limit_s:.0f}" if tc.run_time_limit_s else "-")
        if self.average is not None:  # from here on the model is the average; the raw weights are dropped
            self.average.copy_to(self.model)
        final_check = tc.final_eval or (tc.keep_best and self.best is not None)
        if final_check:
            dev = self.evaluate_dev(tc.eval_max_queries)
            history.append({"step": self.step, **_summary(dev)})
        kept = self.step
        score = dev_score(dev) if final_check else float("nan")  # of the weights in place now
        if tc.keep_best and self.best is not None and dev_score(dev) < self.best["score"]:
            self.model.load_state_dict(self.best["weights"], strict=False)  # frozen weights are still in place
            kept = int(self.best["step"])
            log.info("keeping the weights of step %d (dev nDCG@10 over the checked queries %.4f; %.4f at step %d)",
                     kept, self.best["score"], dev_score(dev), self.step)
            score = float(self.best["score"])
        interpolation = self._interpolate(score, history) if tc.interpolate else {}
        fits = self.fit_compat() if tc.compat_steps else []  # dev checks measure the model space only
        pps = self.pairs_seen / self.train_seconds if self.train_seconds else 0.0
        record = {
            "training": {
                "config": to_dict(self.cfg),
                "steps": self.step,
                "kept_step": kept,
                "pairs": self.pairs_seen,
                "train_seconds": round(self.train_seconds, 1),
                "train_cpu_seconds": round(self.train_cpu_seconds, 1),
                "load_average": list(os.getloadavg()),
                "prep_seconds": round(self.prep_seconds, 1),
                "pairs_per_second": round(pps, 1),
                "threads": tc.threads,
                "phase_seconds": {k: round(v, 1) for k, v in self.phase_seconds.items()},
                "tasks": {t.name: len(t.pairs) for t in self.tasks},
                "task_epochs": {t.name: round(self.samplers[t.name].epochs, 2) for t in self.tasks},
                "dev_history": history,
                "compat_fit": [f.as_dict() for f in fits],
                "interpolation": interpolation,
                "catalog": str(self.home.catalog_db),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "torch": torch.__version__,
            }
        }
        self.model.eval()
        ckpt = self.model.save(self.out, extra=record)
        if self.resume_dir.exists():
            shutil.rmtree(self.resume_dir)
        log.info("saved %s (%s): %d steps, %.0f pairs/s", self.out, ckpt, self.step, pps)
        self.cat.close()
        return TrainResult(self.out, ckpt, self.step, self.pairs_seen, self.train_seconds, self.prep_seconds, pps,
                           {t.name: len(t.pairs) for t in self.tasks}, dev)


def anchor_in_loss(cfg: RunConfig) -> bool:
    """True when the loss adds the anchor block's fixed similarity (ModelConfig.anchor_in_loss)."""
    return bool(cfg.model.anchor_weight and cfg.model.anchor_in_loss)


def dev_score(result: dict[str, Any]) -> float:
    """The early-stopping criterion: nDCG@10 over all evaluated dev queries (NaN when nothing was measured).

    Every query counts the same, whatever its task: a task mean would let a task with one dev query (ESCI
    fragments) weigh as much as one with a thousand (Home Depot), and pick steps by noise.
    """
    entries = [e for e in result.get("tasks", {}).values() if "nDCG@10" in e]
    n = [max(1, int(e.get("queries", 1))) for e in entries]
    return sum(w * e["nDCG@10"] for w, e in zip(n, entries, strict=True)) / sum(n) if entries else float("nan")


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {name: {m: (round(v, 4) if isinstance(v, float) else v) for m, v in entry.items()
                   if isinstance(v, float) or m == "queries"}
            for name, entry in result.get("tasks", {}).items()}


def train(home: Home, cfg: RunConfig, out: Path | None = None, progress: bool = True) -> TrainResult:
    """Train (resuming from `<out>.resume` if an interrupted run left it) and save to `out`."""
    return Trainer(home, cfg, out, progress).run()
