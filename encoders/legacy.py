"""A documented stand-in legacy space for catalogs that have no pre-existing item vectors of their own.

The paper's compatibility task trains queries against frozen PinSage / ItemSage vectors. The shipped data sets
have no such vectors, so `encoders legacy-standin` makes one: the UNTUNED backbone's mean-pooled embeddings of
each entity's catalog text. It is stored with `Catalog.put_legacy_vectors`, exactly as a user's own vectors would
be, and its description in the catalog says it is a stand-in.
"""

from __future__ import annotations

import logging

from catalog import TEXT_FIELDS, Catalog, Home, text_of
from encoders.backbones import cache_root, resolve_backbone
from encoders.baselines import PlainEncoder, cached_passages
from encoders.errors import EncoderError

log = logging.getLogger(__name__)

# Engaged queries are training signal, not item content: a legacy item tower never saw our train split.
STANDIN_FIELDS: tuple[str, ...] = tuple(f for f in TEXT_FIELDS if f != "engaged_queries")


def standin_name(kind: str) -> str:
    return f"standin-{kind}"


def make_standin(
    home: Home, kind: str = "pin", name: str | None = None, backbone: str = "minilm", progress: bool = True
) -> tuple[str, int, int]:
    """Embed every entity of `kind` with the untuned backbone and store them as legacy space `name`.

    Returns (space name, vectors written, dimension).
    """
    name = name or standin_name(kind)
    with Catalog(home.catalog_db, read_only=True) as cat:
        rows = list(cat.entities(kind))
    if not rows:
        raise EncoderError(f"the catalog has no entities of kind {kind!r}")
    bb = resolve_backbone(backbone)
    encoder = PlainEncoder(bb)
    # memoised like the entity tower's text input: training on this catalog later reuses these embeddings
    texts = [text_of(r, STANDIN_FIELDS) for r in rows]
    vecs = cached_passages(encoder, texts, cache_root() / "embeddings", progress)
    description = (
        f"STAND-IN legacy space, not a real PinSage/ItemSage: untuned {bb.name} mean-pooled embeddings of each "
        f"{kind}'s catalog text, made by `encoders legacy-standin` because the shipped data has no legacy vectors"
    )
    with Catalog.edit(home.catalog_db) as cat:
        n = cat.put_legacy_vectors(name, [r["id"] for r in rows], vecs, description)
    log.info("legacy space %s: %d vectors of dim %d", name, n, vecs.shape[1])
    return name, n, int(vecs.shape[1])
