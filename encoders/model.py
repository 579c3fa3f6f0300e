"""OmniSearchSage: the query and entity towers in one module, with embedding APIs, save and load."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from safetensors.torch import load_model, save_model
from torch import nn

from encoders.backbones import Backbone, cache_root
from encoders.config import ModelConfig, model_config_from_dict, to_dict
from encoders.entity import EntityEncoder
from encoders.errors import CheckpointError, ConfigError, UnknownSpace
from encoders.features import Featurizer, passage_text
from encoders.lexical import LexicalEncoder
from encoders.query import PassageEncoder, PassageWindow, QueryEncoder, head_key
from encoders.tokenize import EntityTokenizer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
Row = dict[str, Any]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class OmniSearchSage(nn.Module):
    """Queries, pins, products and docs in one space; queries also in each legacy space.

    Attributes:
        checkpoint_id: sha256 prefix of the weights file ("unsaved" before the first save/load).
        spaces: {"model": serve dim, "legacy-<name>": dim, ...}.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        backbone: Backbone,
        tokenizer: EntityTokenizer,
        legacy: dict[str, int] | None = None,
        engaged: dict[str, list[str]] | None = None,
        legacy_descriptions: dict[str, str] | None = None,
        pretrained: bool = True,
        lexical: LexicalEncoder | None = None,
    ) -> None:
        super().__init__()
        if cfg.lexical.dim and lexical is None:
            raise ConfigError("lexical.dim > 0 needs the catalog's document frequencies (LexicalEncoder.build)")
        self.lexical = lexical if cfg.lexical.dim else None
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.backbone_info = backbone
        self.legacy = dict(legacy or {})
        self.legacy_descriptions = dict(legacy_descriptions or {})
        self.query = QueryEncoder(
            cfg.query, backbone.path, backbone.query_prefix, self.legacy, cfg.compat_mode, pretrained
        )
        self.passage: PassageEncoder | None = None
        text_dim = 0
        if cfg.entity.text_input:
            self.passage = PassageEncoder(self.query, backbone, cfg.entity.text_input_max_length)
            text_dim = int(self.query.backbone.config.hidden_size)
            positions = int(getattr(self.query.backbone.config, "max_position_embeddings", 0) or 0)
            longest = max(cfg.entity.text_input_max_length, cfg.anchor_max_length)
            if positions and longest > positions:
                raise ConfigError(f"entity text windows of {longest} tokens exceed the backbone's "
                                  f"{positions} positions (entity.text_input_max_length, anchor_max_length)")
        # where text_input embeddings are memoised (by backbone and exact text, so sharing it is safe)
        self.passage_cache_dir: Path | None = cache_root() / "embeddings"
        self.entity = EntityEncoder(cfg.entity, tokenizer.num_ids, cfg.seed, text_dim)
        self.featurizer = Featurizer(cfg.entity, tokenizer, engaged)
        if cfg.entity.text_input and cfg.init_from_backbone:
            self._init_from_backbone()
        self.checkpoint_id = "unsaved"
        self.bf16 = False  # bf16 autocast of the query backbone when embedding (faster, cosine ~0.9999)
        self.eval()

    @torch.no_grad()
    def _init_from_backbone(self) -> None:
        """Start at the untuned backbone: query = R·pooled, entity = R·text + MLP(...) with the MLP's last layer
        at zero, R (D, h) with orthonormal columns, so the first step ranks like the pretrained model; a
        compatibility head over a legacy space of the backbone's own width starts as the identity."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        h = int(self.query.backbone.config.hidden_size)
        dim = self.cfg.query.dim
        q, _ = torch.linalg.qr(torch.randn(max(dim, h), min(dim, h), generator=gen))  # orthonormal columns
        rot = q if dim >= h else q.T  # (dim, h)
        self.query.proj.weight.copy_(rot)
        self.query.proj.bias.zero_()
        if self.entity.text_skip is not None:
            self.entity.text_skip.weight.copy_(rot)
        last = self.entity.mlp[-1]
        if isinstance(last, nn.Linear):
            last.weight.zero_()
            last.bias.zero_()
        for head in self.query.heads.values():
            if isinstance(head, nn.Linear) and head.weight.shape == (h, h):
                head.weight.copy_(torch.eye(h))
                head.bias.zero_()

    @torch.no_grad()
    def order_by_variance(self, text_vecs: NDArray[np.float32]) -> None:
        """Re-seat the starting rotation R so the model's first dims hold the backbone's principal directions.

        The served prefix (serve_dim) and the small nested prefixes then start with as much of the pretrained
        similarity as they can hold; a random rotation of h dims into D keeps only about serve_dim/D of it.
        R = top eigenvectors of the second-moment matrix of `text_vecs` ((n, h) untuned entity embeddings), so
        full-width dot products are unchanged. Call before the first optimizer step.
        """
        if self.entity.text_skip is None or len(text_vecs) == 0:
            return
        x = F.normalize(torch.from_numpy(np.asarray(text_vecs, np.float32)), dim=-1)  # (n, h)
        evals, evecs = torch.linalg.eigh(x.T @ x / len(x))  # ascending eigenvalues
        basis = evecs[:, torch.argsort(evals, descending=True)]  # (h, h), columns by explained variance
        dim, h = self.cfg.query.dim, basis.shape[0]
        rot = torch.zeros(dim, h)
        k = min(dim, h)
        rot[:k] = basis[:, :k].T  # (dim, h): the rest of the width starts empty and is learned
        self.query.proj.weight.copy_(rot)
        self.entity.text_skip.weight.copy_(rot)

    # ------------------------------------------------------------------ spaces
    @torch.no_grad()
    def add_legacy_space(self, name: str, dim: int, description: str = "") -> None:
        """A new compatibility head for the legacy space `name` (its weights still to be fit, encoders/compat.py).

        Like the heads made at training time, one over a space of the backbone's own width starts as the
        identity, otherwise at PyTorch's default initialisation.
        """
        if self.cfg.compat_mode != "head":
            raise ConfigError(f"legacy spaces are added as heads; this model has compat_mode "
                              f"{self.cfg.compat_mode!r}")
        if name in self.legacy:
            raise ConfigError(f"the model already has the legacy space {name!r}")
        h = int(self.query.backbone.config.hidden_size)
        head = nn.Linear(h, dim)
        if dim == h:
            head.weight.copy_(torch.eye(h))
            head.bias.zero_()
        self.query.heads[head_key(name)] = head
        self.query.legacy[name] = dim
        self.legacy[name] = dim
        self.legacy_descriptions[name] = description
        self.checkpoint_id = "unsaved"

    @property
    def anchor_dim(self) -> int:
        """Width of the anchor block in the served vector (ModelConfig.anchor_weight; 0 without one)."""
        if not self.cfg.anchor_weight or self.passage is None:
            return 0
        return int(self.query.backbone.config.hidden_size)

    @property
    def spaces(self) -> dict[str, int]:
        out = {"model": self.cfg.query.serve_dim + self.anchor_dim + (self.lexical.dim if self.lexical else 0)}
        if self.cfg.compat_mode != "off":
            out.update({f"legacy-{name}": dim for name, dim in self.legacy.items()})
        return out

    @property
    def tokenizer(self) -> EntityTokenizer:
        return self.featurizer.tokenizer

    @property
    def engaged(self) -> dict[str, list[str]]:
        return self.featurizer.engaged

    # ------------------------------------------------------------------ embedding
    @torch.inference_mode()
    def embed_queries(self, texts: list[str], space: str = "model", batch_size: int = 64) -> NDArray[np.float32]:
        """Texts -> (n, dim of space) float32, L2-normalised."""
        if space not in self.spaces:
            raise UnknownSpace(f"unknown space {space!r}; this model has {sorted(self.spaces)}")
        dim = self.cfg.query.serve_dim if space == "model" else self.spaces[space]
        anchor = self.anchor_dim if space == "model" else 0
        out = np.zeros((len(texts), dim + anchor), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less
        split = anchor and self.passage is not None and self.passage.split
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = [texts[i] for i in idx]
            enc = self.query.tokenize(batch)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            if split:  # one pass through the shared frozen blocks feeds both the tuned and the untuned top
                lower = self.query.lower(ids, mask, bf16=self.bf16)
                pooled = self.query.upper(lower, mask, bf16=self.bf16)
                out[idx, dim:] = self.passage.top_pooled(lower, mask).numpy()  # type: ignore[union-attr]
            else:
                pooled = self.query.pooled(ids, mask, bf16=self.bf16)
                if anchor:
                    out[idx, dim:] = self.passage.encode(batch, passage=False)  # type: ignore[union-attr]
            if space == "model":
                vec = F.normalize(self.query.proj(pooled)[:, :dim], dim=-1)
            else:
                vec = self.query.legacy_embed(pooled, space[len("legacy-") :])
            out[idx, :dim] = vec.float().numpy()
        if space == "model":
            return self._serve(out, texts)
        return out

    def _serve(self, dense: NDArray[np.float32], texts: list[str]) -> NDArray[np.float32]:
        """[dense | anchor] rows (unit blocks) -> the served vector: the anchor block scaled by
        sqrt(anchor_weight), the lexical block appended, the whole row L2-normalised."""
        if self.anchor_dim:
            dense[:, self.cfg.query.serve_dim :] *= np.float32(np.sqrt(self.cfg.anchor_weight))
        if self.lexical is not None:
            return self.lexical.combine(dense, texts)
        if self.anchor_dim:
            dense /= np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
        return dense

    def embed_related(self, texts: list[str], batch_size: int = 64) -> NDArray[np.float32]:
        """Queries as the items of related searches (the `queries` index), in space "model".

        Unless `lexical.related_queries` is set, their lexical block is zero, and unless `anchor_related` is set,
        their anchor block too: related searches then rank by the trained dense cosine alone, and a query's own
        lexical and anchor blocks meet nothing there.
        """
        vecs = self.embed_queries(texts, "model", batch_size)
        dim, zeroed = self.cfg.query.serve_dim, False
        if self.anchor_dim and not self.cfg.anchor_related:
            vecs[:, dim : dim + self.anchor_dim] = 0.0
            zeroed = True
        if self.lexical is not None and not self.cfg.lexical.related_queries:
            vecs[:, dim + self.anchor_dim :] = 0.0
            zeroed = True
        if zeroed:
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs

    @torch.inference_mode()
    def embed_entities(self, rows: list[Row], batch_size: int = 256) -> NDArray[np.float32]:
        """Catalog entity rows -> (n, dim of space "model") float32, L2-normalised."""
        dim = self.cfg.query.serve_dim
        out = np.zeros((len(rows), dim + self.anchor_dim), np.float32)
        text_vecs = self.text_vectors(rows) if self.passage is not None else None
        anchors = self.anchor_vectors(rows, text_vecs) if self.anchor_dim and text_vecs is not None else None
        for start in range(0, len(rows), batch_size):
            feats = [self.featurizer.features(r) for r in rows[start : start + batch_size]]
            if text_vecs is not None:
                for f, v in zip(feats, text_vecs[start : start + batch_size], strict=True):
                    f.text_vec = v
            vec = self.entity(self.featurizer.collate(feats))  # (b, D)
            out[start : start + len(feats), :dim] = F.normalize(vec[:, :dim], dim=-1).numpy()
        if anchors is not None:
            out[:, dim:] = anchors  # the untuned backbone's own (unit) embedding of the text
        texts = [passage_text(r, self.cfg.entity.fields) for r in rows] if self.lexical is not None else []
        return self._serve(out, texts)

    def text_vectors(self, rows: list[Row], progress: bool = False) -> NDArray[np.float32]:
        """(n, h) untuned-backbone embeddings of the rows' text (text_input), memoised in passage_cache_dir."""
        if self.passage is None:
            raise UnknownSpace("this model has no text_input")
        from encoders.baselines import cached_passages

        texts = [passage_text(r, self.cfg.entity.fields) for r in rows]  # the fields the bags read too
        return cached_passages(self.passage, texts, self.passage_cache_dir, progress)  # type: ignore[arg-type]

    def anchor_vectors(self, rows: list[Row], text_vecs: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """(n, h) the anchor block of the rows: the untuned embedding of their text over `anchor_max_length`
        tokens (the text_input vectors themselves when that window is the tower's)."""
        if self.passage is None:
            raise UnknownSpace("this model has no text_input")
        base = text_vecs if text_vecs is not None else self.text_vectors(rows)
        length = self.cfg.anchor_max_length
        if not length or length == self.passage.max_length:
            return base
        from encoders.baselines import cached_passages

        texts = [passage_text(r, self.cfg.entity.fields) for r in rows]
        # only a text the tower's window cuts reads differently in this one: embed just those again
        prefix = self.backbone_info.passage_prefix
        ids = self.query.tokenizer([prefix + t for t in texts], truncation=True, max_length=length)["input_ids"]
        cut = [i for i, x in enumerate(ids) if len(x) > self.passage.max_length]
        if not cut:
            return base
        out = np.array(base, dtype=np.float32, copy=True)
        window = PassageWindow(self.passage, length)
        out[cut] = cached_passages(window, [texts[i] for i in cut], self.passage_cache_dir)  # type: ignore[arg-type]
        return out

    # ------------------------------------------------------------------ files
    def config_dict(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        b = self.backbone_info
        return {
            "format": FORMAT_VERSION,
            "model": to_dict(self.cfg),
            "backbone": {"name": b.name, "query_prefix": b.query_prefix, "passage_prefix": b.passage_prefix},
            "legacy": {
                n: {"dim": d, "description": self.legacy_descriptions.get(n, "")} for n, d in self.legacy.items()
            },
            **(extra or {}),
        }

    def save(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> str:
        """Write the checkpoint directory atomically (temp dir, then rename); returns the checkpoint id.

        Layout: config.json, model.safetensors (every weight), backbone/ (Hugging Face config and tokenizer
        files), vocab.json (entity vocabularies), engaged_queries.json.gz (the train-split enrichment),
        lexical.json.gz (document frequencies of the lexical channel, when it has one).
        """
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            save_model(self, str(tmp / WEIGHTS))
            (tmp / "backbone").mkdir()
            self.query.backbone.config.save_pretrained(tmp / "backbone")
            self.query.tokenizer.save_pretrained(tmp / "backbone")
            self.tokenizer.save(tmp / "vocab.json")
            with gzip.open(tmp / "engaged_queries.json.gz", "wt", encoding="utf-8") as f:
                json.dump(self.engaged, f, ensure_ascii=False, sort_keys=True)
            if self.lexical is not None:
                self.lexical.save(tmp)
            ckpt_id = _sha256(tmp / WEIGHTS)[:16]
            cfg = self.config_dict(extra)
            cfg["checkpoint_id"] = ckpt_id
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
            old = None
            if target.exists():
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.checkpoint_id = ckpt_id
        return ckpt_id


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"no readable checkpoint at {directory}: {exc}") from exc
    if cfg.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {directory} has format {cfg.get('format')}, expected {FORMAT_VERSION}")
    return cfg


def load(directory: str | os.PathLike[str]) -> OmniSearchSage:
    """Restore a saved model exactly (eval mode, CPU)."""
    d = Path(directory)
    cfg = read_config(d)
    for name in (WEIGHTS, "vocab.json", "engaged_queries.json.gz", "backbone"):
        if not (d / name).exists():
            raise CheckpointError(f"checkpoint {d} lacks {name}")
    b = cfg["backbone"]
    backbone = Backbone(b["name"], d / "backbone", b.get("query_prefix", ""), b.get("passage_prefix", ""))
    with gzip.open(d / "engaged_queries.json.gz", "rt", encoding="utf-8") as f:
        engaged = json.load(f)
    legacy = {n: int(v["dim"]) for n, v in cfg.get("legacy", {}).items()}
    descriptions = {n: str(v.get("description", "")) for n, v in cfg.get("legacy", {}).items()}
    model_cfg = model_config_from_dict(cfg["model"])
    lexical = LexicalEncoder.load(model_cfg.lexical, d) if model_cfg.lexical.dim else None
    model = OmniSearchSage(
        model_cfg,
        backbone,
        EntityTokenizer.load(d / "vocab.json"),
        legacy,
        engaged,
        descriptions,
        pretrained=False,
        lexical=lexical,
    )
    missing, unexpected = load_model(model, str(d / WEIGHTS), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {d} does not match its config: missing {missing}, extra {unexpected}")
    model.checkpoint_id = _sha256(d / WEIGHTS)[:16]
    if cfg.get("checkpoint_id") and cfg["checkpoint_id"] != model.checkpoint_id:
        raise CheckpointError(f"checkpoint {d}: weights checksum differs from config.json (corrupt copy?)")
    model.eval()
    return model
