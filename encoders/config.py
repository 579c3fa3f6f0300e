"""Model and training configuration: frozen dataclasses, presets, TOML loading and JSON round trips."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from catalog import TEXT_FIELDS
from encoders.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class QueryConfig:
    """The query tower: a Hugging Face backbone, pooling and a projection trained with nested prefixes."""

    backbone: str = "minilm"  # preset name (minilm, multilingual-e5-small) or a local HF model directory
    pooling: str = "mean"  # "cls" or "mean" over the last hidden states
    max_length: int = 64  # tokens per query (the paper's limit)
    dim: int = 512  # projection width, trained with nested-prefix losses
    serve_dim: int = 256  # served / indexed prefix of the projection (the paper serves 256)
    train_layers: int = 2  # top transformer layers trained; -1 trains all, 0 only the projection
    train_embeddings: bool = False  # token embeddings stay frozen (large for multilingual vocabularies)


@dataclass(frozen=True)
class EntityConfig:
    """The entity tower: hashed text bags over three tokenizers, optional dense inputs, an MLP."""

    fields: tuple[str, ...] = TEXT_FIELDS  # catalog text fields read; empty ones are skipped
    unigram_vocab: int = 200_000  # word unigram vocabulary size (paper 200k)
    bigram_vocab: int = 1_000_000  # word bigram vocabulary size (paper 1M)
    trigram_vocab: int = 64_000  # character trigram vocabulary size (paper 64k)
    oov_buckets: int = 20_000  # hashed ids per tokenizer for tokens outside its vocabulary
    min_count: int = 2  # a token enters the vocabulary if it occurs at least this often in the catalog
    hash_buckets: int = 100_000  # rows of the shared hash-embedding table (paper 100k)
    hash_dim: int = 256  # width of the hash embedding (paper 256)
    num_hashes: int = 2  # hash functions per token (paper 2)
    max_tokens_per_field: int = 1024  # per tokenizer and field; long abstracts are cut for speed
    hidden: tuple[int, ...] = (1024, 1024)  # MLP hidden widths (paper 1024, 1024)
    dim: int = 512  # output width, same as the query projection
    dense_inputs: tuple[tuple[str, int], ...] = ()  # (name, dim) float features read from row["dense"][name]
    text_input: bool = False  # concatenate the UNTUNED backbone's mean-pooled embedding of the entity's text (the
    #                           stand-in for the paper's pretrained PinSage/ItemSage input vectors)
    text_input_max_length: int = 256  # tokens of entity text for that embedding
    engaged_queries: bool = True  # fill engaged_queries from train-split engagements (the paper's lever)
    max_engaged_queries: int = 32  # per entity, most relevant first
    # also the translations (same queries.group_id) of each engaged train query, after the entity's own queries;
    # training then leaves a query's whole group out of its positive's bag, not just the query itself. Off:
    # measured worse on every XQuAD column (BENCHMARKS.md, "Cross-lingual levers")
    engaged_translations: bool = False
    dropout: float = 0.1  # dropout after hidden layers
    token_dropout: float = 0.3  # training: drop each distinct token of a bag with this probability
    engaged_dropout: float = 0.3  # training: drop an entity's whole engaged-queries bag with this probability


@dataclass(frozen=True)
class LexicalConfig:
    """The lexical channel appended to the served vector (encoders/lexical.py): hashed tf-idf of stemmed words."""

    dim: int = 0  # width appended to the served vector (0: no lexical channel)
    weight: float = 0.5  # the served score is dense cosine + weight * lexical cosine
    stemmer: str = "english"  # Snowball stemmer applied to every word ("" for none)
    nonzeros: int = 8  # hashed coordinates per token of the sparse random projection
    # Queries indexed as related searches carry the channel too. Off by default: related searches here are
    # translations and paraphrases that share few words (XQuAD related-search nDCG@10 0.711 -> 0.559 with it on).
    related_queries: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (stored in the checkpoint's config.json)."""

    query: QueryConfig = field(default_factory=QueryConfig)
    entity: EntityConfig = field(default_factory=EntityConfig)
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    compat_mode: str = "head"  # "head": a Linear per legacy space on the pooled backbone; "prefix": first dims
    # The anchor block (needs entity.text_input): the served vector also carries the UNTUNED backbone's embedding
    # of the text (query: its query embedding; entity: the text_input vector), so the served score is
    # dense cosine + anchor_weight * untuned cosine (+ lexical.weight * lexical cosine). Fine-tuning on a few
    # thousand pairs per language drifts both towers from the backbone's cross-lingual alignment; the frozen
    # block keeps it in every search at the cost of the backbone's width in served dims. 0: no anchor block.
    anchor_weight: float = 0.0
    # Train against the served score: the anchor's fixed part enters every logit as an offset (encoders/loss.py),
    # so the towers learn the residual. Off: the towers train as without the block, which served XQuAD to
    # English better at the same weight (BENCHMARKS.md, "The anchor block").
    anchor_in_loss: bool = False
    # Related searches (query->query, the `queries` index) with the anchor block too. Off: their items carry a zero
    # anchor block and the query->query task trains without it (untuned e5 ranks paraphrases in the question's
    # own language above its translations; related-search nDCG@10 fell with it on, BENCHMARKS.md).
    anchor_related: bool = False
    # Tokens of entity text the anchor block reads (0: entity.text_input_max_length, what the tower reads). The
    # block is untrained, so a longer window changes no weight: a question about the end of a long paragraph then
    # meets that end too (XQuAD R@1 same-language +0.006 / +0.008 at 512 on two dev splits, BENCHMARKS.md).
    anchor_max_length: int = 0
    init_from_backbone: bool = True  # with entity.text_input: both towers start as the untuned backbone's
    #                                  similarity (one shared random rotation, MLP output initialised to zero)
    seed: int = 0  # seeds the hash functions and the initial weights


