"""The catalog: entities, queries, engagements and legacy vectors in one SQLite file."""

from catalog.home import Home, home_option
from catalog.schema import SCHEMA_VERSION, TEXT_FIELDS
from catalog.store import Catalog, text_of

__all__ = ["Catalog", "Home", "SCHEMA_VERSION", "TEXT_FIELDS", "home_option", "text_of"]
