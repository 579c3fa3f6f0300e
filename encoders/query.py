"""The query tower: a Hugging Face backbone from a local directory, pooling, a projection, compatibility heads.

Shapes: B queries, L tokens, h backbone hidden size, D = QueryConfig.dim.
"""

from __future__ import annotations

import copy
import inspect
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from encoders.config import QueryConfig
from encoders.errors import ConfigError

log = logging.getLogger(__name__)


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The transformer blocks of BERT / XLM-R (`encoder.layer`) or DistilBERT (`transformer.layer`)."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        obj: Any = backbone
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ConfigError(f"cannot find the transformer layers of {type(backbone).__name__}")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, h) hidden states and (B, L) mask -> (B, h) mean over real tokens."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class QueryEncoder(nn.Module):
    """Texts -> pooled backbone states -> projection (D) and one head per legacy space."""

    def __init__(
        self,
        cfg: QueryConfig,
        backbone_dir: str | Path,
        prefix: str = "",
        legacy: dict[str, int] | None = None,
        compat_mode: str = "head",
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.prefix = prefix
        self.compat_mode = compat_mode
        hf_config = AutoConfig.from_pretrained(backbone_dir, local_files_only=True)
        if pretrained:
            self.backbone = AutoModel.from_pretrained(backbone_dir, local_files_only=True)
        else:  # weights come from the checkpoint's safetensors right after
            self.backbone = AutoModel.from_config(hf_config)
        self.tokenizer = AutoTokenizer.from_pretrained(backbone_dir, local_files_only=True)
        hidden = int(hf_config.hidden_size)
        self.proj = nn.Linear(hidden, cfg.dim)
        self.legacy = dict(legacy or {})
        self.heads = nn.ModuleDict()
        if compat_mode == "head":
            for name, dim in self.legacy.items():
                self.heads[head_key(name)] = nn.Linear(hidden, dim)
        elif compat_mode == "prefix":
            too_wide = {n: d for n, d in self.legacy.items() if d > cfg.dim}
            if too_wide:
                raise ConfigError(f"compat_mode=prefix needs legacy dims <= {cfg.dim}, got {too_wide}")
        self.set_trainable()

    def set_trainable(self) -> None:
        """Freeze token embeddings and all but the top `train_layers` blocks (cheaper backward on CPU)."""
        layers = encoder_layers(self.backbone)
        n_train = len(layers) if self.cfg.train_layers < 0 else min(self.cfg.train_layers, len(layers))
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for layer in list(layers)[len(layers) - n_train :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        if self.cfg.train_embeddings:
            for p in self.backbone.get_input_embeddings().parameters():
                p.requires_grad_(True)
        # Pooler weights (BERT) are unused by our pooling; leave them frozen.

    def train(self, mode: bool = True) -> QueryEncoder:
        """The backbone always runs without dropout: on 2 CPU cores the Bernoulli masks cost more than
        they regularise in a few hundred steps, and frozen layers need none."""
        super().train(mode)
        self.backbone.eval()
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Texts (prefixed as the backbone expects) -> padded input tensors, at most max_length tokens."""
        enc = self.tokenizer(
            [self.prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )
        return {k: enc[k] for k in ("input_ids", "attention_mask")}

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """(B, L) ids and mask -> (B, h) float32 pooled states."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state.float()  # (B, L, h)
        if self.cfg.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, attention_mask)

    # ------------------------------------------------------------------ split forward (training speed)
    def frozen_depth(self) -> int:
        """Number of bottom transformer blocks that are frozen (their output can be cached per query)."""
        n = len(encoder_layers(self.backbone))
        if self.cfg.train_layers < 0 or self.cfg.train_embeddings:
            return 0
        return n - min(self.cfg.train_layers, n)

    def can_split(self) -> bool:
        """True for BERT-family backbones (BERT, XLM-R, e5) whose blocks can be run one by one."""
        b = self.backbone
        return hasattr(b, "embeddings") and hasattr(b, "_create_attention_masks") and hasattr(b, "encoder")

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        kwargs: dict[str, Any] = {}
        if "position_ids" in self._mask_params():  # transformers >= 5.2x asks for it (None: default positions)
            kwargs["position_ids"] = None
        mask, _ = self.backbone._create_attention_masks(
            attention_mask=attention_mask,
            encoder_attention_mask=None,
            embedding_output=hidden,
            encoder_hidden_states=None,
            cache=None,
            **kwargs,
        )
        return mask

    def _mask_params(self) -> frozenset[str]:
        # a private transformers API whose signature changes between releases; read it once per model
        params = self.__dict__.get("_mask_signature")
        if params is None:
            params = frozenset(inspect.signature(self.backbone._create_attention_masks).parameters)
            self.__dict__["_mask_signature"] = params
        return params

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """(B, L) -> (B, L, h) hidden states after the frozen blocks (no autograd)."""
        layers = encoder_layers(self.backbone)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = self.backbone.embeddings(input_ids=input_ids)
            mask = self._mask(hidden, attention_mask)
            for layer in list(layers)[: self.frozen_depth()]:
                hidden = layer(hidden, mask)
        return hidden

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """(B, L, h) states from `lower` -> (B, h) float32 pooled states through the trained blocks."""
        layers = encoder_layers(self.backbone)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            mask = self._mask(hidden, attention_mask)
            for layer in list(layers)[self.frozen_depth() :]:
                hidden = layer(hidden, mask)
        hidden = hidden.float()
        if self.cfg.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, attention_mask)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, h) -> (B, D) L2-normalised model-space embedding (all dims; prefixes are re-normalised)."""
        return F.normalize(self.proj(pooled), dim=-1)

    def legacy_embed(self, pooled: torch.Tensor, name: str) -> torch.Tensor:
        """(B, h) -> (B, dim of space) L2-normalised embedding for the legacy space `name`."""
        if self.compat_mode == "head":
            return F.normalize(self.heads[head_key(name)](pooled), dim=-1)
        if self.compat_mode == "prefix":
            return F.normalize(self.proj(pooled)[:, : self.legacy[name]], dim=-1)
        raise ConfigError("this model was trained without compatibility (compat_mode=off)")


def head_key(space: str) -> str:
    """ModuleDict keys may not contain dots."""
    return space.replace(".", "_")


class PassageEncoder(nn.Module):
    """The UNTUNED backbone as a frozen text embedder for entities (EntityConfig.text_input).

    It shares the query backbone's token embeddings and frozen lower blocks and keeps frozen copies of the
    original top blocks (the ones the query tower fine-tunes), so it costs little extra weight. Output: the
    mean-pooled, L2-normalised embedding of `passage_prefix + text`, as `baselines.PlainEncoder` computes it.
    """

    def __init__(self, query: QueryEncoder, backbone: Any, max_length: int) -> None:
        super().__init__()
        self.backbone = backbone  # Backbone info (name, prefixes): names the disk cache of these embeddings
        self.max_length = max_length
        object.__setattr__(self, "_query", query)  # shared, not a submodule: its weights are saved once
        self.split = query.can_split() and not query.cfg.train_embeddings
        self.top = nn.ModuleList()
        self.depth = 0
        self.full: nn.Module | None = None
        if self.split:
            layers = encoder_layers(query.backbone)
            depth = query.frozen_depth()
            self.top = nn.ModuleList(copy.deepcopy(layer) for layer in list(layers)[depth:])
            self.depth = depth
        elif query.cfg.train_layers != 0:
            self.full = copy.deepcopy(query.backbone)
        for p in self.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> PassageEncoder:
        super().train(False)  # always deterministic
        return self

    def top_pooled(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, h) states after the shared frozen blocks (`QueryEncoder.lower`) -> (B, h) L2-normalised untuned
        embeddings through the original top blocks: the query tower's lower pass serves both."""
        query: QueryEncoder = self.__dict__["_query"]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            mask = query._mask(hidden, attention_mask)
            for layer in self.top:
                hidden = layer(hidden, mask)
        return F.normalize(mean_pool(hidden.float(), attention_mask), dim=-1)

    @torch.inference_mode()
    def encode(self, texts: list[str], passage: bool = True, progress: bool = False,
               max_length: int | None = None) -> Any:
        """(n,) texts -> (n, h) float32 numpy, L2-normalised (same signature as PlainEncoder.encode); passages
        are cut at `max_length` tokens (None: the encoder's own `max_length`)."""
        import numpy as np

        query: QueryEncoder = self.__dict__["_query"]
        prefix = self.backbone.passage_prefix if passage else self.backbone.query_prefix
        hidden_size = int(query.backbone.config.hidden_size)
        out = np.zeros((len(texts), hidden_size), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        from tqdm import tqdm

        for start in tqdm(range(0, len(texts), 64), desc="embedding entity text", disable=not progress, leave=False):
            idx = order[start : start + 64]
            enc = query.tokenizer(
                [prefix + texts[i] for i in idx], padding=True, truncation=True,
                max_length=(max_length or self.max_length) if passage else 64, return_tensors="pt",
            )
            ids, mask = enc["input_ids"], enc["attention_mask"]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                if self.full is not None:
                    hidden = self.full(input_ids=ids, attention_mask=mask).last_hidden_state
                elif not self.split:  # the query backbone is entirely frozen: it is the untuned backbone
                    hidden = query.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
                else:
                    hidden = query.backbone.embeddings(input_ids=ids)
                    amask = query._mask(hidden, mask)
                    for layer in list(encoder_layers(query.backbone))[: self.depth]:
                        hidden = layer(hidden, amask)
                    for layer in self.top:
                        hidden = layer(hidden, amask)
            pooled = mean_pool(hidden.float(), mask)
            out[idx] = F.normalize(pooled, dim=-1).numpy()
        return out


class PassageWindow:
    """The untuned passage encoder reading up to `max_length` tokens: the anchor block's view of entity text
    (ModelConfig.anchor_max_length), memoised apart from the tower's text_input vectors by its length."""

    def __init__(self, passage: PassageEncoder, max_length: int) -> None:
        self.passage, self.backbone, self.max_length = passage, passage.backbone, max_length

    def encode(self, texts: list[str], passage: bool = True, progress: bool = False) -> Any:
        return self.passage.encode(texts, passage, progress, max_length=self.max_length)