@dataclass(frozen=True)
class LossConfig:
    """The sampled-softmax loss (see encoders/loss.py)."""

    prefix_dims: tuple[int, ...] = (16, 32, 64, 128, 256, 512)  # nested prefixes (Matryoshka)
    prefix_weights: tuple[float, ...] = (0.05, 0.05, 0.05, 0.05, 1.0, 1.0)  # paper weights per prefix
    temperature: float = 0.07  # initial temperature; the logit scale 1/T is learned
    max_scale: float = 100.0  # cap of the learned logit scale
    random_negatives: int = 1  # random entities per positive, shared across the task's batch (paper 4; CPU)
    logq: bool = True  # logQ correction from streaming frequency estimates
    mask_known: bool = False  # never use an item the train pairs tie to the query's group as a negative (known.py)
    sketch_width: int = 1 << 16  # count-min sketch columns
    sketch_depth: int = 4  # count-min sketch rows


@dataclass(frozen=True)
class TrainConfig:
    """One training run."""

    name: str = "quick"  # checkpoint name under home.checkpoints
    steps: int = 400  # optimizer steps
    time_limit_s: float = 240.0  # stop early (and save) when training exceeds this wall time
    run_time_limit_s: float = 0.0  # also stop when preparation plus training exceed this (0: no such limit)
    batch_size: int = 192  # pairs per step, split across tasks in proportion to their weights
    lr: float = 2e-3  # entity tower, projection and heads
    lr_backbone: float = 1e-4  # trained backbone layers
    lr_hash: float = 1e-2  # hash-embedding table and importance weights
    weight_decay: float = 0.01  # AdamW, not applied to norms, biases and the embedding table
    warmup_steps: int = 40  # linear warm-up, then cosine decay to 10%
    threads: int = 2  # torch intra-op threads (the target machine has 2 cores)
    bf16: bool = True  # bf16 autocast for the query backbone on CPU
    eval_every: int = 0  # steps between dev evaluations (0: only at the end)
    eval_max_queries: int = 500  # dev queries per task in periodic evaluation
    final_eval: bool = True  # evaluate the model on dev after training (recorded in config.json)
    eval_tasks: tuple[str, ...] = ()  # dev tasks whose name contains one of these (empty: all)
    checkpoint_every_s: float = 120.0  # resumable state written at most this often
    min_relative_grade: float = 0.5  # graded pairs are positives when (g - min) / (max - min) >= this
    # Cross-lingual pairs: every train query is also paired with the entities its group's queries in this
    # language engaged with (encoders/data.py, pivot_pairs; "en": an XQuAD question in any language also finds
    # the English paragraph). Empty: only the catalog's own pairs. Off in the presets: measured worse on XQuAD to
    # English and on the compatibility head (BENCHMARKS.md, "Cross-lingual levers").
    pivot: str = ""
    tasks: dict[str, float] = field(
        default_factory=lambda: {
            "query->pin": 8.0,  # paper weight
            "query->product": 4.0,  # paper weight (engaged)
            "query->doc": 2.0,  # no paper counterpart; like offsite products
            "query->query": 2.0,  # paper weight
            "query->legacy": 2.0,  # every legacy space; compatibility costs little in the paper
        }
    )
    task_negatives: dict[str, int] = field(default_factory=dict)  # per task override of random negatives
    # Entity tasks ("query->pin") whose steps draw all their pairs from one target language, and their random
    # negatives from that language's items: a query then meets as negatives the items its language's searches
    # rank it against, not mostly other languages' items that its script already rules out. Empty: mixed steps.
    language_batches: tuple[str, ...] = ()
    # A task leaves the batch mix after this many passes over its pairs (0: never). The paper's weights assume
    # engagement logs no run exhausts; a small public task at weight 8 would otherwise be seen dozens of times
    # while a large one is seen twice, and the entity tower memorises the small task's items.
    max_epochs: float = 0.0
    # Early stopping on the dev split: at the end, keep the weights of the dev evaluation (periodic or final)
    # with the best nDCG@10 over all evaluated dev queries (`train.dev_score`). Dev quality peaks and then falls
    # as the entity tower starts to memorise its training items (BENCHMARKS.md, Model quality).
    keep_best: bool = False
    # After training (and keep_best), fit the compatibility heads alone this many steps on the final query tower
    # (encoders/compat.py): an early kept step leaves them with a pass or two over their pairs.
    compat_steps: int = 0
    compat_lr: float = 1e-3  # peak learning rate of that fit (cosine decay to a tenth)
    compat_pseudo: int = 0  # that fit also draws half of each batch from up to this many pseudo-queries per
    #                         legacy item, cut from the item's own text (encoders/pseudo.py); 0: none
    # After training (and keep_best), try these points on the line from the starting weights (0, the untuned
    # backbone's ranking) to the trained ones (1) and keep the one with the best dev score; the trained
    # weights are always a candidate (encoders/interpolate.py, WiSE-FT). Empty: keep the trained weights.
    interpolate: tuple[float, ...] = ()
    # Dev checks and the saved model use the exponential moving average of the trained weights with this decay
    # (encoders/average.py; 0.99 averages over the last ~100 steps). 0: the raw weights of the last step.
    ema_decay: float = 0.0
    seed: int = 0  # data order, sampling and initial weights


