"""The query tower: a Hugging Face backbone from a local directory, pooling, a projection, compatibility heads.

Shapes: B queries, L tokens, h backbone hidden size, D = QueryConfig.dim.
"""

from __future__ import annotations

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
