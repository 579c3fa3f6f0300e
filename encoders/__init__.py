"""The OmniSearchSage model: query encoder, entity encoder, compatibility heads, training, evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from encoders.model import OmniSearchSage, load

__all__ = ["OmniSearchSage", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: `import encoders.backbones` (and the CLI's --help) should not pay for importing torch.
    if name in __all__:
        from encoders import model

        return getattr(model, name)
    raise AttributeError(f"module 'encoders' has no attribute {name!r}")