@dataclass(frozen=True)
class RunConfig:
    """A full run: the network, its loss and the training schedule."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ------------------------------------------------------------------------------------------ presets
PRESETS: dict[str, dict[str, Any]] = {
    # Fits in 5 minutes on 2 cores for the README's end-to-end job: MiniLM kept frozen (its pooled state is
    # computed once per query), the projection, heads and the whole entity tower trained; entities also read the
    # untuned MiniLM embedding of their text, so training starts from the pretrained similarity. Both presets
    # serve 256 dense dims plus the 256-dim lexical channel (Home Depot dev nDCG@10 0.287 -> 0.344 here).
    "quick": {
        "model": {"query": {"train_layers": 0}, "entity": {"text_input": True}, "lexical": {"dim": 256}},
        # run_time_limit_s: with a cold embedding cache preparation takes ~95 s, so the whole step stays in 5 min
        "train": {"name": "quick", "steps": 600, "time_limit_s": 200.0, "run_time_limit_s": 280.0, "batch_size": 256,
                  "warmup_steps": 30, "final_eval": False, "lr": 5e-4, "lr_hash": 2e-3},
    },
    # The best model within an hour on 2 cores: multilingual e5-small, top blocks trained over cached states,
    # entities reading e5's untuned embedding of their text. Learning rates: the highest that did not lose Home
    # Depot dev nDCG@10 in 300-step trials (doubling them gave the same curve). Dev quality peaked early and then
    # fell in longer runs (BENCHMARKS.md, Model quality), so every task stops after 3 passes over its pairs and dev
    # is checked every 200 steps; the compatibility heads are then fit again on the final tower (an early kept step
    # had left them under-trained), half of each batch pseudo-queries cut from the legacy items' text (legacy
    # Recall@10 0.851 -> 0.922). `train.interpolate` stays off: every point tried lost dev score (BENCHMARKS.md,
    # "Interpolating toward the start"). The anchor block (weight 8, not in the loss) keeps untuned e5's
    # cross-lingual ranking in every entity search (BENCHMARKS.md, "The anchor block"); it reads e5's whole
    # 512-token window of the entity text, the tower 256 tokens. Related searches at three
    # times the paper's weight: on a multilingual catalog their pairs are a query and its translation, which pulls
    # the query tower toward one embedding per question in every language (to English +0.006 / +0.010 Recall@1 and
    # related searches +0.05 nDCG@10 on two dev splits, Home Depot unchanged). With that mix the dev checks rise to
    # the end, and keep_best had kept an earlier step by a margin below noise that cost 0.014 on Home Depot, so the
    # last step is kept (BENCHMARKS.md, "Cross-lingual levers"); the checks stay as the run's learning curve.
    "full": {
        "model": {"query": {"backbone": "multilingual-e5-small", "train_layers": 3}, "entity": {"text_input": True},
                  "lexical": {"dim": 256}, "anchor_weight": 8.0, "anchor_max_length": 512},
        "train": {
            "name": "full",
            "steps": 1000,
            "time_limit_s": 2700.0,
            "batch_size": 256,
            "warmup_steps": 100,
            "eval_every": 200,
            "max_epochs": 3.0,
            "keep_best": False,
            "tasks": {"query->pin": 8.0, "query->product": 4.0, "query->doc": 2.0, "query->query": 6.0,
                      "query->legacy": 2.0},
            "compat_steps": 1000,
            "compat_pseudo": 4,
            "lr": 5e-4,
            "lr_hash": 2e-3,
            "lr_backbone": 3e-5,
        },
    },
}


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Instantiate a (nested) config dataclass from a dict, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = _NESTED.get((cls.__name__, key))
        if sub is not None:
            kwargs[key] = _build(sub, value, f"{where}.{key}")
        elif isinstance(value, list):
            kwargs[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


_NESTED: dict[tuple[str, str], type] = {
    ("RunConfig", "model"): ModelConfig,
    ("RunConfig", "loss"): LossConfig,
    ("RunConfig", "train"): TrainConfig,
    ("ModelConfig", "query"): QueryConfig,
    ("ModelConfig", "entity"): EntityConfig,
    ("ModelConfig", "lexical"): LexicalConfig,
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("tasks", "task_negatives"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict` output or a TOML table."""
    cfg = _build(RunConfig, data, "config")
    validate(cfg)
    return cfg


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    cfg = _build(ModelConfig, data, "model")
    validate(RunConfig(model=cfg))
    return cfg


def preset(name: str) -> RunConfig:
    """A named preset (`quick`, `full`)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return run_config_from_dict(PRESETS[name])


def load_toml(path: str | Path, base: str | None = None) -> RunConfig:
    """A run config from a TOML file, optionally on top of a preset given as `preset = "quick"` in the file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    base_name = data.pop("preset", base)
    if base_name and base_name not in PRESETS:
        raise ConfigError(f"{path}: unknown preset {base_name!r}; known: {sorted(PRESETS)}")
    merged = _merge(PRESETS[base_name], data) if base_name else data
    return run_config_from_dict(merged)


def override(cfg: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """A copy of `cfg` with nested changes applied (used by tests and ablations)."""
    return run_config_from_dict(_merge(to_dict(cfg), changes))


def validate(cfg: RunConfig) -> None:
    """Check values that would otherwise fail deep inside training."""
    q, e, loss, t = cfg.model.query, cfg.model.entity, cfg.loss, cfg.train
    if q.pooling not in ("cls", "mean"):
        raise ConfigError(f"query.pooling must be 'cls' or 'mean', got {q.pooling!r}")
    if not 0 < q.serve_dim <= q.dim:
        raise ConfigError(f"query.serve_dim must be in 1..{q.dim}, got {q.serve_dim}")
    lx = cfg.model.lexical
    if lx.dim < 0 or lx.weight < 0 or (lx.dim and not 0 < lx.nonzeros <= lx.dim):
        raise ConfigError(f"lexical: dim >= 0, weight >= 0 and nonzeros in 1..dim are required, got {lx}")
    if cfg.model.anchor_weight < 0 or (cfg.model.anchor_weight and not e.text_input):
        raise ConfigError(f"anchor_weight must be >= 0 and needs entity.text_input, got {cfg.model.anchor_weight}")
    if cfg.model.anchor_max_length < 0:
        raise ConfigError(f"anchor_max_length must be >= 0 (0: entity.text_input_max_length), got "
                          f"{cfg.model.anchor_max_length}")
    if cfg.model.anchor_in_loss and cfg.model.anchor_max_length not in (0, e.text_input_max_length):
        raise ConfigError("anchor_max_length differs from entity.text_input_max_length, but anchor_in_loss trains "
                          "against the tower's text_input vectors: set one window for both")
    if e.dim != q.dim:
        raise ConfigError(f"entity.dim ({e.dim}) must equal query.dim ({q.dim}): one shared space")
    if cfg.model.compat_mode not in ("head", "prefix", "off"):
        raise ConfigError(f"compat_mode must be head, prefix or off, got {cfg.model.compat_mode!r}")
    unknown_fields = sorted(set(e.fields) - set(TEXT_FIELDS))
    if unknown_fields:
        raise ConfigError(f"entity.fields has unknown field(s) {unknown_fields}")
    if len(loss.prefix_dims) != len(loss.prefix_weights):
        raise ConfigError("loss.prefix_dims and loss.prefix_weights differ in length")
    if any(d > q.dim for d in loss.prefix_dims) or list(loss.prefix_dims) != sorted(loss.prefix_dims):
        raise ConfigError(f"loss.prefix_dims must be ascending and at most {q.dim}")
    if loss.temperature <= 0 or loss.max_scale <= 0:
        raise ConfigError("loss.temperature and loss.max_scale must be positive")
    if t.time_limit_s <= 0 or t.run_time_limit_s < 0:
        raise ConfigError("train.time_limit_s must be positive and train.run_time_limit_s >= 0 (0: none)")
    if t.batch_size < 2 or t.steps < 0 or t.threads < 1:
        raise ConfigError("train.batch_size >= 2, train.steps >= 0 and train.threads >= 1 are required")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1) (0: off), got {t.ema_decay}")
    if any(not 0.0 <= a <= 1.0 for a in t.interpolate):
        raise ConfigError(f"train.interpolate values must be in [0, 1], got {list(t.interpolate)}")
    for task, weight in t.tasks.items():
        if not task.startswith("query->"):
            raise ConfigError(f"task names look like 'query->pin', got {task!r}")
        if weight < 0:
            raise ConfigError(f"task weight of {task} is negative")
    stray = sorted(set(t.language_batches) - set(t.tasks))
    if stray:
        raise ConfigError(f"train.language_batches names task(s) {stray} that are not in train.tasks")
